"""The main job's chain after the evaluation, end to end on a tiny model with tiny sizes: `launch/pipeline.py` exports
explanations and proposals, simulates fixations, trains the predictor with and without proposals, evaluates it and
writes the chain report; each of these stages is skipped once done and rerun alone when its output is gone."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import DatasetDict

from data_tools import generate_split

REPO = Path(__file__).resolve().parents[1]


def _recipe(name: str, out: Path, **overrides) -> Path:
    config = yaml.safe_load((REPO / "configs" / name).read_text()) | overrides
    path = out / name.replace("/", "-")
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_the_chain_runs_after_the_evaluation_and_resumes(tmp_path):
    root = tmp_path / "run"
    DatasetDict({"eval": generate_split("eval", 8, seed=0)}).save_to_disk(str(root / "data"))
    shutil.copytree(REPO / "vlm" / "tiny_base", root / "grpo-tiny")  # the tuned model's stand-in
    for done in ("sft-tiny/processor_config.json", "eval/report.html"):  # the training stages count as done
        (root / done).parent.mkdir(parents=True, exist_ok=True)
        (root / done).write_text("{}")
    export = _recipe("eval/export_tiny.yaml", tmp_path, max_new_tokens=16, batch_size=4)
    predictor = _recipe("predictor/synthetic_tiny.yaml", tmp_path, image_size=32, backbone_width=4, feature_dim=8,
                        refine_dim=4, batch_size=3, topk_anneal_epochs=1)  # fmt: skip
    command = [
        sys.executable, "launch/pipeline.py", "--output_root", str(root), "--export_config", str(export),
        "--export_images", "6", "--predictor_config", str(predictor), "--predictor_eval_images", "2",
        "--predictor_epochs", "1",
    ]  # fmt: skip
    first = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("already done") == 4  # data, SFT, GRPO, evaluation
    assert first.stdout.rstrip().endswith(f"report: {root / 'eval' / 'chain_report.html'}")

    summary = json.loads((root / "export" / "summary.json").read_text())
    assert summary["images"] == summary["exported"] == 6
    simulation = json.loads((root / "fixations" / "simulation.json").read_text())
    assert (simulation["train_images"], simulation["eval_images"]) == (4, 2)
    report = json.loads((root / "predictor-eval" / "eval_report.json").read_text())
    assert {"model", "centre_bias", "proposals_off"} <= set(report) and report["num_images"] == 2
    assert report["checkpoint"]["epoch"] == report["proposals_off_checkpoint"]["epoch"] == 1
    lines = [json.loads(x) for x in (root / "predictor-eval" / "explanations.jsonl").read_text().splitlines()]
    for line in lines:
        assert (root / "predictor-eval" / line["map_path"]).is_file()
        assert (root / "predictor-eval" / line["proposals_off_map_path"]).is_file()
        assert set(line["scores"]) == {"model", "centre_bias", "proposals_off"}
    page = (root / "eval" / "chain_report.html").read_text()
    assert page.count("<div class=card>") == 2 and '<a href="report.html">' in page

    # resumable: a finished chain is skipped; without its last two outputs only those two stages run again
    for done in ("predictor-eval/eval_report.json", "eval/chain_report.html"):
        (root / done).unlink()
    again = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("already done") == 8
    assert "[pipeline] predictor evaluation: done" in again.stdout and (root / "eval" / "chain_report.html").is_file()
