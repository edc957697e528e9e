"""Defects found by a hostile user: each test failed on the code before its fix."""

import json
import re

import pytest
import torch
from conftest import FAST
from typer.testing import CliRunner

from tiwbench.cli import app

runner = CliRunner()
RUN = ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05"]


def dry_run_id(*args):
    out = runner.invoke(app, [*args, "--dry-run"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)["run_id"]


def test_options_an_oracle_run_does_not_use_do_not_split_its_id():
    assert dry_run_id(*RUN, "--ratio", "oracle") == dry_run_id(*RUN, "--ratio", "oracle", "--ratio-steps", "50")
    assert dry_run_id(*RUN) != dry_run_id(*RUN, "--ratio-steps", "50")  # a trained ratio does use it


def test_equal_dataset_option_values_are_one_run():
    base = ["run", "--method", "dsm_obs", "--dataset", "cifar10_lt", "--ref", "0.1"]
    ids = {dry_run_id(*base, "--dataset-option", f"imbalance={v}") for v in ("100", "100.0", "1e2")}
    assert ids == {dry_run_id(*base)}  # 100 is the default: the same computation as no option
    assert dry_run_id(*base, "--dataset-option", "imbalance=50") != dry_run_id(*base)


@pytest.mark.parametrize("args, message", [
    (["--warmup", "-5"], "--warmup must be >= 0"),
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--alpha", "inf"], "--alpha must be a finite number"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--accum", "0"], "--accum must be >= 1"),
    (["--seed", "99999999999999999999999"], "--seed must be an integer in"),
    (["--device", "meta"], "--device must be cpu, cuda, cuda:N or auto"),
    (["--num-samples", "1"], "--num-samples must be >= 6"),
    (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
    (["--ema-decay", "1"], "--ema-decay must be in [0, 1)"),
])
def test_invalid_settings_are_refused_before_any_work(args, message, tmp_path):
    out = runner.invoke(app, [*RUN, *args, "--results", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing was started


def test_gmm_hd_dim_option_works_and_is_checked():
    base = ["run", "--method", "dsm_obs", "--dataset", "gmm_hd", "--ref", "0.1"]
    assert dry_run_id(*base, "--dataset-option", "dim=8") != dry_run_id(*base)
    out = runner.invoke(app, [*base, "--dataset-option", "dim=2", "--dry-run"])
    assert out.exit_code == 2 and "bad option value: dim must be an integer >= 4" in out.output


def test_sweep_refuses_a_non_finite_alpha():
    out = runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "tiw_dsm", "--refs", "0.05",
                              "--alphas", "nan", "--dry-run"])
    assert out.exit_code == 2 and "--alpha must be a finite number" in out.output


def record_json(method="dsm_obs", seed=0, bias=0.5):
    return {"config": {"method": method, "dataset": "gmm2d", "ref": 0.05, "seed": seed, "ratio": "none"},
            "metrics": {"bias_l2": bias}, "shares": [1, 0, 0, 0], "target_shares": [0.25] * 4,
            "feature_space": "data", "ratio_source": "none", "ratio_kind": None}


BAD_FIELDS = [{"target_shares": None}, {"shares": [1, 0]}, {"sizes": {"bias": 10}},
              {"sizes": {"ref": 0, "samples": 9}}, {"score_curves": [1, 2, 3]}, {"ratio_fit": "x"},
              {"versions": [1]}, {"device": 5}, {"fit_shares": [2, 0, 0, 0]},
              {"timing": {"total_s": "soon"}}, {"processes": 0}]


@pytest.mark.parametrize("bad", ["", "{", "{}", '{"config": {}, "metrics": {"bias_l2": "x"}}',
                                 '{"metrics": {"bias_l2": 1e400}}',
                                 json.dumps({**record_json(), "schema_version": 99}),
                                 *(json.dumps({**record_json(), **field}) for field in BAD_FIELDS)])
def test_an_unreadable_record_is_skipped_with_a_warning_and_not_finished(tmp_path, bad):
    from tiwbench.config import resolve_config
    from tiwbench.sweep import unfinished

    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.json").write_text(json.dumps(record_json()))
    cfg = resolve_config("dsm_obs", "gmm2d", 0.05, seed=1)
    (tmp_path / cfg.run_id).mkdir()
    (tmp_path / cfg.run_id / "metrics.json").write_text(bad)
    out = runner.invoke(app, ["table", "--results", str(tmp_path), "--format", "csv"])
    assert out.exit_code == 0 and "skipped: cannot use the run record" in out.output
    assert "gmm2d,dsm_obs,,,0.05,1,bias_l2,0.5,0,1" in out.output
    assert unfinished([cfg], tmp_path) == [cfg]  # a sweep computes it again


