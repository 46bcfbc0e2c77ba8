"""Tool pinning cost: fingerprint (canonical form + sha256) and injection scan of one tool definition, small and
large, and what one catalog rebuild of a 200-tool server adds (a rebuild happens when a listing is refetched or
the pins change, never per call; fingerprints and scans are remembered across rebuilds). Not a test: `python bench/pinning.py`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import per_call_us  # noqa: E402

from agentgw.mcp.catalog.pinning import Lock, Pins, fingerprint  # noqa: E402
from agentgw.mcp.catalog.scan import scan_tool  # noqa: E402
from agentgw.settings import ToolPinning  # noqa: E402

SMALL: dict[str, Any] = {
    "name": "search_docs",
    "description": "Search the docs for a query and return the best matches.",
    "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


def large(i: int = 0) -> dict[str, Any]:
    """A tool with a long description and a 30-property schema (about 6 KB of JSON)."""
    props = {
        f"field_{k}": {
            "type": "string",
            "description": f"Parameter {k} of the operation, in plain words. " * 3,
        }
        for k in range(30)
    }
    return {
        "name": f"tool_{i}",
        "title": f"Tool {i}",
        "description": "Does one thing well across many fields, documented at length. " * 20,
        "inputSchema": {"type": "object", "properties": props, "required": ["field_0"]},
        "outputSchema": {"type": "object", "properties": {"result": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--tools", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    big = large()
    tools = [large(i) for i in range(args.tools)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tools.lock.yaml"
        lock = Lock()
        for tool in tools:
            lock.pin("bench", tool)
        t = time.perf_counter()
        lock.save(path)
        save_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        Lock.load(path)
        load_ms = (time.perf_counter() - t) * 1000
        pins = Pins(ToolPinning(mode="enforce", scan="mark"), path)

        def rebuild() -> None:
            for tool in tools:
                pins.check("bench", tool, tool)

        t = time.perf_counter()
        pins.observe("bench", tools)  # a fresh listing: fingerprints and change detection
        rebuild()  # its first build: the scans
        first_ms = (time.perf_counter() - t) * 1000

        result = {
            "fingerprint_small_us": round(per_call_us(lambda: fingerprint(SMALL), args.n, rounds=1), 1),
            "fingerprint_large_us": round(per_call_us(lambda: fingerprint(big), args.n, rounds=1), 1),
            "scan_small_us": round(per_call_us(lambda: scan_tool(SMALL), args.n, rounds=1), 1),
            "scan_large_us": round(per_call_us(lambda: scan_tool(big), args.n, rounds=1), 1),
            "check_large_us": round(per_call_us(lambda: pins.check("bench", big, big), args.n, rounds=1), 1),
            f"first_listing_{args.tools}_large_tools_ms": round(first_ms, 1),
            f"rebuild_{args.tools}_large_tools_ms": round(per_call_us(rebuild, 20, rounds=1) / 1000, 2),
            f"lock_save_{args.tools}_ms": round(save_ms, 1),
            f"lock_load_{args.tools}_ms": round(load_ms, 1),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
