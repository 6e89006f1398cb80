"""Held-out evaluation and export of a base, SFT or GRPO checkpoint.

Accuracy, format rate and pointing games (with their baselines and bootstrap intervals) from one traced pass,
deletion/insertion faithfulness curves, the cascading-randomisation sanity check of the maps, a self-contained HTML
report, and the explanation + semantic-proposal export read by the downstream saliency predictor.
"""

from .callbacks import HeldOutAnswersCallback
from .eval_config import EvalArguments, ExportArguments, InferenceArguments
from .evaluate import evaluate_model, load_rows, run_eval, write_outputs
from .export import mask_box, run_export
from .faithfulness import (
    FaithfulnessResult,
    answer_log_prob_curves,
    faithfulness_curves,
    patch_order,
)
from .generation import (
    TracedCompletion,
    build_prompts,
    completion_maps,
    generate_completions,
    prompt_inputs,
    trace_completions,
)
from .metrics import answer_metrics, answer_scores, mean_interval, pointing_scores, spread, summarise
from .phrases import Phrase, noun_phrases
from .report import line_plot, render_report, sample_overlay
from .sanity import SanityResult, cascading_randomisation, randomisation_steps, spearman

__all__ = [
    "EvalArguments",
    "ExportArguments",
    "FaithfulnessResult",
    "HeldOutAnswersCallback",
    "InferenceArguments",
    "Phrase",
    "SanityResult",
    "TracedCompletion",
    "answer_log_prob_curves",
    "answer_metrics",
    "answer_scores",
    "build_prompts",
    "cascading_randomisation",
    "completion_maps",
    "evaluate_model",
    "faithfulness_curves",
    "generate_completions",
    "line_plot",
    "load_rows",
    "mask_box",
    "mean_interval",
    "noun_phrases",
    "patch_order",
    "pointing_scores",
    "prompt_inputs",
    "randomisation_steps",
    "render_report",
    "run_eval",
    "run_export",
    "sample_overlay",
    "spearman",
    "spread",
    "summarise",
    "trace_completions",
    "write_outputs",
]
