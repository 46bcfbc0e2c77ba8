"""What the gateway shows of its agents: the directory at `/a2a` and each agent's rewritten, re-signed card."""
