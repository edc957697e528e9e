"""On images, where labels but no exact ratio exist, a learned ratio is measured against the
label-informed one: recorded per σ and as ratio_err_labels, tabled as such."""

import pytest
from conftest import registered
from typer.testing import CliRunner

from tiwbench.cli import app
from tiwbench.datasets.shapes import Shapes16
from tiwbench.record import load_records
from tiwbench.results import ratio_error_markdown, ratio_error_table

runner = CliRunner()


class TinyShapes(Shapes16):
    name = "shapes16_tiny"
    n_bias, n_eval, classifier_steps = 400, 200, 30


@pytest.mark.slow
def test_a_learned_ratio_on_images_is_measured_against_the_label_informed_one(tmp_path):
    with registered("dataset", TinyShapes):
        base = ["--dataset", "shapes16_tiny", "--ref", "0.25", "--results", str(tmp_path), "--steps", "10",
                "--ratio-steps", "30", "--num-samples", "32", "--sample-steps", "4"]
        for extra in (["--method", "tiw_dsm"], ["--method", "tiw_dsm", "--ratio", "labels"]):
            out = runner.invoke(app, ["run", *base, *extra])
            assert out.exit_code == 0, out.output
    records = {r.ratio_source: r for r in load_records(tmp_path)}
    learned, bound = records["discriminator"], records["labels"]
    assert learned.metrics["ratio_err_labels"] > 0 and "ratio_err_labels" not in bound.metrics
    assert {row["against"] for row in learned.ratio_error} == {"labels"} and len(learned.ratio_error) > 3
    assert len(list((tmp_path / "_ratios").glob("*-labels-*.pt"))) == 1  # one fit, shared by both runs
    md = ratio_error_markdown(ratio_error_table(list(records.values())))
    assert "against the label-informed ratio, by σ" in md and "exact" not in md.split("by σ")[0]
