"""Cost of the saliency reward in a GRPO step: the same config with and without it, side by side, in one process.

    python bench/grpo_overhead.py --model_name_or_path outputs/sft-tiny --dataset_name outputs/data --rounds 3

Each round trains a fresh trainer for `--steps` steps with the saliency reward (tracing during generate) and one
without it (format + accuracy only, no tracing), alternating so that machine load hits both alike. The first step
of every run is a warm-up and is not counted. Prints a markdown table and writes the raw step times as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from trl import ModelConfig

from rewards import get_reward_funcs
from rl import SaliencyGRPOConfig, SaliencyGRPOTrainer, load_grpo_dataset
from vlm import load_model_and_processor

VARIANTS = {
    "with saliency reward": (["format", "accuracy", "saliency"], True),
    "without (format + accuracy, no tracing)": (["format", "accuracy"], False),
}


def step_logs(args: argparse.Namespace, rewards: list[str], trace: bool, seed: int) -> list[dict]:
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=args.model_name_or_path, dtype="float32"),
        for_training=True,
        min_pixels=args.pixels,
        max_pixels=args.pixels,
    )
    funcs = get_reward_funcs(rewards)
    with tempfile.TemporaryDirectory() as out:
        config = SaliencyGRPOConfig(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            learning_rate=5e-5,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=args.device == "cpu",
            bf16=False,
            seed=seed,
            log_saliency_metrics=trace,
            disable_tqdm=True,
        )
        dataset = load_grpo_dataset(args.dataset_name, split="rl").select(range(args.steps * args.batch_size))
        trainer = SaliencyGRPOTrainer(
            model=model, reward_funcs=funcs, args=config, train_dataset=dataset, processing_class=processor
        )
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "step_time" in entry][1:]
    return [
        {key: entry.get(key) for key in ("step_time", "completions/mean_length", "saliency/tracer_time_share")}
        for entry in logs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A checkpoint that answers in the format.")
    parser.add_argument("--dataset_name", required=True, help="The synthetic data folder (its `rl` split).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of both variants.")
    parser.add_argument("--steps", type=int, default=4, help="Steps per run (the first is a warm-up).")
    parser.add_argument("--batch_size", type=int, default=16, help="Completions per step.")
    parser.add_argument("--num_generations", type=int, default=8, help="Group size.")
    parser.add_argument("--max_completion_length", type=int, default=48, help="Longest completion.")
    parser.add_argument("--pixels", type=int, default=168 * 168, help="Pixel budget of each image.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Where the trainer runs (float32).")
    parser.add_argument("--output", type=Path, default=Path("bench/grpo_overhead.json"), help="Raw results.")
    args = parser.parse_args()

    logs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        for name, (rewards, trace) in VARIANTS.items():
            logs[name] += step_logs(args, rewards, trace, seed=round_index)
    base = statistics.median(e["step_time"] for e in logs["without (format + accuracy, no tracing)"])
    print("| variant | steps | median step (s) | ratio | mean completion tokens | tracer share of step |")
    print("|---|---|---|---|---|---|")
    for name, entries in logs.items():
        median = statistics.median(e["step_time"] for e in entries)
        length = statistics.mean(e["completions/mean_length"] for e in entries)
        shares = [e["saliency/tracer_time_share"] for e in entries if e["saliency/tracer_time_share"] is not None]
        share = f"{statistics.mean(shares):.3f}" if shares else "-"
        print(f"| {name} | {len(entries)} | {median:.2f} | {median / base:.3f} | {length:.1f} | {share} |")
    args.output.write_text(json.dumps({"args": vars(args) | {"output": str(args.output)}, "steps": logs}, indent=1))


if __name__ == "__main__":
    main()
