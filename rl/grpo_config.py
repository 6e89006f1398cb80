"""Configuration of GRPO with the saliency-alignment reward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trl import GRPOConfig

from data_tools import TrainingDataArguments, check_choices
from rewards import DEFAULT_REWARD_FUNCS
from saliency import SaliencyMapArguments


@dataclass
class SaliencyGRPOConfig(GRPOConfig, SaliencyMapArguments):
    """`trl.GRPOConfig` plus which rewards are used and how the saliency maps are captured and built.

    Everything of GRPO itself (group size, KL, loss type, vLLM, ...) is TRL's and keeps TRL's meaning.
    """

    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARD_FUNCS),
        metadata={
            "help": "Reward functions, in the order of `reward_weights`: names of `rewards.REWARD_FUNCS` (format, "
            "accuracy, iou, judge (the LLM judge, see --judge_*), saliency (energy-PG of the flow map), saliency_pg, "
            "saliency_if_correct (scores right answers only), saliency_direct, saliency_direct_pg) or dotted import "
            "paths to reward functions (`my_pkg.my_module.my_reward`, importable from the working directory)."
        },
    )
    saliency_capture: Literal["auto", "generate", "score"] = field(
        default="auto",
        metadata={
            "help": "Where the tracer reads the maps: 'generate' (during HF generate, no extra forward), 'score' (a "
            "traced forward over prompt + completion; required with vLLM), or 'auto' ('score' with vLLM, else "
            "'generate')."
        },
    )
    iou_coordinate_frame: Literal[
        "model_family", "auto", "normalized", "grid_1000", "input_pixels", "original_pixels"
    ] = field(
        default="model_family",
        metadata={
            "help": "What the numbers of a box in an answer mean for the iou reward: 'model_family' (the frame the "
            "model's family answers in: Qwen2.5-VL absolute pixels of the resized image it was given, Qwen2-VL and "
            "Qwen3-VL a 0-1000 grid, LLaVA normalised), 'normalized', 'grid_1000', 'input_pixels', "
            "'original_pixels' (pixels of the image file), or 'auto' (normalised when all four lie in [0, 1], "
            "else original pixels)."
        },
    )
    pointing_tolerance_px: float = field(
        default=0.0,
        metadata={
            "help": "Pointing-game tolerance of the saliency_pg and saliency_direct_pg rewards: a map whose peak lies "
            "within this many pixels of a box (at the image's pixel size) scores a hit."
        },
    )
    judge_base_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible endpoint of the judge reward's chat model (`{base_url}/chat/completions`), "
            "e.g. http://localhost:8000/v1. Redirects are not followed."
        },
    )
    judge_model: str | None = field(default=None, metadata={"help": "Chat model the judge reward asks."})
    judge_api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "Environment variable holding the judge's API key (read at each request, never stored or logged; "
            "unset: no key is sent)."
        },
    )
    judge_timeout_s: float = field(default=30.0, metadata={"help": "Seconds the judge waits for one reply."})
    judge_max_retries: int = field(
        default=2,
        metadata={
            "help": "Retries, with exponential backoff, of a judge request that failed to connect, timed out or got "
            "HTTP 408/409/425/429/5xx; a judge that cannot answer scores None, which TRL leaves out."
        },
    )
    log_saliency_metrics: bool = field(
        default=False,
        metadata={
            "help": "Trace and log the pointing game and energy pointing game of every completion's flow map even "
            "when no reward reads the maps (e.g. the format + accuracy control run of a comparison). Off (default): "
            "a run without a saliency reward builds no tracer, so it also runs on model families the tracer does not "
            "support."
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        self.check_map_flags()
        if self.pointing_tolerance_px < 0:
            raise ValueError(f"--pointing_tolerance_px must be >= 0, got {self.pointing_tolerance_px}")
        if self.use_vllm and self.saliency_capture == "generate":
            raise ValueError("--saliency_capture generate reads HF generate; with --use_vllm use 'score' or 'auto'")
        super().__post_init__()


@dataclass
class GRPOScriptArguments(TrainingDataArguments):
    """The RL rows (`TrainingDataArguments`); parsed with `SaliencyGRPOConfig` and `trl.ModelConfig` by `trl.TrlParser`."""

    dataset_source: Literal["saliency_r1", "visual_cot"] = field(
        default="saliency_r1",
        metadata={
            "help": "Layout of `dataset_name`: 'saliency_r1' (image, problem, solution, bbox: the public "
            "saliency-r1-8k layout, which the synthetic data also uses) or 'visual_cot'. Every row is validated."
        },
    )
    dataset_train_split: str = field(default="rl", metadata={"help": "Split to train on."})
    max_image_side: int | None = field(
        default=512, metadata={"help": "Resize images whose longer side exceeds this many pixels (boxes stay right)."}
    )
