"""Build, offline, a tiny randomly initialised VLM of a real architecture, saved like a Hub checkpoint.

The directory holds the model (``config.json``, weights, ``generation_config.json``), a byte-level BPE tokenizer
trained here on the synthetic corpus, a chat template and a processor with small pixel limits, so that
``AutoModelForImageTextToText.from_pretrained(path)`` and ``vlm.load_processor(path)`` (or ``AutoProcessor`` where
torchvision is installed) load it as they would a Hub model.

    python -m vlm.build_tiny --family qwen2_5_vl --output_dir outputs/tiny-qwen2_5_vl --seed 0
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessorPil,
    GenerationConfig,
    HfArgumentParser,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLImageProcessorPil,
)
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .chat_templates import LLAVA_CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE
from .loading import image_only_processor_class
from .tiny_configs import FAMILIES, TinyTokenIds, tiny_model_config

THINK_TOKENS = ("<think>", "</think>")


@dataclass(frozen=True)
class _Vocabulary:
    """The special tokens of one family; ``stop`` are the tokens that end generation."""

    special: tuple[str, ...]
    bos: str
    eos: str
    pad: str
    image: str
    stop: tuple[str, ...]
    video: str | None = None
    vision_start: str | None = None
    vision_end: str | None = None


_QWEN_VOCABULARY = _Vocabulary(
    special=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    bos="<|endoftext|>",
    eos="<|im_end|>",
    pad="<|endoftext|>",
    image="<|image_pad|>",
    stop=("<|im_end|>", "<|endoftext|>"),
    video="<|video_pad|>",
    vision_start="<|vision_start|>",
    vision_end="<|vision_end|>",
)
_LLAVA_VOCABULARY = _Vocabulary(
    special=("<s>", "</s>", "<pad>", "<image>"), bos="<s>", eos="</s>", pad="<pad>", image="<image>", stop=("</s>",)
)


def family_tokenizer(
    family: str, texts: Iterable[str], vocab_size: int
) -> tuple[PreTrainedTokenizerFast, TinyTokenIds, list[int]]:
    """A BPE tokenizer trained on ``texts`` with ``family``'s special tokens and chat template (its
    ``chat_template``), the ids a config takes from it and the ids that stop generation."""
    vocabulary = _LLAVA_VOCABULARY if family == "llava" else _QWEN_VOCABULARY
    chat_template = LLAVA_CHAT_TEMPLATE if family == "llava" else QWEN_CHAT_TEMPLATE
    tokenizer = train_tokenizer(texts, vocabulary, vocab_size=vocab_size, chat_template=chat_template)
    token_id = tokenizer.convert_tokens_to_ids
    ids = TinyTokenIds(
        vocab_size=len(tokenizer),
        pad=token_id(vocabulary.pad),
        bos=token_id(vocabulary.bos),
        eos=token_id(vocabulary.eos),
        image=token_id(vocabulary.image),
        video=token_id(vocabulary.video) if vocabulary.video else None,
        vision_start=token_id(vocabulary.vision_start) if vocabulary.vision_start else None,
        vision_end=token_id(vocabulary.vision_end) if vocabulary.vision_end else None,
    )
    return tokenizer, ids, [token_id(t) for t in vocabulary.stop]


def build_tiny_vlm(
    out_dir: str | Path,
    family: str = "qwen2_5_vl",
    seed: int = 0,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1024,
    **size: int,
) -> Path:
    """Build a tiny ``family`` model (one of ``FAMILIES``) with random weights and save it to ``out_dir``.

    Args:
        out_dir: where model, tokenizer and processor are saved.
        family: the architecture.
        seed: seed of the weight initialisation (the global random state is left untouched). The same seed and
            texts give the same files.
        texts: the tokenizer's training text; by default ``data_tools.corpus_texts()``.
        vocab_size: the largest vocabulary the BPE trainer may build (a small corpus gives fewer tokens).
        **size: overrides of ``tiny_model_config``'s dimensions (``hidden_size``, ``num_layers``, ...).

    ``<think>`` and ``</think>`` are single tokens that decoding keeps (not special), so completions decoded with
    ``skip_special_tokens=True`` still carry them. Qwen images are resized to at most 6x6 merged patches
    (168x168 px for 14-px patches, 192x192 for Qwen3-VL's 16-px patches); LLaVA images to 112x112 (8x8 patches).
    """
    if family not in FAMILIES:
        raise ValueError(f"--family {family!r} is not one of {', '.join(FAMILIES)}")
    if texts is None:
        from data_tools import corpus_texts

        texts = corpus_texts()
    tokenizer, ids, stop_ids = family_tokenizer(family, texts, vocab_size)
    config = tiny_model_config(family, ids, **size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=ids.bos, eos_token_id=stop_ids, pad_token_id=ids.pad)

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    _processor(config, tokenizer, tokenizer.chat_template).save_pretrained(out_dir)
    return out_dir


def train_tokenizer(
    texts: Iterable[str], vocabulary: _Vocabulary, *, vocab_size: int, chat_template: str
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with the family's special tokens and the think tags."""
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{row}] is a {type(text).__name__}, expected str")
    if not any(text.strip() for text in texts):
        raise ValueError("texts holds no text: the tokenizer needs some to learn merges from")
    # Special tokens never reach the BPE model, so no merges are spent on their spelling.
    atomic = re.compile("|".join(re.escape(t) for t in (*vocabulary.special, *THINK_TOKENS)))
    pieces = (piece for text in texts for piece in atomic.split(text))

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(vocabulary.special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(pieces, trainer)
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=vocabulary.bos,
        eos_token=vocabulary.eos,
        pad_token=vocabulary.pad,
        chat_template=chat_template,
    )


