"""The SFT cold start on the embedded tiny model: LoRA, QLoRA and full fine-tuning, resume, loss mask, converters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageColor
from resume_helpers import assert_same_weights, kill_after_checkpoint, logged
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
from trl import ModelConfig, SFTConfig, TrlParser
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from data_tools import SYSTEM_PROMPT
from sft import SFTScriptArguments, load_sft_dataset, run_sft
from vlm import load_processor

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(argv)


def tiny_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--dtype",
        "float32",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--max_length",
        "512",
        *extra,
    ]


def trained_steps(out: Path) -> int:
    complete = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]  # a kill may cut a save
    checkpoints = sorted(complete, key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return state["global_step"]


def test_full_fine_tuning_moves_every_decoder_projection(tiny_model_dir, synthetic_data_dir, tmp_path):
    out = run_sft(
        *parse(
            tiny_args(
                tiny_model_dir, synthetic_data_dir, tmp_path / "full", "--save_strategy", "steps", "--save_steps", "2"
            )
        )
    )
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    assert trained_steps(out) == 2
    from safetensors.torch import load_file

    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    layers = [k for k in before if k.startswith("model.layers.") and k.endswith("proj.weight")]
    assert layers and all(not torch.equal(before[k], after[k]) for k in layers)


def test_lora_trains_only_the_adapter(tiny_model_dir, synthetic_data_dir, tmp_path):
    out = run_sft(
        *parse(
            tiny_args(
                tiny_model_dir,
                synthetic_data_dir,
                tmp_path / "lora",
                "--use_peft",
                "--lora_r",
                "4",
                "--lora_target_modules",
                "all-linear",
                "--merge_adapter",
                "true",
            )
        )
    )
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4
    assert not (out / "model.safetensors").exists()
    base, merged = (
        AutoModelForImageTextToText.from_pretrained(path).state_dict() for path in (tiny_model_dir, out / "merged")
    )
    deltas = adapter_deltas(out)
    assert set(merged) == set(base) and deltas.keys() < base.keys()
    assert all(delta.abs().sum() > 0 for delta in deltas.values())  # lora_B starts at zero: every adapter trained
    for name, weight in base.items():  # the merged model is the untouched base plus the adapter
        if name in deltas:
            torch.testing.assert_close(merged[name], weight + deltas[name])
        else:
            assert torch.equal(merged[name], weight), name


def adapter_deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The weight change of each adapted layer (scaling x B @ A), keyed by the name of the base model's weight (as
    loaded: the state dict, not the file, whose Qwen2.5-VL names are the hub's older ones)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    deltas = {}
    for name, a in weights.items():
        if ".lora_A." in name:
            b = weights[name.replace(".lora_A.", ".lora_B.")]
            base_name = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            deltas[base_name] = config["lora_alpha"] / config["r"] * b @ a
    return deltas


def test_qlora_trains_a_4bit_model(tiny_model_dir, synthetic_data_dir, tmp_path):
    out = run_sft(
        *parse(
            tiny_args(
                tiny_model_dir,
                synthetic_data_dir,
                tmp_path / "qlora",
                "--use_peft",
                "--lora_r",
                "4",
                "--lora_target_modules",
                "q_proj",
                "v_proj",
                "--load_in_4bit",
                "--bnb_4bit_quant_type",
                "nf4",
            )
        )
    )
    deltas = adapter_deltas(out)
    assert {name.split(".")[-2] for name in deltas} == {"q_proj", "v_proj"}
    assert all(delta.isfinite().all() and delta.abs().sum() > 0 for delta in deltas.values())  # lora_B trained


def test_loss_mask_covers_the_assistant_turn_only(tiny_model_dir, synthetic_data_dir):
    processor = load_processor(str(tiny_model_dir))
    rows = load_sft_dataset(str(synthetic_data_dir)).select(range(3))
    collator = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)
    batch = collator([rows[i] for i in range(len(rows))])
    for i in range(len(rows)):
        labelled = batch["input_ids"][i][batch["labels"][i] != -100]
        text = processor.tokenizer.decode(labelled)
        assistant = rows[i]["messages"][-1]["content"][0]["text"]
        assert text.startswith(assistant) and text.removeprefix(assistant).strip() == "<|im_end|>", text
        image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert not (labelled == image_token).any()


def write_cold_start_json(folder: Path) -> tuple[Path, Path]:
    """Three LLaVA-CoT rows (a JSON-lines file and its image folder), as the published cold start's data looks."""
    images = folder / "images"
    images.mkdir()
    records = []
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (64, 48), colour).save(images / f"{i}.png")
        records.append(
            {
                "id": f"q{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the image?"},
                    {
                        "from": "gpt",
                        "value": f"<SUMMARY>Look at it.</SUMMARY><CAPTION>A flat image.</CAPTION>"
                        f"<REASONING>Every pixel is {colour}.</REASONING><CONCLUSION>{colour}</CONCLUSION>",
                    },
                ],
            }
        )
    source = folder / "train.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records))
    return source, images


