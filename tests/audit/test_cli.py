"""The audit CLI commands read the audit store with the audit settings alone: an auditor needs no provider or
upstream secrets in the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import yaml

from tests.audit.support import audit_settings, running_writer, write

AGENTGW = str(Path(sys.executable).parent / "agentgw")


def _config_with_provider_secrets(tmp: Path, audit: dict[str, object]) -> Path:
    (tmp / "registry.yaml").write_text(
        yaml.safe_dump(
            {
                "llm": {
                    "providers": [
                        {
                            "name": "up",
                            "kind": "openai",
                            "base_url": "http://127.0.0.1:9/v1",
                            "api_key": "${SOME_PROVIDER_KEY}",
                        }
                    ]
                },
                "mcp": {
                    "servers": [
                        {
                            "name": "docs",
                            "transport": "streamable-http",
                            "url": "http://127.0.0.1:9/mcp",
                            "headers": {"Authorization": "Bearer ${SOME_UPSTREAM_TOKEN}"},
                        }
                    ]
                },
            }
        )
    )
    path = tmp / "agentgw.yaml"
    path.write_text(
        yaml.safe_dump({"registry": ["registry.yaml"], "secret": "${SOME_GATEWAY_SECRET}", "audit": audit})
    )
    return path


async def test_audit_verify_and_trace_list_need_no_provider_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOME_")}
    async with audit_settings("sqlite") as audit:
        async with running_writer(tmp_path, audit) as w:
            await write(w, 2, task="job-1")
        cfg = str(_config_with_provider_secrets(tmp_path, audit))
        verify = await anyio.run_process([AGENTGW, "audit", "verify", "--config", cfg], check=False, env=env)
        listing = await anyio.run_process([AGENTGW, "trace", "list", "--config", cfg], check=False, env=env)
        show = await anyio.run_process(
            [AGENTGW, "trace", "show", "job-1", "--config", cfg], check=False, env=env
        )
    assert verify.returncode == 0, verify.stderr.decode()
    assert verify.stdout.decode().startswith("OK: 2 records verified")
    assert listing.returncode == 0, listing.stderr.decode()
    assert "job-1" in listing.stdout.decode()
    assert show.returncode == 0, show.stderr.decode()


async def test_an_unset_variable_in_the_audit_section_itself_is_still_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOME_")}
    cfg = _config_with_provider_secrets(tmp_path, {"store": "sqlite", "hmac_key": "${SOME_AUDIT_KEY}"})
    got = await anyio.run_process([AGENTGW, "audit", "verify", "--config", str(cfg)], check=False, env=env)
    assert got.returncode == 3
    assert "SOME_AUDIT_KEY" in got.stderr.decode()
