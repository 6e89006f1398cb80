"""Command line: convert a public grounded-reasoning data set into a validated split saved with ``save_to_disk``.

    python -m data_tools.convert --source saliency_r1 --input data.jsonl --image_dir images/ \\
        --output_dir out/ --on_bad_row skip --report out/report.jsonl

With ``--num_heldout N`` it also holds N rows out for evaluation (SPEC section 5: 100 rows, seed 42) and saves a
``DatasetDict`` of ``train`` (the GRPO recipes' ``dataset_train_split``) and ``eval`` (``launch/eval.py``'s
``dataset_test_split``), plus ``heldout.json`` naming the held-out rows:

    python -m data_tools.convert --source saliency_r1 --input path/to/saliency-r1-8k --max_image_side 512 \\
        --num_heldout 100 --heldout_seed 42 --output_dir data/saliency-r1-8k-heldout
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

from .loaders import SOURCES, MissingSplitError, load_source
from .validation import BBOX_FORMATS, KINDS, ON_BAD_ROW, BadRowsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.convert",
        description="Read a public grounded-reasoning layout, validate every row up front, and save the result "
        "with datasets' save_to_disk (load it with datasets.load_from_disk).",
    )
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="Layout of the input data.")
    parser.add_argument(
        "--input",
        required=True,
        help="A local .json/.jsonl/.parquet file, a save_to_disk folder, or a hub data set name.",
    )
    parser.add_argument(
        "--image_dir",
        type=Path,
        default=None,
        help="Folder that relative image paths start from; paths that lead outside it (absolute, '..', symbolic "
        "links) are rejected.",
    )
    parser.add_argument(
        "--allow_outside_image_dir",
        action="store_true",
        help="Accept image paths that lead outside --image_dir.",
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="Folder to save the converted split to.")
    parser.add_argument("--split", default="train", help="Split to read from hub or save_to_disk sources.")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default=None,
        help="Layout of the output split; default: rl for saliency_r1/visual_cot, sft for llava_cot/mulberry.",
    )
    parser.add_argument(
        "--bbox_format",
        choices=BBOX_FORMATS,
        default="xyxy_norm",
        help="Box format of rows that do not name one (visual_cot rows are xyxy_px).",
    )
    parser.add_argument(
        "--max_image_side",
        type=int,
        default=1024,
        help="Images with a longer side are resized to it (normalised boxes stay valid). 0 = never resize.",
    )
    parser.add_argument(
        "--on_bad_row",
        choices=ON_BAD_ROW,
        default="error",
        help="error: stop before writing and list every bad row; skip: drop bad rows and report them.",
    )
    parser.add_argument("--report", type=Path, default=None, help="Write every rejection and conversion note (JSONL).")
    parser.add_argument(
        "--num_heldout",
        type=int,
        default=0,
        help="Hold this many of the kept rows out as an 'eval' split beside a 'train' split of the others (SPEC "
        "section 5: 100); 0 = save one split.",
    )
    parser.add_argument(
        "--heldout_seed",
        type=int,
        default=42,
        help="Seed that draws the held-out rows (the rows datasets' train_test_split(test_size=N, seed=S) tests on).",
    )
    return parser


def hold_out(data: Dataset, num_heldout: int, seed: int) -> DatasetDict:
    """``num_heldout`` rows of ``data`` drawn by ``seed`` as ``eval``, the others as ``train``, each in input order.

    The held-out rows are those ``data.train_test_split(test_size=num_heldout, seed=seed)`` puts in its test split
    (the first ``num_heldout`` of NumPy's ``default_rng(seed).permutation``), independent of the machine.
    """
    if not 0 < num_heldout < len(data):
        raise ValueError(
            f"--num_heldout {num_heldout}: choose between 1 and {len(data) - 1} for the {len(data)} kept rows (at "
            "least one row must stay for training)"
        )
    drawn = np.random.default_rng(seed).permutation(len(data))[:num_heldout]
    heldout = np.zeros(len(data), dtype=bool)
    heldout[drawn] = True
    return DatasetDict({"train": data.select(np.flatnonzero(~heldout)), "eval": data.select(np.flatnonzero(heldout))})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("max_image_side", "num_heldout", "heldout_seed"):
        if getattr(args, name) < 0:
            build_parser().error(f"--{name} must be >= 0, got {getattr(args, name)}")
    try:
        data, report = load_source(
            args.source,
            args.input,
            image_dir=args.image_dir,
            split=args.split,
            kind=args.kind,
            bbox_format=args.bbox_format,
            max_image_side=args.max_image_side or None,
            on_bad_row=args.on_bad_row,
            allow_outside_image_dir=args.allow_outside_image_dir,
        )
    except BadRowsError as err:
        if args.report:
            err.report.write_jsonl(args.report)
        print(err, file=sys.stderr)
        return 1
    except (FileNotFoundError, MissingSplitError) as err:
        print(f"--input: {err}", file=sys.stderr)
        return 2
    if args.report:
        report.write_jsonl(args.report)
    if not len(data):
        print(
            f"{report.summary()}: no row kept, nothing written" + (f"; report: {args.report}" if args.report else ""),
            file=sys.stderr,
        )
        return 1
    summary, record = report.summary(), None
    if args.num_heldout:
        try:
            data = hold_out(data, args.num_heldout, args.heldout_seed)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        summary += f"; {len(data['eval'])} held out (seed {args.heldout_seed}) as 'eval', {len(data['train'])} 'train'"
        record = {
            "input": args.input,
            "split": args.split,
            "num_heldout": args.num_heldout,
            "heldout_seed": args.heldout_seed,
            "eval_question_ids": list(data["eval"]["question_id"]),
        }
    data.save_to_disk(str(args.output_dir))
    if record is not None:
        (args.output_dir / "heldout.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{summary}; saved to {args.output_dir}" + (f", report: {args.report}" if args.report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