def test_cold_start_json_feeds_training(tiny_model_dir, tmp_path):
    source, images = write_cold_start_json(tmp_path)
    rows = load_sft_dataset(str(source), source="llava_cot", split="train", image_dir=str(images))
    for i, (row, colour) in enumerate(zip(rows, ["red", "blue", "green"], strict=True)):
        assert [message["role"] for message in row["messages"]] == ["system", "user", "assistant"]
        question = [{"type": "image", "text": None}, {"type": "text", "text": "What colour is the image?"}]
        assert row["messages"][1]["content"] == question
        reasoning = f"Look at it.\n\nA flat image.\n\nEvery pixel is {colour}."
        assert row["messages"][2]["content"] == [{"type": "text", "text": f"<think>{reasoning}</think>{colour}"}]
        assert [image.size for image in row["images"]] == [(64, 48)]
        assert row["images"][0].convert("RGB").getpixel((0, 0)) == ImageColor.getrgb(colour)
        assert (row["dataset"], row["question_id"]) == ("llava_cot", f"llava_cot-q{i}")
    out = run_sft(
        *parse(
            tiny_args(
                tiny_model_dir,
                source,
                tmp_path / "out",
                "--dataset_source",
                "llava_cot",
                "--dataset_train_split",
                "train",
                "--image_dir",
                str(images),
            )
        )
    )
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    assert state["global_step"] == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    initial, trained = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(trained[name], weight) for name, weight in initial.items())  # the rows trained it


def test_every_row_trains_on_the_system_prompt_flag(synthetic_data_dir, tmp_path):
    """The held-out answers, GRPO and the evaluation prompt with `--system_prompt`, so the cold start's rows must
    say it too: converted rows and conversational rows (their own system turn replaced). Rows without a system turn
    (the base's short-answer pre-training) keep none."""
    source, images = write_cold_start_json(tmp_path)
    flags = {"dataset_train_split": "train", "image_dir": str(images), "system_prompt": "Answer in one word."}
    turn = {"role": "system", "content": [{"type": "text", "text": "Answer in one word."}]}
    rows = SFTScriptArguments(dataset_name=str(source), dataset_source="llava_cot", **flags).load_train_rows(
        load_sft_dataset, tmp_path
    )
    default = load_sft_dataset(str(source), source="llava_cot", split="train", image_dir=str(images))
    for row, plain in zip(rows, default, strict=True):
        assert row["messages"][0] == turn
        assert plain["messages"][0]["content"] == [{"type": "text", "text": SYSTEM_PROMPT}]
        assert row["messages"][1:] == plain["messages"][1:]

    conversational = SFTScriptArguments(dataset_name=str(synthetic_data_dir), system_prompt="Answer in one word.")
    own = load_sft_dataset(str(synthetic_data_dir))
    assert own[0]["messages"][0]["content"][0]["text"] == SYSTEM_PROMPT  # what the synthetic rows carry
    flagged = conversational.load_train_rows(load_sft_dataset, tmp_path)
    assert len(flagged) == len(own)
    for row, plain in zip(flagged, own, strict=True):
        assert row["messages"] == [turn, *plain["messages"][1:]]
        assert row["images"][0].tobytes() == plain["images"][0].tobytes()

    without = tmp_path / "no_system.jsonl"
    plain = own[0]
    Image.new("RGB", (28, 28), "red").save(tmp_path / "red.png")
    without.write_text(json.dumps({"messages": plain["messages"][1:], "images": [str(tmp_path / "red.png")]}) + "\n")
    (row,) = load_sft_dataset(str(without), system_prompt="Answer in one word.")
    assert row["messages"] == plain["messages"][1:]


