"""The MCP plane: `/mcp` and `/mcp/{virtual_server}` in both protocol eras, in front of the registry's MCP servers."""

from agentgw.mcp.naming import check_collisions, tool_tags
from agentgw.mcp.plane import MCPPlane

__all__ = ["MCPPlane", "check_collisions", "tool_tags"]
