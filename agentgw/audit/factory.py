"""Which audit store the config names, made (not yet opened): SQLite beside the config by default, or PostgreSQL
(imported only by deployments that use it, as it brings asyncpg)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentgw.audit.config import Audit
from agentgw.audit.sqlite import SQLiteStore
from agentgw.audit.store import AuditStore


def open_store(cfg: Audit, resolve: Callable[[str], Any]) -> AuditStore:
    """The configured store (not yet opened). `resolve` makes a config-relative path absolute."""
    if cfg.store == "postgres":
        from agentgw.audit.postgres import PostgresStore

        return PostgresStore(cfg.postgres)
    return SQLiteStore(resolve(cfg.sqlite.path), cfg.sqlite.busy_timeout_s)
