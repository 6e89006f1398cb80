"""Synthetic fixations on the synthetic shapes data: the fixation simulator, a whole synthetic set, and fixations
for the images of a tuned model's export.

**The fixation simulator** (:class:`FixationSimulation`, seeded). Simulated subjects look at a scene the way its
question asks. Each fixation first picks a target, then a point:

* the **evidence** of the row's question (probability ``p_target``): a point drawn uniformly in one of the evidence
  boxes, plus Gaussian jitter. The evidence is the row's ``bbox`` (the asked object for ``color`` / ``shape``, the
  answer object for ``left_of``, the asked half for ``count``); with ``evidence_on_objects`` the subjects look at the
  *objects* inside it instead (a ``count`` question's counted shapes; a half with no shape is scanned as a whole);
* **another object** of the scene (``p_objects``): a point in the box of an object outside the evidence, an object
  the question names (``left_of``'s reference object, where a subject looks first) ``named_weight`` times as likely as
  the rest;
* the **centre** (``p_centre``): a Gaussian around the image centre (centre bias);
* anywhere (the rest): uniform noise.

Points are clipped to the image. Defaults are the simulation of ``bench/predictor_synthetic.py`` (evidence boxes,
centre bias and noise only, as in BENCHMARKS.md); :data:`QUESTION_GAZE` is the main job's (``launch/pipeline.py``).

**A whole synthetic set** (:func:`build_synthetic_fixation_set`): images, fixations in the AiR layout
(``AiR_fixations_<split>.json``, read by the ordinary AiR reader) and a scene-proposal export. Its proposals are
**scene proposals**, not a tuned VLM's: one per drawn object, distractors included, with the object's own mask, a
phrase such as "red triangle" and a reason naming where it is. The exported ``score`` is 1 when the text named by
``score_source`` mentions the object (``"question"``: the question alone; ``"reasoning"``: the reference reasoning,
a stand-in for a tuned model's explanation) and 0 otherwise.

**Fixations for an export** (:func:`simulate_export_fixations`): the real proposals come from the VLM export stage
(``launch/export.py`` on the synthetic ``eval`` split). For each exported image, the scene is regenerated from its
question id (``synthetic_shapes-<split>-<seed>-<index>``) and checked pixel for pixel against the exported image, and
the simulator looks at it; the images are split into the predictor's training and evaluation fixations (AiR layout,
``image_id`` = the image's path in the export folder, so ``--images_dir`` is the export folder).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from data_tools.images import open_displayed
from data_tools.synthetic import (
    DATASET_NAME,
    SyntheticConfig,
    SyntheticExample,
    location_phrase,
    make_example,
    shape_mask,
)

from .image_ids import exported_image_id
from .proposals import ExportRecord, Proposal, write_export

SCORE_SOURCES = ("question", "reasoning")
Box = Sequence[float]


@dataclass(frozen=True)
class FixationSimulation:
    """How simulated subjects look at a synthetic scene (see the module's docstring); fractions are of the image side."""

    subjects: int = 6
    fixations_per_subject: int = 8
    p_target: float = 0.65  # on the evidence of the question
    p_centre: float = 0.2  # around the image centre
    p_objects: float = 0.0  # on the scene's other objects; the rest is uniform noise
    centre_sigma: float = 0.15
    target_jitter: float = 0.02
    evidence_on_objects: bool = False  # look at the objects inside the evidence boxes rather than the boxes
    named_weight: float = 3.0  # how much likelier an object the question names is among the other objects

    def __post_init__(self) -> None:
        parts = (self.p_target, self.p_centre, self.p_objects)
        if min(parts) < 0 or sum(parts) > 1 + 1e-9:
            raise ValueError(f"FixationSimulation: p_target, p_centre, p_objects must be >= 0 and sum to <= 1: {parts}")
        if self.subjects < 1 or self.fixations_per_subject < 1:
            raise ValueError("FixationSimulation: subjects and fixations_per_subject must be >= 1")
        if self.named_weight <= 0:
            raise ValueError(f"FixationSimulation: named_weight must be > 0, got {self.named_weight}")

    @property
    def p_noise(self) -> float:
        return max(0.0, 1.0 - self.p_target - self.p_centre - self.p_objects)


QUESTION_GAZE = FixationSimulation(p_target=0.6, p_centre=0.15, p_objects=0.2, evidence_on_objects=True)
"""The main job's simulation: 60 % of the fixations on the objects the question's answer is read from, 20 % on other
objects (the reference object of a ``left_of`` question 3x as likely as the rest), 15 % centre bias, 5 % noise."""


def mentions(text: str, shape: str, color: str) -> bool:
    """Whether ``text`` names the object: "red triangle", "the triangle" or "the red object"."""
    text = text.lower()
    return any(
        re.search(pattern, text)
        for pattern in (rf"\b{color} {shape}\b", rf"\bthe {shape}\b", rf"\bthe {color} object\b")
    )


def _inside(point: tuple[float, float], boxes: Sequence[Box]) -> bool:
    x, y = point
    return any(x1 <= x < x2 and y1 <= y < y2 for x1, y1, x2, y2 in boxes)


def gaze_targets(example: SyntheticExample, simulation: FixationSimulation) -> tuple[list[Box], list[Box], list[float]]:
    """Where the subjects of ``simulation`` look in ``example``, as normalised boxes: ``(evidence, others, weights)``.

    ``evidence`` is the row's ``bbox``, or with ``evidence_on_objects`` the boxes of the objects whose centre lies in
    it (the ``bbox`` itself when none does); ``others`` are the remaining objects' boxes, ``weights`` their relative
    odds (``named_weight`` for an object the question mentions, 1 otherwise).
    """
    w, h = example.image.size
    normalised = [(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in (o.box_px for o in example.objects)]
    in_evidence = [_inside((o.centre[0] / w, o.centre[1] / h), example.bbox) for o in example.objects]
    evidence: list[Box] = list(example.bbox)
    if simulation.evidence_on_objects and any(in_evidence):
        evidence = [box for box, inside in zip(normalised, in_evidence) if inside]
    others = [(box, o) for box, o, inside in zip(normalised, example.objects, in_evidence) if not inside]
    weights = [simulation.named_weight if mentions(example.problem, o.shape, o.color) else 1.0 for _, o in others]
    return evidence, [box for box, _ in others], weights


def sample_fixations(
    rng: np.random.Generator,
    evidence: Sequence[Box],
    w: int,
    h: int,
    simulation: FixationSimulation,
    others: Sequence[Box] = (),
    weights: Sequence[float] = (),
) -> tuple[list[float], list[float]]:
    """One subject's fixations (pixel ``X``, ``Y`` lists) on a ``w`` x ``h`` image; see the module's docstring.

    Without ``others`` an other-object fixation goes to the evidence instead.
    """
    n, sim = simulation.fixations_per_subject, simulation
    # the order (evidence, centre, noise, objects) keeps the random stream of the three-way draw of earlier versions
    kind = rng.choice(4, size=n, p=[sim.p_target, sim.p_centre, sim.p_noise, sim.p_objects])
    odds = np.asarray(weights, dtype=float) / sum(weights) if others else None
    xs, ys = np.empty(n), np.empty(n)
    for i, k in enumerate(kind):
        if k in (0, 3):
            boxes, p = (others, odds) if k == 3 and others else (evidence, None)
            x1, y1, x2, y2 = boxes[rng.integers(len(boxes)) if p is None else rng.choice(len(boxes), p=p)]
            x = rng.uniform(x1, x2) + rng.normal(0, sim.target_jitter)
            y = rng.uniform(y1, y2) + rng.normal(0, sim.target_jitter)
        elif k == 1:
            x, y = rng.normal(0.5, sim.centre_sigma), rng.normal(0.5, sim.centre_sigma)
        else:
            x, y = rng.uniform(0, 1), rng.uniform(0, 1)
        xs[i], ys[i] = np.clip(x, 0, 1) * w, np.clip(y, 0, 1) * h
    return xs.round(2).tolist(), ys.round(2).tolist()


def fixation_rows(
    example: SyntheticExample, image_id: str, split: str, rng: np.random.Generator, simulation: FixationSimulation
) -> list[dict]:
    """The AiR-layout records (one per simulated subject) of ``example``, whose image is ``image_id`` in the images
    folder; besides AiR's fields each carries the row's ``answer`` and evidence ``bbox``."""
    w, h = example.image.size
    evidence, others, weights = gaze_targets(example, simulation)
    rows = []
    for subject in range(simulation.subjects):
        xs, ys = sample_fixations(rng, evidence, w, h, simulation, others, weights)
        rows.append(
            {
                "question_id": example.question_id,
                "image_id": image_id,
                "question": example.problem,
                "answer": example.solution,
                "bbox": example.bbox,
                "subject": f"s{subject:02d}",
                "width": w,
                "height": h,
                "X": xs,
                "Y": ys,
                "length": len(xs),
                "split": split,
            }
        )
    return rows


def build_synthetic_fixation_set(
    out_dir: str | Path,
    split: str,
    num_examples: int,
    seed: int = 0,
    score_source: str = "question",
    simulation: FixationSimulation | None = None,
    scene: SyntheticConfig | None = None,
) -> tuple[Path, Path, Path]:
    """Write images, AiR-layout fixations and a scene-proposal export for ``split``.

    Returns ``(fixations_json, images_dir, proposals_jsonl)``.
    """
    if score_source not in SCORE_SOURCES:
        raise ValueError(f"--score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
    simulation = simulation or FixationSimulation()
    scene = scene or SyntheticConfig()
    out_dir = Path(out_dir)
    images_dir, masks_dir = out_dir / "images", out_dir / "masks" / split
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, len(split), sum(map(ord, split))])
    rows, export = [], []
    for index in tqdm(range(num_examples), desc=f"synthetic fixations ({split})", leave=False):
        ex = make_example(seed, split, index, scene)
        w, h = ex.image.size
        image_path = images_dir / f"{ex.question_id}.png"
        ex.image.save(image_path)
        rows += fixation_rows(ex, image_path.name, split, rng, simulation)
        text = ex.problem if score_source == "question" else ex.reasoning
        proposals = []
        for j, obj in enumerate(ex.objects):
            mask = Image.new("L", (w, h), 0)
            mask.paste(shape_mask(obj.shape, obj.size), (obj.x, obj.y))
            mask_path = masks_dir / f"{ex.question_id}_{j}.png"
            mask.save(mask_path)
            x0, y0, x1, y1 = obj.box_px
            proposals.append(
                Proposal(
                    phrase=f"{obj.color} {obj.shape}",
                    reason=f"the {obj.color} {obj.shape} at the {location_phrase(*obj.centre, w, h)} of the scene",
                    mask_path=mask_path,
                    box=(x0 / w, y0 / h, x1 / w, y1 / h),
                    score=float(mentions(text, obj.shape, obj.color)),
                )
            )
        export.append(ExportRecord(ex.question_id, image_path, w, h, ex.reasoning, ex.solution, proposals))
    fixations_json = out_dir / f"AiR_fixations_{split}.json"
    fixations_json.write_text(json.dumps(rows))
    proposals_jsonl = out_dir / f"proposals_{split}.jsonl"
    write_export(export, proposals_jsonl)
    return fixations_json, images_dir, proposals_jsonl


_QUESTION_ID = re.compile(rf"^{re.escape(DATASET_NAME)}-(?P<split>.+)-(?P<seed>\d+)-(?P<index>\d+)$")


def regenerate_example(question_id: str, scene: SyntheticConfig | None = None) -> SyntheticExample:
    """The synthetic row ``question_id`` (``synthetic_shapes-<split>-<seed>-<index>``) generated again."""
    match = _QUESTION_ID.match(question_id)
    if match is None:
        raise ValueError(
            f"image id {question_id!r} is not a synthetic question id ({DATASET_NAME}-<split>-<seed>-<index>): "
            "fixations are simulated for an export of the synthetic data set only"
        )
    return make_example(int(match["seed"]), match["split"], int(match["index"]), scene)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def simulate_export_fixations(
    export_jsonl: str | Path,
    out_dir: str | Path,
    num_eval: int,
    seed: int = 0,
    simulation: FixationSimulation = QUESTION_GAZE,
    scene: SyntheticConfig | None = None,
) -> tuple[Path, Path]:
    """Simulated fixations on the images of an export of the synthetic data set (``launch/export.py
    --dataset_name ...``), split for the predictor: ``(train_json, eval_json)`` in ``out_dir``.

    Images are taken in id order; the last ``num_eval`` are the evaluation images, the others the training images.
    Each image's fixations are seeded by ``seed`` and its id alone (the same whichever images are exported). Every
    scene is regenerated from its id and must equal the exported image pixel for pixel and ask the exported question
    (else the data came from another scene configuration, and the error names the image). Also writes
    ``simulation.json`` (the settings and the split). The evaluation file is written last.
    """
    export_jsonl, out_dir = Path(export_jsonl), Path(out_dir)
    lines = [json.loads(line) for line in export_jsonl.read_text().splitlines() if line.strip()]
    records = sorted(((exported_image_id(obj), obj) for obj in lines), key=lambda pair: pair[0])
    if not 1 <= num_eval < len(records):
        raise ValueError(
            f"--num_eval {num_eval}: the export {export_jsonl} has {len(records)} images; hold out at least 1 and "
            "leave at least 1 for training"
        )
    split_at = len(records) - num_eval
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict]] = {"train": [], "eval": []}
    for position, (image_id, obj) in enumerate(tqdm(records, desc="simulating fixations", leave=False)):
        where = f"{export_jsonl} image {image_id!r}"
        example = regenerate_example(image_id, scene)
        exported, _ = open_displayed(export_jsonl.parent / obj["image_path"])
        if exported.size != example.image.size or not np.array_equal(
            np.asarray(exported.convert("RGB")), np.asarray(example.image.convert("RGB"))
        ):
            raise ValueError(
                f"{where}: the exported image is not the synthetic scene of that id (another scene config?)"
            )
        if obj.get("question") not in (None, example.problem):
            raise ValueError(f"{where}: asked {obj['question']!r}, the synthetic row asks {example.problem!r}")
        split = "train" if position < split_at else "eval"
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
        splits[split] += fixation_rows(example, obj["image_path"], split, rng, simulation)
    paths = out_dir / "AiR_fixations_train.json", out_dir / "AiR_fixations_eval.json"
    info = {
        "export": str(export_jsonl),
        "seed": seed,
        "simulation": asdict(simulation),
        "train_images": split_at,
        "eval_images": num_eval,
    }
    (out_dir / "simulation.json").write_text(json.dumps(info, indent=2))
    for path, split in zip(paths, ("train", "eval")):
        _write_atomic(path, json.dumps(splits[split]))
    return paths


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m predictor.synthetic --out_dir DIR --num_train 600 --num_eval 100`` (a whole synthetic set), or
    ``python -m predictor.synthetic --from_export EXPORT/proposals.jsonl --out_dir DIR --num_eval 16`` (fixations for
    the images of an export, with the main job's simulation :data:`QUESTION_GAZE`)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="Folder to write images, fixations and proposals into.")
    parser.add_argument(
        "--from_export",
        default=None,
        help="An export's proposals.jsonl (of the synthetic data set): simulate fixations on its images instead of "
        "building a whole set; --images_dir of the predictor is then the export's folder.",
    )
    parser.add_argument("--num_train", type=int, default=600, help="Questions in the 'train' split (whole set).")
    parser.add_argument(
        "--num_eval",
        type=int,
        default=None,
        help="Questions in the 'eval' split (whole set, default 100); with --from_export the exported images held out "
        "for the predictor's evaluation (default: a quarter).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of scenes and fixations.")
    parser.add_argument(
        "--score_source",
        choices=SCORE_SOURCES,
        default="question",
        help="Text whose mentions set each scene proposal's score (whole set).",
    )
    args = parser.parse_args(argv)
    if args.from_export:
        num_eval = args.num_eval
        if num_eval is None:
            with open(args.from_export) as f:
                num_eval = max(1, sum(1 for line in f if line.strip()) // 4)
        for path in simulate_export_fixations(args.from_export, args.out_dir, num_eval, args.seed):
            print(f"fixations: {path}")
        return
    for split, n in (("train", args.num_train), ("eval", 100 if args.num_eval is None else args.num_eval)):
        paths = build_synthetic_fixation_set(args.out_dir, split, n, args.seed, args.score_source)
        print(f"{split}: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
