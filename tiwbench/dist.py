"""Several processes through torchrun (DDP): the global batch is drawn identically on every rank
and each rank takes its slice, so N processes reproduce the one-process run up to float noise."""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import TiwbenchError


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); on CUDA each rank takes the
    GPU of its LOCAL_RANK. Returns the device this rank computes on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # NCCL for CUDA tensors (gradients, samples); gloo for the small CPU-side agreements (stop
    # requests, barriers), which NCCL cannot carry and which must not wait for the GPU
    dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    # leave the group while the interpreter is whole, and together: a process exiting while a
    # peer still uses the group can abort in gloo's threads ("terminate called without an active
    # exception", seen on rank 1 leaving while rank 0 still evaluated; run.py now waits for it)
    atexit.register(leave)
    return device


LEAVE_TIMEOUT_S = 120  # how long a process waits at exit for the others before leaving alone


def leave() -> None:
    """Destroy the process group, if there is one (idempotent), after every process has come to
    leave it (a monitored barrier: a peer that died is reported after LEAVE_TIMEOUT_S, not waited
    for forever)."""
    if dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
            else:
                barrier()
        except RuntimeError:  # a peer is gone: nothing to wait for
            pass
        dist.destroy_process_group()


def peer_failure(error: BaseException) -> bool:
    """Whether `error` is this process seeing another process of its group end (killed, failed):
    a collective whose peer is gone raises from the backend (gloo: "Connection reset by peer")."""
    if world() <= 1 or not isinstance(error, RuntimeError):
        return False
    return isinstance(error, dist.DistError) or any(
        word in str(error).lower() for word in ("gloo", "nccl", "connection reset", "connection closed"))


def local_slice(n: int) -> slice:
    """This rank's part of a global batch of n."""
    w, r = world(), rank()
    if n % w:
        raise TiwbenchError(f"the batch size {n} must be divisible by the number of processes ({w})")
    return slice(r * n // w, (r + 1) * n // w)


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on one (e.g. a stop request), so all stop together."""
    if world() == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized per-rank tensors in rank order (on every rank)."""
    if world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    """Wait for every rank; a CPU all-reduce, so it takes the gloo backend on GPUs too."""
    if world() > 1:
        dist.all_reduce(torch.zeros(1))
