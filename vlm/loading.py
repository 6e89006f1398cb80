"""Load a vision-language model and its processor from a Hub name or a local path, for training or inference.

One entry point, :func:`load_model_and_processor`, reads TRL's :class:`~trl.ModelConfig` (the flags users already
know from TRL scripts: ``--dtype``, ``--attn_implementation``, ``--use_peft``, ``--lora_*``, ``--load_in_4bit``...)
and returns the model, with LoRA adapters when training asks for them, and the processor.

LoRA on VLMs. PEFT expands ``all-linear`` to every ``nn.Linear`` of the model except the output embedding
(``lm_head``); for a VLM that includes the vision tower and the projector (``visual.blocks.*.attn.qkv``,
``visual.merger.mlp.*``, ``vision_tower...q_proj``, ``multi_modal_projector.linear_*``). Explicit names are matched
as suffixes anywhere, so ``q_proj`` also hits a CLIP vision tower and ``down_proj`` the Qwen2.5-VL vision MLP.
Unless ``adapt_vision_tower=True``, the modules beside the language model (vision tower, projector) are excluded
through PEFT's ``exclude_modules``, so both forms adapt only the language model. ``lm_head`` gets an adapter only
when named explicitly.

Processors without torchvision. Since transformers 5 every Qwen-VL processor holds a video processor, and video
processors require torchvision. Where torchvision is missing, the processor is loaded without its video processor
(same class name, same files, images and text only); passing videos to it raises.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState
from peft import PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.utils import is_torchvision_available
from trl import ModelConfig, get_peft_config, get_quantization_config

from .checkpoints import adapter_base

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def load_model_and_processor(
    model_args: ModelConfig,
    *,
    for_training: bool = False,
    processor_kwargs: dict | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    adapt_vision_tower: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load ``model_args.model_name_or_path`` with ``AutoModelForImageTextToText`` and its processor.

    A PEFT adapter folder (``adapter_config.json`` and no ``config.json``) loads for inference as its base model
    (same flags) with the adapter applied and, unless the base is quantized, merged in; the processor saved beside
    the adapter is used when there is one.

    Args:
        model_args: TRL's model flags. ``dtype`` is ``"auto"``, ``"bfloat16"``, ``"float16"`` or ``"float32"``;
            ``load_in_4bit`` / ``load_in_8bit`` quantize with bitsandbytes (QLoRA: needs ``use_peft``).
        for_training: add the LoRA adapters asked for by ``use_peft`` (after preparing a quantized model for
            k-bit training) and leave the model in train mode. Otherwise the model is returned in eval mode and
            ``use_peft`` is not applied.
        processor_kwargs: extra keyword arguments for the processor's ``from_pretrained``.
        device_map: passed to ``from_pretrained``. Quantized models default to this process's device.
        trust_remote_code: allow code from the model repository to run. Off unless asked.
        adapt_vision_tower: let LoRA target modules of the vision tower and projector too (see module docstring).
        min_pixels, max_pixels: pixel budget of one image for processors that resize to a budget (Qwen2-VL,
            Qwen2.5-VL, Qwen3-VL). Rejected for processors that resize to a fixed size (LLaVA).

    Raises:
        ValueError: no model name, a model that is not an image-text-to-text model, quantization without LoRA,
            LoRA without target modules, a pixel budget for a fixed-size processor, or an adapter to train.
        FileNotFoundError: a local path that does not exist or holds no model config.
    """
    base = adapter_base(model_args.model_name_or_path) if model_args.model_name_or_path else None
    if base is not None:
        if for_training:
            raise ValueError(
                f"--model_name_or_path {model_args.model_name_or_path!r} holds a LoRA adapter, not a model to train: "
                "merge it with vlm.merge_lora_adapter(...) or train from its base model"
            )
        return _load_adapter(
            Path(model_args.model_name_or_path).expanduser(),
            replace(model_args, model_name_or_path=base),
            trust_remote_code=trust_remote_code,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            processor_kwargs=processor_kwargs,
            device_map=device_map,
        )
    name = _checked_name_or_path(model_args.model_name_or_path)
    config = _load_config(name, model_args.model_revision, trust_remote_code)
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING and not trust_remote_code:
        raise ValueError(
            f"--model_name_or_path {name!r} is a {config.model_type!r} model, which AutoModelForImageTextToText "
            "does not support; pass a vision-language model (e.g. Qwen2.5-VL, Qwen2-VL, Qwen3-VL, LLaVA)"
        )

    if model_args.load_in_4bit and model_args.dtype in (None, "auto"):
        raise ValueError("--load_in_4bit computes in --dtype, which must then be bfloat16, float16 or float32")
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and for_training and not model_args.use_peft:
        raise ValueError("--load_in_4bit / --load_in_8bit train only LoRA adapters: also pass --use_peft")
    if quantization_config is not None and device_map is None:
        device_map = {"": str(PartialState().device)}

    model = AutoModelForImageTextToText.from_pretrained(
        name,
        revision=model_args.model_revision,
        dtype=_torch_dtype(model_args.dtype),
        attn_implementation=model_args.attn_implementation,
        device_map=device_map,
        quantization_config=quantization_config,
        trust_remote_code=trust_remote_code,
    )
    if for_training:
        if quantization_config is not None:
            # Gradient checkpointing is the trainer's choice (TrainingArguments.gradient_checkpointing).
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if model_args.use_peft:
            # PEFT upcasts adapters to fp32 by default; under ZeRO-3 a bf16 base with fp32 adapters fails to gather
            # (the same exception TRL's SFTTrainer makes for unquantized models).
            model = get_peft_model(
                model,
                lora_config(model_args, model, adapt_vision_tower=adapt_vision_tower),
                autocast_adapter_dtype=not (is_deepspeed_zero3_enabled() and quantization_config is None),
            )
        model.train()
    else:
        model.eval()

    processor = load_processor(
        name,
        config=config,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        **(processor_kwargs or {}),
    )
    return model, processor


