"""A synthetic fixation set on the synthetic shapes data, written in the AiR layout plus an export.

For each question of ``data_tools``' synthetic shapes set, simulated subjects fixate mostly inside
the evidence region the question asks about (its ``bbox``), partly around the image centre (centre
bias) and partly anywhere (noise). Fixations go to ``AiR_fixations_<split>.json`` in the AiR layout,
so the ordinary AiR reader loads them.

Proposals here are **scene proposals**, not a tuned VLM's: one per drawn object, distractors
included, with the object's own mask, a phrase such as "red triangle" and a reason naming where it
is. The exported ``score`` is 1 when the text named by ``score_source`` mentions the object
(``"question"``: the question alone; ``"reasoning"``: the reference reasoning, a stand-in for a
tuned model's explanation) and 0 otherwise. The real proposals come from the VLM export stage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from data_tools.synthetic import SyntheticConfig, location_phrase, make_example, shape_mask

from .proposals import ExportRecord, Proposal, write_export

SCORE_SOURCES = ("question", "reasoning")


@dataclass
class FixationSimulation:
    """How simulated subjects look at a synthetic scene."""

    subjects: int = 6
    fixations_per_subject: int = 8
    p_target: float = 0.65
    p_centre: float = 0.2  # the rest is uniform noise
    centre_sigma: float = 0.15  # fraction of the image side
    target_jitter: float = 0.02  # fraction of the image side


def mentions(text: str, shape: str, color: str) -> bool:
    """Whether ``text`` names the object: "red triangle", "the triangle" or "the red object"."""
    text = text.lower()
    return any(
        re.search(pattern, text)
        for pattern in (rf"\b{color} {shape}\b", rf"\bthe {shape}\b", rf"\bthe {color} object\b")
    )


def _sample_fixations(
    rng: np.random.Generator, boxes: list[list[float]], w: int, h: int, sim: FixationSimulation
) -> tuple[list[float], list[float]]:
    n = sim.fixations_per_subject
    kind = rng.choice(3, size=n, p=[sim.p_target, sim.p_centre, 1 - sim.p_target - sim.p_centre])
    xs, ys = np.empty(n), np.empty(n)
    for i, k in enumerate(kind):
        if k == 0:
            x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
            x = rng.uniform(x1, x2) + rng.normal(0, sim.target_jitter)
            y = rng.uniform(y1, y2) + rng.normal(0, sim.target_jitter)
        elif k == 1:
            x, y = rng.normal(0.5, sim.centre_sigma), rng.normal(0.5, sim.centre_sigma)
        else:
            x, y = rng.uniform(0, 1), rng.uniform(0, 1)
        xs[i], ys[i] = np.clip(x, 0, 1) * w, np.clip(y, 0, 1) * h
    return xs.round(2).tolist(), ys.round(2).tolist()


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
    fixation_rows, export = [], []
    for index in tqdm(range(num_examples), desc=f"synthetic fixations ({split})", leave=False):
        ex = make_example(seed, split, index, scene)
        w, h = ex.image.size
        image_path = images_dir / f"{ex.question_id}.png"
        ex.image.save(image_path)
        for subject in range(simulation.subjects):
            xs, ys = _sample_fixations(rng, ex.bbox, w, h, simulation)
            fixation_rows.append(
                {
                    "question_id": ex.question_id,
                    "image_id": image_path.name,
                    "question": ex.problem,
                    "subject": f"s{subject:02d}",
                    "width": w,
                    "height": h,
                    "X": xs,
                    "Y": ys,
                    "length": len(xs),
                    "split": split,
                }
            )
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
    fixations_json.write_text(json.dumps(fixation_rows))
    proposals_jsonl = out_dir / f"proposals_{split}.jsonl"
    write_export(export, proposals_jsonl)
    return fixations_json, images_dir, proposals_jsonl


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m predictor.synthetic --out_dir DIR --num_train 600 --num_eval 100``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="Folder to write images, fixations and proposals into.")
    parser.add_argument("--num_train", type=int, default=600, help="Questions in the 'train' split.")
    parser.add_argument("--num_eval", type=int, default=100, help="Questions in the 'eval' split.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of scenes and fixations.")
    parser.add_argument(
        "--score_source",
        choices=SCORE_SOURCES,
        default="question",
        help="Text whose mentions set each scene proposal's score.",
    )
    args = parser.parse_args(argv)
    for split, n in (("train", args.num_train), ("eval", args.num_eval)):
        paths = build_synthetic_fixation_set(args.out_dir, split, n, args.seed, args.score_source)
        print(f"{split}: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
