"""Image networks and datasets: sizes, splits, on-disk formats, clear errors."""

import pickle

import numpy as np
import pytest
import torch
from conftest import registered
from PIL import Image
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.classifier import batched, train_classifier
from tiwbench.cli import app
from tiwbench.datasets.digits import DigitsLT
from tiwbench.datasets.real import CelebA, Cifar10LT, Cifar100LT, FFHQGender
from tiwbench.datasets.shapes import BIAS_SHARES, Shapes16, Shapes32, render_shapes, stratified_groups
from tiwbench.errors import TiwbenchError
from tiwbench.nets.unet import UNet, unet_config
from tiwbench.record import Record

runner = CliRunner()


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_ddpmpp32_has_the_papers_parameter_count():
    assert abs(n_params(UNet(unet_config("ddpmpp32", 3, 32))) / 55.7e6 - 1) < 0.05


@pytest.mark.parametrize("preset, channels, res", [("tiny", 1, 8), ("tiny", 3, 32), ("ddpmpp64", 3, 64)])
def test_unet_maps_images_to_images(preset, channels, res):
    net = UNet(unet_config(preset, channels, res))
    x = torch.randn(2, channels, res, res)
    assert net(x, torch.tensor([-1.0, 2.0])).shape == x.shape


def rows(x):
    return {tuple(r.tolist()) for r in x.flatten(1)}


def test_digits_lt_splits_are_long_tailed_balanced_and_disjoint():
    recipe = DigitsLT()
    s = recipe.splits(0.1, seed=0, data_root=None)
    clf_y = s.eval_labels
    assert torch.equal(torch.bincount(clf_y, minlength=10), torch.full((10,), 30))
    assert len(s.x_bias) == sum(recipe.bias_counts()) and recipe.bias_counts()[0] == 10 * recipe.bias_counts()[-1]
    assert len(s.x_ref) == 10 * round(0.1 * len(s.x_bias) / 10)
    # sklearn's digits has a few duplicate images; the splits must not share any index-level image
    assert len(rows(s.x_eval) & rows(s.x_bias)) <= 2 and len(rows(s.x_ref) & rows(s.x_eval)) <= 2
    assert s.x_bias.min() >= -1 and s.x_bias.max() <= 1
    with pytest.raises(TiwbenchError, match="too few images of class 0 for ref 0.9"):
        recipe.splits(0.9, seed=0, data_root=None)


@pytest.mark.slow
def test_shapes_subgroup_shares_and_classifier_accuracy():
    x, y = Shapes32().sample(20_000, BIAS_SHARES, torch.Generator().manual_seed(0))
    shares = torch.bincount(y, minlength=4).double() / len(y)
    assert torch.allclose(shares, torch.tensor(BIAS_SHARES, dtype=torch.double), atol=0.01)
    assert x.shape == (20_000, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    # the classifier behind shapes16's bias numbers (shapes32's is the same network and training
    # on the same shapes drawn at twice the size). Adam at a constant learning rate: the shipped
    # 1,500 steps continue this 750-step run's trajectory, which must already be accurate
    recipe = Shapes16()
    xc, yc = recipe.classifier_data(None)
    clf = train_classifier(xc, yc, 4, recipe.classifier_steps // 2)
    xe, ye = recipe.sample(4000, (0.25,) * 4, torch.Generator().manual_seed(99))  # held out
    assert (batched(clf, xe).argmax(1) == ye).double().mean() >= 0.99


def test_shapes16_splits_and_shapes32_images_unchanged():
    s = Shapes16().splits(0.01, seed=0, data_root=None)
    assert s.x_bias.shape == (12_000, 3, 16, 16) and len(s.x_ref) == 120  # the smallest size: 120 images
    assert s.ref_stratified  # D_ref of exactly the target shares: stratified_groups
    assert s.bias_labels is not None and len(s.bias_labels) == 12_000
    counts = torch.bincount(stratified_groups(600, 4, torch.Generator().manual_seed(0)), minlength=4)
    assert counts.tolist() == [150] * 4
    assert torch.bincount(s.eval_labels, minlength=4).tolist() == [1000] * 4
    shares = torch.bincount(s.bias_labels, minlength=4).double() / 12_000
    assert torch.allclose(shares, torch.tensor(BIAS_SHARES, dtype=torch.double), atol=0.015)
    # places and radii scale with the size: at 32 pixels the images are those shapes32 always drew
    x = render_shapes(torch.arange(16) % 4, torch.Generator().manual_seed(3), 32)
    # float32 drawing differs in the last bits between CPUs (1.3e-5 here between an Intel Xeon and an
    # AMD EPYC); a moved or resized shape changes hundreds of pixels by up to 2 each
    assert float(x.double().sum()) == pytest.approx(-1994.7633152604103, abs=1e-3)


class SmallShapes(Shapes16):
    name = "shapes16_small"
    n_bias, n_eval, classifier_steps = 400, 200, 30


@pytest.mark.slow
def test_image_run_smoke(tmp_path):
    with registered("dataset", SmallShapes):
        out = runner.invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "shapes16_small", "--ref", "0.05",
                                  "--steps", "20", "--ratio-steps", "20", "--num-samples", "64",
                                  "--batch-size", "32", "--ratio-batch-size", "32",
                                  "--sample-steps", "4", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith("_")]
    assert (folder / "samples.png").exists()
    assert "fd_shapes16_small_clf" in (folder / "metrics.json").read_text()
    assert list((tmp_path / "_cache").glob("classifier-shapes16_small-*.pt"))


# --- real datasets, on small files written in their real formats -------------------------------

def write_cifar(root, folder, files, label_key, n_classes, per_class):
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in files:
        labels = np.repeat(np.arange(n_classes), per_class)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(root / folder / f, "wb") as fh:
            pickle.dump({b"data": data, label_key: labels.tolist()}, fh, protocol=2)


def test_cifar10_lt_reads_the_python_batches(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                b"labels", 10, 20)
    s = Cifar10LT(imbalance=10, n_bias=300).splits(0.1, 0, tmp_path)
    assert s.x_bias.dtype == torch.uint8 and s.x_bias.shape[1:] == (3, 32, 32)
    assert abs(len(s.x_bias) - 300) <= 10 and len(s.x_ref) == 30 and len(s.x_eval) == 200


def test_cifar100_lt_reads_its_files(tmp_path):
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], b"fine_labels", 100, 6)
    s = Cifar100LT(imbalance=2, n_bias=200).splits(0.5, 0, tmp_path)
    assert len(s.x_ref) == 100 and s.target_shares.shape == (100,)


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                b"labels", 10, 2)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(TiwbenchError, match="builtins.print is not allowed"):
        Cifar10LT(n_bias=10).splits(0.1, 0, tmp_path)


