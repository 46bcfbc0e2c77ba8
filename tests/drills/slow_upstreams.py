"""Slow upstreams for the failure drills, so a replica can be killed while a call is in flight: an MCP server whose
`wait` tool reports progress every 0.2 s, and an A2A agent whose task stays working with a status update every
0.2 s (the quickstart's agent server, examples/agents/common.py).

    python slow_upstreams.py mcp PORT | a2a PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "agents"))


def mcp_app() -> object:
    server = MCPServer(name="slow", version="1.0.0")

    @server.tool(description="Waits `seconds`, reporting progress every 0.2 s.")
    async def wait(seconds: float, ctx: Context) -> str:
        steps = max(1, int(seconds / 0.2))
        for step in range(steps):
            await ctx.report_progress(step, steps)
            await asyncio.sleep(0.2)
        return f"waited {seconds} s"

    return server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")


def a2a_app(port: int) -> object:
    from a2a.types import AgentSkill
    from common import app  # type: ignore[import-not-found]

    async def answer(question: str, task: str | None, progress: object) -> str:
        steps = int(question) if question.isdigit() else 25
        for step in range(steps):
            await progress(f"step {step + 1} of {steps}")  # type: ignore[operator]
            await asyncio.sleep(0.2)
        return f"done after {steps} steps"

    skill = AgentSkill(id="wait", name="wait", description="Works for a while.", tags=["drill"])
    return app("slowpoke", "Works for 0.2 s per step.", skill, answer, port)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    target = mcp_app() if kind == "mcp" else a2a_app(port)
    uvicorn.run(target, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
