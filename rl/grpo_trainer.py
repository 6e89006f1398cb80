"""GRPO whose rewards can read the saliency map of each completion, traced from the policy's own passes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from trl import GRPOTrainer
from trl.data_utils import apply_chat_template

from rewards import SaliencyReward, as_saliency_maps, boxes_per_map, multi_energy_pointing_game, multi_pointing_game
from saliency import SaliencyMapArguments, SaliencyMaps, SaliencyTracer, SpecialTokens
from saliency.capture import check_attention_implementation
from vlm import ExactResumeMixin, load_processor, model_input_size

from .grpo_config import SaliencyGRPOConfig

MAP_COLUMNS = {"flow": "saliency_map", "direct": "saliency_map_direct"}
# The image processor settings that decide how many image tokens an image becomes.
IMAGE_TOKEN_SETTINGS = ("do_resize", "size", "crop_size", "patch_size", "merge_size", "temporal_patch_size")

# The private methods of TRL's GRPOTrainer that SaliencyGRPOTrainer overrides, with the signatures the overrides are
# written against (trl 1.16, pinned in pyproject.toml). tests/test_rl.py names any the installed TRL has changed.
TRL_PRIVATE_OVERRIDES = {
    "_generate_single_turn": "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)",
    "_calculate_rewards": "(self, inputs, prompts, completions, completion_ids_list)",
}


def check_engine_processor(trainer_processor: Any, engine_processor: Any, engine: str) -> None:
    """Refuse a generation engine whose processor turns images into other image-token counts than the trainer's.

    TRL hands vLLM prompt token ids whose image-token runs the trainer's processor sized, with the raw images, which
    vLLM processes again with its own processor: any difference in resizing misaligns the two or fails.
    """
    settings = [
        {k: v for k, v in p.image_processor.to_dict().items() if k in IMAGE_TOKEN_SETTINGS}
        for p in (trainer_processor, engine_processor)
    ]
    if settings[0] != settings[1]:
        raise ValueError(
            f"{engine} processes images with {settings[1]}, the trainer with {settings[0]} (--min_pixels/--max_pixels "
            "set the trainer's): the prompts' image tokens would not match the images vLLM embeds. Save the "
            "processor with the trainer's settings in the model folder (colocate), or pass them to the server "
            "(--mm-processor-kwargs)."
        )


def _row_images(example: dict) -> list[Any]:
    """The images of one input row: its `images` list, or its single `image`."""
    return example.get("images") or ([example["image"]] if example.get("image") is not None else [])


def _image_sizes(images: Sequence[Sequence[Any]] | None, count: int) -> list[list[tuple[int, int]]] | None:
    if images is None:
        return None
    return [[(image.height, image.width) for image in (images[i] or [])] for i in range(count)]


class SaliencyGRPOTrainer(ExactResumeMixin, GRPOTrainer):
    """`trl.GRPOTrainer` that hands each completion's saliency maps to the reward functions.

    The maps are read from the policy's own passes by `saliency.SaliencyTracer`: during HF `generate` (no extra
    forward) or, with vLLM or `saliency_capture="score"`, from one traced forward over prompt + completion. They
    reach the rewards as the columns `saliency_map` (flow map) and `saliency_map_direct`, each entry a float array at
    the image's pixel size, or None for a completion without a map (bad format, no image). Resuming a full fine-tune
    restores the checkpoint's weights exactly (`vlm.ExactResumeMixin`). Rows with several images (`images`, boxes
    placed by `bbox_image` or, for a clip's frames, `bbox_frame`) get a list of maps, one per image, in saliency per
    vision token, and the column `saliency_frames`; `rewards.SaliencyReward` scores all of them. Everything else is
    TRL's GRPO, unchanged. Extra logs: `saliency/pg`, `saliency/energy_pg` (flow map, completions that have one),
    `saliency/no_map` (fraction of completions without a map: bad format, no image), `saliency/empty_map` (fraction
    whose map has no positive mass; rows without a box count in neither), `saliency/tracer_time_share` (tracer
    seconds over step seconds) and `tokens_per_second` (completion tokens generated per second of training step).
    """

    args: SaliencyGRPOConfig

    def __init__(self, *args: Any, **kwargs: Any):
        processor = kwargs.get("processing_class")
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer is not None:
            # TRL left-pads the prompt ids but re-runs the processor without a padding side for the log-prob forward;
            # a right-padding processor (as saved by most VLMs) would put mm_token_type_ids, hence M-RoPE's image
            # positions, `pad` tokens away from the image tokens of every shorter prompt. TRL sets this itself only
            # when it loads the processor.
            tokenizer.padding_side = "left"
        super().__init__(*args, **kwargs)
        config = self.args
        reads_maps = any(isinstance(f, SaliencyReward) for f in self.reward_funcs)
        self._trace = reads_maps or getattr(config, "log_saliency_metrics", False)
        capture = getattr(config, "saliency_capture", "auto")
        self._capture = ("score" if self.use_vllm else "generate") if capture == "auto" else capture
        self._map_args = config if isinstance(config, SaliencyMapArguments) else SaliencyMapArguments()
        self._tracer: SaliencyTracer | None = None
        if self.use_vllm and self.vllm_mode == "colocate":  # vLLM loads the processor of the model folder
            path = self.accelerator.unwrap_model(self.model).name_or_path
            check_engine_processor(self.processing_class, load_processor(path), f"vLLM (the processor in {path})")
        if self._trace:
            self.tracer  # noqa: B018 - built now, so that a bad --saliency_layers stops the run before training
        self._pending: list[SaliencyMaps] | None = None
        self._tracer_seconds = 0.0
        self._completion_tokens = 0

    @property
    def tracer(self) -> SaliencyTracer:
        """The tracer over the unwrapped policy (the same modules before and after accelerate/DeepSpeed wrap it)."""
        if self._tracer is None:
            model = self.accelerator.unwrap_model(self.model)
            check_attention_implementation(model)  # an attention implementation it cannot trace is refused by name
            self._tracer = self._map_args.make_tracer(model, SpecialTokens.from_tokenizer(self.processing_class))
        return self._tracer

    def _keep_generation_maps(self, recording: Any, completion_ids, multimodal_fields, images) -> None:
        """Turn what the tracer recorded during one generation into the maps the next reward call hands out."""
        start = time.perf_counter()
        self._pending = recording.maps(
            completion_ids, vision_inputs=multimodal_fields, image_sizes=_image_sizes(images, len(completion_ids))
        )
        self._tracer_seconds += recording.seconds + time.perf_counter() - start

    def _score_maps(self, inputs, prompts, completion_ids_list) -> list[SaliencyMaps]:
        """Maps from one traced forward over prompt + completion (completions from vLLM or elsewhere)."""
        images = [_row_images(x) for x in inputs]
        texts = [
            apply_chat_template({"prompt": prompt}, self.processing_class, **self.chat_template_kwargs)["prompt"]
            for prompt in prompts
        ]
        batch = self.processing_class(
            images=images, text=texts, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.accelerator.device)
        completions = [torch.tensor(ids, dtype=torch.long) for ids in completion_ids_list]
        pad_id = getattr(self.processing_class, "tokenizer", self.processing_class).pad_token_id
        completion_ids = torch.nn.utils.rnn.pad_sequence(completions, batch_first=True, padding_value=pad_id).to(
            self.accelerator.device
        )
        completion_mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones_like(c) for c in completions], batch_first=True
        ).to(self.accelerator.device)
        vision = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        return self.tracer.score(
            batch["input_ids"],
            completion_ids,
            batch["attention_mask"],
            completion_mask,
            image_sizes=_image_sizes(images, len(images)),
            **vision,
        )

    def _reward_rows(self, inputs: list[dict], prompts: list, completion_ids_list: list[list[int]]) -> list[dict]:
        """Copies of the input rows with the columns this trainer adds for the rewards: image input size, maps."""
        self._completion_tokens += sum(len(ids) for ids in completion_ids_list)
        rows = [dict(example) for example in inputs]
        if any(getattr(func, "reads_image_input_size", False) for func in self.reward_funcs):
            for row in rows:  # the frame Qwen2.5-VL states boxes in (iou_coordinate_frame input_pixels)
                images = _row_images(row)
                row["image_input_size"] = model_input_size(self.processing_class, images[0]) if images else None
        if self._trace:
            start = time.perf_counter()
            maps = (
                self._pending if self._capture == "generate" else self._score_maps(rows, prompts, completion_ids_list)
            )
            self._pending = None
            if maps is None or len(maps) != len(rows):
                raise RuntimeError(
                    f"the tracer returned {0 if maps is None else len(maps)} map sets for {len(rows)} completions"
                )
            for row, traced in zip(rows, maps):
                for kind, column in MAP_COLUMNS.items():
                    row[column], frames = self._row_maps(traced, kind, row)
                row["saliency_frames"] = frames
            self._log_map_metrics(rows)
            self._tracer_seconds += time.perf_counter() - start
        return rows

    @staticmethod
    def _row_maps(
        traced: SaliencyMaps, kind: str, row: dict
    ) -> tuple[np.ndarray | list[np.ndarray] | None, list[tuple[int, int]] | None]:
        """The row's map column entry and the frames each map covers (None unless the row's boxes are per frame).

        One image: its map at the image's pixel size (as ever). Several images or video steps: one map each, in
        saliency per vision token (`ImageMap.upsampled_mass`) so that the rewards compare them. A clip given as
        frames (images) has one map per frame; one given as a video, one per temporal step with the frames it covers.
        """
        maps = traced.answer_map(kind)
        if not maps:
            return None, None
        frames = None
        if row.get("bbox_frame") is not None:
            frames = [m.frames if m.source == "video" else (m.index, m.index + 1) for m in maps]
        if len(maps) == 1 and maps[0].source == "image":
            return maps[0].upsampled(), frames
        return [m.upsampled_mass() for m in maps], frames

    def _log_map_metrics(self, inputs: list[dict]) -> None:
        pg, energy, no_map, empty_map = [], [], 0, 0
        for example in inputs:
            if example.get("saliency_map") is None:
                no_map += 1
                continue
            if example.get("bbox") is None:
                continue
            maps = as_saliency_maps(example["saliency_map"])
            boxes = boxes_per_map(
                len(maps),
                example["bbox"],
                example.get("bbox_image"),
                example.get("bbox_frame"),
                example.get("saliency_frames"),
            )
            scores = multi_energy_pointing_game(maps, boxes)
            if scores is None:
                empty_map += 1
                continue
            energy.append(scores)
            pg.append(multi_pointing_game(maps, boxes))
        metrics = self._trl_metrics()
        metrics["saliency/no_map"].append(no_map / max(len(inputs), 1))
        metrics["saliency/empty_map"].append(empty_map / max(len(inputs), 1))
        if energy:
            metrics["saliency/energy_pg"].append(float(np.mean(energy)))
            metrics["saliency/pg"].append(float(np.mean([p for p in pg if p is not None])))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        metrics = self._trl_metrics()
        step_times = metrics.get("step_time") or []
        if step_times and self.model.training:
            total = sum(step_times)
            metrics["saliency/tracer_time_share"] = [self._tracer_seconds / total if total else 0.0]
            metrics["tokens_per_second"] = [self._completion_tokens / total if total else 0.0]
            self._tracer_seconds, self._completion_tokens = 0.0, 0
        super().log(logs, start_time)

    # ---- TRL private API -----------------------------------------------------------------------------------------
    # The only places this trainer reaches into GRPOTrainer's internals (trl 1.16; TRL_PRIVATE_OVERRIDES).

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # TRL's one HF/vLLM generation of a batch of prompts: traced when the maps are read during generation.
        args = (prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if not (self._trace and self._capture == "generate"):
            return super()._generate_single_turn(*args)
        with self.tracer.recording() as recording:
            completion_ids, logprobs = super()._generate_single_turn(*args)
        self._keep_generation_maps(recording, completion_ids, multimodal_fields, images)
        return completion_ids, logprobs

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL hands every column of the rows in `inputs` to the reward functions: the rows with ours go in their place.
        rows = self._reward_rows(inputs, prompts, completion_ids_list)
        return super()._calculate_rewards(rows, prompts, completions, completion_ids_list)

    def _trl_metrics(self) -> dict[str, list[float]]:
        """TRL's metric lists of the current mode (averaged and cleared by its `log`; `step_time` is its own)."""
        return self._metrics["train" if self.model.training else "eval"]
