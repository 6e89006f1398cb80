"""Arguments of the evaluation and export launchers, parsed by `launch.parser.Parser` with `trl.ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from data_tools import PromptArguments, check_choices
from predictor.proposals import LENS_FEATURES
from saliency.baselines import BASELINES
from saliency.map_arguments import MAP_KINDS, SaliencyMapArguments


@dataclass
class InferenceArguments(SaliencyMapArguments, PromptArguments):
    """What both launchers share: the rows to run on, how completions are produced and how maps are traced.

    The data fields are named as in TRL's and the HF example scripts' arguments (`dataset_test_split`,
    `max_eval_samples`), as `TrainingDataArguments` names the training side's.
    """

    renamed_flags: ClassVar[dict[str, str]] = {"dataset_split": "dataset_test_split", "max_samples": "max_eval_samples"}

    dataset_name: str | None = field(
        default="outputs/data",
        metadata={
            "help": "Rows to run on: a `save_to_disk` folder (e.g. from `python -m data_tools.synthetic`), a local "
            ".json/.jsonl/.parquet file or a hub data set, in the `dataset_source` layout."
        },
    )
    dataset_source: Literal["saliency_r1", "visual_cot"] = field(
        default="saliency_r1",
        metadata={
            "help": "Layout of `dataset_name` (see `data_tools.SOURCES`): 'saliency_r1' (image, problem, solution, "
            "bbox; also our synthetic splits) or 'visual_cot'."
        },
    )
    dataset_test_split: str = field(default="eval", metadata={"help": "Split of `dataset_name` to run on."})
    image_dir: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths in the data are resolved against."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Run on the first N rows only (after validation); all rows when unset."}
    )
    on_bad_row: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "Rows that fail validation: 'error' stops before any inference and lists them all; 'skip' "
            "leaves them out (each one is listed in the log)."
        },
    )
    completions_file: str | None = field(
        default=None,
        metadata={
            "help": 'JSONL of completions produced elsewhere (e.g. by vLLM), one `{"question_id", "completion"}` '
            "per row (the export of an image folder uses the image id, its path relative to the folder, as "
            "question_id): they are traced in one scoring forward instead of being generated. Every row needs one."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per generation batch (left-padded)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest completion generated (greedy decoding)."})
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Processor's lower pixel limit per image (Qwen families); model default when unset."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Processor's upper pixel limit per image (Qwen families); model default when unset."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Folder the results are written to."})
    seed: int = field(default=42, metadata={"help": "Seed of the bootstrap, the random deletion orders and sampling."})

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise ValueError(f"--max_eval_samples must be >= 1 when set, got {self.max_eval_samples}")
        self.check_map_flags()


@dataclass
class EvalArguments(InferenceArguments):
    """Held-out evaluation: answers, pointing games with baselines, faithfulness curves, an HTML report.

    `model_name_or_path` (in `trl.ModelConfig`) may be a base model, a merged checkpoint or a LoRA adapter folder.
    """

    saliency_maps: list[str] = field(  # items of a list field cannot be parsed as a Literal: choices from MapKind
        default_factory=lambda: list(MAP_KINDS),
        metadata={
            "help": "Tracer maps scored with the pointing games: 'flow' (the reward's default) and/or 'direct'.",
            "choices": list(MAP_KINDS),
        },
    )
    pointing_tolerance_px: float = field(
        default=0.0, metadata={"help": "Pointing-game tolerance in pixels (also used by the centre-point baseline)."}
    )
    bootstrap_samples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the rows for the confidence intervals (0: none)."}
    )
    confidence: float = field(default=0.95, metadata={"help": "Level of the bootstrap confidence intervals."})
    report_samples: int = field(
        default=8, metadata={"help": "Rows shown with their heatmap overlays in the report (the first N rows)."}
    )
    faithfulness_samples: int = field(
        default=16,
        metadata={"help": "Rows with a map (the first N) on which deletion/insertion curves are computed (0: skip)."},
    )
    faithfulness_steps: int = field(
        default=10, metadata={"help": "Points of each deletion/insertion curve after the start (fractions k/steps)."}
    )
    faithfulness_random_orders: int = field(
        default=3, metadata={"help": "Random patch orders averaged into the random-order baseline per row."}
    )
    faithfulness_baselines: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Baseline saliency methods also scored by the curves, by kind (keys of "
            "`saliency.baselines.BASELINES`: attention, rollout, gradient, integrated_gradients, rise); none by "
            "default."
        },
    )
    sanity_samples: int = field(
        default=4,
        metadata={
            "help": "Rows with a map (the first N) for the sanity check of the maps (Adebayo et al., 2018): the text "
            "decoder is re-initialised from the top (read-out, last layer, last two, ... all layers) and each "
            "method's maps of the same completion are compared with the original ones by Spearman rank "
            "correlation (0: skip; needs unquantized weights)."
        },
    )
    compare_to: str | None = field(
        default=None, metadata={"help": "metrics.json of another run, shown side by side with this one in the report."}
    )
    compare_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A second model (base, merged or LoRA adapter) evaluated with the same settings into "
            "`<output_dir>/compare` and shown side by side."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.saliency_maps:
            raise ValueError("--saliency_maps needs at least one of 'flow' and 'direct'")
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence must lie in (0, 1), got {self.confidence}")
        for name in (
            "bootstrap_samples",
            "report_samples",
            "faithfulness_samples",
            "sanity_samples",
            "pointing_tolerance_px",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("faithfulness_steps", "faithfulness_random_orders"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        unknown = sorted(set(self.faithfulness_baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"--faithfulness_baselines {unknown} unknown; choose from {', '.join(sorted(BASELINES))}")
        if self.compare_to is not None and self.compare_model_name_or_path is not None:
            raise ValueError("pass either --compare_to or --compare_model_name_or_path, not both")
        if self.completions_file is not None and self.compare_model_name_or_path is not None:
            raise ValueError(
                "--completions_file holds one model's completions; it cannot be used with "
                "--compare_model_name_or_path (evaluate the other run separately and pass --compare_to)"
            )


@dataclass
class ExportArguments(InferenceArguments):
    """Explanations and semantic proposals per image, for the downstream saliency predictor (JSONL + PNG masks).

    Images come from `image_folder` (every image file in it, asked `question`) or from `dataset_name` (its `problem`
    column). A rerun with the same `output_dir` skips the images already written.
    """

    image_folder: str | None = field(
        default=None,
        metadata={"help": "Folder of images to export (searched recursively); overrides `dataset_name` when set."},
    )
    question: str = field(
        default="What objects are in the image, and where are they?",
        metadata={"help": "The question asked about each image of `image_folder`."},
    )
    object_nouns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Keep only phrases whose last word is one of these nouns (e.g. `circle square triangle diamond` "
            "for the synthetic shapes); every noun phrase found when unset."
        },
    )
    mask_threshold: float = field(
        default=0.5,
        metadata={"help": "A proposal's box bounds the mask pixels at or above this fraction of the mask's maximum."},
    )
    output_dir: str = field(
        default="outputs/export", metadata={"help": "Folder of proposals.jsonl, masks/, errors.jsonl."}
    )
    logit_lens_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Export logit-lens patch features (after LogitGaze): each image token's hidden state after these "
            "decoder layers (negative indices count from the end; e.g. `-2 -1`) read through the final norm and "
            "lm_head, from the same pass as the maps, into lens/ beside the masks. None when unset."
        },
    )
    logit_lens_features: str = field(
        default="phrases",
        metadata={
            "help": "How each patch's lens distribution is reduced: 'phrases' (per proposal, the probability mass on "
            "the tokens of its phrase) or 'topk' (the `logit_lens_topk` largest probabilities).",
            "choices": list(LENS_FEATURES),
        },
    )
    logit_lens_topk: int = field(
        default=5, metadata={"help": "Probabilities kept per patch with `--logit_lens_features topk`."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_threshold <= 1:
            raise ValueError(f"--mask_threshold must lie in (0, 1], got {self.mask_threshold}")
        if self.logit_lens_layers is not None and not self.logit_lens_layers:
            raise ValueError("--logit_lens_layers needs at least one layer index (leave it unset for no features)")
        if self.logit_lens_features not in LENS_FEATURES:
            raise ValueError(
                f"--logit_lens_features must be one of {', '.join(LENS_FEATURES)}, got {self.logit_lens_features!r}"
            )
        if self.logit_lens_topk < 1:
            raise ValueError(f"--logit_lens_topk must be >= 1, got {self.logit_lens_topk}")
