"""agentgw.yaml, the registry files and the keys file: every problem is reported as `file: key.path: what`, all
of them in one run; `${VAR}` / `${VAR:-default}` interpolation; defaults."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from agentgw.configfile import ConfigError, Problem, interpolate
from agentgw.registry import Registry
from agentgw.settings import Settings, load_settings
from tests.support import sha

REGISTRY = """\
llm:
  providers:
    - {name: mock, kind: mock}
  models:
    - {name: fast, targets: [{provider: mock, model: m1}]}
"""
CONFIG = "registry: [registry/*.yaml]\n"


def write(tmp: Path, files: dict[str, str]) -> Path:
    """Write the base config and registry, overridden or extended by `files` (relative path → text)."""
    for rel, text in {"agentgw.yaml": CONFIG, "registry/main.yaml": REGISTRY, **files}.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp / "agentgw.yaml"


def problems_of(tmp: Path, files: dict[str, str], host: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp, files), host=host)
    return [str(p) for p in err.value.problems]


BROKEN = [
    pytest.param(
        {"agentgw.yaml": "listen: {host: 127.0.0.1, prot: 8080}\n"},
        ["{d}/agentgw.yaml: listen.prot: unknown key"],
        id="unknown key",
    ),
    pytest.param(
        {"agentgw.yaml": "listen: {port: eighty}\n"},
        [
            "{d}/agentgw.yaml: listen.port: Input should be a valid integer, unable to parse string as an integer"
        ],
        id="wrong type",
    ),
    pytest.param(
        {"agentgw.yaml": "llm: {tool_policy: strict, tools: {search_web: 'mcp:web/*'}}\n"},
        [
            "{d}/agentgw.yaml: llm.tool_policy: Input should be 'off', 'filter' or 'refuse'",
            "{d}/agentgw.yaml: llm.tools: 'search_web': the object must be one policy object "
            "such as 'mcp:web/search'",
        ],
        id="llm tool settings",
    ),
    pytest.param(
        {"agentgw.yaml": "server: {graceful_shutdown_s: -1}\n"},
        ["{d}/agentgw.yaml: server.graceful_shutdown_s: Input should be greater than or equal to 0"],
        id="out of range",
    ),
    pytest.param(
        {
            "registry/openai.yaml": "llm:\n  providers:\n"
            "    - {name: openai, kind: openai, base_url: 'https://api.openai.com/v1',"
            " api_key: '${AGW_TEST_UNSET_KEY}'}\n",
        },
        [
            "{d}/registry/openai.yaml: llm.providers[0].api_key: environment variable AGW_TEST_UNSET_KEY is not set"
        ],
        id="missing env var names the variable",
    ),
    pytest.param(
        {"agentgw.yaml": "listen: {port: '${AGW_TEST_UNSET_PORT}'}\n"},
        ["{d}/agentgw.yaml: listen.port: environment variable AGW_TEST_UNSET_PORT is not set"],
        id="missing env var is one problem, not also a type error",
    ),
    pytest.param(
        {"registry/other.yaml": "llm:\n  providers:\n    - {name: mock, kind: mock}\n"},
        ["{d}/registry/other.yaml: llm.providers[0].name: 'mock' is also defined in {d}/registry/main.yaml"],
        id="duplicate name across two registry files names both files",
    ),
    pytest.param(
        {"registry/main.yaml": REGISTRY + "    - {name: fast, targets: [{provider: mock, model: m2}]}\n"},
        ["{d}/registry/main.yaml: llm.models[1].name: 'fast' is also defined at llm.models[0].name"],
        id="duplicate name in one file",
    ),
    pytest.param(
        {
            "registry/main.yaml": REGISTRY
            + "    - {name: smart, targets: [{provider: mock, model: m1}, {provider: nope, model: x}]}\n"
        },
        ["{d}/registry/main.yaml: llm.models[1].targets[1].provider: unknown provider 'nope'"],
        id="model target naming an unknown provider",
    ),
    pytest.param(
        {"agentgw.yaml": "listen:\n  host: [127.0.0.1\n  port: 8080\n"},
        ["{d}/agentgw.yaml: line 3: invalid YAML: expected ',' or ']', but got ':'"],
        id="invalid YAML with a line number",
    ),
    pytest.param(
        {"registry/main.yaml": "llm:\n  providers:\n  - {name: a, kind: mock\n"},
        ["{d}/registry/main.yaml: line 4: invalid YAML: expected ',' or '}', but got '<stream end>'"],
        id="invalid YAML in a registry file",
    ),
    pytest.param(
        {"agentgw.yaml": "listen: {port: 1}\nserver: {}\nlisten: {host: 0.0.0.0}\n"},
        ["{d}/agentgw.yaml: line 3: invalid YAML: duplicate key 'listen'"],
        id="a key given twice",
    ),
    pytest.param(
        {"agentgw.yaml": "registry: [registry/*.yaml, extra/*.yml]\n"},
        ["{d}/agentgw.yaml: registry[1]: no file matches 'extra/*.yml'"],
        id="registry glob matching nothing",
    ),
    pytest.param(
        {"registry/mcp.yaml": "mcp:\n  servers:\n    - {name: time, transport: stdio}\n"},
        ["{d}/registry/mcp.yaml: mcp.servers[0]: transport stdio needs command"],
        id="stdio MCP server without command",
    ),
    pytest.param(
        {"registry/mcp.yaml": "mcp:\n  servers:\n    - {name: docs, transport: streamable-http}\n"},
        ["{d}/registry/mcp.yaml: mcp.servers[0]: transport streamable-http needs url"],
        id="http MCP server without url",
    ),
    pytest.param(
        {
            "registry/azure.yaml": "llm:\n  providers:\n"
            "    - {name: az, kind: azure, base_url: 'https://x.openai.azure.com', api_key: k}\n"
        },
        ["{d}/registry/azure.yaml: llm.providers[0]: provider kind 'azure' needs api_version"],
        id="azure without api_version",
    ),
    pytest.param(
        {"registry/other.yaml": "llm:\n  providers:\n    - {name: x, kind: openia}\n"},
        [
            "{d}/registry/other.yaml: llm.providers[0].kind: Input should be 'openai', 'azure', 'anthropic', 'gemini', 'bedrock' or 'mock'"
        ],
        id="unknown provider kind",
    ),
    pytest.param(
        {
            "registry/other.yaml": "a2a:\n  agents:\n    - {name: planner, url: 'http://127.0.0.1:9/', comand: [x]}\n"
        },
        ["{d}/registry/other.yaml: a2a.agents[0].comand: unknown key"],
        id="unknown key in a registry entry",
    ),
    pytest.param(
        {"registry/other.yaml": "a2a:\n  agents:\n    - {name: planner, url: '127.0.0.1:9002'}\n"},
        ["{d}/registry/other.yaml: a2a.agents[0].url: must be an http:// or https:// URL with a host"],
        id="url without a scheme",
    ),
    pytest.param(
        {"registry/other.yaml": "llm:\n  providers:\n    - {name: x, kind: mock, command: []}\n"},
        [
            "{d}/registry/other.yaml: llm.providers[0].command: List should have at least 1 item after validation, not 0"
        ],
        id="empty command",
    ),
    pytest.param(
        {
            "agentgw.yaml": "listen: {host: 0.0.0.0}\nauth:\n  api_keys:\n"
            f"    - {{subject: demo, sha256: {sha('k')}, loopback_only: true}}\n"
        },
        [
            "{d}/agentgw.yaml: auth.api_keys[0].loopback_only: "
            "a loopback-only key cannot be used while listening on '0.0.0.0'"
        ],
        id="loopback_only key while listening on 0.0.0.0",
    ),
    pytest.param(
        {"keys.yaml": f"- {{subject: bob, sha256: {sha('k')}, loopback_only: true}}\n- {{subject: eve}}\n"},
        ["{d}/keys.yaml: [1].sha256: Field required"],
        id="broken entry in the keys file",
    ),
    pytest.param(
        {
            "agentgw.yaml": f"auth:\n  api_keys:\n    - {{subject: a, sha256: {sha('k')}}}\n",
            "keys.yaml": f"- {{subject: b, sha256: {sha('k')}}}\n",
        },
        ["{d}/keys.yaml: [0].sha256: the same key is also configured for subject 'a' in {d}/agentgw.yaml"],
        id="the same key twice",
    ),
    pytest.param(
        {"agentgw.yaml": "policies: {model: policies/model.conf, policy: policies/policy.csv}\n"},
        [
            "{d}/agentgw.yaml: policies.model: file not found: {d}/policies/model.conf",
            "{d}/agentgw.yaml: policies.policy: file not found: {d}/policies/policy.csv",
        ],
        id="policy files missing",
    ),
    pytest.param(
        {"agentgw.yaml": "- listen\n- registry\n"},
        ["{d}/agentgw.yaml: expected a mapping at the top level"],
        id="config is not a mapping",
    ),
    pytest.param(
        {"registry/main.yaml": "- llm\n"},
        ["{d}/registry/main.yaml: expected a mapping with llm, mcp and a2a sections"],
        id="registry file is not a mapping",
    ),
]


@pytest.mark.parametrize(("files", "expected"), BROKEN)
def test_a_broken_config_is_reported_as_file_key_path_and_what_is_wrong(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    d = tmp_path.resolve()
    assert problems_of(tmp_path, files) == [line.replace("{d}", str(d)) for line in expected]


def test_every_problem_is_reported_at_once_across_config_registry_and_keys(tmp_path: Path) -> None:
    d = tmp_path.resolve()
    lines = problems_of(
        tmp_path,
        {
            "agentgw.yaml": "listen: {host: 0.0.0.0}\nserver: {wokers: 2}\nlimits: {max_body_bytes: 1}\n"
            f"auth:\n  api_keys: [{{subject: demo, sha256: {sha('k')}, loopback_only: true}}]\n"
            "registry: [registry/*.yaml]\n",
            "registry/main.yaml": REGISTRY + "    - {name: b, targets: [{provider: ghost, model: x}]}\n",
            "registry/more.yaml": "llm:\n  providers:\n    - {name: mock, kind: mock}\n"
            "    - {name: o, kind: openai, base_url: 'https://x/v1', api_key: '${AGW_TEST_UNSET_KEY}'}\n",
            "keys.yaml": "- {subject: x}\n",
        },
    )
    assert lines == [
        f"{d}/agentgw.yaml: limits.max_body_bytes: Input should be greater than or equal to 1024",
        f"{d}/agentgw.yaml: server.wokers: unknown key",
        f"{d}/registry/more.yaml: llm.providers[1].api_key: environment variable AGW_TEST_UNSET_KEY is not set",
        f"{d}/registry/more.yaml: llm.providers[0].name: 'mock' is also defined in {d}/registry/main.yaml",
        f"{d}/registry/main.yaml: llm.models[1].targets[0].provider: unknown provider 'ghost'",
        f"{d}/keys.yaml: [0].sha256: Field required",
        f"{d}/agentgw.yaml: auth.api_keys[0].loopback_only: "
        "a loopback-only key cannot be used while listening on '0.0.0.0'",
    ]


def test_a_provider_defined_in_a_broken_registry_file_is_not_also_reported_as_unknown(tmp_path: Path) -> None:
    d = tmp_path.resolve()
    lines = problems_of(
        tmp_path,
        {
            "registry/main.yaml": "llm:\n  models:\n    - {name: m, targets: [{provider: az, model: x}]}\n",
            "registry/azure.yaml": "llm:\n  providers:\n    - {name: az, kind: azure, base_url: 'https://x'}\n",
        },
    )
    assert lines == [f"{d}/registry/azure.yaml: llm.providers[0]: provider kind 'azure' needs api_version"]


def test_the_serve_host_override_is_what_loopback_only_keys_are_checked_against(tmp_path: Path) -> None:
    files = {"keys.yaml": f"- {{subject: demo, sha256: {sha('k')}, loopback_only: true}}\n"}
    assert load_settings(write(tmp_path, files)).listen.host == "127.0.0.1"
    assert problems_of(tmp_path, files, host="192.0.2.1") == [
        f"{tmp_path.resolve()}/keys.yaml: [0].loopback_only: "
        "a loopback-only key cannot be used while listening on '192.0.2.1'"
    ]


def test_a_missing_config_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "nope.yaml")
    assert err.value.problems == [Problem(str(tmp_path.resolve() / "nope.yaml"), "", "file not found")]


INTERPOLATION = [
    ("${AGW_T_SET}", "value"),
    ("http://${AGW_T_SET}:8080/v1", "http://value:8080/v1"),
    ("${AGW_T_SET:-fallback}", "value"),
    ("${AGW_T_UNSET:-fallback}", "fallback"),
    ("${AGW_T_UNSET:-}", ""),
    ("${AGW_T_EMPTY:-fallback}", "fallback"),
    ("${AGW_T_EMPTY}", ""),
    ("$${AGW_T_SET}", "${AGW_T_SET}"),
    ("costs $5", "costs $5"),
    ("Bearer ${AGW_T_SET}${AGW_T_SET}", "Bearer valuevalue"),
]


@pytest.mark.parametrize(("text", "expected"), INTERPOLATION)
def test_env_references_are_replaced_and_defaults_apply_when_unset_or_empty(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.setenv("AGW_T_SET", "value")
    monkeypatch.setenv("AGW_T_EMPTY", "")
    monkeypatch.delenv("AGW_T_UNSET", raising=False)
    problems: list[Problem] = []
    assert interpolate({"k": [text]}, "f", problems) == {"k": [expected]}
    assert problems == []


def test_interpolated_values_are_validated_after_substitution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGW_T_KEY", "sk-secret")
    monkeypatch.delenv("AGW_T_UNSET_PORT", raising=False)
    settings = load_settings(
        write(
            tmp_path,
            {
                "agentgw.yaml": "listen: {port: '${AGW_T_UNSET_PORT:-9090}'}\nregistry: [registry/*.yaml]\n",
                "registry/openai.yaml": "llm:\n  providers:\n    - {name: openai, kind: openai,"
                " base_url: 'https://api.openai.com/v1', api_key: '${AGW_T_KEY}'}\n",
            },
        )
    )
    assert settings.listen.port == 9090
    provider = settings.registry_data.provider("openai")
    assert provider is not None and provider.api_key == "sk-secret"


def test_an_empty_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"agentgw.yaml": ""}))
    assert (settings.listen.host, settings.listen.port) == ("127.0.0.1", 8080)
    assert settings.registry == ["registry/*.yaml"]
    assert settings.keys_path() == tmp_path.resolve() / "keys.yaml"
    assert settings.server.graceful_shutdown_s == 30.0
    assert [m.name for m in settings.registry_data.llm.models] == ["fast"]


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {}))
    with pytest.raises(ValidationError):
        settings.listen.port = 1  # type: ignore[misc]


def test_registry_files_merge_and_keys_from_the_keys_file_count(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            {
                "registry/agents.yaml": "a2a:\n  agents:\n    - {name: planner, url: 'http://127.0.0.1:9/'}\n",
                "keys.yaml": f"- {{subject: bob, roles: [ops], sha256: {sha('k')}, created: '2025-01-01T00:00:00Z'}}\n",
            },
        )
    )
    reg = settings.registry_data
    assert [a.name for a in reg.a2a.agents] == ["planner"]
    assert [p.name for p in reg.llm.providers] == ["mock"]
    assert [(k.subject, k.roles) for k in settings.all_keys] == [("bob", ["ops"])]


def nested(annotation: object) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models inside a field's type, with `[]` for list items (`X | None`, `list[X]`, `X`)."""
    if typing.get_origin(annotation) is list:
        for _, model in nested(typing.get_args(annotation)[0]):
            yield "[]", model
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from nested(arg)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation


