"""What MCP clients reach: each endpoint's server and handlers (endpoint.py, mediate.py), its handshake-era
sessions and their resumable streams (sessions.py, resume.py), the direct path for plain `tools/call`
(direct.py), change notifications and resource subscriptions (events.py, subscriptions.py), and confirmations."""
