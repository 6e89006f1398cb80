"""Evaluate a trained saliency predictor: metrics, centre-bias baseline, faithfulness, explanations.

    python launch/predictor_eval.py --config configs/predictor/synthetic_tiny.yaml \
        --checkpoint outputs/predictor/checkpoint-epoch6.pt

Writes eval_report.json and explanations.jsonl beside the checkpoint (or in --report_dir).
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from predictor import PredictorDataConfig, PredictorModelConfig, PredictorTrainingConfig, load_predictor
from predictor.dataset import build_dataset
from predictor.report import evaluation_report, write_explanations


@dataclass
class PredictorEvalArguments:
    """Which checkpoint to evaluate and where the report goes (the data and settings come from the recipe)."""

    checkpoint: str = field(default="", metadata={"help": "Checkpoint file written by launch/predictor_train.py."})
    report_dir: str | None = field(default=None, metadata={"help": "Where to write the report (default: beside it)."})
    deletion_steps: int | None = field(
        default=None, metadata={"help": "Proposals removed one at a time for the deletion curve (default: topk)."}
    )


def main(
    eval_args: PredictorEvalArguments, data_args: PredictorDataConfig, training_args: PredictorTrainingConfig
) -> None:
    """Score the checkpoint on the recipe's eval split; write eval_report.json (and explanations.jsonl)."""
    if not eval_args.checkpoint:
        raise ValueError("--checkpoint is required")
    model, meta = load_predictor(eval_args.checkpoint, training_args.device)
    dataset = build_dataset(data_args, "eval", model.config.use_proposals)
    report, predictions = evaluation_report(
        model,
        dataset,
        training_args.topk,
        eval_args.deletion_steps,
        training_args.batch_size,
        training_args.device,
        training_args.seed,
    )
    report["checkpoint"] = {"path": eval_args.checkpoint, "epoch": meta["epoch"]}
    out = Path(eval_args.report_dir or Path(eval_args.checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_report.json").write_text(json.dumps(report, indent=2))
    if dataset.export is not None:
        write_explanations(predictions, dataset, out / "explanations.jsonl")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    # The model architecture comes from the checkpoint; PredictorModelConfig is parsed so one recipe serves both.
    parser = TrlParser((PredictorEvalArguments, PredictorModelConfig, PredictorDataConfig, PredictorTrainingConfig))
    eval_args, _, data_args, training_args = parser.parse_args_and_config()
    main(eval_args, data_args, training_args)
