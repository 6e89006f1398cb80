"""The README's main job end to end: `launch/pipeline.py` runs every stage from the shipped base to the chain report and
resumes by skipping finished ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGE_MARKERS = (
    "data/dataset_dict.json",
    "sft-tiny/processor_config.json",
    "grpo-tiny/processor_config.json",
    "eval/report.html",
    "export/summary.json",
    "fixations/AiR_fixations_eval.json",
    "predictor/checkpoint-epoch1.pt",
    "predictor-no-proposals/checkpoint-epoch1.pt",
    "predictor-eval/eval_report.json",
    "eval/chain_report.html",
)
"""The file that marks each stage done, in order, with ``--predictor_epochs 1``."""
TINY_PREDICTOR = {"image_size": 32, "backbone_width": 4, "feature_dim": 8, "refine_dim": 4, "batch_size": 3,
                  "topk_anneal_epochs": 1}  # fmt: skip


def shortened(recipe: str, out: Path, **overrides) -> Path:
    """The recipe `configs/<recipe>` with `overrides`, written under `out`."""
    config = yaml.safe_load((REPO / "configs" / recipe).read_text())
    config.update(overrides)
    path = out / recipe.replace("/", "-")
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_skips_them_when_rerun(tmp_path):
    common = {"report_to": "none"}
    sft = shortened("sft/tiny_cpu.yaml", tmp_path, max_steps=2, answer_eval_samples=4, save_strategy="no", **common)
    grpo = shortened("grpo/tiny_cpu.yaml", tmp_path, max_steps=1, max_train_samples=2, num_generations=4,
                     per_device_train_batch_size=4, max_completion_length=8, save_strategy="no", **common)  # fmt: skip
    evaluation = shortened("eval/tiny_cpu.yaml", tmp_path, max_new_tokens=16, bootstrap_samples=10)
    export = shortened("eval/export_tiny.yaml", tmp_path, max_new_tokens=16)
    predictor = shortened("predictor/synthetic_tiny.yaml", tmp_path, **TINY_PREDICTOR)
    root = tmp_path / "run"
    command = [
        sys.executable, "launch/pipeline.py", "--output_root", str(root), "--num_sft", "32", "--num_rl", "16",
        "--num_eval", "8", "--eval_samples", "4", "--sft_config", str(sft), "--grpo_config", str(grpo),
        "--eval_config", str(evaluation), "--export_config", str(export), "--export_images", "6",
        "--predictor_config", str(predictor), "--predictor_eval_images", "2", "--predictor_epochs", "1",
    ]  # fmt: skip
    first = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for path in (*STAGE_MARKERS, "eval/metrics.json", "predictor-eval/explanations.jsonl"):
        assert (root / path).is_file(), path
    assert f"evaluation report: {root / 'eval' / 'report.html'}" in first.stdout
    assert f"report: {root / 'eval' / 'chain_report.html'}" in first.stdout.splitlines()[-1]

    again = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert again.stdout.count("already done") == len(STAGE_MARKERS)  # every stage skipped
    sft_config = json.loads((root / "sft-tiny" / "config.json").read_text())
    assert sft_config["model_type"] == "qwen3_vl"  # the cold start started from the shipped base (vlm/tiny_base)


def test_stages_are_skipped_when_their_output_exists(tmp_path, capsys):
    from launch.pipeline import main

    for path in STAGE_MARKERS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    main(["--output_root", str(tmp_path), "--predictor_epochs", "1"])
    out = capsys.readouterr().out
    assert out.count("already done") == len(STAGE_MARKERS)
    assert f"evaluation report: {tmp_path / 'eval' / 'report.html'}" in out
    assert out.rstrip().endswith(f"report: {tmp_path / 'eval' / 'chain_report.html'}")


def test_force_reruns_a_finished_stage_and_a_failure_names_it(tmp_path):
    from launch.pipeline import run

    done = tmp_path / "done"
    done.write_text("old")
    write = [sys.executable, "-c", f"open({str(done)!r}, 'w').write('new')"]
    run("write", write, done, force=False)
    assert done.read_text() == "old"
    run("write", write, done, force=True)
    assert done.read_text() == "new"
    stage = (
        tmp_path / "stage"
    )  # what a stage wrote: --force removes it, so nothing of the earlier run is resumed or kept
    (stage / "checkpoint-3").mkdir(parents=True)
    marker = stage / "summary.json"
    make = [sys.executable, "-c", f"import os; os.makedirs({str(stage)!r}); open({str(marker)!r}, 'w').write('new')"]
    run("stage", make, marker, force=True, output=stage)
    assert sorted(p.name for p in stage.iterdir()) == ["summary.json"]
    with pytest.raises(SystemExit, match=r"\[pipeline\] fail failed"):
        run("fail", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never", force=False)
