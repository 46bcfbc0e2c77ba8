"""A stdio MCP server for the agentgw quickstart: the current time in any time zone, and conversions.

The gateway launches it (registry `transport: stdio` + `command:`), keeps it running and relaunches it if it dies.
Run it alone with `python examples/servers/time_server.py` (it then speaks MCP on stdin/stdout).
"""

from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer

mcp = MCPServer(
    name="time",
    version="1.0.0",
    instructions="Current times and time-zone conversions. Time zones are IANA names such as Europe/Paris.",
)


def _zone(name: str | None) -> ZoneInfo:
    name = name or os.environ.get("TZ") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Paris.") from None


@mcp.tool(description="The current date and time in a time zone (default: the server's TZ, else UTC).")
def get_current_time(timezone: str | None = None) -> dict[str, str]:
    now = datetime.now(_zone(timezone))
    return {
        "timezone": str(now.tzinfo),
        "datetime": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
    }


@mcp.tool(description="Convert a wall-clock time (HH:MM, today) from one time zone to another.")
def convert_time(time: str, source_timezone: str, target_timezone: str) -> dict[str, str]:
    hours, _, minutes = time.partition(":")
    source = datetime.now(_zone(source_timezone)).replace(
        hour=int(hours), minute=int(minutes or 0), second=0, microsecond=0
    )
    target = source.astimezone(_zone(target_timezone))
    return {"source": source.isoformat(timespec="minutes"), "target": target.isoformat(timespec="minutes")}


if __name__ == "__main__":
    mcp.run("stdio")
