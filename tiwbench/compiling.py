"""torch.compile, in one place: the backend is inductor unless TIWBENCH_COMPILE_BACKEND names
another of torch's (`aot_eager_decomp_partition` captures the graphs, forward and backward, with
inductor's decompositions and partitioner but generates no code: what the test suite uses on the
CPU, where inductor's C++ compilation costs minutes and says nothing about the GPU's Triton code)."""

from __future__ import annotations

import os

import torch

from .errors import TiwbenchError

BACKEND_ENV = "TIWBENCH_COMPILE_BACKEND"


def compile_backend() -> str:
    """The backend torch.compile is given; an unknown name fails here, before any work."""
    name = os.environ.get(BACKEND_ENV) or "inductor"
    if name != "inductor":
        from torch._dynamo import list_backends

        known = list_backends(exclude_tags=())
        if name not in known:
            raise TiwbenchError(f"{BACKEND_ENV}={name!r} is not a torch.compile backend; "
                                f"choose from inductor, {', '.join(sorted(known))}")
    return name


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    """`module` compiled with the configured backend (it shares its parameters and buffers)."""
    return torch.compile(module, backend=compile_backend())
