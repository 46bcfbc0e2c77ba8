from __future__ import annotations

import inspect
import os
from typing import Any

import pytest

# tests/cluster runs against `make cluster` (scripts/cluster.py test sets the URL), never in `make test`
collect_ignore = [] if os.environ.get("AGENTGW_CLUSTER_URL") else ["cluster"]
# tests/drills bring up their own clusters and kill parts of them (minutes): `make drills`, never in `make test`
collect_ignore += [] if os.environ.get("AGENTGW_DRILLS") else ["drills"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Every `async def` test (hypothesis-wrapped ones too) runs under anyio's asyncio backend."""
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
    if name.startswith("test") and inspect.iscoroutinefunction(inner):
        pytest.mark.anyio(obj)