def key_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key of a settings model as documented: `a.b`, list items as `a[].b`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for brackets, inner in nested(field.annotation):
            yield from key_paths(inner, f"{path}{brackets}.")


@pytest.mark.parametrize("model", [Settings, Registry], ids=["agentgw.yaml", "registry"])
def test_every_key_is_documented_in_docs_configuration(model: type[BaseModel]) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    assert [p for p in key_paths(model) if f"| `{p}` |" not in doc] == []


def test_numbers_are_accepted_where_the_registry_expects_strings(tmp_path: Path) -> None:
    registry = (
        "a2a:\n  agents:\n    - {name: a, url: 'http://127.0.0.1:9/', command: [x, 1], env: {PORT: 9001}}\n"
    )
    [agent] = load_settings(write(tmp_path, {"registry/main.yaml": registry})).registry_data.a2a.agents
    assert (agent.command, agent.env) == (["x", "1"], {"PORT": "9001"})


def test_yaml_anchors_and_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    registry = (
        "llm:\n  providers:\n    - &base {name: a, kind: mock, timeout_s: 5}\n"
        "    - {<<: *base, name: b, timeout_s: 7}\n"
    )
    settings = load_settings(write(tmp_path, {"registry/main.yaml": registry + REGISTRY.split("\n", 2)[2]}))
    assert [(p.name, p.timeout_s) for p in settings.registry_data.llm.providers] == [
        ("a", 5),
        ("b", 7),
        ("mock", 60),
    ]


