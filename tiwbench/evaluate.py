"""The one evaluator: samples, bias of the sensitive attribute, Fréchet quality, ratio accuracy."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import dist
from .diffusion import P_MEAN, P_STD, SIGMA_MAX, SIGMA_MIN, DenoiseFn, heun_sample, to_model_space
from .ratio import DensityRatio, log_r_and_grad
from .streams import digest


def generate(denoise: DenoiseFn, n: int, shape: tuple[int, ...], steps: int, seed: int,
             device="cpu", chunk: int = 10_000,
             on_chunk: Callable[[int], None] = lambda done: None) -> Tensor:
    """n samples by the deterministic Heun sampler from seeded latents, in chunks, returned on the
    CPU. Under torchrun each process samples its share of every chunk and all get the whole."""
    gen = torch.Generator().manual_seed(seed)
    out, w = [], dist.world()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        latents = torch.randn((m, *shape), generator=gen)
        latents = torch.cat([latents, latents[:(-m) % w]])  # pad to a multiple of the processes
        mine = heun_sample(denoise, latents.chunk(w)[dist.rank()].to(device), steps)
        out.append(dist.gather_rows(mine)[:m].cpu())
        on_chunk(start + m)
    return torch.cat(out)


def bias_metrics(groups: Tensor, target: Tensor) -> dict:
    """Shares of the K groups among samples (none dropped) against the target shares."""
    shares = group_shares(groups, len(target))
    return {**share_metrics(shares, target), "shares": [round(float(s), 6) for s in shares]}


def group_shares(groups: Tensor, k: int) -> Tensor:
    """The share of each of the k groups among `groups` (labels), in double precision."""
    return torch.bincount(groups.long(), minlength=k).double() / len(groups)


def share_metrics(shares: Tensor, target: Tensor, suffix: str = "") -> dict:
    """bias_l2 (Choi et al.'s fairness discrepancy), bias_l1 and bias_kl = KL(shares ‖ target)."""
    shares, target = shares.double(), target.double()
    nz = shares > 0
    return {f"bias_l2{suffix}": float((shares - target).norm()),
            f"bias_l1{suffix}": float((shares - target).abs().sum()),
            f"bias_kl{suffix}": float((shares[nz] * (shares[nz] / target[nz]).log()).sum())}


def confusion_matrix(predicted: Tensor, labels: Tensor, k: int) -> Tensor:
    """C[i, j] = P(predicted j | true group i), from labelled data (rows of absent groups: the
    identity, i.e. no correction for them)."""
    counts = torch.zeros(k, k, dtype=torch.float64)
    counts.index_put_((labels.long(), predicted.long()), torch.ones(len(labels), dtype=torch.float64),
                      accumulate=True)
    totals = counts.sum(1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp(min=1), torch.eye(k, dtype=torch.float64))


def corrected_shares(predicted_shares: Tensor, confusion: Tensor) -> Tensor:
    """The true shares p behind predicted shares q = Cᵀp (the confusion-matrix inverse, by least
    squares), projected back onto the simplex by clipping at 0 and renormalising."""
    q = predicted_shares.double()[:, None]
    p = torch.linalg.lstsq(confusion.double().T, q).solution[:, 0].clamp(min=0)
    return p / p.sum() if p.sum() > 0 else predicted_shares.double()


def gaussian_frechet(mu1, cov1, mu2, cov2) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), clean-fid's formula. tr(Σ₁Σ₂)^½ is computed as
    Σ √λᵢ(Σ₁^½ Σ₂ Σ₁^½) (the same eigenvalues, of a symmetric PSD matrix), by two symmetric
    eigendecompositions: at 2,048 features about 2 s on this CPU against 12-14 s for scipy's sqrtm
    of Σ₁Σ₂, as accurate, and without sqrtm's singular-matrix warning when there are fewer samples than
    features. Ours, not clean-fid's function, because clean-fid 0.1.35 passes
    `disp=` to scipy's sqrtm, which the SciPy of our GPU image refuses (2026-11-29)."""
    def psd(c):
        c = np.atleast_2d(c)
        return (c + c.T) / 2

    def nonzero(lam):  # a singular matrix's zero eigenvalues come out as ±rounding noise, whose
        # square roots (~1e-8 each) would add an error that depends on the CPU's LAPACK
        return np.where(lam > lam.max(initial=0) * len(lam) * np.finfo(lam.dtype).eps, lam, 0)

    lam1, vec1 = np.linalg.eigh(psd(cov1))
    root1 = (vec1 * np.sqrt(nonzero(lam1))) @ vec1.T
    lam = nonzero(np.linalg.eigvalsh(psd(root1 @ psd(cov2) @ root1)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(lam).sum())


def frechet_distance(feat_a: Tensor, feat_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return gaussian_frechet(*_gaussian(feat_a), *_gaussian(feat_b))


def ratio_sigmas(n: int = 13) -> list[float]:
    """Log-spaced σ over the sampler's range, for ratio-error curves."""
    return [float(s) for s in np.geomspace(SIGMA_MIN, SIGMA_MAX, n)]


def ratio_error(model: DensityRatio, exact: DensityRatio, x0: Tensor, pi: float, seed: int,
                sigmas: list[float] | None = None) -> list[dict]:
    """RMSE of log r_σ and of ∇ log r_σ against the exact ones (or a reference model's: the
    label-informed ratio where no exact one is known), per σ, at x_σ = x0 + σ·ε.

    The error of σ²·∇ log r is what TIW-DSM's target inherits, so it is reported too.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    device, at = _device_of(model), _device_of(exact)
    # the analytic ratio in double precision; a reference network (the label-informed ratio) in its own
    dtype = next(exact.parameters(), torch.empty((), dtype=torch.double)).dtype
    for s in sigmas or ratio_sigmas():
        sigma = torch.full((len(x0),), s)
        x = x0 + s * torch.randn(x0.shape, generator=gen)
        lr_m, g_m = (t.cpu() for t in log_r_and_grad(model, x.to(device), sigma.to(device), pi))
        lr_e, g_e = (t.cpu().double() for t in log_r_and_grad(exact, x.to(at, dtype), sigma.to(at, dtype), pi))
        g_err = (g_m.double() - g_e).flatten(1).norm(dim=1).pow(2).mean().sqrt()
        rows.append({"sigma": s,
                     "log_r_rmse": float((lr_m.double() - lr_e).pow(2).mean().sqrt()),
                     "grad_rmse": float(g_err),
                     "corr_rmse": float(s**2 * g_err),
                     "corr_norm": float(s**2 * g_e.flatten(1).norm(dim=1).pow(2).mean().sqrt())})
    return rows


def corr_err(rows: list[dict], sigma_data: float) -> float:
    """The correction error weighted as TIW-DSM's objective weighs it: RMS of `corr_rmse` over σ
    with weight p_train(σ)·λ(σ)·σ_data² (EDM's log-normal σ density on the log-spaced grid, times
    its loss weight), i.e. the ratio's excess in the score loss, in data units."""
    sigma = np.array([r["sigma"] for r in rows])
    density = np.exp(-0.5 * ((np.log(sigma) - P_MEAN) / P_STD) ** 2)
    weight = density * (sigma**2 + sigma_data**2) / sigma**2
    mse = np.array([r["corr_rmse"] for r in rows]) ** 2
    return float(np.sqrt((weight * mse).sum() / weight.sum()))


def integrated_error(rows: list[dict], key: str = "log_r_rmse") -> float:
    """Mean of a ratio-error curve over log σ (the grid is log-spaced): one number per model."""
    return float(np.mean([r[key] for r in rows]))


@torch.no_grad()
def weight_collapse(model: DensityRatio, x_bias: Tensor, threshold: float = 0.01, batch: int = 1000) -> float:
    """Share of D_bias samples whose clean-data weight w(x0) (at σ_min) is below `threshold`."""
    device = _device_of(model)
    below = 0
    for chunk in x_bias.split(batch):
        x = to_model_space(chunk.to(device))
        log_w = model.log_ratio(x, torch.full((len(x),), SIGMA_MIN, device=device))
        below += int((log_w < math.log(threshold)).sum())
    return below / len(x_bias)


INCEPTION_FILE = "inception-2015-12-05.pt"


def inception_folder() -> Path | None:
    """The folder named by TIWBENCH_INCEPTION if it holds clean-fid's Inception weights, else None
    (we never let clean-fid download them)."""
    folder = os.environ.get("TIWBENCH_INCEPTION")
    return Path(folder) if folder and (Path(folder) / INCEPTION_FILE).exists() else None


class InceptionFeatures:
    """clean-fid's Inception-v3 pool features with its 'clean' resize, on an explicit device and
    without clean-fid's DataParallel wrapper. Images come in [−1, 1] (or uint8), (N, C, H, W)."""

    def __init__(self, folder: Path, device="cpu", batch: int = 100):
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        self.model = InceptionV3W(str(folder), download=False, resize_inside=False).to(device).eval()
        self.resize, self.device, self.batch = build_resizer("clean"), device, batch

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:
            x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        feats = []
        for chunk in x.split(self.batch):
            imgs = [self.resize(img) for img in chunk.permute(0, 2, 3, 1).numpy()]
            batch = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2)).float().to(self.device)
            feats.append(self.model(batch).double().cpu())
        return torch.cat(feats)