def test_a_copied_run_folder_is_counted_once(tmp_path):
    for folder in ("run", "run-copy"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text(json.dumps(record_json()))
    out = runner.invoke(app, ["table", "--results", str(tmp_path), "--format", "csv"])
    assert out.exit_code == 0 and "a copy of run" in out.output
    assert "gmm2d,dsm_obs,,,0.05,1,bias_l2,0.5,0,1" in out.output


def test_run_recomputes_over_an_empty_record(tmp_path):
    args = ["run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05", "--results", str(tmp_path), *FAST]
    run_id = dry_run_id(*args)
    (tmp_path / run_id).mkdir(parents=True)
    (tmp_path / run_id / "metrics.json").write_text("")
    out = runner.invoke(app, args)
    assert out.exit_code == 0 and "recomputing" in out.output, out.output
    assert json.loads((tmp_path / run_id / "metrics.json").read_text())["metrics"]["bias_l2"] > 0


def test_a_checkpoint_with_missing_parts_gives_one_line(tmp_path):
    from dataclasses import asdict

    from tiwbench.checkpoint import save_torch
    from tiwbench.diffusion import Denoiser
    from tiwbench.errors import TiwbenchError
    from tiwbench.methods.dsm_obs import DSMObs
    from tiwbench.nets.mlp import ConditionalMLP
    from tiwbench.train import TrainConfig, train_score

    cfg = TrainConfig(steps=5, batch_size=8)
    ckpt = tmp_path / "checkpoint.pt"
    save_torch(ckpt, {"config": asdict(cfg), "model": {}})  # the right config, the rest missing
    den = Denoiser(ConditionalMLP(2, hidden=8, depth=1), 1.0)
    with pytest.raises(TiwbenchError, match="is incomplete or does not fit this network"):
        train_score(DSMObs(), den, torch.randn(32, 2), 0.0, None, 1.0, cfg, 0, ckpt)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_while_sampling_ends_with_one_line(tmp_path, signum):
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "tiwbench", "run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05",
           "--steps", "30", "--num-samples", "1000000", "--sample-steps", "30", "--results", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/checkpoint.pt")) and time.time() < deadline:  # training has ended
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("error: interrupted") == 1
    assert list(tmp_path.glob("*/checkpoint.pt")) and not list(tmp_path.glob("*/metrics.json"))


@pytest.mark.parametrize("config, metrics, field", [
    ({"method": "x/../../PWNED"}, {"bias_l2": 0.1}, "method name"),
    ({"dataset": "../gmm2d"}, {"bias_l2": 0.1}, "dataset name"),
    ({}, {"fd_/../../PWNED_FIG": 0.1}, "metric name"),
    ({"ref": -5}, {"bias_l2": 0.1}, "ref must be in (0, 1]"),
    ({"seed": -1}, {"bias_l2": 0.1}, "seed must be an integer"),
])
def test_a_record_whose_names_could_leave_its_folder_is_skipped_and_nothing_is_written_outside(
        tmp_path, config, metrics, field):
    """Record fields become paths (run ids, figure names): a hostile record is skipped with a warning
    naming the field, and a report writes nothing outside --out."""
    good = {"config": {"method": "dsm_obs", "dataset": "gmm2d", "ref": 0.05, "ratio": "none"},
            "metrics": {"bias_l2": 0.5}, "shares": [1, 0, 0, 0], "target_shares": [0.25] * 4,
            "feature_space": "data", "ratio_source": "none", "ratio_kind": None}
    bad = {**good, "config": {**good["config"], **config}, "metrics": metrics}
    runs = tmp_path / "deep" / "runs"
    for name, record in (("good", good), ("bad", bad)):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(record))
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(runs),
                              "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert "skipped" in out.output and field in " ".join(out.output.split())
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"deep", "o"} and not list(tmp_path.rglob("*PWNED*"))


@pytest.mark.parametrize("tamper", ["scaled", "zeroed", "nan", "step"])
def test_a_saved_state_changed_after_writing_is_refused_by_name(tmp_path, tamper):
    from tiwbench.checkpoint import load_torch, save_torch
    from tiwbench.errors import TiwbenchError

    path = tmp_path / "state.pt"
    save_torch(path, {"config": {"a": 1}, "model": {"w": torch.ones(3, 2)}, "step": 5, "curves": [(1, 0.5)]})
    assert load_torch(path, expect={"a": 1})["step"] == 5  # ours reads back
    obj = torch.load(path, weights_only=True)
    if tamper == "scaled":
        obj["model"]["w"] *= 5
    elif tamper == "zeroed":
        obj["model"]["w"].zero_()
    elif tamper == "nan":
        obj["model"]["w"][0, 0] = float("nan")
        del obj["digest"]  # as a file from before digests were stored: NaN is still refused
    else:
        obj["step"] = 10**6
    torch.save(obj, path)
    with pytest.raises(TiwbenchError, match="state.pt (is not what tiwbench wrote|holds NaN)"):
        load_torch(path, expect={"a": 1})


