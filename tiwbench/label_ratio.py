"""The label-informed density ratio: an upper bound for any dataset whose bias is a reweighting
of groups (docs/design.md §4).

If p_data and p_bias share the group-conditionals and differ only in the group shares t_g and
b_g, then for every σ

    w_σ(x) = p_data,σ(x) / p_bias,σ(x) = Σ_g (t_g / b_g) · P_bias,σ(g | x),

so a noise-conditional group classifier trained with cross-entropy on D_bias's labels (labels no
method sees) gives a ratio whose only error is that classifier's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import dist
from .bands import VAL_SIGMAS
from .checkpoint import load_torch, save_torch, tensor_digest
from .console import progress_bar, say
from .diffusion import SIGMA_MIN, Precond, append_dims, sample_log_uniform_sigma, to_model_space
from .errors import TiwbenchError
from .estimators.base import RatioRequest
from .locks import run_lock
from .ratio import DensityRatio
from .streams import digest, fixed_generator, generator


class LabelRatio(DensityRatio):
    """log w_σ(x) = logsumexp_g(log t_g − log b_g + log P_bias,σ(g | x)), the posterior from a
    σ-conditioned classifier `net(c_in·x, c_noise) -> (B, K)` logits."""

    def __init__(self, net: nn.Module, sigma_data: float, log_t_over_b: Tensor, time_dependent: bool):
        super().__init__()
        self.net, self.precond, self.time_dependent = net, Precond(sigma_data), time_dependent
        self.register_buffer("log_t_over_b", log_t_over_b.float())

    def group_logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        if not self.time_dependent:
            sigma = torch.full_like(sigma, SIGMA_MIN)
        return self.net(self.precond.c_in(append_dims(sigma, x.ndim)) * x, self.precond.c_noise(sigma))

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        posterior = self.group_logits(x, sigma).log_softmax(1)
        return torch.logsumexp(posterior + self.log_t_over_b, dim=1)


def with_outputs(net: nn.Module, k: int) -> nn.Module:
    """`net` (a dataset's discriminator network, one output) with its output layer — the last
    Linear with one output — replaced by one with `k`: the group classifier's network."""
    parent, name, last = None, None, None
    for module in net.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear) and child.out_features == 1:
                parent, name, last = module, child_name, child
    if last is None:
        raise TiwbenchError(f"the dataset's ratio network ({type(net).__name__}) has no output layer to widen "
                            "to one output per group")
    setattr(parent, name, nn.Linear(last.in_features, k))
    return net


def group_weights(data) -> Tensor:
    """log(t_g / b_g): the target shares over D_bias's own label shares; −inf for a group D_bias
    lacks (its posterior is 0 there)."""
    if data.bias_labels is None:
        raise TiwbenchError("--ratio labels needs the group labels of D_bias, which this dataset does not give "
                            "(Splits.bias_labels)")
    k = len(data.target_shares)
    b = torch.bincount(data.bias_labels.long(), minlength=k).double() / len(data.bias_labels)
    return (data.target_shares.double().log() - b.log()).where(b > 0, torch.tensor(-math.inf, dtype=torch.double))


def fit_label_ratio(request: RatioRequest) -> tuple[LabelRatio, dict]:
    """Train (or read from the cache) the group classifier behind the label-informed ratio: plain
    cross-entropy on D_bias and its labels, noised at σ log-uniform over [σ_min, σ_max] (σ_min
    only for the clean-data ratio), AdamW, steps of `--ratio-batch-size`: `--ratio-steps` of them
    for the clean-data ratio, `steps_factor` times as many for the noise-conditional one. The
    summary keeps its accuracy on the labelled evaluation set, which it never trains on, per σ."""
    cfg, data, device = request.cfg, request.data, request.device
    steps = cfg.ratio_steps * (request.options.get("steps_factor", 1) if request.time_dependent else 1)
    log_t_over_b = group_weights(data)
    torch.manual_seed(cfg.seed)  # the "init" stream
    net = with_outputs(request.recipe.ratio_net(), len(log_t_over_b))
    model = LabelRatio(net, data.sigma_data, log_t_over_b, request.time_dependent).to(device)
    key = label_cache_key(request, log_t_over_b)
    path = request.cache_dir / f"{cfg.dataset}-s{cfg.seed}-{request.kind}-labels-{digest(key)}.pt"
    if not path.exists() and dist.is_main():
        with run_lock(path.parent, path.name + ".lock", wait=True):
            if not path.exists():
                summary = _train(model, data, cfg, steps, device)
                summary["heldout_acc"] = heldout_accuracy(model, data, device)
                save_torch(path, {"model": model.state_dict(), "config": key, "fit": summary})
    dist.barrier()
    saved = load_torch(path, expect=key)
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, RuntimeError) as e:
        raise TiwbenchError(f"the cached label-informed ratio {path} does not fit ({type(e).__name__}); "
                            "delete it to retrain") from None
    say(f"label-informed {request.kind} ratio: {path}")
    return model.requires_grad_(False).eval(), saved["fit"]


def label_cache_key(request: RatioRequest, log_t_over_b: Tensor) -> dict:
    """What the classifier depends on: D_bias and its labels (by content), the weights t_g/b_g, the
    seed and the training settings — not the reference size, which it never sees, so one fit
    serves every reference size of a seed."""
    key = {k: v for k, v in request.cache_key.items() if k != "ref"}
    data = request.data
    return {**key, "bias_data": tensor_digest([data.x_bias, data.bias_labels, log_t_over_b])}


def heldout_accuracy(model: LabelRatio, data, device, n: int = 2000) -> list[dict]:
    """The group classifier's accuracy on (the first `n` of) the evaluation set, which holds the
    target's shares and which it never trains on, at each σ of the held-out grid (σ_min only for
    the clean-data ratio): where it falls short at small σ the bound is not one."""
    x0, labels = to_model_space(data.x_eval[:n]).to(device), data.eval_labels[:n].long().to(device)
    g = fixed_generator("label_heldout_noise")
    rows = []
    model.eval()
    with torch.no_grad():
        for s in VAL_SIGMAS if model.time_dependent else [SIGMA_MIN]:
            sigma = torch.full((len(x0),), s, device=device)
            noisy = x0 + s * torch.randn(x0.shape, generator=g).to(device)
            hits = sum(int((model.group_logits(noisy[i:i + 500], sigma[i:i + 500]).argmax(1)
                            == labels[i:i + 500]).sum()) for i in range(0, len(x0), 500))
            rows.append({"sigma": s, "acc": hits / len(x0)})
    return rows


def _train(model: LabelRatio, data, cfg, steps: int, device) -> dict:
    g = generator(cfg.seed, "label_batches")
    x_bias, labels = data.x_bias, data.bias_labels.long()
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.ratio_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    recent = []
    with progress_bar(f"label-informed ratio ({'time_dependent' if model.time_dependent else 'clean'})",
                      steps) as update:
        for step in range(1, steps + 1):
            i = torch.randint(len(x_bias), (cfg.ratio_batch_size,), generator=g)
            x0 = to_model_space(x_bias[i]).to(device)
            sigma = (sample_log_uniform_sigma(len(i), g) if model.time_dependent
                     else torch.full((len(i),), SIGMA_MIN)).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            loss = F.cross_entropy(model.group_logits(x0 + append_dims(sigma, x0.ndim) * noise, sigma),
                                   labels[i].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            recent = (recent + [loss.item()])[-100:]
            update(step)
    return {"steps": steps, "train_ce_last100": sum(recent) / len(recent),
            "bias_shares": (data.target_shares.double().log() - model.log_t_over_b.double().cpu()).exp().tolist()}