def fid(samples: Tensor, reference: Tensor, extractor: InceptionFeatures, stats_path: Path | None) -> float:
    """FID of samples against the reference set; the reference statistics are cached at `stats_path`."""
    from .checkpoint import load_torch, save_torch

    if stats_path is not None and stats_path.exists():
        ref = load_torch(stats_path)
        mu_r, cov_r = ref["mu"].numpy(), ref["sigma"].numpy()
    else:
        mu_r, cov_r = _gaussian(extractor(reference))
        if stats_path is not None:
            save_torch(stats_path, {"mu": torch.from_numpy(mu_r), "sigma": torch.from_numpy(cov_r),
                                    "config": {"n": len(reference)}})
    return gaussian_frechet(*_gaussian(extractor(samples)), mu_r, cov_r)


def _gaussian(f: Tensor):
    f = f.double().numpy()
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters (or buffers) live: the CPU for models with neither (exact ratios)."""
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


PRDC_K, PRDC_N = 5, 5000


def prdc_metrics(real: Tensor, fake: Tensor, k: int = PRDC_K, n: int = PRDC_N) -> dict:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of
    `fake` against `real` features, k nearest neighbours, via the `prdc` package, on at most n of
    each (a fixed subsample: the pairwise distances grow as n²)."""
    import contextlib
    import io

    from prdc import compute_prdc

    gen = torch.Generator().manual_seed(0)
    pick = [f[torch.randperm(len(f), generator=gen)[:n]].double().cpu().numpy() for f in (real, fake)]
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the sample counts
        out = compute_prdc(pick[0], pick[1], nearest_k=k)
    return {name: float(out[name]) for name in ("precision", "recall", "density", "coverage")}


