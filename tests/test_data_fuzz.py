"""The converter under many kinds of broken input at once: every input line ends with a named outcome (kept, or
rejected with a field and a reason) and no good row is lost, in both --on_bad_row modes."""

from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image

from data_tools import BadRowsError, load_source


def _image_bytes(size, fmt="PNG", exif_orientation=None):
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (200, 30, 30))
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _record(qid, **overrides):
    record = {"question_id": qid, "image": "ok.png", "problem": "What is red?", "solution": "the box",
              "bbox": "[0.1, 0.2, 0.5, 0.6]"}  # fmt: skip
    record.update(overrides)
    return json.dumps(record).encode()


# kind -> (line maker from the row's id, expected outcome: "kept", "converted" or the rejected field)
KINDS = {
    "good": (lambda q: _record(q), "kept"),
    "answer markup": (lambda q: _record(q, solution="<answer> the box </answer>"), "converted"),
    "exif rotated": (lambda q: _record(q, image="rotated.jpg", bbox="[0, 0, 1, 0.5]"), "converted"),
    "not utf-8": (lambda q: _record(q, problem="caf\udce9").replace(b"\\udce9", b"\xe9"), "line"),
    "not json": (lambda q: _record(q)[:-5], "line"),
    "not an object": (lambda q: json.dumps([q, "a list"]).encode(), "line"),
    "missing problem": (lambda q: _record(q, problem=None), "problem"),
    "empty problem": (lambda q: _record(q, problem="  "), "problem"),
    "solution not text": (lambda q: _record(q, solution=3), "solution"),
    "only markup": (lambda q: _record(q, solution="<answer></answer>"), "solution"),
    "swapped box": (lambda q: _record(q, bbox="[0.5, 0.2, 0.1, 0.6]"), "bbox"),
    "box off the image": (lambda q: _record(q, bbox="[0.1, 0.2, 1.5, 0.6]"), "bbox"),
    "box of three numbers": (lambda q: _record(q, bbox="[0.1, 0.2, 0.5]"), "bbox"),
    "box not json": (lambda q: _record(q, bbox="[0.1, 0.2,"), "bbox"),
    "box with nan": (lambda q: _record(q, bbox="[NaN, 0.2, 0.5, 0.6]"), "bbox"),
    "missing image file": (lambda q: _record(q, image="gone.png"), "image"),
    "corrupt image": (lambda q: _record(q, image="corrupt.png"), "image"),
    "image outside image_dir": (lambda q: _record(q, image="../outside.png"), "image"),
    "1x1 image": (lambda q: _record(q, image="dot.png", bbox="[0, 0, 1, 1]"), "image"),
    "too long image": (lambda q: _record(q, image="strip.png"), "image"),
    # Two images are a row of several images, which must say which image each box lies on.
    "two images": (lambda q: _record(q, image=None, images=["ok.png", "ok.png"]), "bbox_image"),
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    images = root / "images"
    images.mkdir()
    (images / "ok.png").write_bytes(_image_bytes((40, 20)))
    (images / "rotated.jpg").write_bytes(_image_bytes((40, 20), "JPEG", exif_orientation=6))
    (images / "corrupt.png").write_bytes(_image_bytes((40, 20))[:60])
    (images / "dot.png").write_bytes(_image_bytes((1, 1)))
    (images / "strip.png").write_bytes(_image_bytes((3000, 14)))
    (root / "outside.png").write_bytes(_image_bytes((40, 20)))
    return images


@pytest.mark.parametrize("seed", range(3))
def test_every_line_gets_a_named_outcome_and_no_good_row_is_lost(seed, image_dir, tmp_path):
    rng = random.Random(seed)
    kinds = [*KINDS] * 2 + rng.choices([*KINDS], k=40)
    rng.shuffle(kinds)
    lines, expected = [], {}
    for number, kind in enumerate(kinds, start=1):
        qid = f"q{number:03d}"
        make, outcome = KINDS[kind]
        lines.append(make(qid))
        expected[qid if outcome != "line" else f"line {len(lines)}"] = (kind, outcome)
        if rng.random() < 0.1:
            lines.append(b"   ")  # blank lines are not rows
    first_good = next(q for q, (_, outcome) in expected.items() if outcome == "kept")
    lines.append(KINDS["good"][0](first_good))  # a duplicate id: the later row is rejected, the first kept
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")

    with pytest.raises(BadRowsError):
        load_source("saliency_r1", path, image_dir=image_dir)
    data, report = load_source("saliency_r1", path, image_dir=image_dir, on_bad_row="skip")

    rejected = {}
    for issue in report.rejected:
        rejected.setdefault(issue.row_id, set()).add(issue.field)
    notes = {issue.row_id for issue in report.notes}
    kept = list(data["question_id"])
    duplicates = [issue for issue in report.rejected if "duplicate question_id" in issue.reason]
    assert report.num_rows == len(kinds) + 1 and len(duplicates) == 1
    for row_id, (kind, outcome) in expected.items():
        if outcome in ("kept", "converted"):
            assert row_id in kept, kind
            assert (row_id in notes) == (outcome == "converted"), kind
        else:
            assert row_id not in kept and outcome in rejected.get(row_id, set()), (kind, rejected.get(row_id))
    good = [q for q, (_, outcome) in expected.items() if outcome in ("kept", "converted")]
    assert sorted(kept) == sorted(good)  # every good row kept once, nothing else
    assert all(issue.reason for issue in report.issues)
