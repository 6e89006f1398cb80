"""The whole pipeline on one machine: the synthetic data, then from the shipped tiny base model (`vlm/tiny_base/`,
a pretrained stand-in for a real VLM) the SFT cold start, GRPO with the saliency reward and the evaluation.

    python launch/pipeline.py                       # the embedded default on a CPU (configs/*/tiny_cpu.yaml)
    python launch/pipeline.py --output_root runs/x --sft_config my_sft.yaml --grpo_config my_grpo.yaml
    python launch/pipeline.py --base_model my-base  # another base (e.g. one remade by launch/make_tiny_base.py)

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
    parser.add_argument(
        "--base_model",
        default="vlm/tiny_base",
        help="The pretrained model the cold start starts from: the shipped tiny base (default), a folder or a hub name.",
    )
    parser.add_argument("--sft_config", type=Path, default=Path("configs/sft/tiny_cpu.yaml"), help="SFT recipe.")
    parser.add_argument("--grpo_config", type=Path, default=Path("configs/grpo/tiny_cpu.yaml"), help="GRPO recipe.")
    parser.add_argument("--eval_config", type=Path, default=Path("configs/eval/tiny_cpu.yaml"), help="Eval recipe.")
    parser.add_argument("--eval_samples", type=int, default=64, help="Held-out rows the evaluation answers.")
    parser.add_argument("--num_sft", type=int, default=8000, help="Synthetic rows for the cold start.")
    parser.add_argument("--num_rl", type=int, default=1000, help="Synthetic rows for GRPO.")
    parser.add_argument("--num_eval", type=int, default=200, help="Held-out synthetic rows for evaluation.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic data.")
    parser.add_argument("--force", action="store_true", help="Rerun stages whose output already exists.")
    args = parser.parse_args(argv)

    root = args.output_root
    data, sft_out = root / "data", root / "sft-tiny"
    grpo_out, eval_out = root / "grpo-tiny", root / "eval"
    python = sys.executable
    start = time.perf_counter()
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
            "--seed",
            str(args.seed),
        ],
        data / "dataset_dict.json",
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
            args.base_model,
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
