"""Routing by content: which target a call really goes to, decided after authorization and before anything
prices, guards or holds it, so the budget reserves for the model actually used. Planes serve their own rules.

A plane's router may change `exchange.target` and `exchange.payload` and records what it did as a `route`
decision. It fails like any stage: a GatewayError is the client's answer, anything else a denial (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable

from agentgw.exchange import Exchange
from agentgw.pipeline import Pipeline, Stage

Router = Callable[[Exchange], None]


class RouteStage(Stage):
    name = "route"

    def __init__(self) -> None:
        self.routers: dict[str, Router] = {}

    def serve(self, plane: str, router: Router | None) -> None:
        """`plane`'s rules (None: it has none, and its calls pass untouched)."""
        if router is None:
            self.routers.pop(plane, None)
        else:
            self.routers[plane] = router

    async def on_request(self, exchange: Exchange) -> None:
        router = self.routers.get(exchange.plane)
        if router is not None and not exchange.attrs.get("listing"):
            router(exchange)


def route_stage(pipeline: Pipeline) -> RouteStage | None:
    return next((s for s in pipeline.stages if isinstance(s, RouteStage)), None)
