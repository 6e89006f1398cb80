"""GRPO with the saliency reward on the embedded tiny model: maps reach the rewards, both capture modes agree,
bad completions never give NaN, metrics are logged, and a killed run resumes its trajectory."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import trl
from grpo_helpers import RecordInputs, short_grpo_args
from resume_helpers import assert_same_weights, kill_after_checkpoint, logged
from trl import GRPOTrainer, ModelConfig

from rewards import get_reward_funcs
from rl import GRPOScriptArguments, SaliencyGRPOConfig, SaliencyGRPOTrainer, load_grpo_dataset
from rl.grpo_trainer import TRL_PRIVATE_OVERRIDES
from vlm import load_model_and_processor

REPO = Path(__file__).resolve().parents[1]
REASONED = "<think>The red circle is at the top left.</think>red"


def make_trainer(
    model_dir,
    data_dir,
    out,
    *,
    steer: str,
    capture: str = "auto",
    rewards=("format", "accuracy", "saliency"),
    steps: int = 1,
    layers: list[int] | None = None,
    log_maps: bool = False,
    iou_frame: str = "auto",
) -> tuple[SaliencyGRPOTrainer, RecordInputs]:
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(model_dir), dtype="float32"), for_training=True
    )
    funcs = get_reward_funcs(rewards, iou_coordinate_frame=iou_frame)
    recorder = RecordInputs()
    args = short_grpo_args(
        out,
        steer=steer,
        tokenizer=processor.tokenizer,
        max_steps=steps,
        per_device_train_batch_size=4,
        reward_weights=[*[1.0] * len(funcs), 0.0],
        saliency_capture=capture,
        saliency_layers=layers,
        log_saliency_metrics=log_maps,
    )
    dataset = load_grpo_dataset(str(data_dir), split="rl").select(range(4))
    trainer = SaliencyGRPOTrainer(
        model=model, reward_funcs=[*funcs, recorder], args=args, train_dataset=dataset, processing_class=processor
    )
    return trainer, recorder


def train(model_dir, data_dir, out, **options: Any) -> tuple[SaliencyGRPOTrainer, RecordInputs]:
    trainer, recorder = make_trainer(model_dir, data_dir, out, **options)
    trainer.train()
    return trainer, recorder


def test_each_completion_gets_its_maps_in_both_capture_modes(tiny_model_dir, synthetic_data_dir, tmp_path):
    _, generated = train(tiny_model_dir, synthetic_data_dir, tmp_path / "g", steer=REASONED, capture="generate")
    _, scored = train(tiny_model_dir, synthetic_data_dir, tmp_path / "s", steer=REASONED, capture="score")
    for g, s in zip(generated.calls, scored.calls):
        assert [c[0]["content"] for c in g["completions"]] == [REASONED] * 4
        for column in ("saliency_map", "saliency_map_direct"):
            for image, from_generate, from_score in zip(g["image"], g[column], s[column]):
                assert from_generate.shape == (image.height, image.width)
                assert np.isfinite(from_generate).all() and from_generate.max() > 0
                # The map captured inside generate equals the one from a separate scoring forward.
                np.testing.assert_allclose(from_generate, from_score, rtol=1e-4, atol=1e-6 * from_score.max())


def test_badly_formatted_completions_get_no_map_and_a_finite_zero(tiny_model_dir, synthetic_data_dir, tmp_path):
    trainer, recorder = train(tiny_model_dir, synthetic_data_dir, tmp_path / "bad", steer="red")
    call = recorder.calls[0]
    assert call["saliency_map"] == [None] * 4
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert log["rewards/saliency_energy_pg/mean"] == 0.0
    assert log["saliency_energy_pg/bad_format"] == 1.0
    assert log["saliency/no_map"] == 1.0 and log["saliency/empty_map"] == 0.0
    assert all(math.isfinite(v) for v in log.values() if isinstance(v, float))


def test_map_metrics_count_missing_and_empty_maps_apart():
    box = [[0.0, 0.0, 0.5, 0.5]]
    inside = np.zeros((8, 8), np.float32)
    inside[1, 1] = 1.0
    rows = [
        {"saliency_map": None, "bbox": box},  # bad format or no image
        {"saliency_map": np.zeros((8, 8), np.float32), "bbox": box},  # nothing above 0
        {"saliency_map": inside, "bbox": None},  # no box to score against
        {"saliency_map": inside, "bbox": box},
    ]
    metrics = defaultdict(list)
    SaliencyGRPOTrainer._log_map_metrics(SimpleNamespace(_trl_metrics=lambda: metrics), rows)
    assert dict(metrics) == {
        "saliency/no_map": [0.25],
        "saliency/empty_map": [0.25],
        "saliency/energy_pg": [1.0],
        "saliency/pg": [1.0],
    }


def test_step_logs_the_saliency_metrics(tiny_model_dir, synthetic_data_dir, tmp_path):
    trainer, recorder = train(tiny_model_dir, synthetic_data_dir, tmp_path / "logs", steer=REASONED)
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    call = recorder.calls[0]
    from rewards import energy_pointing_game, pointing_game

    energy = np.mean([energy_pointing_game(m, b) for m, b in zip(call["saliency_map"], call["bbox"])])
    assert log["saliency/energy_pg"] == pytest.approx(energy)
    assert log["rewards/saliency_energy_pg/mean"] == pytest.approx(energy)  # format is 1 for every completion
    assert log["saliency/pg"] == pytest.approx(
        np.mean([pointing_game(m, b) for m, b in zip(call["saliency_map"], call["bbox"])])
    )
    assert 0.0 < log["saliency/tracer_time_share"] < 1.0
    assert log["tokens_per_second"] > 0


def test_control_run_logs_the_maps_when_asked(tiny_model_dir, synthetic_data_dir, tmp_path):
    trainer, _ = train(
        tiny_model_dir,
        synthetic_data_dir,
        tmp_path / "control",
        steer=REASONED,
        rewards=("format", "accuracy"),
        log_maps=True,
    )
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert "rewards/saliency_energy_pg/mean" not in log and "saliency/energy_pg" in log


def test_control_run_builds_no_tracer_so_any_family_trains(tiny_model_dir, synthetic_data_dir, tmp_path, monkeypatch):
    import saliency.adapters

    monkeypatch.setattr(saliency.adapters, "ADAPTERS", ())  # the tracer now supports no family at all
    rewards = ("format", "accuracy")
    trainer, recorder = train(tiny_model_dir, synthetic_data_dir, tmp_path / "control", steer=REASONED, rewards=rewards)
    assert trainer._tracer is None and "saliency_map" not in recorder.calls[0]
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert log["rewards/format_reward/mean"] == 1.0 and "saliency/energy_pg" not in log
    for log_maps, rewards in ((True, ("format", "accuracy")), (False, ("format", "saliency"))):
        with pytest.raises(ValueError, match="no adapter for model_type 'qwen2_5_vl'"):  # named before training
            make_trainer(
                tiny_model_dir, synthetic_data_dir, tmp_path / "x", steer=REASONED, rewards=rewards, log_maps=log_maps
            )


def test_iou_in_the_input_frame_gets_the_size_the_processor_gave_each_image(
    tiny_model_dir, synthetic_data_dir, tmp_path
):
    from vlm import model_input_size

    trainer, recorder = train(
        tiny_model_dir, synthetic_data_dir, tmp_path / "iou", steer=REASONED, rewards=("iou",), iou_frame="input_pixels"
    )
    call = recorder.calls[0]
    sizes = [model_input_size(trainer.processing_class, image) for image in call["image"]]
    assert call["image_input_size"] == sizes and all(s[0] % 14 == 0 and s[1] % 14 == 0 for s in sizes)
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert "rewards/iou_reward/mean" in log


@pytest.mark.parametrize("name", sorted(TRL_PRIVATE_OVERRIDES))
def test_the_private_trl_methods_overridden_keep_the_signatures_the_overrides_were_written_for(name):
    written_for = TRL_PRIVATE_OVERRIDES[name]
    installed = str(inspect.signature(getattr(GRPOTrainer, name)))
    assert installed == written_for, (
        f"trl {trl.__version__} changed the private GRPOTrainer.{name}{installed}; SaliencyGRPOTrainer.{name} in "
        f"rl/grpo_trainer.py overrides it as {name}{written_for}: adapt the override, TRL_PRIVATE_OVERRIDES and the pin"
    )
    assert str(inspect.signature(getattr(SaliencyGRPOTrainer, name))) == written_for


def test_every_private_trl_method_the_trainer_overrides_is_listed():
    overridden = {n for n in vars(SaliencyGRPOTrainer) if n.startswith("_") and not n.startswith("__")}
    trl_private = {n for n in overridden if any(n in vars(cls) for cls in GRPOTrainer.__mro__)}
    assert trl_private == set(TRL_PRIVATE_OVERRIDES), (
        f"SaliencyGRPOTrainer overrides private methods of trl {trl.__version__} not in TRL_PRIVATE_OVERRIDES "
        f"(or lists ones it no longer overrides): {sorted(trl_private ^ set(TRL_PRIVATE_OVERRIDES))}"
    )


def test_vllm_cannot_be_combined_with_generate_capture(tmp_path):
    with pytest.raises(ValueError, match="saliency_capture"):
        SaliencyGRPOConfig(output_dir=str(tmp_path), use_vllm=True, saliency_capture="generate")


def test_layers_the_model_lacks_stop_the_run_before_training(tiny_model_dir, synthetic_data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--saliency_layers \[0, 99\]: layers \[99\] out of range"):
        make_trainer(tiny_model_dir, synthetic_data_dir, tmp_path / "bad", steer=REASONED, layers=[0, 99])


@pytest.mark.parametrize("flag", ["max_train_samples", "max_image_side", "min_pixels", "max_pixels"])
def test_data_flags_below_one_are_named(flag):
    with pytest.raises(ValueError, match=f"--{flag} must be >= 1"):
        GRPOScriptArguments(**{flag: 0})


def test_the_system_prompt_flag_builds_every_prompt(synthetic_data_dir, tmp_path):
    args = GRPOScriptArguments(dataset_name=str(synthetic_data_dir), max_train_samples=3, system_prompt="Be brief.")
    rows = args.load_train_rows(load_grpo_dataset, tmp_path)
    system = {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert [row["prompt"][0] for row in rows] == [system] * 3


def test_the_data_layout_must_be_named():
    with pytest.raises(ValueError, match="--dataset_source"):
        GRPOScriptArguments(dataset_source="")


def test_bad_map_flags_are_named(tmp_path):
    with pytest.raises(ValueError, match="--saliency_row"):
        SaliencyGRPOConfig(output_dir=str(tmp_path), saliency_row="middle")
    with pytest.raises(ValueError, match="--saliency_layers"):
        SaliencyGRPOConfig(output_dir=str(tmp_path), saliency_layers=[])


def test_the_reward_reads_the_maps_of_the_chosen_layers(tiny_model_dir, synthetic_data_dir, tmp_path):
    trainer, recorder = train(tiny_model_dir, synthetic_data_dir, tmp_path / "last", steer=REASONED, layers=[-1])
    assert trainer.tracer.layers == [trainer.model.config.text_config.num_hidden_layers - 1]
    _, every = train(tiny_model_dir, synthetic_data_dir, tmp_path / "every", steer=REASONED)
    last_maps, every_maps = recorder.calls[0]["saliency_map"], every.calls[0]["saliency_map"]
    assert all(m is not None and np.isfinite(m).all() for m in last_maps)
    assert any(not np.allclose(a, b) for a, b in zip(last_maps, every_maps))


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_a_killed_run_resumes_the_same_trajectory(tuning, tiny_model_dir, synthetic_data_dir, tmp_path):
    """Killed (SIGKILL) after a checkpoint and resumed, a run logs the same losses and rewards and ends with the
    same weights as a run that was never interrupted (sampling included: the RNG state is restored)."""
    peft = ["--use_peft", "true", "--lora_target_modules", "all-linear"] if tuning == "lora" else []

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            str(REPO / "launch" / "grpo.py"),
            "--config",
            str(REPO / "configs/grpo/tiny_cpu.yaml"),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--dataset_name",
            str(synthetic_data_dir),
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--save_steps",
            "2",
            "--save_total_limit",
            "10",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--num_generations",
            "2",
            "--max_completion_length",
            "8",
            "--max_train_samples",
            "16",
            "--report_to",
            "none",
            "--resume_from_checkpoint",
            "true",
            *peft,
        ]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), cwd=REPO, check=True, capture_output=True, timeout=900)
    out = tmp_path / "resumable"
    killed_at = kill_after_checkpoint(command(out), out, step=2)
    assert 2 <= killed_at < 6
    assert_same_weights(out / f"checkpoint-{killed_at}", reference / f"checkpoint-{killed_at}")
    resumed = subprocess.run(command(out), cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = range(killed_at + 1, 7)
    for key in ("loss", "reward", "entropy"):
        expected = logged(reference / "checkpoint-6" / "trainer_state.json", key)
        got = logged(out / "checkpoint-6" / "trainer_state.json", key)
        assert got.keys() == expected.keys() == set(range(1, 7)), key
        assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-5, abs=1e-6), key
    assert_same_weights(out, reference, atol=1e-6)


def test_prompts_that_leave_no_room_for_the_completion_are_named_before_training(
    tiny_model_dir, synthetic_data_dir, tmp_path
):
    from trl import TrlParser

    from rl import run_grpo

    context = 16384  # the tiny model's max_position_embeddings
    argv = [
        "--config", str(REPO / "configs/grpo/tiny_cpu.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(synthetic_data_dir), "--output_dir", str(tmp_path), "--report_to", "none",
        "--max_steps", "1", "--max_completion_length", str(context - 50),
    ]  # fmt: skip
    parsed = TrlParser((GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig)).parse_args_and_config(argv)
    with pytest.raises(ValueError, match=r"16 of 16 rows have a prompt .* longer than 50 tokens"):
        run_grpo(*parsed)


def test_a_skip_run_that_keeps_no_row_stops_before_training(tmp_path):
    from datasets import Dataset, DatasetDict

    from rl import load_grpo_dataset

    bad = {"image": [None], "problem": ["?"], "solution": ["a"], "bbox": [[[0.5, 0.5, 0.2, 0.8]]]}
    DatasetDict({"rl": Dataset.from_dict({**bad, "dataset": ["toy"], "question_id": ["q0"]})}).save_to_disk(
        str(tmp_path / "data")
    )
    args = GRPOScriptArguments(dataset_name=str(tmp_path / "data"), on_bad_row="skip")
    with pytest.raises(ValueError, match="no row left to train on"):
        args.load_train_rows(load_grpo_dataset, tmp_path / "out")


def test_every_forward_sees_its_image_tokens_where_the_ids_have_them(tiny_model_dir, synthetic_data_dir, tmp_path):
    # Prompts of different lengths in one batch: TRL left-pads the prompt ids and re-runs the processor for the
    # log-prob forward; with a right-padding processor its mm_token_type_ids (M-RoPE's image positions) would sit
    # `pad` tokens away from the image tokens of every shorter prompt.
    trainer, _ = make_trainer(tiny_model_dir, synthetic_data_dir, tmp_path / "pad", steer=REASONED)
    special = trainer.processing_class.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"])
    seen: list[tuple[Any, Any]] = []

    def record(module, args, kwargs):
        if kwargs.get("mm_token_type_ids") is not None:
            seen.append((kwargs["input_ids"], kwargs["mm_token_type_ids"]))

    handle = trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        trainer.train()
    finally:
        handle.remove()
    prompt_lengths = {int(mask.sum()) for mask in trainer.processing_class(
        text=[trainer.processing_class.apply_chat_template(row["prompt"], add_generation_prompt=True)
              for row in trainer.train_dataset], images=[[row["image"]] for row in trainer.train_dataset],
        padding=True, return_tensors="pt")["attention_mask"]}  # fmt: skip
    assert len(prompt_lengths) > 1, "the test needs prompts of different lengths"
    assert seen
    for input_ids, token_types in seen:
        on_image = sum((input_ids == token) for token in special).bool()
        assert torch.equal(token_types[:, : input_ids.shape[1]] != 0, on_image)
