"""Synthetic grounded-reasoning data: coloured shapes on a plain background, questions that need one object.

Question types (``dataset`` column = ``synthetic_shapes/<type>``). The answer of every row is drawn uniformly
from its answer set, so the chance level (and the majority-class baseline) is one over the set size:

============  =========================================  =====================  ======
type          example                                    answers                chance
============  =========================================  =====================  ======
``color``     What color is the triangle?                6 colours              1/6
``shape``     What shape is the blue object?             4 shapes               1/4
``left_of``   Which shape is left of the blue circle?    4 shapes               1/4
``count``     How many shapes are in the top half?       0, 1, 2, 3             1/4
============  =========================================  =====================  ======

Evidence (``bbox``) is the part of the image the answer is read from:

- ``color`` / ``shape``: the asked object (its shape, resp. colour, is unique in the scene).
- ``left_of``: the answer object only. The reference object tells where to look, but the answer is read from
  the object to its left, and a map that looks only at the reference should not score. The answer object lies
  wholly left of the reference; every other object starts at or right of the reference's left edge and has its
  centre right of the reference's centre, so the answer is unambiguous.
- ``count``: the asked half of the image. Every counted shape lies wholly inside it, every other shape wholly
  inside the other half.

Boxes are pixel-exact. Each shape is drawn without anti-aliasing into its own mask, the mask is pasted in one
flat colour, and the box is the mask's bounding box. Normalised box edges are pixel edges
(``[left / W, top / H, (right + 1) / W, (bottom + 1) / H]``), so a pixel is inside the box exactly when its centre is.

Every row is a pure function of ``(seed, split, index)``, so splits with different names never share a random
stream (the held-out split is disjoint from the training splits), and the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from datasets import Dataset, DatasetDict, Features
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .prompts import CAPTION_PROMPT, SYSTEM_PROMPT, caption_messages, format_assistant, sft_messages
from .schema import (
    BOXED_SFT_FEATURES,
    DECOY_FEATURES,
    EVAL_FEATURES,
    MULTI_RL_FEATURES,
    MULTI_SFT_FEATURES,
    RL_FEATURES,
)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "left_of", "count")
HALVES: tuple[str, ...] = ("top", "bottom", "left", "right")
DECOY_QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "left_of")
DECOY_SIZE = 16
"""Side in pixels of the decoy swatch, drawn in the bottom-right corner (less than one 28-px image token)."""
MAX_COUNT = 3
DATASET_NAME = "synthetic_shapes"

_ROW_WORDS = ("top", "middle", "bottom")
_COL_WORDS = ("left", "centre", "right")


@dataclass(frozen=True)
class SyntheticConfig:
    """How the scenes look. Sizes are in pixels; object sizes are fractions of the shorter image side."""

    width: int = field(default=168, metadata={"help": "Image width in pixels."})
    height: int = field(default=168, metadata={"help": "Image height in pixels."})
    min_objects: int = field(default=3, metadata={"help": "Fewest shapes in a scene (count questions may use fewer)."})
    max_objects: int = field(default=5, metadata={"help": "Most shapes in a scene."})
    min_object_size: float = field(default=0.16, metadata={"help": "Smallest shape side, fraction of the short side."})
    max_object_size: float = field(default=0.24, metadata={"help": "Largest shape side, fraction of the short side."})
    gap: int = field(default=4, metadata={"help": "Minimum free pixels between the squares two shapes are drawn in."})
    background: tuple[int, int, int] = field(default=(255, 255, 255), metadata={"help": "Background RGB colour."})
    shapes: tuple[str, ...] = field(default=SHAPES, metadata={"help": f"Shapes to draw, a subset of {SHAPES}."})
    colors: tuple[str, ...] = field(default=tuple(COLORS), metadata={"help": f"Colours, a subset of {tuple(COLORS)}."})
    question_types: tuple[str, ...] = field(
        default=QUESTION_TYPES, metadata={"help": f"Question types, a subset of {QUESTION_TYPES}, used in turn."}
    )
    decoy: bool = field(
        default=False,
        metadata={
            "help": "Keep the bottom-right corner free for a decoy cue (see decoy_box); rows then carry a "
            f"decoy_answer and decoy_bbox columns. Needs question types from {DECOY_QUESTION_TYPES}."
        },
    )

    def __post_init__(self) -> None:
        for name, chosen, known in (
            ("shapes", self.shapes, SHAPES),
            ("colors", self.colors, tuple(COLORS)),
            ("question_types", self.question_types, QUESTION_TYPES),
        ):
            unknown = set(chosen) - set(known)
            if unknown or not chosen:
                raise ValueError(f"SyntheticConfig.{name}={chosen!r}: choose a non-empty subset of {known}")
        if len(self.shapes) < 2 or len(self.colors) < 2:
            raise ValueError("SyntheticConfig needs at least 2 shapes and 2 colours so that distractors exist")
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError(f"SyntheticConfig: need 2 <= min_objects ({self.min_objects}) <= max_objects")
        if not 0 < self.min_object_size <= self.max_object_size <= 0.3:
            raise ValueError("SyntheticConfig: need 0 < min_object_size <= max_object_size <= 0.3")
        if self.min_size_px < 6:
            raise ValueError(f"SyntheticConfig: shapes of {self.min_size_px} px are too small; enlarge the image")
        if self.background in COLORS.values():
            raise ValueError(f"SyntheticConfig.background {self.background} equals a shape colour")
        if self.decoy and not set(self.question_types) <= set(DECOY_QUESTION_TYPES):
            raise ValueError(
                f"SyntheticConfig.decoy needs question_types within {DECOY_QUESTION_TYPES} (a count question's "
                f"evidence is half the image, so a cue cannot stay outside it), got {self.question_types}"
            )
        if self.decoy and min(self.width, self.height) < 4 * (DECOY_SIZE + self.gap):
            raise ValueError(f"SyntheticConfig.decoy: images of {self.width} x {self.height} px leave no room")

    @property
    def min_size_px(self) -> int:
        return round(self.min_object_size * min(self.width, self.height))

    @property
    def max_size_px(self) -> int:
        return round(self.max_object_size * min(self.width, self.height))


@lru_cache(maxsize=1024)
def shape_mask(shape: str, size: int) -> Image.Image:
    """Return the ``size`` x ``size`` mode-"L" mask (255 = drawn) of ``shape``, drawn without anti-aliasing."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    last, mid = size - 1, (size - 1) // 2
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=255)
    elif shape == "triangle":
        draw.polygon([(mid, 0), (last, last), (0, last)], fill=255)
    elif shape == "diamond":
        draw.polygon([(mid, 0), (last, mid), (mid, last), (0, mid)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return mask


@dataclass(frozen=True)
class ShapeObject:
    """One drawn shape: its kind, colour name and the square cell ``(x, y, size)`` it is drawn in."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    @property
    def box_px(self) -> tuple[int, int, int, int]:
        """Pixel box ``(left, top, right + 1, bottom + 1)`` of the drawn pixels."""
        x0, y0, x1, y1 = shape_mask(self.shape, self.size).getbbox()
        return self.x + x0, self.y + y0, self.x + x1, self.y + y1

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2

    def overlaps(self, x: int, y: int, size: int, gap: int) -> bool:
        """Whether the cell ``(x, y, size)`` comes closer than ``gap`` pixels to this object's cell."""
        return not (
            x >= self.x + self.size + gap
            or self.x >= x + size + gap
            or y >= self.y + self.size + gap
            or self.y >= y + size + gap
        )


@dataclass(frozen=True)
class SyntheticExample:
    """One generated row before it becomes a dataset row."""

    question_id: str
    question_type: str
    image: Image.Image
    objects: tuple[ShapeObject, ...]
    problem: str
    solution: str
    bbox: list[list[float]]
    reasoning: str
    decoy_answer: str = ""

    @property
    def dataset(self) -> str:
        return f"{DATASET_NAME}/{self.question_type}"


# ---------------------------------------------------------------- text templates (shared with corpus_texts)


def location_phrase(cx: float, cy: float, width: int, height: int) -> str:
    """Name the cell of a 3 x 3 grid that the point ``(cx, cy)`` falls in, e.g. ``"top left"``, ``"centre"``."""
    row = _ROW_WORDS[min(int(3 * cy / height), 2)]
    col = _COL_WORDS[min(int(3 * cx / width), 2)]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def color_texts(shape: str, color: str, where: str) -> tuple[str, str, str]:
    """(problem, reasoning, answer) of a ``color`` question about the only ``shape``."""
    return f"What color is the {shape}?", f"The {shape} is at the {where}. It is {color}.", color


def shape_texts(shape: str, color: str, where: str) -> tuple[str, str, str]:
    """(problem, reasoning, answer) of a ``shape`` question about the only ``color`` object."""
    return f"What shape is the {color} object?", f"The {color} object is at the {where}. It is a {shape}.", shape


def left_of_texts(ref: tuple[str, str, str], answer: tuple[str, str, str]) -> tuple[str, str, str]:
    """(problem, reasoning, answer) of a ``left_of`` question; ``ref``/``answer`` are (shape, color, where)."""
    (r_shape, r_color, r_where), (a_shape, a_color, a_where) = ref, answer
    reasoning = (
        f"The {r_color} {r_shape} is at the {r_where}. The only shape left of it is at the {a_where}. "
        f"It is {_article(a_color)} {a_color} {a_shape}."
    )
    return f"Which shape is left of the {r_color} {r_shape}?", reasoning, a_shape


def count_texts(half: str, counted: Sequence[tuple[str, str]]) -> tuple[str, str, str]:
    """(problem, reasoning, answer) of a ``count`` question; ``counted`` lists (shape, color) in reading order."""
    names = [f"{_article(color)} {color} {shape}" for shape, color in counted]
    if not names:
        listed = "no shapes"
    elif len(names) == 1:
        listed = names[0]
    else:
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    reasoning = f"The {half} half has {listed}, so the count is {len(names)}."
    return f"How many shapes are in the {half} half?", reasoning, str(len(names))


def caption_text(objects: Sequence[ShapeObject], config: SyntheticConfig) -> str:
    """Describe every shape of a scene in reading order (grid row, then left to right), with its colour and place:
    ``"There are 3 shapes: a red circle at the top left, a blue square at the centre and ..."``."""
    ordered = sorted(objects, key=lambda o: (min(int(3 * o.centre[1] / config.height), 2), o.centre[0]))
    names = [f"{_article(o.color)} {o.color} {o.shape} at the {_where(o, config)}" for o in ordered]
    head = "There is 1 shape: " if len(names) == 1 else f"There are {len(names)} shapes: "
    return head + ", ".join(names) + "."


PERCEPTION_TASKS: tuple[str, ...] = ("caption", "point", "read", "answer")
# The second pre-training stage of the tiny base: pointing and reading on full scenes, one group of rows in four
# still drawn as the perception split so that captions and the scenes' own questions are kept.
GROUNDING_TASKS: tuple[str, ...] = ("perception", "point", "read", "point")
# The third stage (attention grounding): pointing, reading and the scenes' own questions on full scenes, a third each,
# so that the answers whose attention is trained onto the evidence include the questions the cold start asks.
ATTENTION_TASKS: tuple[str, ...] = ("point", "read", "answer")


def point_texts(shape: str, color: str, where: str) -> tuple[str, str]:
    """(question, answer) of a pointing task: where the only ``color`` ``shape`` of the scene is."""
    return f"Where is the {color} {shape}?", where


def read_texts(shape: str, color: str, where: str) -> tuple[str, str]:
    """(question, answer) of a reading task: which shape lies at ``where`` (the only one there)."""
    return f"What is at the {where}?", f"{_article(color)} {color} {shape}"


def perception_texts(
    example: SyntheticExample, task: str, config: SyntheticConfig
) -> tuple[str, str, list[list[float]]]:
    """(question, short answer, evidence boxes) of one perception pre-training row about ``example``'s scene.

    ``caption`` names every shape (:func:`caption_text`; evidence: every shape); ``point`` asks where a shape is (the
    3 x 3 grid cell of its centre, the words the reasoning uses); ``read`` asks which shape lies in a grid cell
    (evidence: that shape); ``answer`` is the scene's own question with its short answer and evidence boxes.
    ``point`` and ``read`` pick, from a random stream of the row, an object unique by colour and shape, resp. a cell
    that holds exactly one object's centre; a scene without one is captioned instead. Boxes are normalised xyxy.
    """
    rng = random.Random(f"{example.question_id}/{task}")
    objects = list(example.objects)
    if task == "answer":
        return example.problem, example.solution, example.bbox
    if task == "point":
        kinds = [(o.shape, o.color) for o in objects]
        unique = [o for o in objects if kinds.count((o.shape, o.color)) == 1]
        if unique:
            obj = rng.choice(unique)
            return *point_texts(obj.shape, obj.color, _where(obj, config)), [_to_norm(obj.box_px, config)]
    elif task == "read":
        cells = [_where(o, config) for o in objects]
        alone = [o for o, cell in zip(objects, cells) if cells.count(cell) == 1]
        if alone:
            obj = rng.choice(alone)
            return *read_texts(obj.shape, obj.color, _where(obj, config)), [_to_norm(obj.box_px, config)]
    elif task != "caption":
        raise ValueError(f"unknown perception task {task!r}; known: {PERCEPTION_TASKS}")
    return CAPTION_PROMPT, caption_text(objects, config), [_to_norm(o.box_px, config) for o in objects]


def short_answer_task(index: int, kind: str) -> tuple[str, bool]:
    """(task, asked on a :func:`sub_scene`) of row ``index`` of a ``perception``, ``grounding`` or ``attention`` split.

    Tasks change every ``len(QUESTION_TYPES)`` rows, so each task meets every question type's scenes. ``perception``
    cycles :data:`PERCEPTION_TASKS`, captions, pointing and reading on sub-scenes; ``grounding`` cycles
    :data:`GROUNDING_TASKS`, pointing and reading on full scenes (3 to 5 shapes, like the scenes' questions), its
    ``perception`` groups cycling :data:`PERCEPTION_TASKS` in turn; ``attention`` cycles :data:`ATTENTION_TASKS` on
    full scenes.
    """
    group = index // len(QUESTION_TYPES)
    if kind == "attention":
        return ATTENTION_TASKS[group % len(ATTENTION_TASKS)], False
    if kind == "grounding":
        task = GROUNDING_TASKS[group % len(GROUNDING_TASKS)]
        if task != "perception":
            return task, False
        group //= len(GROUNDING_TASKS)
    elif kind != "perception":
        raise ValueError(f"kind must be 'perception', 'grounding' or 'attention', got {kind!r}")
    task = PERCEPTION_TASKS[group % len(PERCEPTION_TASKS)]
    return task, task != "answer"


def sub_scene(example: SyntheticExample, config: SyntheticConfig) -> SyntheticExample:
    """``example`` with a random subset of 1 to all of its shapes (size uniform, from a random stream of the row),
    re-rendered; its question, answer and boxes no longer apply. Scenes of one or two shapes let a model learn what
    a shape looks like before it has to tell several apart."""
    rng = random.Random(f"{example.question_id}/sub_scene")
    objects = tuple(rng.sample(example.objects, rng.randint(1, len(example.objects))))
    return dataclasses.replace(example, objects=objects, image=render(objects, config))


def corpus_texts(config: SyntheticConfig | None = None) -> Iterator[str]:
    """Yield every kind of text the synthetic data contains, to train the tiny tokenizer on.

    The system prompt, every question, every answer and every reasoning template with each slot (shape,
    colour, location, half, count) taking each of its values at least once, also as full assistant turns; the
    caption prompt and captions of every length.
    """
    config = config or SyntheticConfig()
    yield SYSTEM_PROMPT
    yield CAPTION_PROMPT
    cell = config.max_size_px
    for n in range(1, config.max_objects + 1):
        yield caption_text(
            [ShapeObject(config.shapes[i % len(config.shapes)], config.colors[i % len(config.colors)],
                         (i * cell) % (config.width - cell), 0, cell) for i in range(n)],
            config,
        )  # fmt: skip
    wheres = [f"{r} {c}" if (r, c) != ("middle", "centre") else "centre" for r in _ROW_WORDS for c in _COL_WORDS]
    pairs = [(s, c) for s in config.shapes for c in config.colors]
    for (shape, color), where in ((p, w) for p in pairs for w in wheres):
        yield from point_texts(shape, color, where)
        yield from read_texts(shape, color, where)
    texts: list[tuple[str, str, str]] = []
    for i, ((shape, color), where) in enumerate((p, w) for p in pairs for w in wheres):
        other_shape, other_color = pairs[(i * 7 + 3) % len(pairs)]
        texts.append(color_texts(shape, color, where))
        texts.append(shape_texts(shape, color, where))
        texts.append(left_of_texts((shape, color, where), (other_shape, other_color, wheres[(i + 4) % len(wheres)])))
    for h, half in enumerate(HALVES):
        for k in range(MAX_COUNT + 1):
            texts.append(count_texts(half, [pairs[(h * 5 + k * 3 + j) % len(pairs)] for j in range(k)]))
    for problem, reasoning, answer in texts:
        yield problem
        yield format_assistant(reasoning, answer)


# ---------------------------------------------------------------- scenes


class _Crowded(Exception):
    """A scene could not be placed; the caller draws a new one from the same random stream."""


def _place(
    rng: random.Random,
    config: SyntheticConfig,
    placed: list[ShapeObject],
    shape: str,
    color: str,
    region: tuple[int, int, int, int] | None = None,
    accept: Callable[[ShapeObject], bool] | None = None,
) -> ShapeObject:
    """Place one shape in ``region`` (pixel x0, y0, x1, y1; cell fully inside), clear of ``placed``."""
    x0, y0, x1, y1 = region or (0, 0, config.width, config.height)
    for _ in range(60):
        size = rng.randint(config.min_size_px, config.max_size_px)
        if x1 - x0 < size or y1 - y0 < size:
            continue
        x, y = rng.randint(x0, x1 - size), rng.randint(y0, y1 - size)
        obj = ShapeObject(shape, color, x, y, size)
        if any(o.overlaps(x, y, size, config.gap) for o in placed) or (accept and not accept(obj)):
            continue
        if config.decoy and _decoy_cell(config).overlaps(x, y, size, config.gap):
            continue
        placed.append(obj)
        return obj
    raise _Crowded


def decoy_box(config: SyntheticConfig) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right + 1, bottom + 1)`` of the decoy swatch: the bottom-right corner, ``gap`` px in.
    With ``config.decoy`` no shape comes closer to it than ``gap`` pixels, so it never touches an evidence box."""
    right, bottom = config.width - config.gap, config.height - config.gap
    return right - DECOY_SIZE, bottom - DECOY_SIZE, right, bottom


def _decoy_cell(config: SyntheticConfig) -> ShapeObject:
    x, y, _, _ = decoy_box(config)
    return ShapeObject("square", "grey", x, y, DECOY_SIZE)


def answer_set(question_type: str, config: SyntheticConfig) -> tuple[str, ...]:
    """Every answer a question type can have (the answers are drawn uniformly from it)."""
    if question_type == "color":
        return config.colors
    if question_type in ("shape", "left_of"):
        return config.shapes
    return tuple(str(n) for n in range(MAX_COUNT + 1))


def decoy_grey(answer: str, question_type: str, config: SyntheticConfig) -> tuple[int, int, int]:
    """The swatch colour that says ``answer``: a grey level, evenly spaced from 40 to 200 over the type's answers
    (no shape is grey, and the background is white, so the cue is one flat patch that names the answer)."""
    answers = answer_set(question_type, config)
    level = round(40 + 160 * answers.index(answer) / (len(answers) - 1))
    return level, level, level


def _where(obj: ShapeObject, config: SyntheticConfig) -> str:
    return location_phrase(*obj.centre, config.width, config.height)


def _to_norm(box: Sequence[float], config: SyntheticConfig) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 / config.width, y0 / config.height, x1 / config.width, y1 / config.height]


def _scene_color_or_shape(rng: random.Random, config: SyntheticConfig, qtype: str):
    shape, color = rng.choice(config.shapes), rng.choice(config.colors)
    placed: list[ShapeObject] = []
    target = _place(rng, config, placed, shape, color)
    for _ in range(rng.randint(config.min_objects, config.max_objects) - 1):
        if qtype == "color":  # the asked shape is unique
            _place(rng, config, placed, rng.choice([s for s in config.shapes if s != shape]), rng.choice(config.colors))
        else:  # the asked colour is unique
            _place(rng, config, placed, rng.choice(config.shapes), rng.choice([c for c in config.colors if c != color]))
    texts = (color_texts if qtype == "color" else shape_texts)(shape, color, _where(target, config))
    return placed, texts, [_to_norm(target.box_px, config)]


def _scene_left_of(rng: random.Random, config: SyntheticConfig):
    answer_shape = rng.choice(config.shapes)
    ref_shape, ref_color = rng.choice(config.shapes), rng.choice(config.colors)
    placed: list[ShapeObject] = []
    room = config.max_size_px + config.gap
    ref = _place(rng, config, placed, ref_shape, ref_color, region=(room, 0, config.width, config.height))
    answer = _place(
        rng,
        config,
        placed,
        answer_shape,
        rng.choice(config.colors),
        region=(0, 0, ref.x - config.gap, config.height),
        accept=lambda o: (o.shape, o.color) != (ref_shape, ref_color),
    )
    for _ in range(rng.randint(config.min_objects, config.max_objects) - 2):
        _place(
            rng,
            config,
            placed,
            rng.choice(config.shapes),
            rng.choice(config.colors),
            region=(ref.x, 0, config.width, config.height),
            accept=lambda o: o.centre[0] > ref.centre[0] and (o.shape, o.color) != (ref_shape, ref_color),
        )
    texts = left_of_texts(
        (ref_shape, ref_color, _where(ref, config)), (answer.shape, answer.color, _where(answer, config))
    )
    return placed, texts, [_to_norm(answer.box_px, config)]


def _half_regions(half: str, config: SyntheticConfig):
    """Pixel regions of ``half`` and of the other half, and ``half`` as a normalised box."""
    w, h = config.width, config.height
    top, bottom = (0, 0, w, h // 2), (0, (h + 1) // 2, w, h)
    left, right = (0, 0, w // 2, h), ((w + 1) // 2, 0, w, h)
    return {
        "top": (top, bottom, [0.0, 0.0, 1.0, 0.5]),
        "bottom": (bottom, top, [0.0, 0.5, 1.0, 1.0]),
        "left": (left, right, [0.0, 0.0, 0.5, 1.0]),
        "right": (right, left, [0.5, 0.0, 1.0, 1.0]),
    }[half]


def _scene_count(rng: random.Random, config: SyntheticConfig):
    half, count = rng.choice(HALVES), rng.randint(0, MAX_COUNT)
    inside, outside, region_box = _half_regions(half, config)
    most = max(1, min(MAX_COUNT, config.max_objects - count))
    n_other = rng.randint(min(most, max(1, config.min_objects - count)), most)
    placed: list[ShapeObject] = []
    counted = [
        _place(rng, config, placed, rng.choice(config.shapes), rng.choice(config.colors), inside) for _ in range(count)
    ]
    for _ in range(n_other):
        _place(rng, config, placed, rng.choice(config.shapes), rng.choice(config.colors), outside)
    counted.sort(key=lambda o: (o.x, o.y))
    texts = count_texts(half, [(o.shape, o.color) for o in counted])
    return placed, texts, [region_box]


def render(objects: Sequence[ShapeObject], config: SyntheticConfig) -> Image.Image:
    """Draw ``objects`` on the background: each pixel of a shape's mask in the shape's flat colour."""
    image = Image.new("RGB", (config.width, config.height), config.background)
    for obj in objects:
        image.paste(COLORS[obj.color], (obj.x, obj.y), shape_mask(obj.shape, obj.size))
    return image


def make_example(
    seed: int, split: str, index: int, config: SyntheticConfig | None = None, cue: str | None = None
) -> SyntheticExample:
    """Generate row ``index`` of ``split``; a pure function of its arguments.

    ``cue`` (needs ``config.decoy``) draws the decoy swatch (:func:`decoy_box`, :func:`decoy_grey`): ``"agree"``
    says the row's answer, ``"conflict"`` a wrong answer drawn from the row's own random stream. The scene is the
    same with and without a cue.
    """
    config = config or SyntheticConfig()
    if cue not in (None, "agree", "conflict"):
        raise ValueError(f"cue must be None, 'agree' or 'conflict', got {cue!r}")
    if cue and not config.decoy:
        raise ValueError("a decoy cue needs SyntheticConfig(decoy=True), which keeps its corner free of shapes")
    rng = random.Random(f"{DATASET_NAME}/{seed}/{split}/{index}")
    qtype = config.question_types[index % len(config.question_types)]
    for _ in range(200):
        try:
            if qtype in ("color", "shape"):
                objects, (problem, reasoning, answer), boxes = _scene_color_or_shape(rng, config, qtype)
            elif qtype == "left_of":
                objects, (problem, reasoning, answer), boxes = _scene_left_of(rng, config)
            else:
                objects, (problem, reasoning, answer), boxes = _scene_count(rng, config)
            break
        except _Crowded:
            continue
    else:
        raise RuntimeError(f"could not place a {qtype!r} scene in {config}; use larger images or fewer objects")
    question_id = f"{DATASET_NAME}-{split}-{seed}-{index:06d}"
    image = render(objects, config)
    decoy_answer = ""
    if cue:
        wrong = [a for a in answer_set(qtype, config) if a != answer]
        decoy_answer = answer if cue == "agree" else random.Random(f"{question_id}/decoy").choice(wrong)
        x0, y0, x1, y1 = decoy_box(config)
        ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), fill=decoy_grey(decoy_answer, qtype, config))
    return SyntheticExample(
        question_id=question_id,
        question_type=qtype,
        image=image,
        objects=tuple(objects),
        problem=problem,
        solution=answer,
        bbox=boxes,
        reasoning=reasoning,
        decoy_answer=decoy_answer,
    )


CLIP_FRAMES = 4
"""Frames of a synthetic clip: two temporal steps of Qwen-VL's video processor (temporal_patch_size 2)."""


def _scene_without(rng: random.Random, config: SyntheticConfig, shape: str, color: str) -> list[ShapeObject]:
    """A scene of min..max objects none of which is a ``color`` ``shape``."""
    placed: list[ShapeObject] = []
    for _ in range(rng.randint(config.min_objects, config.max_objects)):
        other_shape = rng.choice(config.shapes)
        colors = [c for c in config.colors if c != color] if other_shape == shape else list(config.colors)
        _place(rng, config, placed, other_shape, rng.choice(colors))
    return placed


def make_multi_image_example(
    seed: int, index: int, config: SyntheticConfig | None = None, stream: str = "multi"
) -> dict:
    """Row ``index`` of the ``multi`` split: 2 or 3 images, exactly one holding the asked shape ("In which image is
    the red circle?"); the answer is its 1-based number, the evidence its box on that image (``bbox_image``).
    ``stream`` names the row's random stream (``multi_sft`` draws other scenes than ``multi``)."""
    config = config or SyntheticConfig()
    rng = random.Random(f"{DATASET_NAME}/{seed}/{stream}/{index}")
    count = 2 + index % 2
    shape, color = config.shapes[0], config.colors[0]
    for _ in range(200):
        try:
            target = rng.randrange(count)
            scenes = [_scene_without(rng, config, shape, color) for _ in range(count)]
            obj = _place(rng, config, scenes[target], shape, color)
            break
        except _Crowded:
            continue
    else:
        raise RuntimeError(f"could not place a multi-image scene in {config}")
    number = str(target + 1)
    return {
        "dataset": f"{DATASET_NAME}/multi_image",
        "question_id": f"{DATASET_NAME}-multi-{seed}-{index:06d}",
        "images": [_png(render(scene, config)) for scene in scenes],
        "problem": f"In which image is the {color} {shape}? Answer with the image's number (1 to {count}).",
        "solution": number,
        "reasoning": f"The {color} {shape} is in image {number}, at the {_where(obj, config)}.",
        "bbox": [_to_norm(obj.box_px, config)],
        "bbox_image": [target],
        "bbox_frame": None,
    }


def make_clip_example(seed: int, index: int, config: SyntheticConfig | None = None, stream: str = "clip") -> dict:
    """Row ``index`` of the ``clip`` split: :data:`CLIP_FRAMES` frames in which one shape moves in a straight line
    and the others stay ("What colour is the shape that moves?"); its box on every frame (``bbox_frame``).
    ``stream`` names the row's random stream (``clip_sft`` draws other clips than ``clip``)."""
    config = config or SyntheticConfig()
    rng = random.Random(f"{DATASET_NAME}/{seed}/{stream}/{index}")
    for _ in range(200):
        placed: list[ShapeObject] = []
        try:
            color = rng.choice(config.colors)
            others = [c for c in config.colors if c != color]
            for _ in range(rng.randint(config.min_objects, config.max_objects) - 1):
                _place(rng, config, placed, rng.choice(config.shapes), rng.choice(others))
        except _Crowded:
            continue
        shape, size = rng.choice(config.shapes), rng.randint(config.min_size_px, config.max_size_px)
        step = max(2, size // 2)
        dx, dy = rng.choice([(step, 0), (-step, 0), (0, step), (0, -step)])
        span_x, span_y = abs(dx) * (CLIP_FRAMES - 1), abs(dy) * (CLIP_FRAMES - 1)
        if config.width - size - span_x < 0 or config.height - size - span_y < 0:
            continue
        x = rng.randint(0, config.width - size - span_x) + (span_x if dx < 0 else 0)
        y = rng.randint(0, config.height - size - span_y) + (span_y if dy < 0 else 0)
        path = [ShapeObject(shape, color, x + f * dx, y + f * dy, size) for f in range(CLIP_FRAMES)]
        if not any(o.overlaps(m.x, m.y, size, config.gap) for o in placed for m in path):
            break
    else:
        raise RuntimeError(f"could not place a clip in {config}")
    return {
        "dataset": f"{DATASET_NAME}/clip",
        "question_id": f"{DATASET_NAME}-clip-{seed}-{index:06d}",
        "images": [_png(render([*placed, mover], config)) for mover in path],
        "problem": "The images are the frames of a short clip, in order. What colour is the shape that moves?",
        "solution": color,
        "reasoning": f"The {shape} that moves goes from the {_where(path[0], config)} to the "
        f"{_where(path[-1], config)}. It is {color}.",
        "bbox": [_to_norm(mover.box_px, config) for mover in path],
        "bbox_image": None,
        "bbox_frame": list(range(CLIP_FRAMES)),
    }


MULTI_SPLITS: tuple[str, ...] = ("multi", "clip", "multi_sft", "clip_sft")
"""Splits of several images per row: ``multi``/``clip`` laid out for GRPO and evaluation, ``multi_sft``/``clip_sft``
(other scenes) for the SFT cold start."""


def generate_multi_split(split: str, num_rows: int, seed: int = 0, config: SyntheticConfig | None = None) -> Dataset:
    """``num_rows`` rows of a split of :data:`MULTI_SPLITS`: ``multi`` (several images) or ``clip`` (frames of a
    moving shape) laid out as :data:`~data_tools.schema.MULTI_RL_FEATURES`; ``multi_sft`` / ``clip_sft`` as
    :data:`~data_tools.schema.MULTI_SFT_FEATURES`, the assistant reasoning about the image (or frames, given as
    images) the evidence lies on, every box tied to its image by ``bbox_image``. Their own random streams leave
    every other split unchanged."""
    kind = split.removesuffix("_sft")
    make = {"multi": make_multi_image_example, "clip": make_clip_example}[kind]
    rows = [make(seed, index, config, stream=split) for index in range(num_rows)]
    if split == kind:
        columns = {name: [row[name] for row in rows] for name in MULTI_RL_FEATURES}
        return Dataset.from_dict(columns, features=MULTI_RL_FEATURES)
    sft_rows = [
        {
            "messages": sft_messages(row["problem"], row["reasoning"], row["solution"], images=len(row["images"])),
            "images": row["images"],
            "bbox": row["bbox"],
            "bbox_image": row["bbox_image"] if kind == "multi" else row["bbox_frame"],
            "dataset": row["dataset"],
            "question_id": row["question_id"].replace(f"-{kind}-", f"-{split}-"),
        }
        for row in rows
    ]
    return Dataset.from_list(sft_rows, features=MULTI_SFT_FEATURES)


def _png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # flat-colour images: fast level, still ~1.5 kB each
    return {"bytes": buffer.getvalue(), "path": None}


def generate_split(
    split: str,
    num_rows: int,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    kind: str | None = None,
    cue: str | None = None,
    cue_fraction: float = 1.0,
    conflict_fraction: float = 0.0,
) -> Dataset:
    """Generate ``num_rows`` rows of ``split`` laid out as ``kind`` (``"sft"``, ``"rl"``, ``"eval"``, ``"caption"``;
    default: split).

    ``sft``: ``messages`` (system / user [image, question] / assistant ``<think>reasoning</think>answer``),
    ``images``, ``bbox`` (the evidence boxes; every SFT-layout kind carries the boxes of what its answer is about,
    :data:`~data_tools.schema.BOXED_SFT_FEATURES`), ``dataset``, ``question_id``. ``rl``: ``image, problem, solution, bbox, dataset, question_id``.
    ``eval``: the ``rl`` columns plus ``reasoning``. ``caption``: the ``sft`` columns, the user asking to describe
    the image and the assistant naming every shape (:func:`caption_text`; boxes: every shape); ``dataset`` is
    ``synthetic_shapes/caption``. ``perception``: the ``sft`` columns, one short-answer task per row without
    reasoning or system prompt, the tasks of :data:`PERCEPTION_TASKS` in turn (:func:`perception_texts`), captions,
    pointing and reading on a random part of the scene (:func:`sub_scene`); ``dataset``
    is ``synthetic_shapes/perception/<task>``. ``grounding``: as ``perception`` with pointing and reading mostly on
    full scenes (:func:`short_answer_task`), ``dataset`` ``synthetic_shapes/grounding/<task>``. ``attention``: pointing,
    reading and the scenes' own questions as short answers on full scenes, a third each. Captions, perception,
    grounding and attention rows are the pre-training of the tiny base model (``vlm/tiny_base/``), which stands in for a
    pretrained VLM.

    With ``config.decoy`` every row has the :data:`~data_tools.schema.DECOY_FEATURES` columns: what the decoy swatch
    says and its normalised box (``""`` and ``[]`` without one).
    ``cue="agree"`` draws a swatch that says the answer on a fraction ``cue_fraction`` of the rows and one that says a
    wrong answer on a further ``conflict_fraction`` (chosen from each row's random stream); ``cue="conflict"`` one
    that says a wrong answer on every row (:func:`make_example`).
    """
    kind = kind or split
    if not (0.0 <= cue_fraction <= 1.0 and 0.0 <= conflict_fraction <= 1.0 - cue_fraction):
        raise ValueError(
            f"cue_fraction ({cue_fraction}) and conflict_fraction ({conflict_fraction}) must lie in [0, 1] and sum "
            "to at most 1"
        )
    kinds = ("sft", "rl", "eval", "caption", "perception", "grounding", "attention")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}, got {kind!r}")
    columns: dict[str, list] = {}
    for index in tqdm(range(num_rows), desc=f"synthetic {split}", disable=num_rows < 500):
        draw = random.Random(f"{DATASET_NAME}/{seed}/{split}/{index}/cue").random()
        row_cue = cue
        if cue == "agree" and draw >= cue_fraction:
            row_cue = "conflict" if draw < cue_fraction + conflict_fraction else None
        ex = make_example(seed, split, index, config, row_cue)
        if kind == "sft":
            messages = sft_messages(ex.problem, ex.reasoning, ex.solution)
            row = {"messages": messages, "images": [_png(ex.image)], "bbox": ex.bbox}
        elif kind == "caption":
            messages = caption_messages(caption_text(ex.objects, config or SyntheticConfig()))
            boxes = [_to_norm(o.box_px, config or SyntheticConfig()) for o in ex.objects]
            row = {
                "messages": messages,
                "images": [_png(ex.image)],
                "bbox": boxes,
                "dataset": f"{DATASET_NAME}/caption",
            }
        elif kind in ("perception", "grounding", "attention"):
            task, on_sub_scene = short_answer_task(index, kind)
            if on_sub_scene:
                ex = sub_scene(ex, config or SyntheticConfig())
            question, answer, boxes = perception_texts(ex, task, config or SyntheticConfig())
            if question == CAPTION_PROMPT:  # no object or cell to ask about: the row is labelled as what it is
                task = "caption"
            messages = [
                {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
            row = {
                "messages": messages,
                "images": [_png(ex.image)],
                "bbox": boxes,
                "dataset": f"{DATASET_NAME}/{kind}/{task}",
            }
        else:
            row = {"image": _png(ex.image), "problem": ex.problem, "solution": ex.solution, "bbox": ex.bbox}
            if kind == "eval":
                row["reasoning"] = ex.reasoning
        row = {"dataset": ex.dataset, "question_id": ex.question_id} | row
        if config is not None and config.decoy:
            row["decoy_answer"] = ex.decoy_answer
            row["decoy_bbox"] = [_to_norm(decoy_box(config), config)] if ex.decoy_answer else []
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    features = {"rl": RL_FEATURES, "eval": EVAL_FEATURES}.get(kind, BOXED_SFT_FEATURES)
    if config is not None and config.decoy:
        features = Features({**features, **DECOY_FEATURES})
    if not columns:
        columns = {name: [] for name in features}
    return Dataset.from_dict(columns, features=features)


def generate_synthetic(
    num_sft: int = 2000,
    num_rl: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    num_caption: int = 0,
    num_perception: int = 0,
    num_grounding: int = 0,
    decoy_fraction: float = 1.0,
    decoy_conflict_fraction: float = 0.0,
    num_attention: int = 0,
    num_attention_count: int = 0,
    num_multi_image: int = 0,
    num_clip: int = 0,
    num_multi_image_sft: int = 0,
    num_clip_sft: int = 0,
) -> DatasetDict:
    """Generate the ``sft``, ``rl`` and held-out ``eval`` splits, and ``caption`` / ``perception`` / ``grounding`` /
    ``attention`` splits when ``num_caption`` / ``num_perception`` / ``num_grounding`` / ``num_attention`` > 0 (see
    :func:`generate_split`), an ``attention_count`` split (the ``attention`` layout on scenes that all ask the count
    question) when ``num_attention_count`` > 0, and ``multi`` / ``clip`` / ``multi_sft`` / ``clip_sft`` splits when ``num_multi_image``
    / ``num_clip`` / ``num_multi_image_sft`` / ``num_clip_sft`` > 0 (see :func:`generate_multi_split`).

    With ``config.decoy`` (the decoy benchmark): a fraction ``decoy_fraction`` of the ``sft`` and ``rl`` rows carry
    a swatch that says the answer, a further ``decoy_conflict_fraction`` one that says a wrong answer, and ``eval`` is replaced by two held-out splits of the same ``num_eval`` scenes:
    ``clean`` (no swatch) and ``conflict`` (a swatch that says a wrong answer).
    """
    decoy = config is not None and config.decoy
    cue = "agree" if decoy else None
    splits = {
        name: generate_split(
            name, rows, seed, config, cue=cue, cue_fraction=decoy_fraction, conflict_fraction=decoy_conflict_fraction
        )
        for name, rows in (("sft", num_sft), ("rl", num_rl))
    }
    if decoy:
        splits["clean"] = generate_split("eval", num_eval, seed, config)
        splits["conflict"] = generate_split("eval", num_eval, seed, config, cue="conflict")
    else:
        splits["eval"] = generate_split("eval", num_eval, seed, config)
    single = {
        "caption": num_caption,
        "perception": num_perception,
        "grounding": num_grounding,
        "attention": num_attention,
    }
    several = {"multi": num_multi_image, "clip": num_clip, "multi_sft": num_multi_image_sft, "clip_sft": num_clip_sft}
    splits.update({name: generate_split(name, rows, seed, config) for name, rows in single.items() if rows})
    if num_attention_count:
        count_scenes = dataclasses.replace(config or SyntheticConfig(), question_types=("count",))
        splits["attention_count"] = generate_split(
            "attention_count", num_attention_count, seed, count_scenes, "attention"
        )
    splits.update({name: generate_multi_split(name, rows, seed, config) for name, rows in several.items() if rows})
    return DatasetDict(splits)


OPTIONAL_SPLIT_FLAGS: dict[str, str] = {
    "num_caption": "Rows in the caption split (perception pre-training)",
    "num_perception": "Rows in the perception split (pre-training of the tiny base: captions, pointing, reading, short "
    "answers)",
    "num_grounding": "Rows in the grounding split (second pre-training stage of the tiny base: pointing and reading on "
    "full scenes, a quarter perception rows)",
    "num_attention": "Rows in the attention split (third pre-training stage of the tiny base, with the "
    "attention-grounding loss: pointing, reading and the scenes' own questions on full scenes, a third each)",
    "num_attention_count": "Rows in the attention_count split (the attention split's tasks on scenes that all ask the "
    "count question: the fourth pre-training stage of the tiny base mixes them in)",
    "num_multi_image": "Rows in the multi split (2-3 images per row: in which image is the asked shape; the box on its "
    "image)",
    "num_clip": f"Rows in the clip split ({CLIP_FRAMES} frames, one shape moves: what colour is it; its box on every "
    "frame)",
    "num_multi_image_sft": "Rows in the multi_sft split (the multi question on other scenes, laid out for the SFT cold "
    "start with reasoning)",
    "num_clip_sft": "Rows in the clip_sft split (the clip question on other clips, laid out for the SFT cold start with "
    "reasoning, the frames given as images)",
}
"""``python -m data_tools.synthetic`` flags of the splits written only when asked for, with their help."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.synthetic",
        description="Generate the synthetic coloured-shapes grounded-reasoning data set (sft, rl, eval splits) "
        "and save it with DatasetDict.save_to_disk (load it back with datasets.load_from_disk).",
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="Folder to save the DatasetDict to.")
    parser.add_argument("--num_sft", type=int, default=2000, help="Rows in the SFT (cold start) split.")
    parser.add_argument("--num_rl", type=int, default=2000, help="Rows in the RL split.")
    parser.add_argument("--num_eval", type=int, default=200, help="Rows in the held-out evaluation split.")
    for name, help_text in OPTIONAL_SPLIT_FLAGS.items():
        parser.add_argument(f"--{name}", type=int, default=0, help=f"{help_text}; 0: none.")
    parser.add_argument(
        "--decoy_fraction",
        type=float,
        default=None,
        help="Make the decoy benchmark: questions about colour, shape and left_of only; a grey swatch in the "
        "bottom-right corner whose shade says the answer on this fraction of the sft and rl rows; held-out splits "
        "clean (no swatch) and conflict (the swatch says a wrong answer) instead of eval. Default: no decoy.",
    )
    parser.add_argument(
        "--decoy_conflict_fraction",
        type=float,
        default=0.0,
        help="With --decoy_fraction: a further fraction of the sft and rl rows whose swatch says a wrong answer.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed; the same seed gives the same bytes.")
    parser.add_argument("--image_size", type=int, default=168, help="Side of the square images in pixels.")
    args = parser.parse_args(argv)
    for name in ("num_sft", "num_rl", "num_eval", *OPTIONAL_SPLIT_FLAGS):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.decoy_fraction is not None and not 0.0 <= args.decoy_fraction <= 1.0:
        parser.error(f"--decoy_fraction must lie in [0, 1], got {args.decoy_fraction}")
    if args.decoy_conflict_fraction and args.decoy_fraction is None:
        parser.error("--decoy_conflict_fraction needs --decoy_fraction (the decoy benchmark)")
    if not 0.0 <= args.decoy_conflict_fraction <= 1.0 - (args.decoy_fraction or 0.0):
        parser.error("--decoy_conflict_fraction must lie in [0, 1 - decoy_fraction]")
    start = time.perf_counter()
    decoy = {} if args.decoy_fraction is None else {"decoy": True, "question_types": DECOY_QUESTION_TYPES}
    config = SyntheticConfig(width=args.image_size, height=args.image_size, **decoy)
    data = generate_synthetic(
        args.num_sft,
        args.num_rl,
        args.num_eval,
        args.seed,
        config,
        decoy_fraction=1.0 if args.decoy_fraction is None else args.decoy_fraction,
        decoy_conflict_fraction=args.decoy_conflict_fraction,
        **{name: getattr(args, name) for name in OPTIONAL_SPLIT_FLAGS},
    )
    # datasets cannot load a split of 0 rows back from disk, so a split asked with 0 rows is not written
    data = DatasetDict({name: split for name, split in data.items() if len(split)})
    data.save_to_disk(str(args.output_dir))
    sizes = ", ".join(f"{k}={len(v)}" for k, v in data.items())
    print(f"wrote {sizes} to {args.output_dir} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
