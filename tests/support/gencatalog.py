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
    environments: int = 0,
) -> Path:
    """A catalog with one per-task benchmark of `tasks` tasks, `agents` agents, one gateway and,
    optionally, pre-baked combinations of one agent with every task. With `environments`, the
    benchmark is built in tiers as SWE-bench is: one base, that many environments (task i on
    environment i mod N), from a task table."""
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
    tiers: list[str] = []
    if environments:
        envs = [f"env-{e:03d}" for e in range(environments)]
        for directory in ("base", *(f"envs/{env}" for env in envs)):
            (root / directory).mkdir(parents=True, exist_ok=True)
            (root / directory / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
        rows = "".join(f"{task}\t{envs[i % environments]}\n" for i, task in enumerate(ids))
        (root / "tasks.tsv").write_text(f"id\tenv\n{rows}")
        tiers = ["    tiers:", "      base: {context: base}",
                 "      env: {from: base, key: env, context: 'envs/{env}'}", "    from: env"]  # fmt: skip
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
        f"    tasks: {'tasks.tsv' if environments else 'tasks.txt'}",
        *tiers,
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