@pytest.mark.parametrize("recipe", ["qwen2_5_vl_3b_zero3", "qwen2_5_vl_7b_zero3"])
def test_published_recipe_runs_on_a_local_tiny_copy(recipe, tiny_model_dir, tmp_path):
    """The shipped recipe (LoRA r=128 on all linear layers, cosine with 5% warm-up, gradient checkpointing, 512-px
    images, LLaVA-CoT JSON, merged adapter) with only what this machine lacks replaced: the 3B/7B weights, the data
    paths, flash-attention, bf16 and the 8-GPU ZeRO-3 launch (covered by tests/test_scale_sft.py)."""
    source, images = write_cold_start_json(tmp_path)
    out = tmp_path / "out"
    argv = ["--config", str(REPO / f"configs/sft/{recipe}.yaml"), "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(source), "--image_dir", str(images), "--output_dir", str(out),
            "--attn_implementation", "sdpa", "--dtype", "float32", "--bf16", "false", "--deepspeed", "",
            "--use_cpu", "true", "--report_to", "none", "--max_steps", "2", "--gradient_accumulation_steps", "1"]  # fmt: skip
    script_args, training_args, model_args = parse(argv)
    assert (model_args.lora_r, model_args.lora_target_modules, script_args.max_pixels) == (128, "all-linear", 512 * 512)
    run_sft(script_args, training_args, model_args)

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 128 and {"q_proj", "o_proj", "gate_proj", "down_proj"} <= set(adapter["target_modules"])
    assert (
        json.loads((out / "processor_config.json").read_text())["image_processor"]["size"]["longest_edge"] == 512 * 512
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and all(
        math.isfinite(log["loss"]) for log in state["log_history"] if "loss" in log
    )
    merged = AutoModelForImageTextToText.from_pretrained(out / "merged")
    assert not any(".lora_" in name for name, _ in merged.named_parameters())


def test_bad_rows_stop_before_training_and_name_the_row(tiny_model_dir, tmp_path):
    source = tmp_path / "train.jsonl"
    source.write_text(
        json.dumps(
            {
                "id": "broken",
                "image": "missing.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nQ?"},
                    {"from": "gpt", "value": "<CONCLUSION>a</CONCLUSION>"},
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="broken"):
        run_sft(
            *parse(
                tiny_args(
                    tiny_model_dir,
                    source,
                    tmp_path / "out",
                    "--dataset_source",
                    "llava_cot",
                    "--dataset_train_split",
                    "train",
                    "--image_dir",
                    str(tmp_path),
                )
            )
        )
    assert not (tmp_path / "out" / "model.safetensors").exists()


QLORA_RESUME_GAP = pytest.mark.xfail(
    strict=True,
    reason="QLoRA: two uninterrupted runs agree bitwise and the adapter at the checkpoint is equal, but the resumed "
    "run drifts (loss by ~1e-4 relative, adapter by ~1e-3 after 6 steps); cause not found yet",
)


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["full", "lora", pytest.param("qlora", marks=QLORA_RESUME_GAP)])
def test_a_killed_run_resumes_the_same_trajectory(tuning, tiny_model_dir, synthetic_data_dir, tmp_path):
    """Killed (SIGKILL) after a checkpoint and resumed, a run logs the same losses and ends with the same weights
    as one that was never interrupted. Qwen2.5-VL saves its weights under other names than its modules carry."""

    def command(out: Path) -> list[str]:
        flags = ["--max_steps", "8", "--save_strategy", "steps", "--save_steps", "2", "--seed", "3"]
        peft = {
            "full": [],
            "lora": ["--use_peft", "true", "--lora_target_modules", "all-linear"],
            "qlora": ["--use_peft", "true", "--lora_target_modules", "all-linear", "--load_in_4bit", "true"],
        }[tuning]
        argv = tiny_args(tiny_model_dir, synthetic_data_dir, out, *flags, *peft)
        return [sys.executable, str(REPO / "launch" / "sft.py"), *argv, "--resume_from_checkpoint", "true"]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), cwd=REPO, check=True, capture_output=True, timeout=600)
    out = tmp_path / "resumable"
    killed_at = kill_after_checkpoint(command(out), out, step=2)
    assert 2 <= killed_at < 8
    assert_same_weights(out / f"checkpoint-{killed_at}", reference / f"checkpoint-{killed_at}")
    resumed = subprocess.run(command(out), cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = logged(reference / "trainer_state.json", "loss"), logged(out / "trainer_state.json", "loss")
    assert got.keys() == expected.keys() == set(range(1, 9))
    after = range(killed_at + 1, 9)
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-6)
    assert_same_weights(out, reference, atol=1e-6)


