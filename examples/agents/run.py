"""`make agents-demo`: a user's question to the planner, through the gateway, under one task id; then that task's
trace as `agentgw trace show` prints it, with the researcher's steps nested under the planner's delegation.

Needs the quickstart running (`make run`, same PORT). Uses the quickstart's demo key (`agw-demo-key`).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text, new_text_message
from a2a.types import Role, SendMessageRequest, TaskState

AGENTGW = str(Path(sys.executable).parent / "agentgw")


async def ask_planner(gateway: str, key: str, task: str, question: str) -> str:
    headers = {"Authorization": f"Bearer {key}", "x-agentgw-task": task}
    async with httpx.AsyncClient(headers=headers, timeout=120) as http:
        client = await create_client(f"{gateway}/a2a/planner", client_config=ClientConfig(httpx_client=http))
        async with client:
            request = SendMessageRequest(message=new_text_message(question, role=Role.ROLE_USER))
            answer = ""
            # streaming: the planner's status messages show as they happen
            async for event in client.send_message(request):
                if event.HasField("status_update"):
                    status = event.status_update.status
                    note = get_message_text(status.message) if status.HasField("message") else ""
                    print(f"  [{TaskState.Name(status.state)}] {note}".rstrip())
                    if status.state == TaskState.TASK_STATE_FAILED:
                        raise SystemExit(f"the planner failed: {note}")
                elif event.HasField("artifact_update"):
                    answer += get_artifact_text(event.artifact_update.artifact)
                elif event.HasField("task") and event.task.artifacts:
                    answer = "\n".join(get_artifact_text(a) for a in event.task.artifacts)
            return answer


def trace(task: str, config: str, wait_s: float = 10.0) -> str:
    """`agentgw trace show TASK`. The gateway writes audit records in the background, a moment after each call:
    ask again until the researcher's step (the deepest) is there."""
    deadline = time.monotonic() + wait_s
    while True:
        shown = subprocess.run(
            [AGENTGW, "trace", "show", task, "--config", config], capture_output=True, text=True, check=False
        )
        if (shown.returncode == 0 and "a2a:researcher" in shown.stdout and "mcp:docs" in shown.stdout) or (
            time.monotonic() > deadline
        ):
            return shown.stdout or shown.stderr
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--config", default="examples/quickstart/agentgw.yaml")
    parser.add_argument("--key", default="agw-demo-key")
    parser.add_argument("question", nargs="?", default="How do budgets work?")
    args = parser.parse_args()
    task = f"demo-{secrets.token_hex(4)}"
    print(f"$ ask the planner through {args.gateway}/a2a/planner (task {task}): {args.question}")
    answer = anyio.run(ask_planner, args.gateway.rstrip("/"), args.key, task, args.question)
    print(f"\n{answer}\n")
    print(f"$ agentgw trace show {task} --config {args.config}")
    print(trace(task, args.config))


if __name__ == "__main__":
    main()
