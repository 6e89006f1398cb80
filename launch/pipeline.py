"""The whole pipeline on one machine: build the tiny model and the synthetic data, perception pre-training, SFT,
GRPO, evaluation.

    python launch/pipeline.py                       # the embedded default on a CPU (configs/*/tiny_cpu.yaml)
    python launch/pipeline.py --output_root runs/x --sft_config my_sft.yaml --grpo_config my_grpo.yaml

Each stage runs as its own process with the same command line a user would type (`launch/sft.py --config ...`),
and is skipped when its output already exists, so an interrupted pipeline picks up where it stopped (the
training stages also resume from their last checkpoint). `--force` reruns everything.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(step: str, command: list[str], done: Path, force: bool) -> None:
    """Run one stage unless `done` exists; stop the pipeline with the stage's name when it fails."""
    if done.exists() and not force:
        print(f"[pipeline] {step}: already done ({done})", flush=True)
        return
    print(f"[pipeline] {step}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if subprocess.run(command, cwd=REPO, check=False).returncode != 0:
        sys.exit(f"[pipeline] {step} failed; fix the error above and rerun: finished stages are skipped")
    print(f"[pipeline] {step}: done in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", type=Path, default=Path("outputs"), help="Where every stage writes.")
    parser.add_argument("--family", default="qwen2_5_vl", help="Architecture of the tiny model.")
    parser.add_argument(
        "--perception_config",
        type=Path,
        default=Path("configs/sft/tiny_perception.yaml"),
        help="Perception pre-training recipe (captions); it stands in for a pretrained VLM.",
    )
    parser.add_argument("--sft_config", type=Path, default=Path("configs/sft/tiny_cpu.yaml"), help="SFT recipe.")
    parser.add_argument("--grpo_config", type=Path, default=Path("configs/grpo/tiny_cpu.yaml"), help="GRPO recipe.")
    parser.add_argument("--eval_config", type=Path, default=Path("configs/eval/tiny_cpu.yaml"), help="Eval recipe.")
    parser.add_argument("--eval_samples", type=int, default=64, help="Held-out rows the evaluation answers.")
    parser.add_argument("--num_sft", type=int, default=8000, help="Synthetic rows for the cold start.")
    parser.add_argument("--num_rl", type=int, default=1000, help="Synthetic rows for GRPO.")
    parser.add_argument("--num_eval", type=int, default=200, help="Held-out synthetic rows for evaluation.")
    parser.add_argument("--num_caption", type=int, default=8000, help="Synthetic rows for perception pre-training.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the model weights and the data.")
    parser.add_argument(
        "--initializer_range",
        default="width",
        help="Std of the tiny model's initial weights, or 'width' (vlm.build_tiny); at 0.02 the perception stage learns nothing.",
    )
    parser.add_argument("--force", action="store_true", help="Rerun stages whose output already exists.")
    args = parser.parse_args(argv)

    root = args.output_root
    model, data = root / f"tiny-{args.family}", root / "data"
    perception_out, sft_out = root / "perception-tiny", root / "sft-tiny"
    grpo_out, eval_out = root / "grpo-tiny", root / "eval"
    python = sys.executable
    start = time.perf_counter()
    run(
        "build the tiny model",
        [python, "-m", "vlm.build_tiny", "--family", args.family, "--output_dir", str(model), "--seed", str(args.seed)]
        + ["--initializer_range", args.initializer_range],
        model / "config.json",
        args.force,
    )
    run(
        "generate the synthetic data",
        [
            python,
            "-m",
            "data_tools.synthetic",
            "--output_dir",
            str(data),
            "--num_sft",
            str(args.num_sft),
            "--num_rl",
            str(args.num_rl),
            "--num_eval",
            str(args.num_eval),
            "--num_caption",
            str(args.num_caption),
            "--seed",
            str(args.seed),
        ],
        data / "dataset_dict.json",
        args.force,
    )
    run(
        "perception pre-training",
        [
            python,
            "launch/sft.py",
            "--config",
            str(args.perception_config),
            "--model_name_or_path",
            str(model),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(perception_out),
            "--resume_from_checkpoint",
            "true",
        ],
        perception_out / "processor_config.json",
        args.force,
    )
    run(
        "SFT cold start",
        [
            python,
            "launch/sft.py",
            "--config",
            str(args.sft_config),
            "--model_name_or_path",
            str(perception_out),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(sft_out),
            "--resume_from_checkpoint",
            "true",
        ],
        sft_out / "processor_config.json",
        args.force,
    )
    run(
        "GRPO with the saliency reward",
        [
            python,
            "launch/grpo.py",
            "--config",
            str(args.grpo_config),
            "--model_name_or_path",
            str(sft_out),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(grpo_out),
            "--resume_from_checkpoint",
            "true",
        ],
        grpo_out / "processor_config.json",
        args.force,
    )
    run(
        "evaluation",
        [
            python,
            "launch/eval.py",
            "--config",
            str(args.eval_config),
            "--model_name_or_path",
            str(grpo_out),
            "--compare_model_name_or_path",
            str(sft_out),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(eval_out),
            "--max_samples",
            str(args.eval_samples),
            "--faithfulness_samples",
            "4",
        ],
        eval_out / "report.html",
        args.force,
    )
    print(f"[pipeline] finished in {time.perf_counter() - start:.0f} s; report: {eval_out / 'report.html'}")


if __name__ == "__main__":
    main()
