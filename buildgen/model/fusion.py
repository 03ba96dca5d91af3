"""The fusion rule (DESIGN.md contract 5): which directories an agent or gateway image adds to a
benchmark's rootfs, with what mode and owner. One rule, two implementations: the combination
Dockerfile (`model/combination.py`) and crane mode's `materialize` (`crane/materialize.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from buildgen.model.naming import Axis

# Who may read a provided directory unless the catalog says otherwise: agents are public,
# gateways hold keys and are root-only.
DEFAULT_MODES = {Axis.AGENT: 0o755, Axis.GATEWAY: 0o700}


@dataclass(frozen=True)
class Provided:
    """A directory an axis image contributes to a fused rootfs, with its mode and owner.

    Written three ways, all here: in the plan and the lockfile as JSON (`to_json`), and in
    the runner's environment as PATH:MODE:UID:GID (`str`, `parse`; EVAL_*_PROVIDES, joined
    by commas).
    """

    path: str
    mode: int
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "mode": f"{self.mode:04o}", "uid": self.uid, "gid": self.gid}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Provided:
        return cls(str(data["path"]), int(str(data["mode"]), 8), int(data["uid"]), int(data["gid"]))

    def __str__(self) -> str:
        return f"{self.path}:{self.mode:04o}:{self.uid}:{self.gid}"

    @classmethod
    def parse(cls, text: str) -> Provided:
        """PATH:MODE[:UID:GID], e.g. /opt/gateway:0700:0:0; ValueError for anything else."""
        path, mode, *owner = text.split(":")
        if len(owner) not in (0, 2) or not path.startswith("/"):
            raise ValueError(f"not PATH:MODE[:UID:GID]: {text!r}")
        uid, gid = (int(owner[0]), int(owner[1])) if owner else (0, 0)
        return cls(path, int(mode, 8), uid, gid)


# The eval pipeline (the catalog's `pipeline` directory, docs/crane-mode.md "The eval pipeline")
# is fused like an axis: every combination image gets its /opt/eval, and so does a crane-mode
# rootfs, from the runner's copy of the same directory.
PIPELINE = Provided("/opt/eval", 0o755, 0, 0)
