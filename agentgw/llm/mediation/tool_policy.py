"""Tool calls inside LLM traffic: which function names an LLM request may declare, and which `tool_call`s in an
answer the caller may see, decided by the same policy as the MCP plane's `tools/call` (`llm.tool_policy`).

Names resolve through settings and the registry (never the MCP plane): an `llm.tools` entry, else
`<server>__<tool>` of a registry MCP server (renames undone), else the tool is unknown and denied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentgw import jsontext
from agentgw.errors import Forbidden, GatewayError
from agentgw.exchange import Exchange
from agentgw.pipeline import Pipeline, Stage
from agentgw.policy import PolicyDecision
from agentgw.registry import MCPSection
from agentgw.settings import LLMToolSettings
from agentgw.stages.authz import AuthzStage

STAGE = "tools"
SEP = "__"  # the MCP plane's `<server>__<tool>` (DESIGN.md, "Tool names on the aggregated MCP endpoint")
UNKNOWN = "unknown tool: no llm.tools entry and not <server>__<tool> of a registry MCP server"


class ToolNotAllowed(Forbidden):
    code = "tool_not_allowed"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    target: str | None  # the policy object the name resolved to (None: unknown)
    rule: str  # the deciding policy line, or why there was none
    note: str | None = None  # condition errors, a hold effect


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on a repeated key (first or last wins): a rule could check one value and the tool run the
    # other, so arguments with a repeated key are not a JSON object the gateway will vouch for.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def parse_arguments(raw: Any) -> dict[str, Any] | None:
    """A tool call's arguments as an object (empty text is `{}`), or None when they are not one JSON object."""
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def tool_name(tool: Any) -> str | None:
    """The function name a declared tool goes by (`function.name`; `custom.name` for custom tools)."""
    if not isinstance(tool, dict):
        return None
    for kind in ("function", "custom"):
        spec = tool.get(kind)
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"]:
            return str(spec["name"])
    return None


def _choice_name(choice: Any) -> str | None:
    """The tool a `tool_choice` object forces, if any."""
    if not isinstance(choice, dict):
        return None
    fn = choice.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return str(fn["name"])
    custom = choice.get("custom")
    if isinstance(custom, dict) and isinstance(custom.get("name"), str):
        return str(custom["name"])
    return None


