"""Answer a question about an image (or several) and write where the answer came from: overlays, arrays, a summary.

The logic behind ``launch/trace.py``; every field of :class:`TraceArguments` is a command-line flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from trl import ModelConfig

from data_tools import PromptArguments, check_choices
from data_tools.images import open_displayed

from .baselines import BASELINES, RISE, IntegratedGradients
from .heatmap import overlay, side_by_side
from .map_arguments import MapKind, SaliencyMapArguments
from .output import SaliencyMaps
from .spans import SpecialTokens


@dataclass(kw_only=True)
class TraceArguments(SaliencyMapArguments, PromptArguments):
    """What to explain and where to write it (the model itself is chosen with TRL's ``ModelConfig`` flags).

    `--saliency_row` and `--saliency_layers` (`SaliencyMapArguments`) choose how the tracer builds its maps,
    `--system_prompt` (`data_tools.PromptArguments`) the prompt's system turn, as in training and evaluation.
    """

    image: str | None = field(default=None, metadata={"help": "Path of the image to ask about (or --images)."})
    images: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Paths of several images to ask about together, in prompt order (a clip: its frames); maps "
            "per image, drawn on one colour scale."
        },
    )
    question: str = field(metadata={"help": "The question about the image."})
    output_dir: str = field(metadata={"help": "Folder for the overlays (PNG), the maps (.npy) and trace.json."})
    map: MapKind = field(
        default="flow",
        metadata={"help": "The tracer's map: 'flow' (image -> reasoning -> answer) or 'direct' (image -> answer)."},
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer to generate."})
    completion: str | None = field(
        default=None,
        metadata={"help": "Explain this completion ('<think>...</think>answer') instead of generating one."},
    )
    baselines: list[str] = field(
        default_factory=list,
        metadata={"help": f"Baseline maps to add, any of: {', '.join(BASELINES)}."},
    )
    ig_steps: int = field(default=32, metadata={"help": "Integrated Gradients: points on the path."})
    rise_masks: int = field(default=500, metadata={"help": "RISE: number of random masks."})
    boxes: list[str] = field(
        default_factory=list,
        metadata={"help": "Evidence boxes to draw, each '[x1, y1, x2, y2]' normalised to [0, 1]."},
    )
    box_images: list[int] = field(
        default_factory=list,
        metadata={"help": "With --images: for each of --boxes, the index (from 0) of the image it lies on."},
    )

    def __post_init__(self):
        check_choices(self)
        self.check_map_flags()
        unknown = [name for name in self.baselines if name not in BASELINES]
        if unknown:
            raise ValueError(f"--baselines: unknown {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        if (self.image is None) == (not self.images):
            raise ValueError("give the image to ask about as --image, or several as --images (not both)")
        if self.images and self.boxes and len(self.box_images) != len(self.boxes):
            raise ValueError(
                f"--box_images: with --images, give the image of each of the {len(self.boxes)} --boxes "
                f"({len(self.box_images)} given)"
            )
        if self.box_images and not self.images:
            raise ValueError("--box_images places boxes on the images of --images; with --image, leave it out")
        bad = [i for i in self.box_images if not 0 <= i < len(self.images)]
        if bad:
            raise ValueError(
                f"--box_images {bad}: the {len(self.images)} --images are numbered 0..{len(self.images) - 1}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")


def trace_image(args: TraceArguments, model_args: ModelConfig) -> dict:
    """Answer ``args.question`` about ``args.image`` with the model, write its maps to ``args.output_dir``.

    Returns the summary also written to ``trace.json``: the completion, its thinking and answer text and spans,
    and per map kind the files written (nothing when the completion has no valid format; ``reason`` says why).
    """
    from data_tools import parse_boxes, prompt_messages
    from vlm import load_model_and_processor

    images = [_read_image(path, "--image") for path in [args.image]] if args.image else []
    images += [_read_image(path, "--images") for path in args.images]
    boxes = [parse_boxes(text) for text in args.boxes]
    model, processor = load_model_and_processor(model_args)
    tokenizer = processor.tokenizer
    tokens = SpecialTokens.from_tokenizer(processor)
    messages = prompt_messages(args.question, args.system_prompt)
    user = messages[-1]
    messages[-1] = {**user, "content": [user["content"][0]] * len(images) + user["content"][1:]}
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=images, return_tensors="pt").to(model.device)
    prompt_ids, prompt_mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    sizes = [[(image.height, image.width) for image in images]]

    tracer = args.make_tracer(model, tokens)
    if args.completion is None:
        traced = tracer.generate(
            prompt_ids,
            image_sizes=sizes,
            attention_mask=prompt_mask,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            **inputs,
        )
        maps = {args.map: traced.maps[0]}
    else:
        completion = tokenizer(args.completion, add_special_tokens=False, return_tensors="pt").input_ids
        maps = {
            args.map: tracer.score(prompt_ids, completion.to(model.device), prompt_mask, image_sizes=sizes, **inputs)[0]
        }
    completion_ids = maps[args.map].completion_ids
    for name in args.baselines:
        method = _baseline(name, model, tokens, args)
        maps[name] = method.attribute(
            prompt_ids, completion_ids[None].to(model.device), prompt_mask, image_sizes=sizes, **inputs
        )[0]

    flat_boxes = [box for group in boxes for box in group]
    summary = _summary(args, maps[args.map], tokenizer, flat_boxes)
    if maps[args.map].has_map and args.image:
        heatmaps = {kind: sample.answer_map(kind)[0].upsampled() for kind, sample in maps.items()}
        summary["maps"] = write_maps(heatmaps, images[0], flat_boxes, Path(args.output_dir))
        summary["panels"] = "panels.png"
    elif maps[args.map].has_map:
        heatmaps = {kind: [m.upsampled_mass() for m in sample.answer_map(kind)] for kind, sample in maps.items()}
        per_image = [[] for _ in images]
        for group, index in zip(boxes, args.box_images):
            per_image[index] += group
        summary["box_images"] = [i for group, i in zip(boxes, args.box_images) for _ in group]
        summary["maps"] = write_image_maps(heatmaps, images, per_image, Path(args.output_dir))
        summary["panels"] = "panels.png"
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "trace.json").write_text(json.dumps(summary, indent=2))
    return summary


def _read_image(path: str, flag: str) -> Image.Image:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path!r}: no such file")
    try:
        return open_displayed(path)[0].convert("RGB")  # as displayed: turned by its EXIF orientation
    except UnidentifiedImageError as err:
        raise ValueError(f"{flag} {path!r} is not an image PIL can read") from err


def _baseline(name: str, model, tokens: SpecialTokens, args: TraceArguments):
    if name == IntegratedGradients.kind:
        return IntegratedGradients(model, tokens, steps=args.ig_steps)
    if name == RISE.kind:
        return RISE(model, tokens, num_masks=args.rise_masks)
    return BASELINES[name](model, tokens)


def _summary(args: TraceArguments, maps: SaliencyMaps, tokenizer, boxes: list[list[float]]) -> dict:
    ids = maps.completion_ids.tolist()
    summary = {
        **({"image": args.image} if args.image else {"images": args.images}),
        "question": args.question,
        "completion": tokenizer.decode(ids),
        "has_map": maps.has_map,
        "reason": maps.reason,
        "boxes": boxes,
    }
    if maps.spans is not None:
        thinking, answer = maps.spans.thinking, maps.spans.answer
        summary["thinking"] = tokenizer.decode(ids[max(thinking[0], 0) : thinking[1]])
        summary["answer"] = tokenizer.decode(ids[answer[0] : answer[1]])
        summary["spans"] = {"thinking": list(thinking), "answer": list(answer)}
    return summary


def write_maps(heatmaps: dict[str, np.ndarray], image: Image.Image, boxes, output_dir: Path) -> dict:
    """Per kind: the map at the image size (.npy, float32) and its overlay (.png); then all side by side.

    A map with no positive value points nowhere (the pointing games do not score it): it is marked ``empty`` in the
    summary and its panel says so, rather than showing a flat overlay without comment.
    """
    from rewards import is_empty_map

    output_dir.mkdir(parents=True, exist_ok=True)
    files, panels, titles = {}, [image], ["image"]
    for kind, heatmap in heatmaps.items():
        np.save(output_dir / f"{kind}.npy", heatmap.astype(np.float32))
        picture = overlay(image, heatmap, boxes)
        picture.save(output_dir / f"{kind}.png")
        empty = is_empty_map(heatmap)
        panels.append(picture)
        titles.append(f"{kind} (empty: nothing above 0)" if empty else kind)
        files[kind] = {"npy": f"{kind}.npy", "png": f"{kind}.png", "empty": empty}
    side_by_side(panels, titles).save(output_dir / "panels.png")
    return files


def write_image_maps(
    heatmaps: dict[str, list[np.ndarray]], images: list[Image.Image], boxes: list[list[list[float]]], output_dir: Path
) -> dict:
    """Several images: per kind, each image's map (``<kind>_<i>.npy``, saliency per vision token at the image's size)
    and one strip of the overlays on a shared colour scale (``<kind>.png``, so that the image the answer looked at
    stands out); then the images and every kind's strip side by side (``panels.png``). ``boxes[i]`` are image i's.

    A kind whose maps have no positive value on any image is marked ``empty``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    titles = [f"image {i}" for i in range(len(images))]
    files, panels, names = {}, [side_by_side(images, titles)], ["images"]
    for kind, maps in heatmaps.items():
        peak = max(float(m.max(initial=0.0)) for m in maps)
        npy = []
        for i, heatmap in enumerate(maps):
            np.save(output_dir / f"{kind}_{i}.npy", heatmap.astype(np.float32))
            npy.append(f"{kind}_{i}.npy")
        empty = not peak > 0
        strip = side_by_side([overlay(im, m, b, peak=peak or None) for im, m, b in zip(images, maps, boxes)], titles)
        strip.save(output_dir / f"{kind}.png")
        panels.append(strip)
        names.append(f"{kind} (empty: nothing above 0)" if empty else kind)
        files[kind] = {"npy": npy, "png": f"{kind}.png", "empty": empty}
    side_by_side(panels, names).save(output_dir / "panels.png")
    return files
