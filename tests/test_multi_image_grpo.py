"""GRPO with the saliency reward on a mix of single-image, several-image and clip rows on the embedded tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from grpo_helpers import RecordInputs, short_grpo_args
from safetensors.torch import load_file
from trl import ModelConfig, SFTConfig, TrlParser

from data_tools import generate_synthetic
from data_tools.schema import MULTI_RL_FEATURES
from data_tools.synthetic import CLIP_FRAMES, generate_multi_split
from data_tools.validation import as_several_images
from rewards import get_reward_funcs
from rl import GRPOScriptArguments, SaliencyGRPOConfig, SaliencyGRPOTrainer
from rl.grpo_data import load_grpo_dataset
from rl.grpo_run import run_grpo
from sft import SFTScriptArguments, run_sft
from vlm import load_model_and_processor

REPO = Path(__file__).resolve().parents[1]
REASONED = "<think>The red circle is in image 2.</think>2"


def mixed_rows(folder: Path) -> datasets.Dataset:
    """Two single-image rows (as one-image lists), one row of several images and one clip, in that order, saved to
    ``folder`` and read back through the GRPO loader."""
    single = generate_synthetic(num_sft=0, num_rl=2, num_eval=0, seed=0)["rl"]
    rows = [as_several_images(dict(row)) for row in single.cast_column("image", datasets.Image(decode=False))]
    rows += list(generate_multi_split("multi", 1, seed=0).cast_column("images", datasets.List(datasets.Image(False))))
    rows += list(generate_multi_split("clip", 1, seed=0).cast_column("images", datasets.List(datasets.Image(False))))
    datasets.DatasetDict({"mixed": datasets.Dataset.from_list(rows, features=MULTI_RL_FEATURES)}).save_to_disk(folder)
    return load_grpo_dataset(str(folder), split="mixed")


def train(model_dir, out, capture: str) -> tuple[SaliencyGRPOTrainer, RecordInputs]:
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(model_dir), dtype="float32"), for_training=True
    )
    funcs = get_reward_funcs(("format", "accuracy", "saliency"))
    recorder = RecordInputs()
    args = short_grpo_args(
        out,
        steer=REASONED,
        tokenizer=processor.tokenizer,
        per_device_train_batch_size=8,
        reward_weights=[1.0, 1.0, 1.0, 0.0],
        saliency_capture=capture,
    )
    trainer = SaliencyGRPOTrainer(
        model=model,
        reward_funcs=[*funcs, recorder],
        args=args,
        train_dataset=mixed_rows(out / "data"),
        processing_class=processor,
    )
    trainer.train()
    return trainer, recorder


@pytest.mark.slow
def test_every_image_and_frame_gets_its_map_and_the_reward_scores_them_all(tiny_model_dir, tmp_path):
    runs = {capture: train(tiny_model_dir, tmp_path / capture, capture) for capture in ("generate", "score")}
    columns = {capture: recorder.calls[0] for capture, (_, recorder) in runs.items()}
    generated, scored = columns["generate"], columns["score"]
    assert sorted(len(images) for images in generated["images"]) == [1, 1, 1, 1, 2, 2, CLIP_FRAMES, CLIP_FRAMES]
    for row, images in enumerate(generated["images"]):
        maps = generated["saliency_map"][row]
        if len(images) == 1:  # a single image: its map at its pixel size, as ever
            assert maps.shape == (images[0].height, images[0].width)
            np.testing.assert_allclose(maps, scored["saliency_map"][row], rtol=1e-4, atol=1e-6 * maps.max())
            continue
        assert [m.shape for m in maps] == [(image.height, image.width) for image in images]
        for from_generate, from_score in zip(maps, scored["saliency_map"][row]):
            assert np.isfinite(from_generate).all()
            np.testing.assert_allclose(from_generate, from_score, rtol=1e-4, atol=1e-6 * max(m.max() for m in maps))
        is_clip = generated["bbox_frame"][row] is not None
        frames = [(i, i + 1) for i in range(len(images))] if is_clip else None
        assert generated["saliency_frames"][row] == frames
    trainer = runs["generate"][0]
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert log["saliency_energy_pg/bad_format"] == 0.0 and log["saliency/no_map"] == 0.0
    assert 0.0 < log["rewards/saliency_energy_pg/mean"] <= 1.0
    assert 0.0 < log["saliency/energy_pg"] <= 1.0
    assert all(math.isfinite(v) for v in log.values() if isinstance(v, float))


@pytest.mark.slow
def test_the_mix_recipes_run_the_cold_start_then_grpo_on_joined_splits(tmp_path):
    data = tmp_path / "data"
    generate_synthetic(
        num_sft=8, num_rl=4, num_eval=4, seed=0, num_multi_image=2, num_clip=2, num_multi_image_sft=4, num_clip_sft=4
    ).save_to_disk(str(data))
    common = ["--dataset_name", str(data), "--max_steps", "1", "--report_to", "none", "--save_strategy", "no"]
    sft_argv = ["--config", str(REPO / "configs/sft/tiny_mix.yaml"), *common, "--output_dir", str(tmp_path / "sft"),
                "--per_device_train_batch_size", "16", "--answer_eval_samples", "4"]  # fmt: skip
    sft_args = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(sft_argv)
    run_sft(*sft_args)
    sft_log = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())["log_history"][0]
    assert math.isfinite(sft_log["attention_grounding_loss"]) and sft_log["attention_grounding_loss"] > 0
    grpo_argv = ["--config", str(REPO / "configs/grpo/tiny_mix.yaml"), *common, "--output_dir", str(tmp_path / "grpo"),
                 "--model_name_or_path", str(tmp_path / "sft"), "--per_device_train_batch_size", "8",
                 "--num_generations", "2", "--max_completion_length", "16", "--logging_steps", "1",
                 "--save_strategy", "steps", "--save_steps", "1"]  # fmt: skip
    script_args, training_args, model_args = TrlParser(
        (GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig)
    ).parse_args_and_config(grpo_argv)
    assert script_args.dataset_train_split == "rl+multi+clip"
    run_grpo(script_args, training_args, model_args)
    state = json.loads((tmp_path / "grpo" / "checkpoint-1" / "trainer_state.json").read_text())
    log = next(entry for entry in state["log_history"] if "reward" in entry)
    # (one SFT step does not teach the format, so most completions have no map to score: reward 0, never NaN)
    assert (
        all(math.isfinite(v) for v in log.values() if isinstance(v, float))
        and "rewards/saliency_energy_pg_if_correct/mean" in log
    )
    after = load_file(tmp_path / "grpo" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in after.values())
