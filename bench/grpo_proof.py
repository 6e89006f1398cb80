"""The honest proof of the saliency reward: GRPO with it vs. the same GRPO without it, several seeds, held-out eval.

    python bench/grpo_proof.py --sft_model outputs/sft-tiny --dataset_name outputs/data --seeds 0 1 2

From one SFT checkpoint, for every seed, trains two arms with the same recipe (`--grpo_config`):
`saliency` (format + accuracy + saliency rewards, the recipe as written) and `control` (format + accuracy only,
its maps still traced and logged). Every checkpoint, and the SFT start, is evaluated with `launch/eval.py` on the
held-out split. Each stage is the command a user would type and is skipped when its output exists, so an
interrupted run picks up where it stopped. Prints a markdown table (mean and spread over seeds) and writes it,
with every run's numbers, to `<output_dir>/proof.json`. Extra `launch/grpo.py` flags go after `--`. Energy-PG and
PG are means over the rows whose map is not empty, so each is also given minus its baseline on the same rows (the
box-area fraction, the centre-point PG): those differences compare models whose empty rows differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation import spread
from launch.pipeline import run

ARMS = {
    "saliency": [],
    "control": ["--reward_funcs", "format", "accuracy", "--reward_weights", "1", "1", "--log_saliency_metrics", "true"],
}
METRICS = {
    "accuracy": "accuracy",
    "format": "format",
    "flow energy-PG": "flow/energy_pg",
    "flow PG": "flow/pg",
    "direct energy-PG": "direct/energy_pg",
    "direct PG": "direct/pg",
}


def summary_numbers(metrics_file: Path) -> dict[str, float | None]:
    """The headline numbers of one `metrics.json`, plus the fraction of rows whose flow map was empty."""
    summary = json.loads(metrics_file.read_text())["summary"]
    numbers: dict[str, float | None] = {}
    for name, key in METRICS.items():
        entry = summary.get(key)
        numbers[name] = None if entry is None else entry["mean"]
    for name, metric, baseline in (("flow energy-PG - area", "flow/energy_pg", "flow/box_area_fraction"),
                                   ("flow PG - centre", "flow/pg", "flow/centre_point_pg")):  # fmt: skip
        both = [(summary.get(key) or {}).get("mean") for key in (metric, baseline)]
        numbers[name] = None if None in both else both[0] - both[1]
    counts = summary.get("flow/counts", {})
    numbers["flow empty maps"] = (counts.get("empty_map", 0) + counts.get("no_map", 0)) / max(summary["n"], 1)
    return numbers


def _cell(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def table(start: dict[str, float | None], runs: dict[str, list[dict[str, float | None]]]) -> str:
    names = list(start)
    lines = ["| model | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    lines.append(
        "| SFT start | - | " + " | ".join("n/a" if start[n] is None else f"{start[n]:.3f}" for n in names) + " |"
    )
    for arm, numbers in runs.items():
        cells = [_cell(*spread([r[n] for r in numbers])) for n in names]
        lines.append(f"| GRPO {arm} | {len(numbers)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft_model", type=Path, default=Path("outputs/sft-tiny"), help="The SFT checkpoint.")
    parser.add_argument("--dataset_name", type=Path, default=Path("outputs/data"), help="rl and eval splits.")
    parser.add_argument("--grpo_config", type=Path, default=Path("configs/grpo/tiny_cpu.yaml"), help="GRPO recipe.")
    parser.add_argument("--eval_config", type=Path, default=Path("configs/eval/tiny_cpu.yaml"), help="Eval recipe.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds of each arm.")
    parser.add_argument(
        "--saliency_weight", type=float, default=None, help="Weight of the saliency reward (the recipe's when unset)."
    )
    parser.add_argument(
        "--saliency_reward", default="saliency",
        help="The saliency reward of the saliency arm (a name in rewards.REWARD_FUNCS, e.g. saliency_if_correct).",
    )  # fmt: skip
    parser.add_argument(
        "--saliency_layers", type=int, nargs="+", default=None,
        help="Decoder layers of the maps, for the reward of both arms and for every evaluation (unset: the recipes' own).",
    )  # fmt: skip
    parser.add_argument("--max_eval_samples", type=int, default=200, help="Held-out rows evaluated.")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/grpo-proof"), help="Where runs go.")
    args = parser.parse_args(argv)

    python = sys.executable
    root = args.output_dir
    layers = [] if args.saliency_layers is None else ["--saliency_layers", *map(str, args.saliency_layers)]

    def evaluate(model: Path, out: Path) -> dict[str, float | None]:
        command = [
            python,
            "launch/eval.py",
            "--config",
            str(args.eval_config),
            "--model_name_or_path",
            str(model),
            "--dataset_name",
            str(args.dataset_name),
            "--output_dir",
            str(out),
            "--max_eval_samples",
            str(args.max_eval_samples),
            "--faithfulness_samples",
            "0",
            *layers,
        ]
        run(f"evaluate {model}", command, out / "metrics.json", force=False)
        return summary_numbers(out / "metrics.json")

    start = evaluate(args.sft_model, root / "eval-sft")
    runs: dict[str, list[dict[str, float | None]]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        for arm, flags in ARMS.items():
            if arm == "saliency" and (args.saliency_weight is not None or args.saliency_reward != "saliency"):
                weight = 1.0 if args.saliency_weight is None else args.saliency_weight
                flags = ["--reward_funcs", "format", "accuracy", args.saliency_reward, "--reward_weights", "1", "1",
                         str(weight)]  # fmt: skip
            out = root / f"{arm}-seed{seed}"
            command = [
                python,
                "launch/grpo.py",
                "--config",
                str(args.grpo_config),
                "--model_name_or_path",
                str(args.sft_model),
                "--dataset_name",
                str(args.dataset_name),
                "--output_dir",
                str(out),
                "--seed",
                str(seed),
                "--resume_from_checkpoint",
                "true",
                "--report_to",
                "none",
                *flags,
                *layers,
                *extra,
            ]
            run(f"GRPO {arm} seed {seed}", command, out / "processor_config.json", force=False)
            runs[arm].append(evaluate(out, root / f"eval-{arm}-seed{seed}"))

    result = {
        "seeds": args.seeds,
        "grpo_config": str(args.grpo_config),
        "saliency_weight": args.saliency_weight,
        "saliency_reward": args.saliency_reward,
        "saliency_layers": args.saliency_layers,
        "extra_flags": extra,
        "sft_start": start,
        "runs": runs,
        "table": table(start, runs),
    }
    (root / "proof.json").write_text(json.dumps(result, indent=2))
    print(result["table"])


if __name__ == "__main__":
    main()