def write_faces(folder, names, size=(178, 218)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / n)


class SmallCelebA(CelebA):
    n_eval_per_group = 2


def test_celeba_reads_attributes_partitions_and_images(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(1, 61)]
    write_faces(tmp_path / "celeba" / "img_align_celeba", names)
    male = [1 if i % 2 else -1 for i in range(60)]
    black = [1 if i % 5 == 0 or i % 5 == 1 else -1 for i in range(60)]
    lines = ["60", "Black_Hair Male Smiling"] + [f"{n} {b} {m} -1" for n, b, m in zip(names, black, male)]
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    part = [f"{n} {0 if i < 36 else (1 if i < 48 else 2)}" for i, n in enumerate(names)]
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    s = SmallCelebA().splits(0.1, 0, tmp_path, cache_dir=tmp_path / "cache")
    assert len(s.x_bias) == 36 and s.x_bias.shape[1:] == (3, 64, 64) and s.x_bias.dtype == torch.uint8
    assert torch.equal(torch.bincount(s.eval_labels, minlength=4), torch.full((4,), 2))
    assert len(s.x_ref) == 4
    assert list((tmp_path / "cache").glob("images-celeba-*.pt"))  # decoded once, then cached


def test_ffhq_gender_majority_setting(tmp_path):
    names = [f"{i:05d}.png" for i in range(80)]
    write_faces(tmp_path / "ffhq" / "images", names, size=(80, 80))
    gender = ["female" if i % 2 else "male" for i in range(80)]
    (tmp_path / "ffhq" / "gender.csv").write_text("file,gender\n" + "".join(
        f"{n},{g}\n" for n, g in zip(names, gender)))

    class Small(FFHQGender):
        n_eval_per_group = 5

    recipe = Small(majority=0.9)
    s = recipe.splits(0.1, 0, tmp_path)
    assert len(s.x_eval) == 10 and len(s.x_ref) == 2 * round(0.1 * len(s.x_bias) / 2)
    _, groups, pool = recipe.labelled(tmp_path)
    idx = recipe.bias_indices(groups, pool, 0.1, torch.Generator().manual_seed(0))
    assert abs((groups[idx] == 0).double().mean().item() - 0.9) < 0.03
    with pytest.raises(TiwbenchError, match="majority must be in"):
        FFHQGender(majority=1.5)


@pytest.mark.parametrize("dataset, expected", [
    ("cifar10_lt", "cifar-10-batches-py/data_batch_1"),
    ("cifar100_lt", "cifar-100-python/train"),
    ("celeba", "celeba/list_attr_celeba.txt"),
    ("ffhq_gender", "ffhq/gender.csv"),
])
def test_missing_files_give_one_instructive_line(dataset, expected, tmp_path):
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", dataset, "--ref", "0.05",
                              "--data-root", "/missing", "--results", str(tmp_path)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert expected in out.output and "missing" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # a run that fails before it starts leaves no folder


