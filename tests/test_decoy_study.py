"""The decoy benchmark's study script: its scoring of cue-following, its paired table, and one seed end to end."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("decoy_study", REPO / "bench" / "decoy_study.py")
decoy_study = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(decoy_study)


def _metrics(path: Path, rows: list[dict], accuracy: float, pg: float, cue: dict | None = None) -> Path:
    summary = {
        "accuracy": {"mean": accuracy},
        "flow/pg": {"mean": pg},
        "flow/centre_point_pg": {"mean": 0.3},
        "flow/energy_pg": {"mean": 0.2},
        "flow/box_area_fraction": {"mean": 0.1},
        **(cue or {}),
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps({"summary": summary, "rows": rows}))
    return path / "metrics.json"


def test_split_numbers_add_the_cue_numbers_only_on_a_split_with_a_cue(tmp_path):
    cue = {"follows_cue": {"mean": 0.25}, "flow/cue_energy": {"mean": 0.125}}
    numbers = decoy_study.split_numbers(_metrics(tmp_path / "conflict", [], 0.5, 0.4, cue))
    assert numbers["follows cue"] == 0.25 and numbers["flow mass on cue"] == 0.125
    assert numbers["accuracy"] == 0.5 and numbers["flow PG"] == 0.4
    clean = {"follows_cue": {"mean": None}, "flow/cue_energy": {"mean": None}}  # no row carries a cue
    assert "follows cue" not in decoy_study.split_numbers(_metrics(tmp_path / "clean", [], 0.5, 0.4, clean))


def test_table_pairs_the_arms_by_seed_and_says_which_targets_hold():
    def numbers(acc_conflict, pg_conflict, acc_clean):
        base = {"centre PG": 0.3, "box area": 0.1, "flow energy-PG": 0.2}
        return {
            "clean": {"accuracy": acc_clean, "flow PG": 0.3, **base},
            "conflict": {"accuracy": acc_conflict, "flow PG": pg_conflict, "follows cue": 0.5, **base},
        }

    start = [numbers(0.2, 0.2, 0.8)] * 2
    runs = {"control": [numbers(0.2, 0.2, 0.8), numbers(0.3, 0.2, 0.8)],
            "saliency": [numbers(0.4, 0.3, 0.79), numbers(0.4, 0.3, 0.70)]}  # fmt: skip
    table, differences = decoy_study.tables(start, runs)
    assert differences["conflict/accuracy"] == pytest.approx([0.2, 0.1])
    assert differences["clean/accuracy"] == pytest.approx([-0.01, -0.1])
    lines = table.splitlines()
    conflict_diff = next(line for line in lines[lines.index("**conflict**") :] if line.startswith("| saliency"))
    assert "0.150 ± 0.071 (target met)" in conflict_diff  # accuracy +0.15 >= 0.10
    assert "0.100 ± 0.000 (target not met)" in conflict_diff  # PG +0.10 < 0.15
    clean_diff = next(line for line in lines if line.startswith("| saliency"))
    assert "-0.055 ± 0.064 (target not met)" in clean_diff  # lost 5.5 points > 2


def test_figure_puts_each_arms_map_of_a_row_side_by_side(tmp_path):
    evals = {}
    for arm in ("control", "saliency"):
        out = tmp_path / arm
        (out / "overlays").mkdir(parents=True)
        Image.new("RGB", (20, 20), "red").save(out / "overlays" / "0.png")
        row = {"problem": "What color is the circle?", "solution": "blue", "completion": "<think>x</think>red"}
        rows = [{"question_id": "a", **row, "overlays": {"flow": "overlays/0.png"}}, {"question_id": "b", **row}]
        _metrics(out, rows, 0.5, 0.5)
        evals[arm] = out
    picture = decoy_study.figure(evals, rows=4, cues={"a": "red"})
    assert picture.height < 70 and picture.width >= 40  # one row (the other has no overlay), two panels
    header = np.asarray(picture)[:14]
    assert (header < 128).any()  # the line with the question, the truth and the cue is drawn


@pytest.mark.slow
def test_one_seed_of_the_study_runs_end_to_end(tmp_path):
    sft_config = yaml.safe_load((REPO / "configs/sft/tiny_cpu.yaml").read_text())
    sft_config.update(max_steps=2, save_strategy="no", answer_eval_samples=2, logging_steps=1)
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft_config))
    out = tmp_path / "study"
    decoy_study.main(
        ["--seeds", "0", "--num_sft", "16", "--num_rl", "8", "--num_eval", "4", "--report_rows", "2",
         "--sft_config", str(tmp_path / "sft.yaml"), "--output_dir", str(out), "--figure", str(tmp_path / "f.png"),
         "--", "--max_steps", "1", "--max_train_samples", "2", "--per_device_train_batch_size", "4",
         "--num_generations", "4", "--max_completion_length", "8", "--save_strategy", "no"]
    )  # fmt: skip
    result = json.loads((out / "study.json").read_text())
    assert set(result["runs"]) == {"control", "saliency"}
    for name in ("sft-seed0", "control-seed0", "saliency-seed0"):
        for split in ("clean", "conflict"):
            assert json.loads((out / f"eval-{name}-{split}" / "metrics.json").read_text())["summary"]["n"] == 4
    assert "follows cue" in result["runs"]["control"][0]["conflict"]
    assert "follows cue" not in result["runs"]["control"][0]["clean"]
    assert len(result["differences"]["conflict/accuracy"]) == 1
    assert "report.html" in {p.name for p in out.iterdir()} and (tmp_path / "f.png").exists()
