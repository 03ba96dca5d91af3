"""Generate large catalogs (thousands of per-task images) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = "FROM scratch\nARG TASK_ID\nCOPY task.txt /tasks/${TASK_ID}.txt\n"


def generate_catalog(
    root: Path,
    tasks: int,
    *,
    agents: int = 2,
    combinations: bool = True,
    registry: str = "r.example/evals",
    task_platforms: str = "[linux/amd64]",
    per_task_contexts: bool = False,
) -> Path:
    """A catalog with one per-task benchmark of `tasks` tasks, `agents` agents, one gateway and,
    optionally, pre-baked combinations of one agent with every task."""
    for context in ("bench", "agent", "gateway"):
        (root / context).mkdir(parents=True, exist_ok=True)
        (root / context / "Dockerfile").write_text(DOCKERFILE)
        (root / context / "task.txt").write_text("x\n")
    ids = [f"proj__proj-{i:05d}" for i in range(tasks)]
    if per_task_contexts:  # one context per task: a change to one task changes only its inputs
        for task in ids:
            (root / "repos" / task).mkdir(parents=True, exist_ok=True)
            (root / "repos" / task / "task.txt").write_text(f"{task}\n")
    (root / "tasks.txt").write_text("# generated\n" + "\n".join(ids) + "\n")
    lines = [
        "version: 1",
        f"registry: {registry}",
        "platforms: [linux/amd64, linux/arm64]",
        "benchmarks:",
        "  big:",
        "    context: repos/{task}" if per_task_contexts else "    context: bench",
        *(["    dockerfile: bench/Dockerfile"] if per_task_contexts else []),
        "    version: 1.0.0",
        f"    platforms: {task_platforms}",
        "    args: {PYTHON: '3.11'}",
        "    tasks: tasks.txt",
        "agents:",
        *(f"  agent-{a}: {{context: agent, version: 1.0.{a}}}" for a in range(agents)),
        "gateways:",
        "  gw: {context: gateway, version: 1.0.0}",
    ]
    if combinations:
        lines += ["combinations:", "  - {benchmark: big, agents: [agent-0], gateway: gw}"]
    path = root / "catalog.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
