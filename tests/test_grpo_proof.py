"""The saliency-vs-control benchmark: its aggregation, and one real seed of both arms end to end."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("grpo_proof", REPO / "bench" / "grpo_proof.py")
grpo_proof = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(grpo_proof)


def test_summary_numbers_read_the_headline_metrics_and_count_empty_flow_maps(tmp_path):
    summary = {
        "n": 4,
        "accuracy": {"mean": 0.5},
        "format": {"mean": 1.0},
        "flow/energy_pg": {"mean": 0.25},
        "flow/pg": {"mean": 0.5},
        "direct/energy_pg": {"mean": 0.1},
        "flow/box_area_fraction": {"mean": 0.125},
        "flow/centre_point_pg": {"mean": None},  # no scored row
        "flow/counts": {"scored": 2, "no_map": 1, "empty_map": 1},
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"summary": summary}))
    numbers = grpo_proof.summary_numbers(path)
    assert numbers["accuracy"] == 0.5 and numbers["flow energy-PG"] == 0.25
    assert numbers["direct PG"] is None  # a metric the run did not produce stays missing, not zero
    assert numbers["flow empty maps"] == 0.5
    assert numbers["flow energy-PG - area"] == 0.125 and numbers["flow PG - centre"] is None
    rendered = grpo_proof.table(numbers, {"saliency": [numbers, numbers]})
    assert "| GRPO saliency | 2 | 0.500 ± 0.000 |" in rendered and "n/a" in rendered


@pytest.mark.slow
def test_one_seed_of_both_arms_trains_evaluates_and_tabulates(tiny_model_dir, synthetic_data_dir, tmp_path):
    out = tmp_path / "proof"
    grpo_proof.main(
        [
            "--sft_model",
            str(tiny_model_dir),
            "--dataset_name",
            str(synthetic_data_dir),
            "--seeds",
            "0",
            "--max_eval_samples",
            "4",
            "--output_dir",
            str(out),
            "--saliency_weight",
            "2",
            "--saliency_layers",
            "0",
            "--",
            "--max_steps",
            "1",
            "--max_train_samples",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--num_generations",
            "4",
            "--max_completion_length",
            "8",
            "--save_strategy",
            "no",
        ]
    )
    result = json.loads((out / "proof.json").read_text())
    assert set(result["runs"]) == {"saliency", "control"} and all(len(v) == 1 for v in result["runs"].values())
    for arm in ("saliency", "control"):
        assert (out / f"{arm}-seed0" / "processor_config.json").exists()
        assert (out / f"eval-{arm}-seed0" / "metrics.json").exists()
    assert "| GRPO control | 1 |" in result["table"] and result["saliency_weight"] == 2.0
    for arm, weights in (("saliency", [1.0, 1.0, 2.0]), ("control", [1.0, 1.0])):
        training_args = torch.load(out / f"{arm}-seed0" / "training_args.bin", weights_only=False)
        assert list(training_args.reward_weights) == weights and training_args.saliency_layers == [0]
    for name in ("sft", "saliency-seed0", "control-seed0"):
        settings = json.loads((out / f"eval-{name}" / "metrics.json").read_text())["settings"]
        assert settings["saliency_layers"] == [0]
