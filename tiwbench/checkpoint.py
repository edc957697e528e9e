"""Atomic writes and safe loads: a file is either complete or absent, and never unpickled code.
Torch loads only where a tensor file is written or read."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

from .errors import TiwbenchError

# Training state is saved every so many steps and also this many seconds after the last save: a
# slow run (a CPU, a large network) killed between step-count checkpoints loses at most this much
CHECKPOINT_SECONDS = 300.0


def _atomic(path: Path, write) -> None:
    """Write through a temporary file renamed into place; a full disk, a read-only mount or a
    missing permission is one line naming the file, and leaves nothing half-written behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are for everyone to read
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise TiwbenchError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def write_bytes(path: Path, write) -> None:
    """`write(file)` into `path`, atomically (a figure's savefig, for one)."""
    _atomic(Path(path), write)


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


DIGEST = "digest"  # the key under which save_torch stores tensor_digest


def tensor_digest(obj) -> str:
    """A digest of everything in a saved object — tensors by dtype, shape and bytes, other values
    by repr — in a fixed order, so that a file changed after we wrote it (weights scaled, zeroed,
    set to NaN, a step count edited) is told apart from ours."""
    import torch

    h = hashlib.blake2b(digest_size=16)

    def walk(o, key: str) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"{key}:{t.dtype}:{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                walk(o[k], f"{key}/{k}")
        elif isinstance(o, (list, tuple)):
            h.update(f"{key}:{type(o).__name__}{len(o)}".encode())
            for i, v in enumerate(o):
                walk(v, f"{key}/{i}")
        else:
            h.update(f"{key}={o!r}".encode())

    walk(obj, "")
    return h.hexdigest()


def save_torch(path: Path, obj: dict) -> None:
    """Save `obj` (a dict) atomically, with its tensor_digest, which load_torch verifies."""
    import torch

    obj = {**obj, DIGEST: tensor_digest(obj)}
    _atomic(Path(path), lambda f: torch.save(obj, f))


def load_torch(path: Path, expect: dict | None = None) -> dict:
    """Load with weights_only=True; a corrupt file, one whose `config` differs from `expect`, whose
    digest does not match its contents or that holds NaN is reported by path rather than trusted
    or silently overwritten."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TiwbenchError(f"cannot read {path} ({type(e).__name__}); delete it to recompute") from e
    if not isinstance(obj, dict) or (expect is not None and obj.get("config") != expect):
        raise TiwbenchError(f"{path} was written for a different configuration; delete it to recompute")
    saved = obj.pop(DIGEST, None)  # files from before digests were stored have none
    if saved is not None and saved != tensor_digest(obj):
        raise TiwbenchError(f"{path} is not what tiwbench wrote (its contents changed since); "
                            "delete it to recompute")
    if _has_nan(obj):
        raise TiwbenchError(f"{path} holds NaN values; delete it to recompute")
    return obj


def _has_nan(obj) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return bool(obj.is_floating_point() and torch.isnan(obj).any())
    if isinstance(obj, dict):
        return any(_has_nan(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_nan(v) for v in obj)
    return False


def load_torchscript(path: Path, map_location="cpu"):
    """A user's TorchScript file (classifier, encoder), without torch's notice that `torch.jit.load`
    is deprecated: TorchScript is the format these options document, so the notice would only
    stand in front of our own message (or the file's first output)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location=map_location)