def test_a_tampered_ratio_cache_ends_a_run_with_one_line(tmp_path):
    args = ["run", "--method", "iw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--results", str(tmp_path), *FAST]
    assert runner.invoke(app, args).exit_code == 0
    (cache,) = (tmp_path / "_ratios").glob("*time_independent*.pt")
    obj = torch.load(cache, weights_only=True)
    obj["model"] = {k: v * 5 if v.is_floating_point() else v for k, v in obj["model"].items()}
    torch.save(obj, cache)
    out = runner.invoke(app, [*args, "--alpha", "0.5"])  # another run of the same ratio
    assert out.exit_code == 2 and "is not what tiwbench wrote" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, code):
    import errno
    import os

    from tiwbench import checkpoint
    from tiwbench.errors import TiwbenchError
    from tiwbench.evaluate import save_samples_figure

    reason = os.strerror(getattr(errno, code))

    def refuse(fd):
        raise OSError(getattr(errno, code), reason)

    monkeypatch.setattr(checkpoint.os, "fsync", refuse)
    with pytest.raises(TiwbenchError, match=re.escape(f"cannot write {tmp_path / 'metrics.json'}: {reason}")):
        checkpoint.write_json(tmp_path / "metrics.json", {"a": 1})
    with pytest.raises(TiwbenchError, match="cannot write .*samples.png"):
        save_samples_figure(torch.zeros(4, 3, 8, 8), tmp_path / "samples.png")
    assert list(tmp_path.iterdir()) == []  # no truncated file, no temporary one


def test_a_reference_set_too_small_for_held_out_selection_is_refused_before_training(tmp_path):
    out = runner.invoke(app, [*RUN, "--ref", "1e-6", "--results", str(tmp_path), *FAST])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "gives 1 reference sample, too few for the discriminator's held-out share 0.2: it needs at least 3" \
        in " ".join(out.output.split())
    assert not list(tmp_path.glob("*/metrics.json")) and not list(tmp_path.glob("_ratios/*.pt"))


def test_too_few_samples_for_the_metrics_are_refused_before_any_work(tmp_path):
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05",
                              "--num-samples", "5", "--results", str(tmp_path)])
    assert out.exit_code == 2 and "--num-samples must be >= 6" in out.output, out.output
    from tiwbench.evaluate import PRDC_K

    assert PRDC_K + 1 == 6  # the bound in config.py follows prdc's k


def _plugin(name, loss=None, guidance=None):
    from tiwbench.methods.dsm_obs import DSMObs

    attrs = {"name": name, "description": "a broken test plugin"}
    if loss:
        def broken_loss(self, batch, denoiser, ratio=None, alpha=1.0):
            return loss(DSMObs.loss(self, batch, denoiser))
        attrs["loss"] = broken_loss
    if guidance:
        attrs["guidance"] = lambda self, x, sigma, ratio, alpha=1.0: guidance(x)
    return type(name, (DSMObs,), attrs)


@pytest.mark.parametrize("plugin, message", [
    (_plugin("loss_wide", loss=lambda v: torch.stack([v, v], 1)), "loss must be one value per sample, shape"),
    (_plugin("loss_scalar", loss=lambda v: v.mean()), "loss must be one value per sample, shape"),
    (_plugin("loss_detached", loss=lambda v: v.detach()), "its loss does not depend on the network"),
    (_plugin("guide_small", guidance=lambda x: torch.zeros(1)), "guidance must have the shape of x"),
    (_plugin("guide_nan", guidance=lambda x: torch.full_like(x, float("nan"))), "guidance is not finite"),
])
def test_a_plugins_malformed_loss_or_guidance_is_one_line_naming_it(tmp_path, plugin, message):
    from tiwbench import registry

    registry.register("method", plugin)
    try:
        out = runner.invoke(app, ["run", "--method", plugin.name, "--dataset", "gmm2d", "--ref", "0.05",
                                  "--results", str(tmp_path), "--steps", "20", "--num-samples", "50",
                                  "--sample-steps", "4"])
    finally:
        registry.unregister("method", plugin.name)
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert f"method {plugin.name!r}" in out.output and message in out.output
    assert not list(tmp_path.glob("*/metrics.json"))


