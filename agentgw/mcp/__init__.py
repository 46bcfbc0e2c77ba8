"""The MCP plane: `/mcp` and `/mcp/{virtual_server}` in both protocol eras, in front of the registry's MCP servers.

Folders by shape: `front/` (what MCP clients reach: endpoints, sessions, the direct path), `upstream/` (the MCP
servers behind and the wire to them), `catalog/` (names, merged listings, pinned tool definitions), `bridges/`
(calls across input rounds and eras, under sealed state). At the top: the plane (plane.py), its errors and their
JSON-RPC shape (errors.py), and its texts for the guard stage (guard_content.py).

`MCPPlane` is imported on first use: it loads the `mcp` SDK (~30 MiB), which a gateway without MCP servers
never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentgw.mcp.catalog.naming import check_collisions, tool_costs, tool_tags

if TYPE_CHECKING:
    from agentgw.mcp.plane import MCPPlane

__all__ = ["MCPPlane", "check_collisions", "tool_costs", "tool_tags"]


def __getattr__(name: str) -> Any:
    if name == "MCPPlane":
        from agentgw.mcp.plane import MCPPlane

        return MCPPlane
    raise AttributeError(name)
