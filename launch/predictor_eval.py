"""Evaluate a trained saliency predictor: metrics, centre-bias baseline, proposals-off ablation, faithfulness,
explanations.

    python launch/predictor_eval.py --config configs/predictor/synthetic_tiny.yaml \
        --checkpoint outputs/predictor/checkpoint-epoch6.pt
    # beside the ablation trained with --use_proposals false, saving every image's maps (as the main job does)
    python launch/predictor_eval.py --config configs/predictor/synthetic_tiny.yaml \
        --checkpoint outputs/predictor/checkpoint-epoch6.pt \
        --ablation_checkpoint outputs/predictor-no-proposals/checkpoint-epoch6.pt --save_maps true

Writes eval_report.json and explanations.jsonl beside the checkpoint (or in --report_dir). eval_report.json holds the
mean metrics of the model (`model`), of a centre-bias Gaussian (`centre_bias`) and, with --ablation_checkpoint, of the
proposals-off model (`proposals_off`), on the same images. With --save_maps, each image's predicted map (and the
ablation's) is written under maps/ and its line in explanations.jsonl gains `map_path`, `proposals_off_map_path` and
per-image `scores` (NSS and CC of the model, the ablation and the centre bias); eval_report.json is written last.
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from launch.parser import Parser
from predictor import PredictorDataConfig, PredictorModelConfig, PredictorTrainingConfig, load_predictor
from predictor.dataset import build_dataset
from predictor.evaluation import centre_bias_map, predict, score_maps
from predictor.report import evaluation_report, image_scores, save_maps, write_explanations


@dataclass
class PredictorEvalArguments:
    """Which checkpoint to evaluate and where the report goes (the data and settings come from the recipe)."""

    checkpoint: str = field(default="", metadata={"help": "Checkpoint file written by launch/predictor_train.py."})
    report_dir: str | None = field(default=None, metadata={"help": "Where to write the report (default: beside it)."})
    deletion_steps: int | None = field(
        default=None, metadata={"help": "Proposals removed one at a time for the deletion curve (default: topk)."}
    )
    ablation_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint trained with --use_proposals false (the proposals-off ablation), scored on the same "
            "images and reported as `proposals_off`."
        },
    )
    save_maps: bool = field(
        default=False,
        metadata={"help": "Write each image's predicted map (and the ablation's) as a PNG under maps/ in the report."},
    )


def main(
    eval_args: PredictorEvalArguments, data_args: PredictorDataConfig, training_args: PredictorTrainingConfig
) -> None:
    """Score the checkpoint on the recipe's eval split; write eval_report.json (and explanations.jsonl)."""
    if training_args.torch_threads:
        torch.set_num_threads(training_args.torch_threads)
    if not eval_args.checkpoint:
        raise ValueError("--checkpoint is required")
    model, meta = load_predictor(eval_args.checkpoint, training_args.device)
    ablation = None
    if eval_args.ablation_checkpoint:
        ablation, ablation_meta = load_predictor(eval_args.ablation_checkpoint, training_args.device)
        if ablation.config.use_proposals:
            raise ValueError(
                f"--ablation_checkpoint {eval_args.ablation_checkpoint} was trained with proposals; the ablation is a "
                "model trained with --use_proposals false"
            )
    dataset = build_dataset(data_args, "eval", model.config.use_proposals, model.config.logit_lens)
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
    ablation_maps = None
    if ablation is not None:
        # the same records, without the proposals
        plain = build_dataset(data_args, "eval", use_proposals=False, logit_lens=ablation.config.logit_lens)
        predicted = predict(ablation, plain, training_args.topk, training_args.batch_size, training_args.device)
        ablation_maps = [p.saliency for p in predicted]
        report["proposals_off"] = score_maps(plain, ablation_maps, seed=training_args.seed)
        report["proposals_off_checkpoint"] = {"path": eval_args.ablation_checkpoint, "epoch": ablation_meta["epoch"]}
    out = Path(eval_args.report_dir or Path(eval_args.checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    extra = None
    if eval_args.save_maps:
        paths = save_maps([p.saliency for p in predictions], out / "maps" / "model", out)
        extra = [{"map_path": path} for path in paths]
        centre = centre_bias_map(dataset.image_size, dataset.image_size)
        for i, line in enumerate(extra):
            line["scores"] = {
                "model": image_scores(dataset, i, predictions[i].saliency),
                "centre_bias": image_scores(dataset, i, centre),
            }
        if ablation_maps is not None:
            for i, path in enumerate(save_maps(ablation_maps, out / "maps" / "proposals_off", out)):
                extra[i]["proposals_off_map_path"] = path
                extra[i]["scores"]["proposals_off"] = image_scores(dataset, i, ablation_maps[i])
    if dataset.export is not None:
        write_explanations(predictions, dataset, out / "explanations.jsonl", extra)
    (out / "eval_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    # The model architecture comes from the checkpoint; PredictorModelConfig is parsed so one recipe serves both.
    parser = Parser((PredictorEvalArguments, PredictorModelConfig, PredictorDataConfig, PredictorTrainingConfig))
    eval_args, _, data_args, training_args = parser.parse_args_and_config()
    main(eval_args, data_args, training_args)
