"""The egress rule for A2A push-notification callback URLs: a client may only register a URL whose host is (or
resolves only to) globally routable addresses, unless `a2a.push.allow` names the host or a network holding the
address, so the gateway cannot be used to make an agent call internal hosts. The rule itself (and its limit,
DNS rebinding: the agent, not the gateway, dials the URL later) is the core's, agentgw/egress.py."""

from __future__ import annotations

from collections.abc import Sequence

from agentgw.egress import RESOLVE_TIMEOUT_S, EgressForbidden, check_url


class PushURLForbidden(EgressForbidden):
    """A callback URL the egress rule refuses. `reason` (for logs and tests) is more precise than the message."""

    code = "push_url_forbidden"


async def check_callback(url: str, allow: Sequence[str], *, timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """Raise PushURLForbidden unless `url` may be registered as a push-notification callback."""
    await check_url(url, allow, what="The push notification URL", error=PushURLForbidden, timeout_s=timeout_s)
