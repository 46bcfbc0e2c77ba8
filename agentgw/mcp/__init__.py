"""The MCP plane: `/mcp` and `/mcp/{virtual_server}` in both protocol eras, in front of the registry's MCP servers.

`MCPPlane` is imported on first use: it loads the `mcp` SDK (~30 MiB), which a gateway without MCP servers
never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentgw.mcp.naming import check_collisions, tool_costs, tool_tags

if TYPE_CHECKING:
    from agentgw.mcp.plane import MCPPlane

__all__ = ["MCPPlane", "check_collisions", "tool_costs", "tool_tags"]


def __getattr__(name: str) -> Any:
    if name == "MCPPlane":
        from agentgw.mcp.plane import MCPPlane

        return MCPPlane
    raise AttributeError(name)
