"""agentgw: one gateway in front of LLM providers, MCP servers and A2A agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentgw.configfile import ConfigError
from agentgw.settings import Settings, load_settings

if TYPE_CHECKING:
    from agentgw.app import create_app

__all__ = ["ConfigError", "Settings", "__version__", "create_app", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The app pulls in every plane (the MCP SDK, casbin): import it only when asked, so the CLI starts fast.
    if name == "create_app":
        from agentgw.app import create_app

        return create_app
    raise AttributeError(name)