def test_training_state_is_also_saved_by_wall_time(tmp_path, monkeypatch):
    from tiwbench import checkpoint
    from tiwbench.diffusion import Denoiser
    from tiwbench.methods.dsm_obs import DSMObs
    from tiwbench.nets.mlp import ConditionalMLP
    from tiwbench.train import TrainConfig, train_score

    ckpt, seen = tmp_path / "checkpoint.pt", []
    monkeypatch.setattr(checkpoint, "CHECKPOINT_SECONDS", 0.0)  # every step is past the interval
    den = Denoiser(ConditionalMLP(2, hidden=8, depth=1), 1.0)
    train_score(DSMObs(), den, torch.randn(32, 2), 0.0, None, 1.0, TrainConfig(steps=5, batch_size=8), 0, ckpt,
                on_step=lambda step: seen.append((step, ckpt.exists())))
    assert seen[:3] == [(0, False), (1, False), (2, True)]  # saved after step 1, 999 steps before the count


@pytest.mark.parametrize("attribute, value", [("train_on", "xyz"), ("ratio", "sometimes"), ("fits", "all"),
                                              ("stratified_batches", "yes")])
def test_a_method_plugin_with_a_misspelt_attribute_is_refused_at_registration(attribute, value):
    from tiwbench import registry
    from tiwbench.errors import TiwbenchError
    from tiwbench.methods.dsm_obs import DSMObs

    plugin = type("Odd", (DSMObs,), {"name": "odd", "description": "x", attribute: value})
    with pytest.raises(TiwbenchError, match=f"method 'odd': {attribute} = {value!r}; it must be one of"):
        registry.register("method", plugin)
    assert "odd" not in registry.available("method")


def test_a_classifier_option_naming_a_folder_says_so(tmp_path):
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "shapes16", "--ref", "0.05",
                              "--dataset-option", f"classifier={tmp_path}", "--dry-run"])
    assert out.exit_code == 2 and "is a folder, not a TorchScript file" in out.output


def test_a_text_file_as_classifier_is_one_line_without_torchs_deprecation_notice(tmp_path):
    import warnings

    from tiwbench.classifier import ScriptedClassifier
    from tiwbench.errors import TiwbenchError

    text = tmp_path / "classifier.txt"
    text.write_text("not TorchScript")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TiwbenchError, match="cannot load the TorchScript classifier"):
            ScriptedClassifier(text, 3, 16, 4)
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]


def test_records_whose_values_would_average_to_inf_are_skipped(tmp_path):
    for seed in (0, 1):
        (tmp_path / f"r{seed}").mkdir()
        (tmp_path / f"r{seed}" / "metrics.json").write_text(json.dumps(record_json(seed=seed, bias=1.7e308)))
    out = runner.invoke(app, ["table", "--results", str(tmp_path), "--format", "csv"])
    assert "finite numbers below 1e+300" in out.output and "inf" not in out.output.split("\n", 2)[-1]


def test_a_signal_during_the_last_training_step_is_not_lost(tmp_path):
    import os
    import signal

    from tiwbench.diffusion import Denoiser
    from tiwbench.errors import Interrupted
    from tiwbench.methods.dsm_obs import DSMObs
    from tiwbench.nets.mlp import ConditionalMLP
    from tiwbench.train import TrainConfig, train_score

    def signal_at_the_end(step):
        if step == 5:  # after the last step, before the loop ends (the final save follows)
            os.kill(os.getpid(), signal.SIGINT)

    den = Denoiser(ConditionalMLP(2, hidden=8, depth=1), 1.0)
    with pytest.raises(Interrupted, match="interrupted after the last step; checkpoint saved"):
        train_score(DSMObs(), den, torch.randn(32, 2), 0.0, None, 1.0, TrainConfig(steps=5, batch_size=8), 0,
                    tmp_path / "checkpoint.pt", on_step=signal_at_the_end)
    assert (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", [["run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05"],
                                     ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs"],
                                     ["table"], ["report", "--dataset", "gmm2d", "--out", "x"]])
def test_an_empty_folder_option_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, [*command, "--results", ""])
    assert out.exit_code == 2 and "is empty: name a folder" in out.output
    if command[0] == "report":
        out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--out", " "])
        assert out.exit_code == 2 and "is empty: name a folder" in out.output
    assert list(tmp_path.iterdir()) == []  # nothing written here


def test_a_results_option_naming_a_file_says_so(tmp_path):
    afile = tmp_path / "records"
    afile.write_text("x")
    for command in (["table"], ["report", "--dataset", "gmm2d", "--out", str(tmp_path / "o")]):
        out = runner.invoke(app, [*command, "--results", str(afile)])
        assert out.exit_code == 2 and f"results folder {afile} is a file, not a folder" in out.output
    missing = runner.invoke(app, ["table", "--results", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
