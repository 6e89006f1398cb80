"""launch/eval.py end to end on the embedded default, and loading a LoRA adapter folder as the checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import build_assets
from peft import LoraConfig, get_peft_model
from trl import ModelConfig

from evaluation import EvalArguments, prompt_inputs
from launch.parser import Parser
from saliency import SpecialTokens
from vlm import adapter_base, load_model_and_processor, merge_lora_adapter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_launcher")
    paths = build_assets(root, num_rows=4)
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(paths["model"]), dtype="float32"))
    torch.manual_seed(0)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(root / "adapter")
    processor.save_pretrained(root / "adapter")
    return {**paths, "adapter": root / "adapter", "root": root}


def test_an_adapter_folder_loads_as_its_merged_model(assets):
    assert adapter_base(assets["adapter"]) == str(assets["model"])
    assert adapter_base(assets["model"]) is None
    merged_dir = merge_lora_adapter(assets["adapter"], assets["root"] / "merged")
    adapted, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(assets["adapter"]), dtype="float32")
    )
    merged, _ = load_model_and_processor(ModelConfig(model_name_or_path=str(merged_dir), dtype="float32"))
    base, _ = load_model_and_processor(ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32"))
    from data_tools import generate_split

    inputs = prompt_inputs(processor, generate_split("eval", 1, seed=0))
    with torch.no_grad():
        logits = [m(**inputs).logits for m in (adapted, merged, base)]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits[0], logits[2], atol=1e-4)
    assert not adapted.training


def test_bad_flags_are_named():
    with pytest.raises(ValueError, match="--saliency_maps 'grad': choose one of flow, direct"):
        EvalArguments(saliency_maps=["flow", "grad"])
    with pytest.raises(ValueError, match="--saliency_maps needs at least one of 'flow' and 'direct'"):
        EvalArguments(saliency_maps=[])
    with pytest.raises(ValueError, match="--on_bad_row 'drop': choose one of error, skip"):
        EvalArguments(on_bad_row="drop")
    with pytest.raises(ValueError, match="--compare_to or --compare_model_name_or_path"):
        EvalArguments(compare_to="a.json", compare_model_name_or_path="b")
    with pytest.raises(ValueError, match="--faithfulness_baselines"):
        EvalArguments(faithfulness_baselines=["gradcam"])
    with pytest.raises(ValueError, match="--sanity_samples"):
        EvalArguments(sanity_samples=-1)
    with pytest.raises(ValueError, match="--batch_size"):
        EvalArguments(batch_size=0)
    with pytest.raises(ValueError, match="--saliency_layers"):
        EvalArguments(saliency_layers=[])


def test_renamed_and_fixed_flags_are_named_on_the_command_line_and_in_the_recipe(tmp_path, capsys):
    parser = Parser((EvalArguments, ModelConfig))
    args, _ = parser.parse_args_and_config(["--dataset_test_split", "clean", "--max_eval_samples", "3"])
    assert (args.dataset_test_split, args.max_eval_samples) == ("clean", 3)
    for given, message in (
        (["--max_samples", "3"], "--max_samples was renamed --max_eval_samples"),
        (["--dataset-split=clean"], "--dataset_split was renamed --dataset_test_split"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args_and_config(given)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args_and_config(["--saliency_maps", "flow", "grad"])
    assert "invalid choice: 'grad'" in capsys.readouterr().err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_samples: 3\n")
    with pytest.raises(ValueError, match=r"^--max_samples was renamed --max_eval_samples \(`max_samples:` in the YAML"):
        parser.parse_args_and_config(["--config", str(recipe)])
    recipe.write_text("saliency_maps: [flow, grad]\n")
    with pytest.raises(ValueError, match="--saliency_maps 'grad': choose one of flow, direct"):
        parser.parse_args_and_config(["--config", str(recipe)])


def test_layers_the_model_lacks_are_named(assets):
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32"))
    tokens = SpecialTokens.from_tokenizer(processor)
    with pytest.raises(ValueError, match=r"--saliency_layers \[-9\]: layers \[-9\] out of range"):
        EvalArguments(saliency_layers=[-9]).make_tracer(model, tokens)
    assert EvalArguments(saliency_layers=[-1]).make_tracer(model, tokens).layers == [3]


def test_an_attention_implementation_the_tracer_refuses_is_not_blamed_on_the_layers(assets):
    config = ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32", attn_implementation="paged|eager")
    model, processor = load_model_and_processor(config)
    with pytest.raises(ValueError, match=r"^the saliency tracer cannot trace attention implementation 'paged\|eager'"):
        EvalArguments(saliency_layers=[-1]).make_tracer(model, SpecialTokens.from_tokenizer(processor))


def test_missing_completions_are_named(assets, tmp_path):
    from evaluation.evaluate import read_completions

    with pytest.raises(ValueError, match="no completion for 1 rows, e.g. question_id 'nope'"):
        read_completions(assets["completions"], ["nope"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question_id": "a"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_completions(broken, ["a"])


def _launch(*flags: str) -> None:
    command = [sys.executable, str(ROOT / "launch" / "eval.py"), "--config", str(ROOT / "configs/eval/tiny_cpu.yaml")]
    subprocess.run([*command, *flags], check=True, cwd=ROOT, capture_output=True, timeout=600)


@pytest.mark.slow
def test_launcher_scores_an_adapter_then_compares_a_generating_base_model(assets):
    first, second = assets["root"] / "run-adapter", assets["root"] / "run-base"
    common = [
        "--dataset_name",
        str(assets["data"]),
        "--max_eval_samples",
        "3",
        "--batch_size",
        "3",
        "--bootstrap_samples",
        "100",
        "--faithfulness_samples",
        "1",
        "--faithfulness_steps",
        "2",
        "--report_samples",
        "2",
        "--sanity_samples",
        "1",
    ]
    _launch(
        "--model_name_or_path",
        str(assets["adapter"]),
        "--completions_file",
        str(assets["completions"]),
        "--faithfulness_baselines",
        "gradient",
        "rollout",
        "--output_dir",
        str(first),
        *common,
    )
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["model"] == str(assets["adapter"]) and metrics["summary"]["n"] == 3
    counts = metrics["summary"]["flow/counts"]
    assert counts["no_map"] == 0 and counts["scored"] + counts["empty_map"] == 3  # a random model's map may be empty
    assert metrics["faithfulness"]["n_rows"] == 1
    assert set(metrics["faithfulness"]["auc"]) == {"flow", "direct", "gradient", "rollout", "random"}
    assert set(metrics["sanity"]["methods"]) == {"flow", "direct", "gradient", "rollout"}
    # Every method's pointing game on the faithfulness row; the tracer's equals that row's score in the summary.
    pointing = metrics["faithfulness"]["pointing"]
    for method in ("flow", "direct", "gradient", "rollout"):
        assert sum(pointing[f"{method}/counts"].values()) == 1
    first_mapped = next(row for row in metrics["rows"] if row["no_map_reason"] is None)
    for key in ("flow/pg", "flow/energy_pg", "direct/energy_pg"):
        assert pointing[key]["mean"] == first_mapped["scores"][key]
    assert "Pointing games of every method" in (first / "report.html").read_text()
    assert metrics["settings"]["completions"] == "given (scored)"

    _launch(
        "--model_name_or_path",
        str(assets["model"]),
        "--max_new_tokens",
        "6",
        "--output_dir",
        str(second),
        "--compare_to",
        str(first / "metrics.json"),
        *common,
    )
    metrics = json.loads((second / "metrics.json").read_text())
    # A random model does not write the <think> format: every row is counted without a map, none is dropped.
    assert metrics["summary"]["format"]["mean"] == 0.0
    assert metrics["summary"]["flow/counts"] == {"scored": 0, "no_map": 3, "empty_map": 0}
    assert metrics["faithfulness"] is None and metrics["sanity"] is None
    assert all(row["no_map_reason"] for row in metrics["rows"])
    report = (second / "report.html").read_text()
    assert f"Compared with <b>{assets['adapter']}</b>" in report and "other run: flow" in report


def test_rows_left_out_as_bad_input_are_listed_in_the_metrics_and_the_report(assets, tmp_path):
    from datasets import Dataset, DatasetDict, load_from_disk

    from evaluation import run_eval

    split = load_from_disk(str(assets["data"]))["eval"]
    rows = split.to_list()
    rows[1]["bbox"] = [[0.5, 0.5, 0.2, 0.8]]  # swapped corners
    DatasetDict({"eval": Dataset.from_list(rows, features=split.features)}).save_to_disk(str(tmp_path / "data"))
    args = EvalArguments(
        dataset_name=str(tmp_path / "data"),
        on_bad_row="skip",
        completions_file=str(assets["completions"]),
        output_dir=str(tmp_path / "eval"),
        faithfulness_samples=0,
        sanity_samples=0,
        report_samples=0,
        bootstrap_samples=10,
    )
    report = run_eval(args, ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["summary"]["n"] == len(rows) - 1
    (entry,) = metrics["left_out"]
    assert entry["row_id"] == rows[1]["question_id"] and entry["field"] == "bbox"
    assert "1 input rows left out" in report.read_text() and rows[1]["question_id"] in report.read_text()
