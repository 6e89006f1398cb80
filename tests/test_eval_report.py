"""The evaluation pass in both capture modes, its overlays and plots, and the HTML report rendered by Chromium."""

import json
import subprocess

import numpy as np
import pytest
from eval_helpers import CHROMIUM, build_assets, forced_generate_kwargs
from PIL import Image
from trl import ModelConfig

from data_tools import load_source
from evaluation import (
    EvalArguments,
    evaluate_model,
    line_plot,
    prompt_inputs,
    render_report,
    sample_overlay,
    write_outputs,
)
from evaluation.evaluate import read_completions
from saliency import heatmap
from vlm import load_model_and_processor


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_report")
    paths = build_assets(root, num_rows=4)
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(paths["model"]), dtype="float32"))
    rows, _ = load_source("saliency_r1", str(paths["data"]), split="eval")
    return root, model, processor, rows, read_completions(paths["completions"], rows["question_id"])


def _args(root, name, **overrides):
    settings = {
        "output_dir": str(root / name),
        "batch_size": 4,
        "bootstrap_samples": 200,
        "report_samples": 2,
        "faithfulness_samples": 1,
        "faithfulness_steps": 3,
        "faithfulness_random_orders": 1,
        "sanity_samples": 2,
    }
    return EvalArguments(**{**settings, **overrides})


@pytest.fixture(scope="module")
def scored_run(assets):
    root, model, processor, rows, completions = assets
    args = _args(root, "scored")
    metrics = evaluate_model(model, processor, rows, args, model_name="tiny", completions=completions)
    return args, metrics


def test_generated_and_scored_completions_give_the_same_metrics(assets, scored_run):
    root, model, processor, rows, completions = assets
    prompt_length = prompt_inputs(processor, rows)["input_ids"].shape[1]
    forced = forced_generate_kwargs(processor, completions, prompt_length)
    args = _args(
        root, "generated", max_new_tokens=forced.pop("max_new_tokens"), faithfulness_samples=0, sanity_samples=0
    )
    generated = evaluate_model(model, processor, rows, args, model_name="tiny", generate_kwargs=forced)
    scored = scored_run[1]
    for ours, theirs in zip(generated["rows"], scored["rows"]):
        assert ours["completion"] == theirs["completion"]
        for key, value in theirs["scores"].items():
            assert ours["scores"][key] == (
                value if isinstance(value, str) or value is None else pytest.approx(value, abs=1e-4)
            )
    assert generated["faithfulness"] is None and generated["sanity"] is None


def test_metrics_of_reference_completions(scored_run):
    args, metrics = scored_run
    summary = metrics["summary"]
    assert summary["n"] == 4 and summary["format"]["mean"] == 1.0 and summary["accuracy"]["mean"] == 1.0
    counts = summary["flow/counts"]  # a random model may give an all-negative (empty) map; none may be missing
    assert counts["no_map"] == 0 and counts["scored"] + counts["empty_map"] == 4 and counts["scored"] >= 1
    assert set(summary["per_source"]) == {f"synthetic_shapes/{t}" for t in ("color", "shape", "left_of", "count")}
    for kind in ("flow", "direct"):
        energy = summary[f"{kind}/energy_pg"]
        assert 0.0 <= energy["low"] <= energy["mean"] <= energy["high"] <= 1.0
    assert set(metrics["faithfulness"]["auc"]) == {"flow", "direct", "random"}
    assert metrics["faithfulness"]["n_rows"] == 1 and len(metrics["faithfulness"]["fractions"]) == 4
    intervals = metrics["faithfulness"]["auc_vs_random"]
    assert set(intervals) == {"flow", "direct", "random"}
    difference = intervals["direct"]["deletion_minus_random"]
    assert difference["n"] == 1 and difference["low"] <= difference["mean"] <= difference["high"]
    sanity = metrics["sanity"]
    assert sanity["steps"][0] == "original" and len(sanity["steps"]) == 2 + 4  # read-out, then 4 layers
    assert set(sanity["methods"]) == {"flow", "direct"}
    for method in sanity["methods"].values():
        assert method["n_rows"] <= 2 and len(method["spearman"]) == len(sanity["steps"])
    direct = sanity["methods"]["direct"]
    assert direct["n_rows"] >= 1 and direct["spearman"][0] == pytest.approx(1.0)
    assert all(-1.0 <= value <= 1.0 for value in direct["spearman"])
    with_overlays = [r for r in metrics["rows"] if "overlays" in r]
    assert len(with_overlays) == 2
    for row in with_overlays:
        for path in row["overlays"].values():
            assert Image.open(f"{args.output_dir}/{path}").size == (256, 256)


