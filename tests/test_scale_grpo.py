"""The GRPO stage on two CPU processes with DeepSpeed ZeRO-2, and ZeRO-3 on two hostfile "nodes" of this machine.

The random tiny model is steered into the `<think>x</think>red<|im_end|>` format by the generation config's
`sequence_bias` (each token strongly favoured after the previous one), so completions have a format, an answer and
saliency maps the reward reads, captured by the tracer during TRL's generate.

Sampling draws different random numbers when the completions are split over processes (TRL seeds each process
differently), so sampled runs cannot be compared with one process. With greedy decoding every completion is a
deterministic function of its prompt and the weights; the runs then compare exactly what a step computes over the
whole global batch: the completions (lengths, format, accuracy, and the saliency reward from the tracer's maps
under ZeRO) and the policy's token entropy from the training forward. A group's greedy completions are equal, so
advantages and the loss are zero by construction. A sampled ZeRO-3 LoRA run under `accelerate launch`, where the
thinking may run on, has completions that differ, a nonzero loss that stays finite, and an adapter checkpoint
that loads whole in one process.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from scale_helpers import BIN, CPU_ENTRY, REPO, deepspeed_command, free_port, run, slurm_env, train_logs
from trl import ModelConfig, TrlParser

from rl import GRPOScriptArguments, SaliencyGRPOConfig, run_grpo
from vlm import load_processor

pytestmark = pytest.mark.slow

# Metrics TRL gathers over all processes before logging (per-process metrics such as saliency/no_map are not).
GATHERED = (
    "completions/mean_length", "completions/min_length", "completions/max_length", "num_tokens", "entropy",
    "reward", "rewards/format_reward/mean", "rewards/accuracy_reward/mean", "rewards/saliency_energy_pg/mean",
)  # fmt: skip


def grpo_args(model: Path, data: Path, out: Path, per_device_batch: int, *extra: str) -> list[str]:
    """The tiny CPU recipe: two prompts x two completions per step, short completions, a checkpoint every step."""
    return [
        "--config", str(REPO / "configs/grpo/tiny_cpu.yaml"), "--model_name_or_path", str(model),
        "--dataset_name", str(data), "--output_dir", str(out), "--per_device_train_batch_size", str(per_device_batch),
        "--num_generations", "2", "--max_completion_length", "8", "--max_train_samples", "8",
        "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--report_to", "none", "--seed", "0",
        *extra,
    ]  # fmt: skip


def steered_generation(model_dir: Path, do_sample: bool) -> str:
    """`--generation_kwargs` that make the model write `<think>x</think>red<|im_end|>`; when sampling, `x` may repeat
    (and run past the completion length, leaving no format), so completions of one prompt differ."""
    tokenizer = load_processor(str(model_dir)).tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}], add_generation_prompt=True, tokenize=False
    )
    ids = [tokenizer.encode(prompt)[-1], *tokenizer.convert_tokens_to_ids(["<think>"]), tokenizer.encode("x")[0],
           *tokenizer.convert_tokens_to_ids(["</think>"]), tokenizer.encode("red")[0], tokenizer.eos_token_id]  # fmt: skip
    steps = [[list(pair), 100.0] for pair in pairwise(ids)]
    if do_sample:
        steps.append([[ids[2], ids[2]], 100.0])
    return json.dumps({"do_sample": do_sample, "sequence_bias": steps})


@pytest.fixture(scope="module")
def greedy(tiny_model_dir) -> tuple[str, ...]:
    return "--max_steps", "1", "--generation_kwargs", steered_generation(tiny_model_dir, do_sample=False)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, synthetic_data_dir, greedy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpo-one-process")
    argv = grpo_args(tiny_model_dir, synthetic_data_dir, out, 4, *greedy, "--use_cpu", "true")
    run_grpo(*TrlParser((GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig)).parse_args_and_config(argv))
    return out


def assert_same_step(got: Path, expected: Path) -> None:
    (have,), (want,) = train_logs(got), train_logs(expected)
    for key in GATHERED:
        assert have[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert have["loss"] == want["loss"] == 0.0  # equal completions in each group: zero advantages
    assert have["rewards/format_reward/mean"] == 1.0  # every completion has a format and (so) a map
    assert have["rewards/saliency_energy_pg/mean"] > 0


def test_zero2_on_two_processes_matches_one_process(tiny_model_dir, synthetic_data_dir, greedy, one_process, tmp_path):
    out = tmp_path / "out"
    args = grpo_args(tiny_model_dir, synthetic_data_dir, out, 2, *greedy, "--use_cpu", "false")
    run(
        deepspeed_command(2, CPU_ENTRY, "launch/grpo.py", *args, "--deepspeed", "configs/deepspeed/zero2.json"),
        tmp_path,
    )
    assert_same_step(out, one_process)


def test_zero3_on_two_hostfile_nodes_matches_one_process(
    tiny_model_dir, synthetic_data_dir, greedy, one_process, tmp_path
):
    out = tmp_path / "out"
    args = grpo_args(tiny_model_dir, synthetic_data_dir, out, 2, *greedy, "--use_cpu", "false")
    hostfile = tmp_path / "hostfile"
    env = slurm_env(tmp_path, HOSTFILE=str(hostfile), TRAIN_SCRIPT=f"{CPU_ENTRY} launch/grpo.py")
    run(["bash", "launch/slurm/grpo.sbatch", *args, "--deepspeed", "configs/deepspeed/zero3.json"], tmp_path, env=env)
    assert hostfile.read_text() == "127.0.0.1 slots=1\nlocalhost slots=1\n"
    assert_same_step(out, one_process)


def test_zero3_lora_with_sampling_under_accelerate_runs_and_the_adapter_loads_whole(
    tiny_model_dir, synthetic_data_dir, tmp_path
):
    out = tmp_path / "out"
    lora = ("--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "1e-2")
    # Temperature 4 makes "repeat x or close </think>" a coin flip whatever the random weights prefer, and 5 tokens
    # leave no room for a repeat, so a completion that repeats loses its format and rewards differ in a group.
    args = grpo_args(tiny_model_dir, synthetic_data_dir, out, 2, "--max_steps", "2", "--num_generations", "4",
                     "--use_cpu", "false", "--ddp_backend", "gloo", "--temperature", "4", "--max_completion_length", "5",
                     *lora,
                     "--generation_kwargs", steered_generation(tiny_model_dir, do_sample=True))  # fmt: skip
    run([str(BIN / "accelerate"), "launch", "--config_file", "configs/accelerate/zero3.yaml", "--num_processes", "2",
         "--main_process_port", str(free_port()), "launch/grpo.py", *args], tmp_path)  # fmt: skip
    logs = train_logs(out)
    assert [log["step"] for log in logs] == [1, 2]
    assert all(torch.isfinite(torch.tensor([log["loss"], log["entropy"]])).all() for log in logs)
    # completions differed within a group; the logged loss is not checked: on-policy it is about minus the mean
    # advantage, 0 up to rounding to 4 digits, so its sign flips with any change to the rewards (lora_B below shows it trained)
    assert any(log["reward_std"] > 0 for log in logs)

    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), out)
    adapters = {name: p for name, p in model.named_parameters() if "lora_" in name}
    assert len(adapters) == 2 * 2 * model.config.text_config.num_hidden_layers  # A and B of q_proj, v_proj
    assert all(p.shape[0] == 4 or p.shape[1] == 4 for p in adapters.values())  # whole (rank 4), not ZeRO-3 shards
    assert all(p.abs().sum() > 0 for p in adapters.values())  # lora_B starts at zero: it trained and was saved