def write_stand_in_inception(folder):
    """A TorchScript file with the interface of clean-fid's Inception file (x -> 2048 features)."""
    from torch import nn

    from tiwbench import evaluate

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3 * 4 * 4, 2048)

        def forward(self, x):
            return self.proj(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    torch.jit.script(Fake()).save(str(folder / evaluate.INCEPTION_FILE))


@pytest.mark.slow
def test_fid_uses_clean_fid_inception_weights_when_given(tmp_path, monkeypatch):
    """A stand-in TorchScript file with the Inception file's interface checks our plumbing:
    resize, features, cached reference statistics, and FID(x, x) = 0."""
    from tiwbench import evaluate

    write_stand_in_inception(tmp_path)
    assert evaluate.inception_folder() is None
    monkeypatch.setenv("TIWBENCH_INCEPTION", str(tmp_path))
    assert evaluate.inception_folder() == tmp_path
    extractor = evaluate.InceptionFeatures(tmp_path)
    x, _ = Shapes32().sample(64, (0.25,) * 4, torch.Generator().manual_seed(0))
    y, _ = Shapes32().sample(64, (0.0, 0.0, 0.0, 1.0), torch.Generator().manual_seed(1))
    stats = tmp_path / "stats.pt"
    assert evaluate.fid(x, x, extractor, stats) == pytest.approx(0, abs=1e-3)
    assert stats.exists()
    assert evaluate.fid(y, x, extractor, stats) > 1.0


class QuickCifar10LT(Cifar10LT):
    name = "cifar10_lt_quick"
    classifier_steps, classifier_arch = 5, "small"  # ResNet-18: test_classifiers.py; here the protocol


@pytest.mark.slow
def test_cifar_run_scores_fid_against_the_balanced_training_set(tmp_path, monkeypatch):
    """The paper's protocol on the small CIFAR fixture: --fid-ref train --fid-samples 100 scores
    100 samples against the statistics of the 500 training images, and the record says so."""
    data, inception, results = tmp_path / "data", tmp_path / "inception", tmp_path / "runs"
    write_cifar(data, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                b"labels", 10, 10)
    inception.mkdir()
    write_stand_in_inception(inception)
    monkeypatch.setenv("TIWBENCH_INCEPTION", str(inception))
    registry.register("dataset", QuickCifar10LT)
    try:
        args = ["run", "--method", "dsm_obs", "--dataset", "cifar10_lt_quick", "--ref", "0.1", "--net", "tiny",
                "--steps", "2", "--batch-size", "8", "--num-samples", "20", "--sample-steps", "2",
                "--dataset-option", "n_bias=200", "--dataset-option", "imbalance=2", "--data-root", str(data),
                "--results", str(results)]
        out = runner.invoke(app, [*args, "--fid-ref", "train", "--fid-samples", "100"])
        assert out.exit_code == 0, out.output
        (record,) = [Record.read(p) for p in results.glob("*/metrics.json")]
        assert record.fid_protocol == {"reference": "train", "reference_size": 500, "samples": 100}
        assert record.sizes["samples"] == 20 and record.metrics["fid"] > 0
        assert len(list((results / "_cache").glob("fid-stats-cifar10_lt_quick-*.pt"))) == 1
        out = runner.invoke(app, [*args, "--fid-ref", "eval", "--fid-samples", "0"])
        assert out.exit_code == 0, out.output
        protocols = sorted(str(Record.read(p).fid_protocol) for p in results.glob("*/metrics.json"))
        assert protocols == [str({"reference": "eval", "reference_size": 100, "samples": 20}),
                             str({"reference": "train", "reference_size": 500, "samples": 100})]
    finally:
        registry.unregister("dataset", QuickCifar10LT.name)
    # datasets without a balanced training set refuse the protocol before any work
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "digits_lt", "--ref", "0.1",
                              "--fid-ref", "train", "--results", str(tmp_path / "none")])
    assert out.exit_code == 2 and "--fid-ref train needs a balanced training set" in out.output
    assert Cifar10LT.defaults["fid_ref"] == "train" and Cifar10LT.defaults["fid_samples"] == 50_000


@pytest.mark.parametrize("batch, message", [
    ([1, 2, 3], "is not a dict with b'data'"),
    ({b"data": np.zeros((4, 3072), dtype=np.uint8)}, "is not a dict with b'data' and b'labels'"),
    ({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, "expected (N, 3072) and N labels"),
    ({b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1]}, "expected (N, 3072) and N labels"),
])
def test_a_malformed_cifar_batch_gives_one_line(tmp_path, batch, message):
    write_cifar(tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                b"labels", 10, 2)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
    with pytest.raises(TiwbenchError) as e:
        Cifar10LT(n_bias=10).splits(0.1, 0, tmp_path)
    assert message in str(e.value) and "data_batch_3" in str(e.value)


