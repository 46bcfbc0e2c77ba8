"""agentgw: one gateway in front of LLM providers, MCP servers and A2A agents."""

from agentgw.app import create_app
from agentgw.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "__version__", "create_app", "load_settings"]
__version__ = "0.1.0"