class ToolPolicy:
    """Decides tool names for one gateway (built only when `llm.tool_policy` is not `off`)."""

    def __init__(self, cfg: LLMToolSettings, mcp: MCPSection, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.mode = cfg.tool_policy
        self.strip = cfg.tool_call_violation == "strip"
        self.pipeline = pipeline
        self.authz = next((s for s in pipeline.stages if isinstance(s, AuthzStage)), None)
        # Filtering stages besides authz (their `allows` is what listings show); authz is asked once, directly.
        self.others = [
            s for s in pipeline.stages if type(s).allows is not Stage.allows and not isinstance(s, AuthzStage)
        ]
        self.servers: dict[str, dict[str, str]] = {}
        self.apply_registry(mcp)

    def apply_registry(self, mcp: MCPSection) -> None:
        """The MCP servers a `<server>__<tool>` name may refer to, with each one's renames undone."""
        self.servers = {s.name: {new: old for old, new in s.tools.rename.items()} for s in mcp.servers}

    def target(self, name: str) -> str | None:
        mapped = self.cfg.tools.get(name)
        if mapped is not None:
            return mapped
        server, sep, tool = name.partition(SEP)
        renames = self.servers.get(server) if sep and tool else None
        if renames is None:
            return None
        return f"mcp:{server}/{renames.get(tool, tool)}"

    def decide(self, ex: Exchange, name: str, args: dict[str, Any] | None) -> Verdict:
        """May the caller of `ex` run tool `name`? A declared tool (`args` None) is decided as listings decide it
        (allowed if some arguments are); a tool_call with its arguments, as the MCP plane decides `tools/call`:
        the same lines, the same CEL conditions over `args`, `principal`, `task` and `target`."""
        target = self.target(name)
        if target is None:
            return Verdict(False, None, UNKNOWN)
        principal = ex.principal
        if principal is None:  # authn ran before any tool is seen; without a principal nothing is allowed
            return Verdict(False, target, "no principal")
        allowed = all(s.allows(principal, target, "call") for s in self.others)
        if self.authz is None:  # a pipeline without authz (benchmarks): the other stages decide
            allowed = self.pipeline.allows(principal, target, "call")
            return Verdict(allowed, target, "allowed by every filtering stage" if allowed else "denied")
        if args is None:
            decision = self.authz.store.decide(
                principal.subject, principal.roles, target, "call", listing=True
            )
        else:
            decision = self.authz.check(principal, target, "call", args, ex.task)
        note = "; ".join(decision.errors)
        if decision.effect in ("approve", "confirm"):
            # The model only proposes the call: the hold applies where the agent runs it (the MCP plane).
            note = f"effect {decision.effect}: held where the tool runs" + (f"; {note}" if note else "")
        return Verdict(allowed and decision.allowed, target, _rule(decision), note or None)

    def record(self, ex: Exchange, verdict: Verdict, what: str, outcome: str) -> None:
        detail = f"{what} ({verdict.target or 'unknown'}): {outcome}"
        if verdict.note:
            detail += f" [{verdict.note}]"
        ex.decide(STAGE, "allow" if verdict.allowed else "deny", verdict.rule, detail)

    # -- request ----------------------------------------------------------------------------------------------

    def filter_request(self, ex: Exchange, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The payload to send upstream when the declared tools had to change (None: send it as it came).
        Raises ToolNotAllowed under `refuse`, or when `tool_choice` forces a tool the caller may not call."""
        if payload.get("functions") is not None or payload.get("function_call") is not None:
            # The deprecated `functions` API is not mediated; letting it pass would bypass the policy.
            raise GatewayError(
                "The deprecated 'functions' parameter is not accepted while llm.tool_policy is on; use 'tools'.",
                status=400,
                code="functions_not_supported",
            )
        tools = payload.get("tools")
        if not tools:
            return None
        kept: list[Any] = []
        refused: str | None = None
        for tool in tools:
            name = tool_name(tool)
            verdict = self.decide(ex, name, None) if name else Verdict(False, None, "a tool without a name")
            label = f"request tool {name or '?'}"
            if verdict.allowed:
                kept.append(tool)
                self.record(ex, verdict, label, "passed")
            elif self.mode == "refuse":
                self.record(ex, verdict, label, "request refused")
                refused = refused or name or "(unnamed)"
            else:
                self.record(ex, verdict, label, "dropped")
        if refused is not None:
            raise ToolNotAllowed(f"The request declares the tool '{refused}', which the caller may not call.")
        if len(kept) == len(tools):
            return None
        names = {tool_name(t) for t in kept}
        choice = payload.get("tool_choice")
        forced = _choice_name(choice)
        if forced is not None and forced not in names:
            raise ToolNotAllowed(f"tool_choice names the tool '{forced}', which the caller may not call.")
        out = dict(payload)
        if kept:
            out["tools"] = kept
            if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
                out["tool_choice"] = _narrow(choice, names)
            return out
        if choice == "required":
            raise ToolNotAllowed(
                "tool_choice is 'required' and the caller may call none of the declared tools."
            )
        for key in ("tools", "tool_choice", "parallel_tool_calls"):  # upstreams refuse these without tools
            out.pop(key, None)
        return out

    # -- answer -----------------------------------------------------------------------------------------------

    def check_call(self, ex: Exchange, name: Any, raw_args: Any) -> Verdict:
        """Decide one tool_call of an answer and record it; under `refuse` a denial raises ToolNotAllowed."""
        label = f"tool_call {name if isinstance(name, str) else '?'}"
        if not isinstance(name, str) or not name:
            verdict = Verdict(False, None, "a tool call without a name")
        else:
            args = parse_arguments(raw_args)
            if args is None:
                verdict = Verdict(False, self.target(name), "arguments are not one JSON object")
            else:
                verdict = self.decide(ex, name, args)
        if verdict.allowed:
            self.record(ex, verdict, label, "passed")
        elif self.strip:
            self.record(ex, verdict, label, "stripped")
        else:
            self.record(ex, verdict, label, "answer refused")
            raise ToolNotAllowed(f"The model called the tool '{name}', which the caller may not call.")
        return verdict

    def check_answer(self, ex: Exchange, answer: Any) -> bytes | None:
        """The body to send instead of a complete chat completion whose tool calls had to be stripped (None: send
        it as it came). Raises ToolNotAllowed under `tool_call_violation: refuse`."""
        if not isinstance(answer, dict):
            return None
        choices = answer.get("choices")
        changed: dict[int, dict[str, Any]] = {}
        for n, choice in enumerate(choices if isinstance(choices, list) else ()):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            calls = message.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                calls = [
                    {"function": None}
                ]  # unreadable calls are nobody's to run: decided (denied) as unnamed
            calls = calls or []
            legacy = message.get("function_call")  # the deprecated single call: checked the same way
            if not calls and legacy is None:
                continue
            kept: list[Any] = []
            removed: list[Any] = []
            for call in [*calls, {"function": legacy}] if legacy is not None else calls:
                fn = call.get("function") if isinstance(call, dict) else None
                fn = fn if isinstance(fn, dict) else {}
                verdict = self.check_call(ex, fn.get("name"), fn.get("arguments"))
                (kept if verdict.allowed else removed).append(call)
            if not removed:
                continue
            msg = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
            remaining = [c for c in kept if any(c is k for k in calls)]
            if remaining:
                msg["tool_calls"] = remaining
            if legacy is not None and any(c.get("function") is legacy for c in kept if isinstance(c, dict)):
                msg["function_call"] = legacy
            msg["content"] = with_note(msg.get("content"), removed_note(removed))
            fixed = {**choice, "message": msg}
            if not remaining and "function_call" not in msg:
                fixed["finish_reason"] = "stop"
            changed[n] = fixed
        if not changed:
            return None
        assert isinstance(choices, list)
        return jsontext.dumps({**answer, "choices": [changed.get(n, c) for n, c in enumerate(choices)]})


def _rule(decision: PolicyDecision) -> str:
    """The deciding policy line as the audit record names it, else default deny (naming the conditional lines
    whose conditions did not allow these arguments)."""
    if decision.rule is not None:
        return f"policy.csv:{decision.line}: {decision.rule}"
    if decision.unmet:
        return "default deny (condition not met: policy.csv line " + ", ".join(map(str, decision.unmet)) + ")"
    return "default deny"


def _narrow(choice: dict[str, Any], names: set[str | None]) -> dict[str, Any]:
    """An `allowed_tools` tool_choice limited to the tools that are still declared."""
    inner = choice.get("allowed_tools")
    if not isinstance(inner, dict) or not isinstance(inner.get("tools"), list):
        return choice
    listed = [t for t in inner["tools"] if tool_name(t) in names or _flat_name(t) in names]
    return {**choice, "allowed_tools": {**inner, "tools": listed}}


def _flat_name(tool: Any) -> str | None:
    name = tool.get("name") if isinstance(tool, dict) else None
    return name if isinstance(name, str) else None


def removed_note(calls: list[Any]) -> str:
    names = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        names.append(name if isinstance(name, str) and name else "(unnamed)")
    listed = ", ".join(f"'{n}'" for n in names)
    plural = "calls" if len(names) > 1 else "call"
    return f"[agentgw] The tool {plural} {listed} {'were' if len(names) > 1 else 'was'} removed: not allowed by policy."


def with_note(content: Any, note: str) -> Any:
    if content is None or content == "":
        return note
    if isinstance(content, str):
        return f"{content}\n\n{note}"
    return content  # structured content is left as it is; the removal is in the audit record
