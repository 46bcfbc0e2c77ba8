"""One registry agent behind the gateway: its card (where it listens, which binding and A2A version it speaks) and
calls to it over the pooled aiohttp session, as JSON-RPC or HTTP+JSON, unary or streamed. Everything in and out
is A2A 1.0 JSON; an agent that speaks only 0.3 is reached through the bridge. The caller's credentials never go
upstream: the registry's headers and `identity:` block do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

from agentgw.a2a.catalog.cards import CachedCard, CardCache, CardUnavailable
from agentgw.a2a.errors import A2AError, from_rest
from agentgw.a2a.methods import Method
from agentgw.errors import UpstreamError, UpstreamInvalidResponse, UpstreamTimeout
from agentgw.exchange import Attempt, Exchange
from agentgw.identity import Credentials
from agentgw.registry import Agent as AgentConfig
from agentgw.sse import SSEDecoder, SSEError
from agentgw.upstream import BASE_HEADERS, UpstreamPool

CARD_PATH = "/.well-known/agent-card.json"
# Idempotent reads are retried once when the connection fails before an answer; nothing else is (a send may have
# reached the agent).
_RETRIED = frozenset(
    {"GetTask", "ListTasks", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs"}
)
# Headers a caller sets that the agent needs to see (A2A service parameters); nothing else of the caller's goes.
PASSED = ("a2a-extensions",)


class AgentUnavailable(UpstreamError):
    status, code = 503, "agent_unavailable"


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how the gateway talks to an agent: the interface it chose from the agent's card."""

    binding: str  # JSONRPC | HTTP+JSON
    url: str
    version: str  # 1.0 | 0.3


def interfaces(card: dict[str, Any]) -> list[dict[str, Any]]:
    """A card's interfaces in preference order, in 1.0 shape whether the card is 1.0 or 0.3 (`url`,
    `preferredTransport`, `additionalInterfaces`)."""
    found = card.get("supportedInterfaces")
    if isinstance(found, list) and found:
        return [i for i in found if isinstance(i, dict)]
    out: list[dict[str, Any]] = []
    version = str(card.get("protocolVersion") or "0.3")
    if isinstance(card.get("url"), str):
        out.append(
            {
                "url": card["url"],
                "protocolBinding": card.get("preferredTransport") or "JSONRPC",
                "protocolVersion": version,
            }
        )
    for extra in card.get("additionalInterfaces") or []:
        if isinstance(extra, dict) and isinstance(extra.get("url"), str):
            out.append(
                {"url": extra["url"], "protocolBinding": extra.get("transport"), "protocolVersion": version}
            )
    return out


def _major_minor(version: object) -> str:
    parts = str(version or "0.3").split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else f"{parts[0]}.0"


def choose(card: dict[str, Any], base: str) -> Route:
    """The interface to use: JSON-RPC 1.0, else HTTP+JSON 1.0, else JSON-RPC 0.3, else HTTP+JSON 0.3. Its URL keeps
    the registry's origin (scheme, host, port): a card cannot send the gateway to another host."""
    found = interfaces(card)
    ranked = [("JSONRPC", "1.0"), ("HTTP+JSON", "1.0"), ("JSONRPC", "0.3"), ("HTTP+JSON", "0.3")]
    for binding, version in ranked:
        for i in found:
            if i.get("protocolBinding") == binding and _major_minor(i.get("protocolVersion")) == version:
                return Route(binding, same_origin(str(i.get("url") or ""), base), version)
    raise AgentUnavailable("The agent's card names no JSON-RPC or HTTP+JSON interface the gateway can use.")


def same_origin(url: str, base: str) -> str:
    b, u = urlsplit(base), urlsplit(url)
    path = u.path if u.scheme else (b.path.rstrip("/") + "/" + url.lstrip("/") if url else b.path)
    return urlunsplit((b.scheme, b.netloc, path.rstrip("/") or "/", u.query, ""))