def test_the_same_seed_gives_the_same_lora_run(tiny_model_dir, synthetic_data_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        flags = ["--use_peft", "true", "--lora_target_modules", "all-linear", "--seed", "5", "--max_steps", "2"]
        runs.append(run_sft(*parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / name, *flags))))
    assert_same_weights(*runs)


def test_held_out_answers_are_logged_to_the_trainer_state_and_tensorboard(tiny_model_dir, synthetic_data_dir, tmp_path):
    out = tmp_path / "heldout"
    run_sft(
        *parse(
            tiny_args(
                tiny_model_dir,
                synthetic_data_dir,
                out,
                "--max_steps",
                "3",
                "--answer_eval_split",
                "eval",
                "--answer_eval_steps",
                "2",
                "--answer_eval_samples",
                "4",
                "--answer_eval_max_new_tokens",
                "8",
                "--report_to",
                "tensorboard",
            )
        )
    )
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "heldout/accuracy" in entry]
    assert [entry["step"] for entry in logged] == [2, 3]  # every 2 steps, and once more at the end
    for entry in logged:
        assert 0.0 <= entry["heldout/accuracy"] <= 1.0 and 0.0 <= entry["heldout/format_rate"] <= 1.0
        assert any(key.startswith("heldout/synthetic_shapes/") for key in entry)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = {event.parent for event in out.glob("runs/*/events.out.tfevents.*")}
    scalars = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/heldout/accuracy", "train/heldout/format_rate"} <= set(scalars)


def test_merging_needs_an_adapter(tiny_model_dir, synthetic_data_dir, tmp_path):
    with pytest.raises(ValueError, match="--merge_adapter .* --use_peft true"):
        run_sft(*parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / "full", "--merge_adapter", "true")))


def test_held_out_answers_need_an_existing_split(tiny_model_dir, synthetic_data_dir, tmp_path):
    with pytest.raises(ValueError, match="--answer_eval_split .nope.*has no split .nope.; it has"):
        run_sft(*parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / "x", "--answer_eval_split", "nope")))


@pytest.mark.parametrize(
    "flag",
    [
        "--answer_eval_steps",
        "--answer_eval_samples",
        "--answer_eval_max_new_tokens",
        "--max_train_samples",
        "--max_image_side",
    ],
)
def test_numeric_flags_are_validated_by_name(flag, tiny_model_dir, synthetic_data_dir, tmp_path):
    with pytest.raises(ValueError, match=flag):
        parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / "x", flag, "-1"))


def test_rows_longer_than_max_length_are_named_before_training_or_left_out(
    tiny_model_dir, synthetic_data_dir, tmp_path
):
    from data_tools.lengths import conversation_lengths

    rows = load_sft_dataset(str(synthetic_data_dir), split="sft")
    lengths = conversation_lengths(load_processor(str(tiny_model_dir)), rows, "messages")
    limit = sorted(lengths)[len(lengths) // 2]  # about half of the rows are longer
    longer = sum(n > limit for n in lengths)
    assert 0 < longer < len(lengths)
    flags = ("--max_steps", "1", "--max_length", str(limit))
    with pytest.raises(
        ValueError, match=rf"{longer} of {len(rows)} rows .* longer than {limit} tokens \(--max_length\)"
    ):
        run_sft(*parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / "error", *flags)))
    assert not (tmp_path / "error" / "model.safetensors").exists()
    out = run_sft(
        *parse(tiny_args(tiny_model_dir, synthetic_data_dir, tmp_path / "skip", *flags, "--on_bad_row", "skip"))
    )
    assert (out / "model.safetensors").exists()