def test_several_workers_with_mcp_servers_need_a_shared_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTGW_SECRET", raising=False)
    files = {
        "agentgw.yaml": "server: {workers: 2}\n",
        "registry/mcp.yaml": "mcp: {servers: [{name: docs, url: 'http://127.0.0.1:9/mcp'}]}\n",
    }
    assert any("2 workers need a shared secret" in p for p in problems_of(tmp_path, files))
    monkeypatch.setenv("AGENTGW_SECRET", "x" * 32)
    assert load_settings(write(tmp_path, files)).server.workers == 2


def test_a_short_gateway_secret_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGW_SECRET", "too-short-secret")
    found = problems_of(tmp_path, {"agentgw.yaml": "secret: short-secret-value\n"})
    assert any(p.startswith(f"{tmp_path / 'agentgw.yaml'}: secret:") for p in found)
    assert not any("short-secret-value" in p for p in found)
    found = problems_of(tmp_path, {"agentgw.yaml": "{}\n"})
    assert found == ["AGENTGW_SECRET: the gateway secret must be at least 32 bytes"]


def test_several_workers_cannot_share_approval_requests_kept_in_memory(tmp_path: Path) -> None:
    files = {"agentgw.yaml": "server: {workers: 2}\napprovals: {store: memory}\n", "registry/x.yaml": "{}\n"}
    assert any("approvals.store: audit, or one worker" in p for p in problems_of(tmp_path, files))
    files["agentgw.yaml"] = "server: {workers: 2}\napprovals: {store: audit, timeout_s: 60}\n"
    assert load_settings(write(tmp_path, files)).approvals.timeout_s == 60
    files["agentgw.yaml"] = "approvals: {timeout_s: 0, surprise: 1}\n"
    found = problems_of(tmp_path, files)
    assert any("approvals.timeout_s" in p for p in found) and any("approvals.surprise" in p for p in found)


def test_a_tool_pinning_lock_beside_the_registry_is_not_read_as_a_registry_file(tmp_path: Path) -> None:
    registry = "mcp:\n  servers:\n    - {name: docs, url: 'http://127.0.0.1:9/mcp'}\n"
    lock = "version: 1\nservers: {docs: {}}\n"  # not a registry file: it would fail validation
    settings = load_settings(
        write(
            tmp_path,
            {
                "agentgw.yaml": "tool_pinning: {mode: enforce}\n",
                "registry/mcp.yaml": registry,
                "registry/tools.lock.yaml": lock,
            },
        )
    )
    assert [s.name for s in settings.registry_data.mcp.servers] == ["docs"]
    assert (settings.tool_pinning.mode, settings.tool_pinning.lock_file) == (
        "enforce",
        "registry/tools.lock.yaml",
    )
