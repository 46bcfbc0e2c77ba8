"""The quickstart's planner: an A2A agent that answers a question by asking a model for a plan and delegating the
research to the `researcher` agent, both through the gateway, under the child task the gateway gave it.

Launched by the gateway (registry/agents.yaml): `python planner.py --port 9002`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from a2a.types import AgentSkill
from common import ask_agent, ask_model, main

MODEL = "mock-smart"  # a quickstart model (the in-process mock provider): no API key needed
RESEARCHER = "researcher"


async def answer(question: str, task: str | None, progress: Callable[[str], Awaitable[None]]) -> str:
    # Every call below carries `task` (x-agentgw-task): the gateway charges it to the caller's budget and files
    # it under the step that delegated to this agent.
    plan = await ask_model(MODEL, f"Plan how to answer: {question}", task)
    await progress(f"plan ready; asking {RESEARCHER}")
    findings = await ask_agent(RESEARCHER, question, task)
    return f"Plan ({MODEL}): {plan}\n\nFindings ({RESEARCHER}): {findings}"


SKILL = AgentSkill(
    id="plan",
    name="plan and delegate",
    description="Plans an answer with a model, then delegates the research to the researcher agent.",
    tags=["demo", "delegation"],
    examples=["How do budgets work?"],
)

if __name__ == "__main__":
    main("planner", "Plans an answer and delegates the research (agentgw quickstart).", SKILL, answer, 9002)
