"""The reward options of a GRPO recipe (rewards by name or import path, pointing tolerance, LLM judge) reach the
rewards run_grpo gives the trainer, from the YAML recipe and from command-line overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, TrlParser

import rl.grpo_run
from rewards import LLMJudge, SaliencyReward
from rl import GRPOScriptArguments, SaliencyGRPOConfig, run_grpo
from rl.grpo_run import reward_funcs

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {
    "reward_funcs": ["format", "saliency_pg", "judge"],
    "reward_weights": [1.0, 2.0, 1.0],
    "pointing_tolerance_px": 2.0,
    "judge_base_url": "http://127.0.0.1:9/v1",
    "judge_model": "grader",
    "judge_timeout_s": 5.0,
}


def parse(tmp_path: Path, *argv: str, **recipe_options) -> tuple:
    recipe = yaml.safe_load((REPO / "configs/grpo/tiny_cpu.yaml").read_text())
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, **recipe_options, "output_dir": str(tmp_path / "out")}))
    parser = TrlParser((GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig))
    return parser.parse_args_and_config(["--config", str(path), "--report_to", "none", *argv])


def test_the_recipe_sets_the_options_and_the_command_line_overrides_them(tmp_path):
    _, args, _ = parse(tmp_path, **OPTIONS)
    _, pointing, judge = reward_funcs(args)
    assert isinstance(pointing, SaliencyReward) and pointing.tolerance_px == 2.0
    assert isinstance(judge, LLMJudge)
    assert (judge.url, judge.model, judge.timeout_s) == ("http://127.0.0.1:9/v1/chat/completions", "grader", 5.0)
    assert (judge.api_key_env, judge.max_retries) == ("OPENAI_API_KEY", 2)

    _, args, _ = parse(
        tmp_path,
        "--pointing_tolerance_px", "0.5", "--judge_model", "other", "--judge_api_key_env", "JUDGE_KEY",
        "--judge_max_retries", "0",
        **OPTIONS,
    )  # fmt: skip
    _, pointing, judge = reward_funcs(args)
    assert pointing.tolerance_px == 0.5
    assert (judge.model, judge.api_key_env, judge.max_retries) == ("other", "JUDGE_KEY", 0)


def test_run_grpo_gives_the_trainer_the_configured_rewards(tiny_model_dir, synthetic_data_dir, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def constant(prompts, completions, **kwargs):\n    return [0.5] * len(completions)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    given = {}

    class Stop(Exception):
        pass

    def trainer(**kwargs):
        given.update(kwargs)
        raise Stop

    monkeypatch.setattr(rl.grpo_run, "SaliencyGRPOTrainer", trainer)
    parsed = parse(
        tmp_path,
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(synthetic_data_dir),
        "--max_train_samples", "4", "--reward_funcs", "format", "saliency_direct_pg", "iou", "my_rewards.constant",
        "--reward_weights", "1", "1", "1", "0.5", "--pointing_tolerance_px", "3",
    )  # fmt: skip
    with pytest.raises(Stop):
        run_grpo(*parsed)
    names = [f.__name__ for f in given["reward_funcs"]]
    assert names == ["format_reward", "saliency_direct_pg", "iou_reward", "constant"]
    assert given["reward_funcs"][1].tolerance_px == 3.0
    assert given["reward_funcs"][2].keywords == {"coordinate_frame": "input_pixels"}  # the tiny model: Qwen2.5-VL
    assert given["args"].reward_weights == [1.0, 1.0, 1.0, 0.5]


def test_bad_reward_options_stop_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="--judge_model at --judge_base_url: set both"):
        run_grpo(*parse(tmp_path, "--reward_funcs", "format", "judge", "--reward_weights", "1", "1"))
    with pytest.raises(ValueError, match=r"--reward_funcs: 'formatt' is neither a known reward \(format, "):
        run_grpo(*parse(tmp_path, "--reward_funcs", "formatt", "--reward_weights", "1"))
    with pytest.raises(ValueError, match="--reward_weights has 1 values for 2 --reward_funcs"):
        run_grpo(*parse(tmp_path, "--reward_funcs", "format", "accuracy", "--reward_weights", "1"))


def test_fixed_choices_are_checked_on_the_command_line_and_in_the_recipe(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(tmp_path, "--iou_coordinate_frame", "pixels")
    assert "invalid choice: 'pixels'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--saliency_capture 'bogus': choose one of auto, generate, score"):
        parse(tmp_path, saliency_capture="bogus")
    with pytest.raises(ValueError, match="--pointing_tolerance_px must be >= 0"):
        parse(tmp_path, "--pointing_tolerance_px", "-1")
