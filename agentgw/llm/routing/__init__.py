"""Which upstream answers a call: content rules pick the model alias (content.py), strategies order its targets
(strategies.py), the router tries them with retries, failover and circuit breakers (router.py), and the
strategies' numbers are shared between processes through Redis when configured (shared.py)."""