@pytest.mark.parametrize("option", ["imbalance=0", "imbalance=nan", "n_bias=0", "n_bias=5"])
def test_bad_cifar_options_are_refused_before_any_work(option):
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "cifar10_lt", "--ref", "0.1",
                              "--dataset-option", option, "--dry-run"])
    assert out.exit_code == 2 and "bad option value" in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_caches_of_two_data_roots_are_kept_apart(tmp_path):
    """A classifier trained on one folder's CIFAR is never reused for another folder's."""
    class Quick(Cifar10LT):
        classifier_steps = 2

    for root in ("a", "b"):
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        write_cifar(tmp_path / root, "cifar-10-batches-py", files, b"labels", 10, 2)
        Quick(n_bias=10).classifier(tmp_path / root, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("classifier-cifar10_lt-*.pt"))) == 2
    assert DigitsLT().source(tmp_path) == {}  # bundled data: the folder does not matter


def test_our_frechet_distance_is_clean_fids_formula():
    """Ours because clean-fid 0.1.35 passes `disp=` to scipy's sqrtm, which the GPU image's SciPy
    refuses; the numbers must stay clean-fid's (compared where clean-fid still runs). With fewer
    samples than features Σ₁Σ₂ is singular and scipy's sqrtm is accurate to about √eps only
    (SciPy 1.17.1: 5.5e-9 relative here), so that case is checked against 50-digit arithmetic."""
    import mpmath
    from cleanfid.fid import frechet_distance as clean_fid_fd

    from tiwbench.evaluate import _gaussian, frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g).double()
    full, singular = torch.randn(400, 6, generator=g).double() * 1.3 + 0.2, torch.randn(4, 6, generator=g).double()
    assert frechet_distance(a, full) == pytest.approx(clean_fid_fd(*_gaussian(a), *_gaussian(full)), rel=1e-9)
    assert frechet_distance(a, singular) == pytest.approx(clean_fid_fd(*_gaussian(a), *_gaussian(singular)),
                                                          rel=1e-7)
    (mu1, cov1), (mu2, cov2) = _gaussian(a), _gaussian(singular)
    with mpmath.workdps(50):  # tr Σ₁ + tr Σ₂ − 2·Σ√λ(Σ₁^½ Σ₂ Σ₁^½), in 50 digits
        root = mpmath.sqrtm(mpmath.matrix(cov1.tolist()))
        eig = mpmath.eig(root * mpmath.matrix(cov2.tolist()) * root, left=False, right=False)
        exact = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2)
                      - 2 * float(sum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in eig)))
    assert frechet_distance(a, singular) == pytest.approx(exact, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_commuting_singular_covariances_is_the_closed_form():
    """Covariances diagonal in one rotated basis, half their variances 0 (fewer samples than
    features): the distance is ‖μ₁ − μ₂‖² + Σ(√aᵢ − √bᵢ)² (up to the square roots of the zero
    eigenvalues' float noise, about 1e-8 each)."""
    from tiwbench.evaluate import gaussian_frechet

    rng = np.random.default_rng(0)
    d = 300
    a, b = rng.uniform(0, 2, d), rng.uniform(0, 2, d)
    a[: d // 2] = 0
    b[d // 4: 3 * d // 4] = 0
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = gaussian_frechet(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert got == pytest.approx(exact, rel=1e-7)


def test_shapes32_ddpmpp_is_shapes32s_data_with_gpu_sized_defaults(tmp_path):
    from tiwbench.config import resolve_config
    from tiwbench.datasets.shapes import Shapes32DDPMPP

    cfg = resolve_config("tiw_dsm", "shapes32_ddpmpp", 0.05)
    assert (cfg.net, cfg.batch_size, cfg.steps, cfg.warmup) == ("ddpmpp32", 256, 1500, 200)
    assert "precision" not in Shapes32DDPMPP.defaults  # `auto`: bf16 on a GPU
    gpu, cpu = Shapes32DDPMPP(), Shapes32()
    assert gpu.signature() == cpu.signature()  # the same images, so the same classifier cache
    small = {"n_bias": 40, "n_eval": 8}
    a = type("A", (Shapes32,), small)().splits(0.1, 0, None)
    b = type("B", (Shapes32DDPMPP,), small)().splits(0.1, 0, None)
    assert torch.equal(a.x_bias, b.x_bias) and torch.equal(a.x_ref, b.x_ref)
    assert isinstance(gpu.score_net(cfg.net), UNet)