def objective_shares(method, data, train_set: tuple[Tensor, float, tuple], alpha: float) -> Tensor | None:
    """The group shares a perfect fit of the method's own objective generates (`Method.fits`): the
    target for the debiasing methods at α = 1; for the others their training mixture as the
    attribute classifier sees it, so that its errors cancel out of fit_gap. None where unknown."""
    if method.fits == "target":
        return data.target_shares.double() if alpha == 1 else None
    if method.fits != "training":
        return None
    x, _, strata = train_set
    shares_of = lambda part: group_shares(data.attribute(part), len(data.target_shares))  # noqa: E731
    if not strata:  # uniform draws over the training set
        return shares_of(x)
    n_ref, share = strata  # that share of every batch from the last n_ref rows (D_ref)
    return share * shares_of(x[-n_ref:]) + (1 - share) * shares_of(x[:-n_ref])


def fit_metrics(shares: list[float], fit_shares: Tensor | None) -> dict:
    """fit_gap: the L2 distance of the samples' shares to what a perfect fit of the method's
    objective generates; above its sampling floor, the network has not learned what it was
    trained on, and a bias number is partly under-fitting rather than the method."""
    if fit_shares is None:
        return {}
    return {"fit_gap": float((torch.tensor(shares, dtype=torch.float64) - fit_shares).norm())}


