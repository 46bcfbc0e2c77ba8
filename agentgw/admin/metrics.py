"""`GET /metrics`: the Prometheus text exposition of the gateway's registry. Needs a credential with an admin
role (or one of `metrics.roles`) unless `metrics.public` is true."""

from __future__ import annotations

import orjson

from agentgw.errors import Forbidden, GatewayError
from agentgw.http import Receive, Scope, Send, client_host, header_dict, send_bytes
from agentgw.metrics import CONTENT_TYPE, Metrics
from agentgw.stages.authn import Authenticator


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, auth: Authenticator, roles: set[str], public: bool) -> None:
        self.metrics = metrics
        self.auth = auth
        self.roles = roles
        self.public = public
        self.headers = [(b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise GatewayError(
                    "Method not allowed on /metrics.",
                    status=405,
                    code="method_not_allowed",
                    headers={"allow": "GET, HEAD"},
                )
            if not self.public:
                principal, _ = await self.auth.authenticate(header_dict(scope), client_host(scope), "admin")
                if not self.roles.intersection(principal.roles):
                    raise Forbidden("/metrics needs an admin or metrics role.", code="metrics_role_required")
        except GatewayError as err:
            body = orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}})
            await send_bytes(send, err.status, body, extra=err.headers)
            return
        body = self.metrics.render()
        await send_bytes(send, 200, body, self.headers)  # the server sends no body for HEAD
