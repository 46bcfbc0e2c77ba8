"""The A2A plane: agents calling agents through the gateway (`/a2a`, `/a2a/{agent}`, `/a2a/{agent}/rest/...`).

Folders by shape: `frontdoor/` (the two bindings clients speak), `upstream/` (the agents behind), `catalog/`
(the directory and the rewritten, re-signed cards), `bridges/` (A2A 0.3 ↔ 1.0). Inside, everything is A2A 1.0 JSON.
"""
