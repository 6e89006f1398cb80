"""Right for the right reasons: the decoy benchmark. GRPO with the saliency reward vs. without it, on data where a
spurious cue gives the answer in training and lies at test time.

    python bench/decoy_study.py --decoy_fraction 1.0 --seeds 0 1 2 [-- <launch/grpo.py flags for both arms>]

Data (`python -m data_tools.synthetic --decoy_fraction p`): colour / shape / left_of questions; on a fraction p of
the sft and rl rows a grey swatch in the bottom-right corner, outside every evidence box, says the answer by its
shade; held-out `clean` (no swatch) and `conflict` (the same scenes, the swatch says a wrong answer). For every
seed: the SFT cold start on the decoy data from the shipped tiny base, then two GRPO arms from it with the same
recipe, steps and seed, `control` (format + accuracy) and `saliency` (format + accuracy + saliency), each evaluated
by `launch/eval.py` on `clean` and `conflict`, and the SFT start too. Each stage is the command a user would type and
is skipped when its output exists, so an interrupted study picks up where it stopped.

Writes `<output_dir>/study.json` (every run's numbers, the paired differences), `<output_dir>/report.html` (the table
and conflict rows with the control's and the saliency arm's flow maps side by side) and the same picture as a PNG
(`--figure`). "follows cue" is the fraction of conflict rows whose answer is what the swatch says (scored like the
accuracy reward) and "flow mass on cue" the share of the flow map's positive mass on the swatch. Differences are saliency minus control, paired by seed: mean and sample standard deviation.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from evaluation import spread
from launch.pipeline import run
from saliency.heatmap import side_by_side

SPLITS = ("clean", "conflict")
ARMS = {
    "control": ["--reward_funcs", "format", "accuracy", "--reward_weights", "1", "1", "--log_saliency_metrics", "true"],
    "saliency": [],
}
TARGETS = {  # issue 18: on conflict, saliency - control; on clean, the accuracy lost at most
    ("conflict", "accuracy"): 0.10,
    ("conflict", "flow PG"): 0.15,
    ("clean", "accuracy"): -0.02,
}


def split_numbers(metrics_file: Path) -> dict[str, float | None]:
    """Headline numbers of one evaluation; on a split whose rows carry a cue also how often the answers follow it and
    how much of the flow map lies on it (`evaluation.metrics.cue_scores`)."""
    summary = json.loads(metrics_file.read_text())["summary"]

    def mean(key: str) -> float | None:
        return (summary.get(key) or {}).get("mean")

    numbers = {
        "accuracy": mean("accuracy"),
        "flow PG": mean("flow/pg"),
        "centre PG": mean("flow/centre_point_pg"),
        "flow energy-PG": mean("flow/energy_pg"),
        "box area": mean("flow/box_area_fraction"),
    }
    if mean("follows_cue") is not None:
        numbers["follows cue"] = mean("follows_cue")
        numbers["flow mass on cue"] = mean("flow/cue_energy")
    return numbers


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def tables(start: list[dict], runs: dict[str, list[dict]]) -> tuple[str, dict]:
    """The markdown table (per split: SFT start, each arm, the paired difference) and the differences by metric."""
    lines, differences = [], {}
    for split in SPLITS:
        names = [n for n in start[0][split] if n not in ("centre PG", "box area")]
        lines += [f"**{split}**", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        rows = {"SFT start": start, **{f"GRPO {arm}": numbers for arm, numbers in runs.items()}}
        for label, numbers in rows.items():
            lines.append(
                f"| {label} | " + " | ".join(_cell(*spread([r[split][n] for r in numbers])) for n in names) + " |"
            )
        cells = []
        for name in names:
            pairs = zip(runs["saliency"], runs["control"])
            diff = [None if None in (s[split][name], c[split][name]) else s[split][name] - c[split][name]
                    for s, c in pairs]  # fmt: skip
            differences[f"{split}/{name}"] = diff
            mean, std = spread(diff)
            target = TARGETS.get((split, name))
            met = "" if target is None or mean is None else (" (target met)" if mean >= target else " (target not met)")
            cells.append(_cell(mean, std) + met)
        lines += ["| saliency - control | " + " | ".join(cells) + " |", ""]
    for split in SPLITS:
        centre, _ = spread([r[split]["centre PG"] for r in start])
        area, _ = spread([r[split]["box area"] for r in start])
        lines.append(
            f"{split}, SFT start's rows: centre-point PG {_cell(centre, None)}, box area {_cell(area, None)} "
            "(energy-PG of a uniform map)"
        )
    return "\n".join(lines), differences


def figure(evals: dict[str, Path], rows: int, cues: dict[str, str] | None = None) -> Image.Image | None:
    """Conflict rows stacked: the image with each arm's flow map, titled with each arm's answer, under a line with
    the question, the true answer and (``cues``: question id -> what the cue says) the cue's answer."""
    metrics = {arm: json.loads((out / "metrics.json").read_text())["rows"] for arm, out in evals.items()}
    sheets = []
    for i, row in enumerate(metrics["control"]):
        overlays = [m[i].get("overlays", {}).get("flow") for m in metrics.values()]
        if None in overlays:
            continue
        panels = [Image.open(out / overlay) for out, overlay in zip(evals.values(), overlays)]
        titles = [f"{arm}: {m[i]['completion'].rsplit('>', 1)[-1][:18]}" for arm, m in metrics.items()]
        pair = side_by_side(panels, titles)
        header = f"{row['problem']}  truth: {row['solution']}"
        if cues and cues.get(row["question_id"]):
            header += f"  cue says: {cues[row['question_id']]}"
        sheet = Image.new("RGB", (pair.width, pair.height + 14), "white")
        ImageDraw.Draw(sheet).text((2, 1), header, fill=(0, 0, 0))
        sheet.paste(pair, (0, 14))
        sheets.append(sheet)
        if len(sheets) == rows:
            break
    if not sheets:
        return None
    sheet = Image.new("RGB", (max(s.width for s in sheets), sum(s.height + 4 for s in sheets)), "white")
    y = 0
    for s in sheets:
        sheet.paste(s, (0, y))
        y += s.height + 4
    return sheet


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # launch/grpo.py flags for both arms
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoy_fraction", type=float, default=1.0, help="Share of sft/rl rows with the cue.")
    parser.add_argument(
        "--decoy_conflict_fraction", type=float, default=0.0, help="Further share whose cue says a wrong answer."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SFT and GRPO seeds (paired).")
    parser.add_argument("--data_seed", type=int, default=0, help="Seed of the synthetic decoy data.")
    parser.add_argument("--num_sft", type=int, default=8000, help="SFT rows.")
    parser.add_argument("--num_rl", type=int, default=1000, help="GRPO rows.")
    parser.add_argument("--num_eval", type=int, default=200, help="Rows of each held-out split.")
    parser.add_argument("--base_model", default="vlm/tiny_base", help="The model the SFT cold start starts from.")
    parser.add_argument("--sft_config", type=Path, default=Path("configs/sft/tiny_cpu.yaml"), help="SFT recipe.")
    parser.add_argument(
        "--sft_attention_grounding_weight",
        type=float,
        default=0.0,
        help="The cold start's --attention_grounding_weight. 0 (default): it learns from the answers alone, the "
        "label-only start of Ross et al. whose use of the cue the saliency reward has to undo; the SFT recipe's 1.0 "
        "would already train the attention onto the evidence before GRPO.",
    )
    parser.add_argument("--grpo_config", type=Path, default=Path("configs/grpo/tiny_cpu.yaml"), help="GRPO recipe.")
    parser.add_argument("--eval_config", type=Path, default=Path("configs/eval/tiny_cpu.yaml"), help="Eval recipe.")
    parser.add_argument("--report_rows", type=int, default=8, help="Conflict rows shown in the report.")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/decoy-study"), help="Where runs go.")
    parser.add_argument("--figure", type=Path, default=None, help="Also write the report's picture to this PNG.")
    args = parser.parse_args(argv)

    python, root = sys.executable, args.output_dir
    data = root / "data"
    run(
        "decoy data",
        [python, "-m", "data_tools.synthetic", "--output_dir", str(data), "--seed", str(args.data_seed),
         "--num_sft", str(args.num_sft), "--num_rl", str(args.num_rl), "--num_eval", str(args.num_eval),
         "--decoy_fraction", str(args.decoy_fraction), "--decoy_conflict_fraction", str(args.decoy_conflict_fraction)],
        data / "dataset_dict.json",
        force=False,
    )  # fmt: skip

    def evaluate(model: Path, name: str) -> dict[str, dict[str, float | None]]:
        numbers = {}
        for split in SPLITS:
            out = root / f"eval-{name}-{split}"
            run(
                f"evaluate {name} on {split}",
                [python, "launch/eval.py", "--config", str(args.eval_config), "--model_name_or_path", str(model),
                 "--dataset_name", str(data), "--dataset_test_split", split, "--max_eval_samples", str(args.num_eval),
                 "--faithfulness_samples", "0", "--sanity_samples", "0", "--report_samples", str(args.report_rows),
                 "--output_dir", str(out)],
                out / "metrics.json",
                force=False,
            )  # fmt: skip
            numbers[split] = split_numbers(out / "metrics.json")
        return numbers

    start, runs = [], {arm: [] for arm in ARMS}
    for seed in args.seeds:
        sft = root / f"sft-seed{seed}"
        run(
            f"SFT seed {seed}",
            [python, "launch/sft.py", "--config", str(args.sft_config), "--model_name_or_path", args.base_model,
             "--dataset_name", str(data),
             "--answer_eval_split", "clean", "--output_dir", str(sft), "--seed", str(seed), "--report_to", "none",
             "--attention_grounding_weight", str(args.sft_attention_grounding_weight)],
            sft / "processor_config.json",
            force=False,
        )  # fmt: skip
        start.append(evaluate(sft, f"sft-seed{seed}"))
        for arm, flags in ARMS.items():
            out = root / f"{arm}-seed{seed}"
            run(
                f"GRPO {arm} seed {seed}",
                [python, "launch/grpo.py", "--config", str(args.grpo_config), "--model_name_or_path", str(sft),
                 "--dataset_name", str(data), "--output_dir", str(out), "--seed", str(seed),
                 "--resume_from_checkpoint", "true", "--report_to", "none", *flags, *extra],
                out / "processor_config.json",
                force=False,
            )  # fmt: skip
            runs[arm].append(evaluate(out, f"{arm}-seed{seed}"))

    table, differences = tables(start, runs)
    first = args.seeds[0]
    conflict = datasets.load_from_disk(str(data))["conflict"]
    cues = dict(zip(conflict["question_id"], conflict["decoy_answer"]))
    picture = figure({arm: root / f"eval-{arm}-seed{first}-conflict" for arm in ARMS}, args.report_rows, cues)
    result = {
        "decoy_fraction": args.decoy_fraction,
        "decoy_conflict_fraction": args.decoy_conflict_fraction,
        "seeds": args.seeds,
        "grpo_config": str(args.grpo_config),
        "extra_grpo_flags": extra,
        "sft_start": start,
        "runs": runs,
        "differences": differences,
        "table": table,
    }
    (root / "study.json").write_text(json.dumps(result, indent=2))
    body = f"<h1>Decoy benchmark</h1><p>decoy fraction {args.decoy_fraction}, seeds {args.seeds}</p>"
    body += f"<pre>{html.escape(table)}</pre>"
    if picture is not None:
        picture.save(root / "conflict_maps.png")
        if args.figure:
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            picture.save(args.figure)
        body += (
            f"<h2>Conflict rows, seed {first}: the flow map of each arm</h2>"
            "<p>The swatch in the bottom-right corner says a wrong answer; the evidence is elsewhere.</p>"
            '<img src="conflict_maps.png">'
        )
    (root / "report.html").write_text(f"<!doctype html><meta charset=utf-8><title>Decoy benchmark</title>{body}")
    print(table)
    print(f"report: {root / 'report.html'}")


if __name__ == "__main__":
    main()
