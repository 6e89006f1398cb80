"""Configuration of GRPO with the saliency-alignment reward."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from data_tools import TrainingDataArguments
from saliency import SaliencyMapArguments


@dataclass
class SaliencyGRPOConfig(GRPOConfig, SaliencyMapArguments):
    """`trl.GRPOConfig` plus which rewards are used and how the saliency maps are captured and built.

    Everything of GRPO itself (group size, KL, loss type, vLLM, ...) is TRL's and keeps TRL's meaning.
    """

    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy", "saliency"],
        metadata={
            "help": "Reward functions by name (keys of `rewards.REWARD_FUNCS`: format, accuracy, iou, saliency "
            "(energy-PG of the flow map), saliency_pg, saliency_if_correct (scores right answers only), saliency_direct, "
            "saliency_direct_pg), in the order of "
            "`reward_weights`."
        },
    )
    saliency_capture: str = field(
        default="auto",
        metadata={
            "help": "Where the tracer reads the maps: 'generate' (during HF generate, no extra forward), 'score' (a "
            "traced forward over prompt + completion; required with vLLM), or 'auto' ('score' with vLLM, else "
            "'generate').",
            "choices": ["auto", "generate", "score"],
        },
    )
    iou_coordinate_frame: str = field(
        default="model_family",
        metadata={
            "help": "What the numbers of a box in an answer mean for the iou reward: 'model_family' (the frame the "
            "model's family answers in: Qwen2.5-VL absolute pixels of the resized image it was given, Qwen2-VL and "
            "Qwen3-VL a 0-1000 grid, LLaVA normalised), 'normalized', 'grid_1000', 'input_pixels', "
            "'original_pixels' (pixels of the image file), or 'auto' (normalised when all four lie in [0, 1], "
            "else original pixels).",
            "choices": ["model_family", "auto", "normalized", "grid_1000", "input_pixels", "original_pixels"],
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
        self.check_map_flags()
        if self.use_vllm and self.saliency_capture == "generate":
            raise ValueError("--saliency_capture generate reads HF generate; with --use_vllm use 'score' or 'auto'")
        super().__post_init__()


@dataclass
class GRPOScriptArguments(TrainingDataArguments):
    """The RL rows (`TrainingDataArguments`); parsed with `SaliencyGRPOConfig` and `trl.ModelConfig` by `trl.TrlParser`."""

    dataset_source: str = field(
        default="saliency_r1",
        metadata={
            "help": "Layout of `dataset_name`: 'saliency_r1' (image, problem, solution, bbox: the public "
            "saliency-r1-8k layout, which the synthetic data also uses) or 'visual_cot'. Every row is validated.",
            "choices": ["saliency_r1", "visual_cot"],
        },
    )
    dataset_train_split: str = field(default="rl", metadata={"help": "Split to train on."})
    max_image_side: int | None = field(
        default=512, metadata={"help": "Resize images whose longer side exceeds this many pixels (boxes stay right)."}
    )