def _processor(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast, chat_template: str) -> ProcessorMixin:
    vision = config.vision_config
    if config.model_type == "llava":
        image_processor = CLIPImageProcessorPil(
            size={"height": vision.image_size, "width": vision.image_size}, do_center_crop=False
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token
            chat_template=chat_template,
        )
    factor = vision.patch_size * vision.spatial_merge_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
        min_pixels=(2 * factor) ** 2,
        max_pixels=(6 * factor) ** 2,
    )
    # Images only: the toolkit feeds no videos, and video processors need torchvision.
    processor_class = image_only_processor_class(PROCESSOR_MAPPING[type(config)])
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


@dataclass
class BuildTinyArguments:
    """Flags of ``python -m vlm.build_tiny``."""

    output_dir: str = field(metadata={"help": "Directory the model, tokenizer and processor are saved to."})
    family: str = field(default="qwen2_5_vl", metadata={"help": "Architecture.", "choices": list(FAMILIES)})
    seed: int = field(default=0, metadata={"help": "Seed of the random weight initialisation."})
    vocab_size: int = field(default=1024, metadata={"help": "Largest vocabulary the tokenizer trainer may build."})
    initializer_range: str = field(
        default="0.02",
        metadata={
            "help": "Std of the initial weights (0.02, the Hub default), or 'width' for 1/sqrt(width) per tower."
        },
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Decoder width (default 128)."})
    num_layers: int | None = field(default=None, metadata={"help": "Decoder layers (default 4)."})
    num_heads: int | None = field(default=None, metadata={"help": "Decoder query heads (default 4)."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "Decoder key/value heads (default 2)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Decoder MLP width (default 2x hidden)."})
    vision_hidden_size: int | None = field(default=None, metadata={"help": "Vision tower width (default 64)."})
    vision_depth: int | None = field(default=None, metadata={"help": "Vision tower blocks (default 2)."})
    vision_window: int | None = field(
        default=None,
        metadata={"help": "Qwen2.5-VL: side of the vision attention windows in merged image tokens (default 2)."},
    )
    vision_patch_size: int | None = field(
        default=None, metadata={"help": "Qwen3-VL: vision patch side in pixels (default 16; 14 gives 28-px tokens)."}
    )
    vision_full_attention: bool | None = field(
        default=None,
        metadata={"help": "Qwen2.5-VL: the last vision block attends across the whole image (default true)."},
    )


_SIZE_FLAGS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "intermediate_size",
    "vision_hidden_size",
    "vision_depth",
    "vision_window",
    "vision_full_attention",
    "vision_patch_size",
)


def main(argv: list[str] | None = None) -> Path:
    """Parse the flags, build the model and print where it was saved."""
    (args,) = HfArgumentParser(BuildTinyArguments).parse_args_into_dataclasses(args=argv)
    init = args.initializer_range
    try:
        init = float(init)
    except ValueError:
        pass
    sizes = {name: getattr(args, name) for name in _SIZE_FLAGS if getattr(args, name) is not None}
    path = build_tiny_vlm(
        args.output_dir, family=args.family, seed=args.seed, vocab_size=args.vocab_size, initializer_range=init, **sizes
    )
    print(f"tiny {args.family} model saved to {path}")
    return path


if __name__ == "__main__":
    main()
