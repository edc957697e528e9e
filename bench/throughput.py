"""Training-step and sampler throughput (img/s) and peak memory per precision, in one table.

    python bench/throughput.py                       # GPU: ddpmpp32, batch 256, fp32/tf32/bf16
    python bench/throughput.py --device cpu --net tiny --batch 8 --iters 3 --precisions fp32
    python bench/throughput.py --precisions bf16 --channels-last   # the other memory layout
    python bench/throughput.py --sampler-graphs    # adds the sampler under CUDA graphs

With compilation on (the default on GPUs) the score and ratio networks are compiled as in
`tiwbench run`; `--sampler-graphs` also times the sampler compiled with mode="reduce-overhead"
(CUDA graphs), the measurement that decides whether runs should sample that way. The backend is
tiwbench's (`TIWBENCH_COMPILE_BACKEND`, default inductor; CUDA graphs are inductor's always).

Steps are tiwbench's own TrainStep (DSM = dsm_obs, TIW-DSM = tiw_dsm with a frozen σ-conditioned
discriminator) and its Heun sampler (18 steps = 35 network evaluations), on random data.
"""

from __future__ import annotations

import argparse
import time

import torch

from tiwbench.compiling import compile_backend, compile_module
from tiwbench.diffusion import Denoiser, heun_sample, sample_training_sigma
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.methods.tiw_dsm import TIWDSM
from tiwbench.nets.discriminator import ConvDiscriminator
from tiwbench.nets.unet import UNet, unet_config
from tiwbench.ratio import LearnedRatio
from tiwbench.train import TrainConfig, TrainStep, autocast


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, iters: int, warmup: int, device) -> float:
    """Seconds per call, after warm-up calls (which include any compilation)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--net", default="ddpmpp32")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the score and ratio networks and the sampler [on GPUs]")
    ap.add_argument("--sample-steps", type=int, default=18)
    ap.add_argument("--channels-last", action="store_true", help="networks and inputs in NHWC")
    ap.add_argument("--sampler-graphs", action="store_true",
                    help="also time the sampler compiled with mode='reduce-overhead' (CUDA graphs)")
    args = ap.parse_args()
    device = torch.device(args.device)
    compile = device.type == "cuda" if args.compile is None else args.compile
    backend = compile_backend() if compile else False  # an unknown one fails before any work
    b, shape = args.batch, (3, args.res, args.res)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand((b, *shape), generator=g) * 2 - 1).to(device)
    sigma = sample_training_sigma(b, g).to(device)
    noise = torch.randn((b, *shape), generator=g).to(device)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    x0, noise = x0.contiguous(memory_format=layout), noise.contiguous(memory_format=layout)
    rows = []
    for precision in args.precisions.split(","):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.manual_seed(0)
        ratio = LearnedRatio(ConvDiscriminator(3), 0.5, True).to(device, memory_format=layout)
        ratio = ratio.requires_grad_(False).eval()
        times = {}
        for method in (DSMObs(), TIWDSM()):
            denoiser = Denoiser(UNet(unet_config(args.net, 3, args.res)), 0.5).to(device, memory_format=layout)
            step = TrainStep(method, denoiser, ratio, 1.0, 0.05, TrainConfig(1, b), precision, compile)
            reset_peak(device)
            times[method.name] = timed(lambda step=step: step(x0, sigma, noise, 1e-4), args.iters, args.warmup,
                                       device)
            rows.append((precision, f"{method.name} step", b / times[method.name], peak_gib(device)))
        ema = step.ema.eval()
        samplers = {f"heun {args.sample_steps} steps": compile_module(ema) if compile else ema}
        if args.sampler_graphs:
            samplers[f"heun {args.sample_steps} steps, CUDA graphs"] = torch.compile(ema, mode="reduce-overhead")
        for what, net in samplers.items():
            def sample(net=net, precision=precision):
                with autocast(device, precision):
                    heun_sample(net, noise, args.sample_steps)

            reset_peak(device)
            t = timed(sample, max(1, args.iters // 5), 1, device)
            rows.append((precision, what, b / t, peak_gib(device)))
        rows.append((precision, "tiw/dsm step time", times["tiw_dsm"] / times["dsm_obs"], float("nan")))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, {args.net} {args.res}px, batch {b}, compile={backend}, "
          f"{'channels-last' if args.channels_last else 'contiguous'}")
    print("| precision | what | img/s (or ratio) | peak GiB |\n|---|---|---|---|")
    for p, what, v, mem in rows:
        print(f"| {p} | {what} | {v:,.2f} | {mem:.1f} |")


if __name__ == "__main__":
    main()
