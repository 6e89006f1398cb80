"""Benchmark the saliency predictor on the synthetic fixation set against its baselines.

    python bench/predictor_synthetic.py --config configs/predictor/synthetic_tiny.yaml \
        [--num_train 600 --num_eval 100 --score_source question --bench_dir outputs/predictor_bench]

Builds the synthetic set (scene proposals), trains the recipe twice (proposals on, and the
proposals-off ablation), scores both and a centre-bias Gaussian on the eval split, runs the deletion
curves, and writes ``results.json`` and a Markdown table to ``--bench_dir``. Any recipe key can be
overridden on the command line as in the launchers.
"""

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from trl import TrlParser

from predictor import METRICS, PredictorDataConfig, PredictorModelConfig, PredictorTrainer, PredictorTrainingConfig
from predictor.dataset import build_dataset
from predictor.evaluation import LOWER_IS_BETTER
from predictor.report import evaluation_report
from predictor.synthetic import SCORE_SOURCES, build_synthetic_fixation_set


@dataclass
class BenchArguments:
    bench_dir: str = field(default="outputs/predictor_bench", metadata={"help": "Data, checkpoints and results."})
    num_train: int = field(default=600, metadata={"help": "Synthetic training questions."})
    num_eval: int = field(default=100, metadata={"help": "Synthetic evaluation questions."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the synthetic scenes and fixations."})
    score_source: str = field(
        default="question", metadata={"help": f"Text that sets the scene proposals' scores: {SCORE_SOURCES}."}
    )


def _table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| condition | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(
    bench: BenchArguments,
    model_args: PredictorModelConfig,
    data_args: PredictorDataConfig,
    training_args: PredictorTrainingConfig,
) -> dict:
    root = Path(bench.bench_dir)
    data_dir = root / f"data_{bench.score_source}"
    train = build_synthetic_fixation_set(data_dir, "train", bench.num_train, bench.data_seed, bench.score_source)
    evals = build_synthetic_fixation_set(data_dir, "eval", bench.num_eval, bench.data_seed, bench.score_source)
    data_args = replace(
        data_args,
        fixation_format="air",
        images_dir=str(train[1]),
        train_fixations=str(train[0]),
        train_proposals=str(train[2]),
        eval_fixations=str(evals[0]),
        eval_proposals=str(evals[2]),
    )
    results: dict = {"score_source": bench.score_source, "num_train": bench.num_train, "num_eval": bench.num_eval}
    for name, use_proposals in (("proposals", True), ("proposals_off", False)):
        cfg = replace(model_args, use_proposals=use_proposals)
        args = replace(training_args, output_dir=str(root / f"{bench.score_source}_{name}"), resume_from=None)
        start = time.time()
        trainer = PredictorTrainer(cfg, args, build_dataset(data_args, "train", use_proposals))
        losses = trainer.train()
        train_seconds = time.time() - start
        report, _ = evaluation_report(
            trainer.model,
            build_dataset(data_args, "eval", use_proposals),
            args.topk,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
        )
        results[name] = {**report, "train_seconds": train_seconds, "losses": losses}
    rows = {
        "predictor (scene proposals)": results["proposals"]["model"],
        "proposals-off ablation": results["proposals_off"]["model"],
        "centre-bias Gaussian": results["proposals"]["centre_bias"],
    }
    ours = rows["predictor (scene proposals)"]
    results["beats_baselines_on"] = {
        m: all(
            (ours[m] < other[m]) if m in LOWER_IS_BETTER else (ours[m] > other[m])
            for key, other in rows.items()
            if key != "predictor (scene proposals)"
        )
        for m in METRICS
    }
    results["table"] = _table(rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"results_{bench.score_source}.json").write_text(json.dumps(results, indent=2))
    print(results["table"])
    print(json.dumps({k: results[k] for k in ("beats_baselines_on",)}, indent=2))
    print(json.dumps(results["proposals"].get("faithfulness"), indent=2))
    return results


if __name__ == "__main__":
    parser = TrlParser((BenchArguments, PredictorModelConfig, PredictorDataConfig, PredictorTrainingConfig))
    main(*parser.parse_args_and_config())
