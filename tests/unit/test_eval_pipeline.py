"""Pieces of the eval pipeline (containers/core/eval-pipeline/opt/eval/run) on this machine's
kernel: which processes count as the agent's, and which workdirs it may be given. The whole
pipeline runs in tests/integration/test_crane_runner.py."""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from support.catalogs import REPO
from support.components import missing

PIPELINE = REPO / "containers/core/eval-pipeline/opt/eval/run"
PR_SET_DUMPABLE = 4


def pipeline() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("eval_pipeline", str(PIPELINE))
    spec = importlib.util.spec_from_loader("eval_pipeline", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_an_undumpable_process_of_the_agent_is_found_and_killed() -> None:
    """A process that made itself undumpable (its /proc/PID files are root's) is found by its
    uid in /proc/PID/status and killed."""
    if os.geteuid() != 0:
        missing("root, to start a process as the agent's uid")
    run = pipeline()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setgid(run.AGENT_ID)
            os.setuid(run.AGENT_ID)
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            os.write(write_end, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.read(read_end, 1)
    try:
        assert Path(f"/proc/{child}/status").stat().st_uid == 0  # undumpable
        assert child in run._agent_pids()
        run.kill_agent_leftovers(child)
        assert not Path(f"/proc/{child}").exists()  # killed, and reaped (the pipeline may be pid 1)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.mark.parametrize(
    ("workdir", "refused"),
    [
        ("/testbed", None), ("/work/x/../y", None), ("/", "is not an absolute path below /"),
        ("relative", "is not an absolute path below /"), ("/opt/x", "overlaps /opt"),
        ("/tests", "overlaps /tests"), ("/output/task", "overlaps /output"),
    ],
)  # fmt: skip
def test_the_workdir_is_never_what_the_agent_must_not_own(
    workdir: str, refused: str | None
) -> None:
    run = pipeline()
    if refused is None:
        assert run.check_workdir(workdir) == os.path.normpath(workdir)
    else:
        with pytest.raises(SystemExit, match=refused):
            run.check_workdir(workdir)
