"""The trace CLI: answers, writes overlays, arrays and trace.json; clear errors for a missing image or model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trl import ModelConfig

from saliency.explain import TraceArguments, trace_image, write_maps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_path(tmp_path):
    image = Image.new("RGB", (120, 90), (30, 30, 150))
    image.paste((220, 30, 30), (70, 10, 110, 50))
    path = tmp_path / "square.png"
    image.save(path)
    return path


@pytest.mark.slow
def test_cli_writes_maps_overlays_and_summary(tiny_model_dir, image_path, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "launch" / "trace.py"), "--model_name_or_path", str(tiny_model_dir),
        "--image", str(image_path), "--question", "What colour is the square?", "--output_dir", str(out),
        "--completion", "<think>the square is at the top right</think>red<|im_end|>",
        "--baselines", "attention", "gradient", "--boxes", "[0.58, 0.11, 0.92, 0.56]",
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answer: 'red'" in result.stdout
    summary = json.loads((out / "trace.json").read_text())
    assert summary["has_map"] and summary["answer"] == "red"
    assert summary["thinking"] == "the square is at the top right"
    assert summary["boxes"] == [[0.58, 0.11, 0.92, 0.56]]
    assert list(summary["maps"]) == ["flow", "attention", "gradient"]
    for kind, files in summary["maps"].items():
        heatmap = np.load(out / files["npy"])
        assert heatmap.shape == (90, 120) and heatmap.dtype == np.float32 and (heatmap >= 0).all(), kind
        assert files["empty"] == (not (heatmap > 0).any()), kind
        assert Image.open(out / files["png"]).size == (120, 90)
    assert Image.open(out / summary["panels"]).width > 4 * 120


def test_a_map_with_nothing_above_zero_is_marked_empty(image_path, tmp_path):
    image = Image.open(image_path)
    heatmaps = {"flow": np.zeros((90, 120), np.float32), "attention": np.ones((90, 120), np.float32)}
    files = write_maps(heatmaps, image, [], tmp_path)
    assert files["flow"]["empty"] and not files["attention"]["empty"]
    assert (np.load(tmp_path / "flow.npy") == 0).all() and (tmp_path / "panels.png").is_file()


def test_generated_completion_without_the_format_gets_a_summary_and_no_map(tiny_model_dir, image_path, tmp_path):
    args = TraceArguments(
        image=str(image_path), question="What colour is the square?", output_dir=str(tmp_path / "out"),
        max_new_tokens=2,  # too short for <think> ... </think> answer
    )  # fmt: skip
    summary = trace_image(args, ModelConfig(model_name_or_path=str(tiny_model_dir)))
    assert not summary["has_map"] and summary["reason"]
    assert json.loads((tmp_path / "out" / "trace.json").read_text()) == summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["trace.json"]


def test_missing_inputs_and_bad_flags_are_named(tiny_model_dir, image_path, tmp_path):
    def args(**overrides):
        fields = {"image": str(image_path), "question": "q", "output_dir": str(tmp_path / "o"), **overrides}
        return TraceArguments(**fields)

    with pytest.raises(FileNotFoundError, match="--image"):
        trace_image(args(image=str(tmp_path / "missing.png")), ModelConfig(model_name_or_path=str(tiny_model_dir)))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="--image"):
        trace_image(args(image=str(tmp_path / "notes.png")), ModelConfig(model_name_or_path=str(tiny_model_dir)))
    with pytest.raises(FileNotFoundError, match="--model_name_or_path"):
        trace_image(args(), ModelConfig(model_name_or_path=str(tmp_path / "no-model")))
    with pytest.raises(ValueError, match="--map"):
        args(map="heat")
    with pytest.raises(ValueError, match="--baselines: unknown shap"):
        args(baselines=["attention", "shap"])
    with pytest.raises(ValueError, match="--saliency_row"):
        args(saliency_row="generator")
    with pytest.raises(ValueError, match="--saliency_layers"):
        args(saliency_layers=[])
    with pytest.raises(ValueError, match=r"--saliency_layers \[9\]: layers \[9\] out of range"):
        trace_image(args(saliency_layers=[9]), ModelConfig(model_name_or_path=str(tiny_model_dir)))
