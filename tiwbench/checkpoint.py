"""Atomic writes and safe loads: a file is either complete or absent, and never unpickled code.
Torch loads only where a tensor file is written or read."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import TiwbenchError


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: Path, obj) -> None:
    import torch

    _atomic(Path(path), lambda f: torch.save(obj, f))


def load_torch(path: Path, expect: dict | None = None) -> dict:
    """Load with weights_only=True; a corrupt file, or one whose `config` differs from `expect`,
    is reported by path rather than trusted or silently overwritten."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TiwbenchError(f"cannot read {path} ({type(e).__name__}); delete it to recompute") from e
    if not isinstance(obj, dict) or (expect is not None and obj.get("config") != expect):
        raise TiwbenchError(f"{path} was written for a different configuration; delete it to recompute")
    return obj
