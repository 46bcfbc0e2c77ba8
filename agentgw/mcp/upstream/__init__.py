"""The MCP servers behind the gateway: one connection per server (upstream.py) with its sessions per principal
(scoped.py), the wire and hot HTTP leg each request goes over (wire.py, leg.py, inflight.py), and what a server
announces unasked (watching.py)."""
