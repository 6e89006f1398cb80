"""Train the explainable saliency predictor.

    python launch/predictor_train.py --config configs/predictor/synthetic_tiny.yaml [--num_epochs 3 ...]

Reads human fixations (AiR, OSIE, SALICON or MIT1003 layout) and the exported proposals, trains, saves
checkpoints in --output_dir (resume with --resume_from latest) and, when --eval_fixations is set (and not
--evaluate false), writes eval_report.json and explanations.jsonl there.
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import json
from pathlib import Path

import torch

from launch.parser import Parser
from predictor import PredictorDataConfig, PredictorModelConfig, PredictorTrainer, PredictorTrainingConfig
from predictor.dataset import build_dataset
from predictor.report import evaluation_report, write_explanations


def main(
    model_args: PredictorModelConfig, data_args: PredictorDataConfig, training_args: PredictorTrainingConfig
) -> None:
    """Train on the recipe's train split; with eval fixations set, also write the evaluation beside the checkpoints."""
    if training_args.torch_threads:
        torch.set_num_threads(training_args.torch_threads)
    train_dataset = build_dataset(data_args, "train", model_args.use_proposals, model_args.logit_lens)
    trainer = PredictorTrainer(model_args, training_args, train_dataset)
    trainer.train()
    if data_args.eval_fixations and training_args.evaluate:
        eval_dataset = build_dataset(data_args, "eval", model_args.use_proposals, model_args.logit_lens)
        report, predictions = evaluation_report(
            trainer.model,
            eval_dataset,
            training_args.topk,
            batch_size=training_args.batch_size,
            device=training_args.device,
            seed=training_args.seed,
        )
        out = Path(training_args.output_dir)
        (out / "eval_report.json").write_text(json.dumps(report, indent=2))
        if eval_dataset.export is not None:
            write_explanations(predictions, eval_dataset, out / "explanations.jsonl")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = Parser((PredictorModelConfig, PredictorDataConfig, PredictorTrainingConfig))
    main(*parser.parse_args_and_config())
