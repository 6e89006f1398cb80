"""The published GRPO recipes and the evaluation recipes for real models, parsed by the real parsers and run on a
local tiny copy of their model family, on a split held out by `python -m data_tools.convert --num_heldout`.

Only what this machine lacks is replaced: the hub weights (a tiny model of the same family), the data paths,
flash-attention, bf16 and the 8-GPU ZeRO-3 launch (tests/test_scale_grpo.py covers DeepSpeed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import DatasetDict
from transformers import AutoConfig
from trl import ModelConfig, TrlParser

from data_tools import generate_split
from data_tools.convert import main as convert
from evaluation import EvalArguments, run_eval
from rl import GRPOScriptArguments, SaliencyGRPOConfig, run_grpo

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = REPO / "vlm" / "tiny_base"  # the shipped Qwen3-VL
# GRPO recipe -> (hub model family, the evaluation recipe of its output or None)
RECIPES = {
    "qwen2_5_vl_3b": ("qwen2_5_vl", None),
    "qwen2_5_vl_7b": ("qwen2_5_vl", "qwen2_5_vl_7b"),
    "qwen2_5_vl_7b_vllm": ("qwen2_5_vl", None),  # run in tests/test_vllm_rollouts.py with a stand-in engine
    "qwen3_vl_8b": ("qwen3_vl", "qwen3_vl_8b"),
}
SPEC_GRPO = {  # SPEC section 5
    "learning_rate": 1.0e-5,
    "num_generations": 8,
    "per_device_train_batch_size": 8,  # x 8 GPUs / group size 8 = 8 prompts per step
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "v_proj"],
    "beta": 0.001,
    "temperature": 1.0,
    "repetition_penalty": 1.05,
    "max_completion_length": 512,
    "max_image_side": 512,
    "num_train_epochs": 3,
    "seed": 42,
}
LOCAL = ["--attn_implementation", "sdpa", "--dtype", "float32"]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    DatasetDict({"rl": generate_split("rl", 12, seed=0)}).save_to_disk(str(root / "rl"))
    flags = ["--source", "saliency_r1", "--input", str(root / "rl"), "--split", "rl", "--max_image_side", "512"]
    assert convert([*flags, "--num_heldout", "4", "--output_dir", str(root / "heldout")]) == 0
    return root / "heldout"


def test_every_grpo_recipe_of_a_real_model_is_tested():
    published = {p.stem for p in (REPO / "configs/grpo").glob("*.yaml")} - {"tiny_cpu", "tiny_mix"}
    assert published == set(RECIPES)
    evaluations = {p.stem for p in (REPO / "configs/eval").glob("*.yaml")} - {"tiny_cpu", "export_tiny"}
    assert evaluations == {e for _, e in RECIPES.values() if e}


@pytest.mark.parametrize("recipe", RECIPES)
def test_grpo_recipes_hold_spec_section_5(recipe):
    values = yaml.safe_load((REPO / f"configs/grpo/{recipe}.yaml").read_text())
    assert {key: values[key] for key in SPEC_GRPO} == SPEC_GRPO
    assert (values["attn_implementation"], values["max_pixels"]) == ("flash_attention_2", 512 * 512)
    family = RECIPES[recipe][0]
    if not values["model_name_or_path"].startswith("outputs/"):  # a hub model of the family the recipe is named for
        assert values["model_name_or_path"].startswith("Qwen/") and family.replace("_", "") in recipe.replace("_", "")


# The 3B recipe is the 7B one with another model and output folder: parsed above, not run again.
@pytest.mark.parametrize("recipe", [recipe for recipe, (_, evaluation) in RECIPES.items() if evaluation])
def test_grpo_recipe_then_its_evaluation_recipe_run_on_a_local_tiny_copy(recipe, tiny_model_dir, heldout, tmp_path):
    family, evaluation = RECIPES[recipe]
    path = REPO / f"configs/grpo/{recipe}.yaml"
    local = TINY_BASE if family == "qwen3_vl" else tiny_model_dir
    assert AutoConfig.from_pretrained(local).model_type == family

    out = tmp_path / "grpo"
    argv = ["--config", str(path), "--model_name_or_path", str(local), "--dataset_name", str(heldout),
            "--output_dir", str(out), *LOCAL, "--bf16", "false", "--deepspeed", "", "--use_cpu", "true",
            "--report_to", "none", "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--num_generations", "2", "--max_completion_length", "8"]  # fmt: skip
    script_args, training_args, model_args = TrlParser(
        (GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig)
    ).parse_args_and_config(argv)
    assert (script_args.dataset_train_split, training_args.reward_funcs) == (
        "train",
        ["format", "accuracy", "saliency"],
    )
    run_grpo(script_args, training_args, model_args)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["r"], sorted(adapter["target_modules"])) == (16, ["q_proj", "v_proj"])
    assert (out / "adapter_model.safetensors").is_file() and (out / "processor_config.json").is_file()

    path = REPO / f"configs/eval/{evaluation}.yaml"
    values = yaml.safe_load(path.read_text())
    assert values["model_name_or_path"] == f"outputs/grpo-{recipe}"  # the GRPO recipe's output_dir: an adapter
    assert (values["dataset_name"], values["dataset_test_split"]) == ("data/saliency-r1-8k-heldout", "eval")
    argv = ["--config", str(path), "--model_name_or_path", str(out), "--dataset_name", str(heldout),
            "--output_dir", str(tmp_path / "eval"), *LOCAL, "--batch_size", "2", "--max_new_tokens", "8",
            "--bootstrap_samples", "10", "--report_samples", "1", "--faithfulness_samples", "0",
            "--sanity_samples", "0"]  # fmt: skip
    eval_args, model_args = TrlParser((EvalArguments, ModelConfig)).parse_args_and_config(argv)
    assert eval_args.max_pixels == 512 * 512 and eval_args.max_new_tokens == 8
    assert eval_args.min_pixels == {"qwen2_5_vl": 56 * 56, "qwen3_vl": 256 * 256}[family]  # the hub processors'
    run_eval(eval_args, model_args)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(metrics["rows"]) == 4  # every held-out row