def run_metrics(samples: Tensor, data) -> tuple[dict, list[float], list[float]]:
    """A run's sample metrics: bias against the target shares (raw, and corrected through the
    attribute classifier's confusion matrix measured on the labelled evaluation set, which the
    classifier never trained on), the Fréchet distance and
    precision/recall/density/coverage in the dataset's feature space, the attribute classifier's
    held-out accuracy (FID: `run_fid`). Returns the metrics, the generated shares and the
    classifier's accuracy per group."""
    metrics = bias_metrics(data.attribute(samples), data.target_shares)
    shares = metrics.pop("shares")
    predicted_eval = data.attribute(data.x_eval)
    confusion = confusion_matrix(predicted_eval, data.eval_labels, len(data.target_shares))
    metrics.update(share_metrics(corrected_shares(torch.tensor(shares), confusion), data.target_shares,
                                 "_corrected"))
    fake, real = data.features(samples), data.features(data.x_eval)
    metrics[f"fd_{data.feature_space}"] = frechet_distance(fake, real)
    metrics.update(prdc_metrics(real, fake))
    metrics["attr_acc"] = float((predicted_eval == data.eval_labels).double().mean())
    return metrics, shares, [round(float(a), 6) for a in confusion.diagonal()]


def run_fid(samples: Tensor, data, fid_ref: str, device: torch.device,
            cache: Path, tag: list) -> tuple[float, dict] | None:
    """FID of `samples` against the evaluation set (`fid_ref` eval) or the dataset's balanced
    training set (train: the paper's protocol), with clean-fid's Inception weights; None without
    them or for vector data. Reference statistics are cached once per dataset, options and
    reference under `cache`. Returns the FID and the protocol used (for the record)."""
    inception = inception_folder() if data.is_image else None
    if inception is None:  # real FID only with clean-fid's own Inception weights
        return None
    reference = data.x_eval if fid_ref == "eval" else data.fid_train()
    stats = cache / f"fid-stats-{tag[0]}-{digest([*tag, fid_ref, len(reference)])}.pt"
    value = fid(samples, reference, InceptionFeatures(inception, device), stats)
    return value, {"reference": fid_ref, "reference_size": len(reference), "samples": len(samples)}


def ratio_diagnostics(model: DensityRatio, data, pi: float, seed: int,
                      fit: dict | None = None, reference: DensityRatio | None = None) -> tuple[dict, list[dict]]:
    """Scalar metrics and, where the exact ratio is known, the error curve over σ.

    Every dataset: weight collapse on D_bias and, for a trained ratio with a holdout, its held-out
    BCE (`ratio_val_bce`, mean over σ bands of the kept states). With a `reference` (the
    label-informed ratio, where labels but no exact ratio exist): `ratio_err_labels`, the log-r
    RMSE against it, per σ in the rows (marked "against": "labels"). With the exact ratio: `ratio_err`
    (log-r RMSE, over σ for a time-dependent model, at σ_min only for a clean-data one, whose
    values at noisy points mean nothing) and `corr_err` (TIW-DSM's target error, see corr_err).
    """
    from .streams import generator, stream_seed

    scalars = {"w_collapse": weight_collapse(model, data.x_bias)}
    val = [v for v in (fit or {}).get("val_bce", []) if v is not None]
    if val:
        scalars["ratio_val_bce"] = float(np.mean(val))
    if data.exact_ratio is None and reference is None:
        return scalars, []
    if data.exact_ratio is None:  # the distance to the label-informed ratio, on a fixed part of D_bias
        pick = torch.randperm(len(data.x_bias), generator=generator(seed, "ratio_eval_data"))[:2000]
        rows = ratio_error(model, reference, to_model_space(data.x_bias[pick]), pi,
                           stream_seed(seed, "ratio_eval_noise"), None if model.time_dependent else [SIGMA_MIN])
        scalars["ratio_err_labels"] = integrated_error(rows)
        return scalars, [{**row, "against": "labels"} for row in rows]
    x0 = data.sample_bias(4000, generator(seed, "ratio_eval_data"))
    exact = data.exact_ratio(model.time_dependent)
    rows = ratio_error(model, exact, x0, pi, stream_seed(seed, "ratio_eval_noise"),
                       None if model.time_dependent else [SIGMA_MIN])
    scalars["ratio_err"] = integrated_error(rows)
    if model.time_dependent:
        scalars["corr_err"] = corr_err(rows, data.sigma_data)
    return scalars, rows


def save_samples_figure(samples: Tensor, path: Path) -> None:
    """A grid of the first 256 images, or a scatter of the first two coordinates of vectors."""
    from .checkpoint import write_bytes

    if samples.ndim == 4:
        from torchvision.utils import save_image
        write_bytes(path, lambda f: save_image((samples[:256].float() + 1) / 2, f, format="png", nrow=16,
                                               padding=1))
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    pts = samples[:5000].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
    ax.set_aspect("equal")
    ax.set_title("generated samples (first two coordinates)")
    write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
