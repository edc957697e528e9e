"""torch.compile's backend comes from one place (TIWBENCH_COMPILE_BACKEND, default inductor)."""

import pytest
import torch

from tiwbench.compiling import BACKEND_ENV, compile_backend, compile_module
from tiwbench.errors import TiwbenchError


def test_the_default_backend_is_inductor(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert compile_backend() == "inductor"
    monkeypatch.setenv(BACKEND_ENV, "")
    assert compile_backend() == "inductor"


def test_an_unknown_backend_is_named_with_the_choices(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "inducter")
    with pytest.raises(TiwbenchError, match=r"'inducter' is not a torch.compile backend; "
                                            r"choose from inductor, .*aot_eager"):
        compile_backend()


def test_the_configured_backend_is_the_one_that_compiles(monkeypatch):
    seen = []

    def backend(gm, example_inputs):  # a registered backend that records its calls
        seen.append(gm)
        return gm.forward

    from torch._dynamo import register_backend

    register_backend(backend, name="tiwbench_test_recorder")
    monkeypatch.setenv(BACKEND_ENV, "tiwbench_test_recorder")
    net = torch.nn.Linear(3, 2)
    compiled = compile_module(net)
    x = torch.randn(4, 3)
    assert torch.equal(compiled(x), net(x)) and len(seen) == 1
