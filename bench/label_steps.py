"""How many steps the label-informed bound's noise-conditional group classifier needs: its accuracy
and KL from the exact posterior of the empirical D_bias mixture (a Gaussian kernel over D_bias,
the distribution DSM itself fits) on 400 D_bias images noised afresh, per σ.

    OMP_NUM_THREADS=1 python bench/label_steps.py SEED REF STEPS[,STEPS...] [LR]   # shapes16

Each step count trains afresh (one cosine schedule over it), as `--ratio labels` trains.
"""
import sys, math, time, types, torch
from pathlib import Path
torch.set_num_threads(1)
from tiwbench.config import resolve_config
from tiwbench import registry
from tiwbench.diffusion import to_model_space
from tiwbench.label_ratio import group_weights, LabelRatio, with_outputs, _train

seed = int(sys.argv[1]); ref = float(sys.argv[2]); steps_list = [int(s) for s in sys.argv[3].split(",")]
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
res = Path("results/runs")
cfg = resolve_config("tiw_dsm", "shapes16", ref, seed=seed, ratio="labels")
recipe = registry.get_dataset("shapes16")
data = recipe.build(ref, seed, None, cache_dir=res / "_cache")
X = to_model_space(data.x_bias).flatten(1).double(); lab = data.bias_labels.long(); sq = (X * X).sum(1)
ltb = group_weights(data)
for steps in steps_list:
    torch.manual_seed(seed)
    model = LabelRatio(with_outputs(recipe.ratio_net(), len(ltb)), data.sigma_data, ltb, True)
    c = types.SimpleNamespace(seed=seed, ratio_lr=lr, ratio_steps=steps, ratio_batch_size=cfg.ratio_batch_size)
    t = time.time(); fit = _train(model, data, c, torch.device("cpu")); t = time.time() - t
    model.eval()
    g = torch.Generator().manual_seed(123); idx = torch.randperm(len(X), generator=g)[:400]; x0 = X[idx]
    out = []
    for sigma in [0.01, 0.1, 0.3, 0.6, 1.0, 2.0]:
        xt = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.double)
        d2 = (xt * xt).sum(1, keepdim=True) - 2 * xt @ X.T + sq[None]
        logk = -d2 / (2 * sigma ** 2)
        lp = torch.stack([torch.logsumexp(logk.masked_fill(lab[None] != k, -math.inf), 1) for k in range(len(ltb))], 1)
        post = lp - torch.logsumexp(lp, 1, keepdim=True)
        with torch.no_grad():
            cl = model.group_logits(xt.float().view(-1, *data.x_bias.shape[1:]), torch.full((400,), sigma)).log_softmax(1).double()
        out.append(f"σ{sigma}: acc {(cl.argmax(1) == lab[idx]).float().mean():.3f} KL {(post.exp() * (post - cl)).sum(1).mean():.3f}")
    print(f"steps {steps} lr {lr} ce_last100 {fit['train_ce_last100']:.3f} {t:.0f}s | " + " | ".join(out), flush=True)
