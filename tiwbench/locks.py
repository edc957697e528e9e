"""Run locks that are atomic under races: an advisory flock(2) on a lock file, released by the
kernel when its holder ends, so a lock left by a dead process (or an empty or corrupt lock file
left by a full disk) never blocks anyone. The file holds the holder's host:pid for messages."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .console import say
from .errors import TiwbenchError


class RunInProgress(TiwbenchError):
    """Another process holds the lock."""


def check_writable(folder: Path) -> None:
    """Create `folder` and prove it writable with a probe file of a unique name."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TiwbenchError(f"results folder {folder} cannot be written: {e.strerror or e}") from e


@contextmanager
def run_lock(folder: Path, name: str = ".lock", wait: bool = False,
             poll_s: float = 1.0) -> Iterator[None]:
    """Hold `folder/name` while a run computes, so that two sweeps sharing a results folder do
    not both compute one run. A live holder makes it raise RunInProgress, or with `wait`, wait
    for the holder to finish."""
    path, told = folder / name, False
    while True:
        fd = _try_take(path)
        if fd is not None:
            break
        if not wait:
            raise RunInProgress(f"being computed by {_holder(path)} (lock {path})")
        if not told:
            say(f"waiting: being computed by {_holder(path)} (lock {path})")
            told = True
        time.sleep(poll_s)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before closing: nobody can lock the old file after us
        os.close(fd)


def _try_take(path: Path) -> int | None:
    """The open, locked file descriptor of `path`, or None if another process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise TiwbenchError(f"cannot create the lock {path}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # the holder before us may have unlinked the file we opened: then it is not the lock
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_take(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
    return fd


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"