def test_sample_overlay_enlarges_and_draws_the_box_and_the_map():
    image = Image.new("RGB", (64, 32), "white")
    heat = np.zeros((32, 64))
    heat[16, 48] = 1.0
    drawn = np.asarray(sample_overlay(image, heat, [0.5, 0.0, 1.0, 0.5]))
    assert drawn.shape == (128, 256, 3)  # enlarged to a 256-px long side
    assert tuple(drawn[0, 200]) == heatmap.BOX_COLOUR  # the box's top edge
    assert drawn[64, 192].tolist() != drawn[100, 20].tolist()  # the map's peak differs from the background
    no_map = np.asarray(sample_overlay(image, None, [0.5, 0.0, 1.0, 0.5]))
    assert tuple(no_map[0, 200]) == heatmap.BOX_COLOUR and tuple(no_map[100, 20]) != (255, 255, 255)
    with pytest.raises(ValueError, match="does not match"):
        sample_overlay(image, np.ones((8, 8)), [0.0, 0.0, 1.0, 1.0])


def test_line_plot_draws_each_series():
    plot = np.asarray(line_plot({"a": ([0, 1], [0, 1]), "b": ([0, 1], [1, 0])}, title="t", x_label="x", y_label="y"))
    colours = {tuple(c) for c in plot.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (214, 39, 40) in colours


def test_report_is_self_contained_and_compares(assets, scored_run, tmp_path):
    args, metrics = scored_run
    other = json.loads(json.dumps(metrics))
    other["model"] = "other-model"
    other["summary"]["accuracy"]["mean"] = 0.25
    _, report = write_outputs(metrics, args.output_dir, other, args.output_dir)
    text = report.read_text()
    assert "other-model" in text and "+75.0" in text  # accuracy 100 vs 25
    assert text.count("data:image/png;base64,") >= 2 * 2 * 2 + 3  # own + other overlays, two curve plots, sanity
    assert "Sanity check: cascading randomisation" in text and "reads the input, not the model" in text
    assert "0: original; 1: lm_head+norm; 2: lm_head+norm, layer 3" in text
    assert "deletion − random ↓" in text and "excludes 0" in text
    assert 'src="overlays' not in text and "file:" not in text


def test_report_says_whether_an_auc_interval_excludes_zero(scored_run):
    args, metrics = scored_run
    changed = json.loads(json.dumps(metrics))
    intervals = changed["faithfulness"]["auc_vs_random"]["direct"]
    intervals["deletion_minus_random"] = {"mean": -1.0, "low": -2.0, "high": -0.5, "n": 3}
    intervals["insertion_minus_random"] = {"mean": 0.5, "low": -0.1, "high": 1.0, "n": 3}
    text = render_report(changed, args.output_dir)
    assert "<td>yes, below 0</td>" in text and "<td>no</td>" in text
    assert "-1 <span class=ci>[-2, -0.5]</span>" in text  # AUC differences in log-prob units, not percent


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium package")
def test_report_renders_in_headless_chromium(scored_run, tmp_path):
    args, metrics = scored_run
    _, report = write_outputs(metrics, args.output_dir)
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1200,2600",
            report.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2600, 1200)
    not_white = (pixels < 245).any(-1).mean()
    assert not_white > 0.05, f"only {not_white:.1%} of the screenshot is not white"
    heat = (pixels[..., 0] > 180) & (pixels[..., 2] < 120) & (pixels[..., 1] < 200)  # orange/yellow heatmap pixels
    assert heat.sum() > 100, "no heatmap colours in the rendered report"
