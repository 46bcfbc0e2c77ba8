"""A small stdio MCP server the gateway launches in tests (run with sys.executable). `crash` exits the process,
so the gateway's restart is observable; `pid` tells which process answered."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

mcp = MCPServer(name="local", version="1.0")


@mcp.tool(description="The current time zone (from the environment the gateway gave us)")
def zone() -> str:
    return os.environ.get("TZ", "unset")


@mcp.tool(description="This process's id")
def pid() -> int:
    return os.getpid()


@mcp.tool(description="A number larger than 64 bits (JSON allows it; not every serialiser does)")
def big() -> int:
    return 2**70


@mcp.tool(description="Exit the process at once")
def crash() -> str:
    os._exit(3)


if __name__ == "__main__":
    mcp.run("stdio")