class AgentUpstream:
    def __init__(
        self,
        cfg: AgentConfig,
        pool: UpstreamPool,
        cards: CardCache,
        credentials: Credentials | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.pool = pool
        self.credentials = credentials
        self.base = str(cfg.url).rstrip("/")
        self.card_url = self.base + CARD_PATH
        self.headers = {**BASE_HEADERS, **cfg.headers}
        self.secrets = [v for v in cfg.headers.values() if v]
        self.cards = cards

    # -- the card -----------------------------------------------------------------------------------------------

    async def card(self) -> dict[str, Any]:
        """The agent's own card as it serves it (cached as its HTTP caching headers allow)."""
        return (await self.cached()).card

    async def cached(self) -> CachedCard:
        try:
            return await self.cards.get(self.name, self.card_url, self.headers)
        except CardUnavailable as exc:
            raise AgentUnavailable(f"The agent {self.name} is unavailable: {exc}") from None

    async def route(self) -> Route:
        return choose(await self.card(), self.base)

    # -- calls --------------------------------------------------------------------------------------------------

    async def _headers(self, ex: Exchange, route: Route, attempt: Attempt, stream: bool) -> dict[str, str]:
        headers = dict(self.headers)
        # 0.3 predates application/a2a+json: its HTTP+JSON binding takes application/json
        rest_type = "application/a2a+json" if route.version == "1.0" else "application/json"
        headers["Content-Type"] = "application/json" if route.binding == "JSONRPC" else rest_type
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        if route.version == "1.0":
            headers["A2A-Version"] = "1.0"
        for name in PASSED:
            if name in ex.headers:
                headers[name] = ex.headers[name]
        task = ex.outbound_task
        if task is not None:
            headers["x-agentgw-task"] = task
        if ex.task is not None:
            headers["traceparent"] = f"00-{ex.task.trace_id}-{attempt.span_id}-01"
        if self.credentials is not None:  # who the caller is, as the gateway vouches for it (never its token)
            headers.update(await self.credentials.headers(ex.principal, task))
        return headers

    async def _open(
        self, ex: Exchange, route: Route, verb: str, url: str, body: bytes | None, method: Method
    ) -> tuple[aiohttp.ClientResponse, Attempt]:
        tries = 2 if method.name in _RETRIED else 1
        for n in range(1, tries + 1):
            attempt = Attempt(len(ex.attempts) + 1, f"a2a:{self.name}", "pending")
            ex.attempts.append(attempt)
            headers = await self._headers(ex, route, attempt, method.streams)
            timeout = (
                aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=None)
                if method.streams
                else aiohttp.ClientTimeout(total=self.cfg.timeout_s, connect=5.0)
            )
            try:
                resp = await self.pool.session.request(verb, url, data=body, headers=headers, timeout=timeout)
            except TimeoutError:
                self._done(attempt, "timeout", None, "timed out")
                raise UpstreamTimeout(f"The agent {self.name} timed out.") from None
            except aiohttp.ClientError as exc:
                self._done(attempt, "error", None, type(exc).__name__)
                if n < tries:
                    continue
                raise AgentUnavailable(
                    f"The agent {self.name} could not be reached ({type(exc).__name__})."
                ) from None
            attempt.status = resp.status
            return resp, attempt
        raise AgentUnavailable(
            f"The agent {self.name} could not be reached."
        )  # pragma: no cover - loop returns

    @staticmethod
    def _done(attempt: Attempt, outcome: str, status: int | None, error: str | None = None) -> None:
        attempt.outcome, attempt.status, attempt.error = outcome, status, error
        attempt.latency_ms = (time.perf_counter() - attempt.started_mono) * 1000.0

    def _request(
        self, route: Route, method: Method, params: dict[str, Any], rpc_id: Any
    ) -> tuple[str, str, bytes | None]:
        """The verb, URL and body of `method` for the agent's binding and version (1.0 params in)."""
        if route.version == "0.3":
            from agentgw.a2a.bridges import v03, v03_rest

            if method.v03 is None:
                raise A2AError(-32004, f"The agent speaks A2A 0.3, which has no {method.name}.")
            if route.binding != "JSONRPC":  # 0.3 REST: its own paths and 0.3 protobuf JSON bodies
                return _bridged(v03_rest.request, route.url, method, params)  # type: ignore[no-any-return]
            params = _bridged(v03.params_to_v03, method.name, params)
            name = method.v03
        else:
            name = method.name
        if route.binding == "JSONRPC":
            # a request read from HTTP+JSON has no id; a 0.3 agent (a2a-sdk's 0.3 adapter) refuses a null one
            rid = rpc_id if rpc_id is not None else "agentgw"
            body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": name, "params": params})
            return "POST", route.url, body
        return rest_request(route.url, method, params)

    async def unary(
        self, ex: Exchange, route: Route, method: Method, params: dict[str, Any], rpc_id: Any
    ) -> Any:
        """The agent's answer to `method` (1.0 JSON), or the A2AError it answered with."""
        verb, url, body = self._request(route, method, params, rpc_id)
        resp, attempt = await self._open(ex, route, verb, url, body, method)
        try:
            raw = await resp.read()
        except TimeoutError:
            self._done(attempt, "timeout", resp.status, "timed out")
            raise UpstreamTimeout(f"The agent {self.name} timed out.") from None
        except aiohttp.ClientError as exc:
            self._done(attempt, "error", resp.status, type(exc).__name__)
            raise AgentUnavailable(f"The agent {self.name} broke off its answer.") from None
        finally:
            resp.release()
        result = self._answer(route, resp.status, raw, attempt)
        return self._from_v03(route, method, result)

    def _answer(self, route: Route, status: int, raw: bytes, attempt: Attempt) -> Any:
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            doc = None
        if route.binding == "JSONRPC":
            if status in (401, 403):
                self._done(attempt, "rejected", status, "credentials refused")
                raise UpstreamError(
                    f"The agent {self.name} refused the gateway's credentials (HTTP {status})."
                )
            if route.version == "0.3" and isinstance(doc, dict) and doc.keys() == {"jsonrpc", "id"}:
                # the a2a-sdk's 0.3 adapter drops a null result (a push config's delete): `{"jsonrpc", "id"}`
                doc = {**doc, "result": None}
            if not isinstance(doc, dict) or ("result" not in doc and "error" not in doc):
                self._done(attempt, "error", status, "invalid response")
                raise UpstreamInvalidResponse(
                    f"The agent {self.name} answered something that is not JSON-RPC."
                )
            self._done(attempt, "ok", status)
            if "error" in doc:
                raise self._rpc_error(route, doc["error"])
            return doc["result"]
        if status >= 400:
            self._done(attempt, "ok" if status < 500 else "error", status)
            if status in (401, 403):
                raise UpstreamError(
                    f"The agent {self.name} refused the gateway's credentials (HTTP {status})."
                )
            if route.version == "0.3":
                from agentgw.a2a.bridges import v03_rest

                if (found := v03_rest.error_code(doc)) is not None:
                    raise A2AError(*found)
            raise from_rest(status, doc)
        self._done(attempt, "ok", status)
        return doc if doc is not None else {}

    @staticmethod
    def _rpc_error(route: Route, error: Any) -> A2AError:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return A2AError(-32603, "The agent answered with a malformed error.")
        if route.version == "0.3":
            from agentgw.a2a.bridges import v03

            error = v03.error_to_v10(error)
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        return A2AError(int(error["code"]), message, error.get("data"))

    @staticmethod
    def _from_v03(route: Route, method: Method, result: Any) -> Any:
        if route.version != "0.3":
            return result
        from agentgw.a2a.bridges import v03, v03_rest

        if route.binding != "JSONRPC":
            return _bridged(v03_rest.result_to_v10, method.name, result)
        return _bridged(v03.result_to_v10, method.name, result)

    async def stream(
        self, ex: Exchange, route: Route, method: Method, params: dict[str, Any], rpc_id: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Open the agent's stream; raises before the first event if it refused (so the caller gets a plain
        error, not a broken stream). Returns the events (1.0 StreamResponse JSON), one at a time, as they come."""
        verb, url, body = self._request(route, method, params, rpc_id)
        resp, attempt = await self._open(ex, route, verb, url, body, method)
        ctype = resp.headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                resp.release()
            self._answer(route, resp.status, raw, attempt)  # raises the agent's error
            self._done(attempt, "error", resp.status, "no stream")
            raise UpstreamInvalidResponse(f"The agent {self.name} did not answer with a stream.")
        if resp.status != 200:
            resp.close()
            self._done(attempt, "error", resp.status)
            raise UpstreamError(f"The agent {self.name} answered HTTP {resp.status}.")
        self._done(attempt, "ok", resp.status)
        return self._events(resp, route, attempt)

    async def _events(
        self, resp: aiohttp.ClientResponse, route: Route, attempt: Attempt
    ) -> AsyncIterator[dict[str, Any]]:
        decoder = SSEDecoder(max_event_bytes=16 * 1024 * 1024)
        complete = False
        translate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        if route.version == "0.3":
            translate = _v03_event if route.binding == "JSONRPC" else _v03_rest_event
        try:
            async for chunk in resp.content.iter_any():
                for event in decoder.feed(chunk):
                    if not event.data:
                        continue
                    try:
                        doc = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise UpstreamInvalidResponse(
                            f"The agent {self.name} sent an event that is not JSON."
                        ) from None
                    if route.binding == "JSONRPC":
                        if not isinstance(doc, dict):
                            raise UpstreamInvalidResponse(f"The agent {self.name} sent a malformed event.")
                        if "error" in doc:
                            raise self._rpc_error(route, doc["error"])
                        doc = doc.get("result")
                    elif event.event == b"error":
                        raise from_rest(500, doc)
                    if not isinstance(doc, dict):
                        raise UpstreamInvalidResponse(f"The agent {self.name} sent a malformed event.")
                    yield translate(doc) if translate is not None else doc
            complete = True
        except SSEError:
            raise UpstreamInvalidResponse(f"The agent {self.name} sent an oversized event.") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            attempt.error = type(exc).__name__
            raise AgentUnavailable(f"The agent {self.name} broke off its stream.") from None
        finally:
            if complete:
                resp.release()
            else:
                resp.close()


def _bridged(fn: Callable[..., Any], *args: Any) -> Any:
    """A 0.3 bridge translation, its BridgeError as the A2AError it stands for (-32602 for params the agent's
    0.3 cannot carry, -32006 for an agent's answer that is not valid 0.3): a clean protocol error, never a 500."""
    from agentgw.a2a.bridges import v03

    try:
        return fn(*args)
    except v03.BridgeError as exc:
        raise A2AError(exc.code, exc.message) from None


def _v03_rest_event(doc: dict[str, Any]) -> dict[str, Any]:
    from agentgw.a2a.bridges import v03_rest

    return _bridged(v03_rest.event_to_v10, doc)  # type: ignore[no-any-return]


def _v03_event(doc: dict[str, Any]) -> dict[str, Any]:
    from agentgw.a2a.bridges import v03

    return _bridged(v03.event_to_v10, doc)  # type: ignore[no-any-return]


def rest_request(base: str, method: Method, params: dict[str, Any]) -> tuple[str, str, bytes | None]:
    """`method` as an A2A 1.0 HTTP+JSON request: verb, URL (path and query from the params) and body (0.3's is
    `bridges.v03_rest.request`)."""
    params = dict(params)
    params.pop("tenant", None)
    task_id = params.pop(method.task_param, None) if method.task_param else None
    push_id = None
    if method.task_param == "taskId" and method.name != "CreateTaskPushNotificationConfig":
        push_id = params.pop("id", None)
    path = method.path.replace("{id}", str(task_id or "")).replace("{pid}", str(push_id or ""))
    url = base.rstrip("/") + path
    if method.verb in ("GET", "DELETE"):
        query = {
            k: (
                orjson.dumps(v).decode()
                if isinstance(v, dict | list)
                else str(v).lower()
                if isinstance(v, bool)
                else str(v)
            )
            for k, v in params.items()
        }
        return method.verb, url + ("?" + urlencode(query) if query else ""), None
    if method.name in ("CancelTask", "SubscribeToTask") and not params:
        return method.verb, url, b"{}"
    return method.verb, url, orjson.dumps(params)