def lora_config(model_args: ModelConfig, model: PreTrainedModel, *, adapt_vision_tower: bool = False) -> PeftConfig:
    """TRL's LoRA config for ``model_args``, restricted to the language model unless ``adapt_vision_tower``."""
    if model_args.lora_target_modules is None and model_args.lora_target_parameters is None:
        raise ValueError(
            "--lora_target_modules is required for vision-language models, e.g. `all-linear` or `q_proj v_proj`"
        )
    peft_config = get_peft_config(model_args)
    if not adapt_vision_tower:
        vision = vision_module_names(model)
        if vision:
            peft_config.exclude_modules = rf"({'|'.join(map(re.escape, vision))})(\..*)?"
    return peft_config


def vision_module_names(model: PreTrainedModel) -> list[str]:
    """Names of the modules that sit beside the language model (vision tower, projector) in ``model``."""
    decoder = model.get_decoder()
    decoder_name = next(name for name, module in model.named_modules() if module is decoder)
    parent_name, _, _ = decoder_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    prefix = f"{parent_name}." if parent_name else ""
    return [f"{prefix}{name}" for name, child in parent.named_children() if child is not decoder]


def load_processor(
    name_or_path: str,
    *,
    config: PretrainedConfig | None = None,
    revision: str = "main",
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    **kwargs,
) -> ProcessorMixin:
    """Load the processor of a VLM; without torchvision, Qwen-VL processors are loaded without video support.

    ``config`` is the model's config, read from ``name_or_path`` unless given (a saved adapter has none).
    """
    config = config or _load_config(name_or_path, revision, trust_remote_code)
    # Remote-code configs subclass a native one; their model_type still names the native processor.
    processor_class = None
    if config.model_type in CONFIG_MAPPING:
        processor_class = PROCESSOR_MAPPING.get(CONFIG_MAPPING[config.model_type], None)
    needs_videos = processor_class is not None and "video_processor" in processor_class.get_attributes()
    if needs_videos and not is_torchvision_available():
        processor = image_only_processor_class(processor_class).from_pretrained(
            name_or_path, revision=revision, **kwargs
        )
    else:
        processor = AutoProcessor.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code, **kwargs
        )
    set_pixel_budget(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    drop_saved_truncation(processor)
    return processor


def drop_saved_truncation(processor: ProcessorMixin) -> None:
    """Forget a truncation that a saved ``tokenizer.json`` carries from the last call before it was saved.

    TRL's vision collator tokenizes with ``truncation=True, max_length=--max_length``; the fast tokenizer keeps that
    state and ``save_pretrained`` writes it, so every SFT checkpoint carries it. transformers then makes it the
    tokenizer's default ``max_length``, which the processor passes on every call: prompts silently cut at the
    training length (and the length checks of ``data_tools.lengths`` measuring cut prompts) and a warning on every
    padded batch. Truncation stays available to any call that asks for it.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return
    if backend.truncation is not None:
        backend.no_truncation()
        for key in ("max_length", "stride", "truncation_strategy"):
            tokenizer.init_kwargs.pop(key, None)
    if backend.padding is not None:
        backend.no_padding()


@functools.cache
def image_only_processor_class(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_class`` without its video processor: it saves and loads the same files, images and text only."""

    # transformers 5 has no public way to load a processor without one of its sub-processors (`video_processor=None`
    # counts as not given and the video processor, which needs torchvision, is loaded anyway). This subclass depends
    # on `ProcessorMixin` taking its sub-processors from `get_attributes()`: `from_pretrained` loads and `__init__`
    # sets only the attributes listed there, so leaving out "video_processor" skips it.
    def get_attributes(cls) -> list[str]:
        return [name for name in processor_class.get_attributes() if name != "video_processor"]

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ImportError(f"{processor_class.__name__} processes videos only with torchvision installed")
        return processor_class.__call__(self, images=images, text=text, **kwargs)

    # The same name keeps `processor_class` in the saved processor_config.json loadable everywhere.
    return type(
        processor_class.__name__,
        (processor_class,),
        {"get_attributes": classmethod(get_attributes), "__call__": __call__, "__module__": __name__},
    )


def set_pixel_budget(
    processor: ProcessorMixin, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> None:
    """Set the smallest and largest pixel count one image is resized to (budget-resizing processors only)."""
    if min_pixels is None and max_pixels is None:
        return
    image_processor = processor.image_processor
    valid = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {})
    if "max_pixels" not in valid:
        raise ValueError(
            f"min_pixels/max_pixels: {type(image_processor).__name__} resizes images to a fixed size and has no "
            "pixel budget; these flags apply to Qwen2-VL, Qwen2.5-VL and Qwen3-VL processors"
        )
    size = image_processor.size
    new_min = size.shortest_edge if min_pixels is None else min_pixels
    new_max = size.longest_edge if max_pixels is None else max_pixels
    if not 0 < new_min <= new_max:
        raise ValueError(f"min_pixels={new_min} and max_pixels={new_max} must satisfy 0 < min_pixels <= max_pixels")
    image_processor.size = replace(size, shortest_edge=new_min, longest_edge=new_max)


def merge_lora_adapter(
    adapter_path: str | Path,
    output_dir: str | Path,
    *,
    base_model_name_or_path: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """Merge the LoRA adapter saved in ``adapter_path`` into its base model; save model and processor to ``output_dir``.

    The base model is reloaded unquantized (from the adapter's ``base_model_name_or_path`` unless given), so an
    adapter trained with QLoRA merges into full-precision weights. The processor saved beside the adapter is used
    when there is one, else the base model's.
    """
    adapter_path = Path(adapter_path)
    base = base_model_name_or_path or adapter_base(adapter_path)
    if base is None:
        raise FileNotFoundError(f"adapter_path {str(adapter_path)!r} holds no adapter_config.json")
    base_args = ModelConfig(model_name_or_path=base, dtype=dtype)
    merged, processor = _load_adapter(adapter_path, base_args, trust_remote_code=trust_remote_code)
    output_dir = Path(output_dir)
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def _load_adapter(
    adapter_path: Path,
    base_args: ModelConfig,
    *,
    trust_remote_code: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    processor_kwargs: dict | None = None,
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The base model of ``base_args`` (eval mode) with the adapter of ``adapter_path``, merged unless quantized."""
    processor_args = {"trust_remote_code": trust_remote_code, "min_pixels": min_pixels, "max_pixels": max_pixels}
    model, processor = load_model_and_processor(
        base_args, device_map=device_map, processor_kwargs=processor_kwargs, **processor_args
    )
    model = PeftModel.from_pretrained(model, adapter_path)
    if not (base_args.load_in_4bit or base_args.load_in_8bit):
        model = model.merge_and_unload()
    model.eval()
    if (adapter_path / "processor_config.json").is_file():
        processor = load_processor(str(adapter_path), config=model.config, **processor_args, **(processor_kwargs or {}))
    return model, processor


def _checked_name_or_path(name_or_path: str | None) -> str:
    if not name_or_path:
        raise ValueError("--model_name_or_path is required: a Hub model id or a local model directory")
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not path.exists():
        raise FileNotFoundError(f"--model_name_or_path {name_or_path!r}: no such directory")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model_name_or_path {name_or_path!r}: the directory holds no config.json")
        return str(path)
    return name_or_path


def _load_config(name_or_path: str, revision: str, trust_remote_code: bool) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise OSError(
            f"--model_name_or_path {name_or_path!r} is neither a local model directory nor a reachable Hub model: {err}"
        ) from err


def _torch_dtype(dtype: str | None) -> torch.dtype | str | None:
    if dtype is None or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def model_input_size(processor: ProcessorMixin, image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``image`` as ``processor`` resizes it for the model (Qwen-VL's resize to a
    multiple of the patch within min/max pixels, LLaVA's crop): the frame Qwen2.5-VL states boxes in."""
    out = processor.image_processor(images=[image], return_tensors="np")
    grid = out.get("image_grid_thw")
    if grid is not None:
        _, height, width = (int(v) for v in grid[0])
        patch = processor.image_processor.patch_size
        return width * patch, height * patch
    pixels = out["pixel_values"]
    return int(pixels.shape[-1]), int(pixels.shape[-2])
