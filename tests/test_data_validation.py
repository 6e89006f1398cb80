import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from data_tools import BadRowsError, load_image, normalise_boxes, parse_boxes, rows_to_dataset, validate_rows
from rewards import accuracy_reward


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


RGB = _png(Image.new("RGB", (40, 20), (10, 20, 30)))


def _row(i=0, **overrides):
    row = {
        "image": RGB,
        "problem": "What is it?",
        "solution": "cat",
        "bbox": "[0.1, 0.2, 0.5, 0.6]",
        "dataset": "toy",
        "question_id": f"q{i}",
    }
    row.update(overrides)
    return row


def _one(row, **kwargs):
    """Validate one row with on_bad_row='skip'; return (kept row or None, report)."""
    kept, report = validate_rows([row], "rl", on_bad_row="skip", **kwargs)
    return (kept[0] if kept else None), report


def _rejected(row, field, match, **kwargs):
    kept, report = _one(row, **kwargs)
    assert kept is None
    (issue,) = report.rejected
    assert issue.field == field and issue.row_id == row.get("question_id", "#0")
    assert match in issue.reason, issue.reason


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "bbox, match",
    [
        ([-0.1, 0.2, 0.5, 0.6], "outside [0, 1]"),  # box out of range
        ([0.5, 0.2, 1.3, 0.6], "outside [0, 1]"),
        ([0.5, 0.5, 0.2, 0.8], "swapped corners"),
        ([0.2, 0.2, 0.2, 0.5], "zero area"),
        ([4, 2, 30, 18], "pixel boxes passed as normalised"),
        ([float("nan"), 0.2, 0.5, 0.6], "NaN"),
        ("[NaN, 0.2, 0.5, 0.6]", "NaN"),
        ([0.1, 0.2, 0.5], "needs 4 coordinates, got 3"),
        ([0.1, 0.2, 0.5, 0.6, 0.7], "needs 4 coordinates, got 5"),
        ("[0.1, 0.2, 0.5", "not a JSON list"),
        ([0.1, "0.2", 0.5, 0.6], "not a list of numbers"),
        ([], "non-empty"),
    ],
)
def test_bad_boxes_are_rejected_with_a_reason(bbox, match):
    _rejected(_row(bbox=bbox), "bbox", match)


def test_several_boxes_are_kept_as_a_list():
    kept, report = _one(_row(bbox=[[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.9, 1.0]]))
    assert kept["bbox"] == [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.9, 1.0]]
    assert not report.issues


@pytest.mark.parametrize(
    "bbox, fmt, expected",
    [
        ("[0.1, 0.2, 0.5, 0.6]", "xyxy_norm", [0.1, 0.2, 0.5, 0.6]),
        ([4, 2, 20, 12], "xyxy_px", [0.1, 0.1, 0.5, 0.6]),
        ([4, 2, 16, 10], "xywh_px", [0.1, 0.1, 0.5, 0.6]),
        ([0, 0, 40, 20], "xyxy_px", [0.0, 0.0, 1.0, 1.0]),
    ],
)
def test_box_formats_become_normalised_xyxy(bbox, fmt, expected):
    kept, _ = _one(_row(bbox=bbox), bbox_format=fmt)
    assert kept["bbox"] == [pytest.approx(expected)]
    # the row's own bbox_format wins over the call's
    kept, _ = _one(_row(bbox=bbox, bbox_format=fmt))
    assert kept["bbox"] == [pytest.approx(expected)]


def test_pixel_boxes_outside_the_image_and_size_mismatch_are_rejected():
    _rejected(_row(bbox=[4, 2, 41, 12]), "bbox", "outside the 40x20 image", bbox_format="xyxy_px")
    _rejected(_row(bbox=[4, 2, 20, 12], width=80, height=40), "bbox", "80x40", bbox_format="xyxy_px")


def test_parse_and_normalise_are_usable_alone():
    assert parse_boxes("[[1, 2, 3, 4], [5, 6, 7, 8]]") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert normalise_boxes([[10, 0, 20, 50]], "xyxy_px", 100, 50) == [[0.1, 0.0, 0.2, 1.0]]
    with pytest.raises(ValueError, match="bbox_format"):
        normalise_boxes([[0, 0, 1, 1]], "cxcywh", 10, 10)


# ---------------------------------------------------------------- images


def test_missing_image_file_and_corrupt_bytes_are_rejected(tmp_path):
    _rejected(_row(image="nope.png"), "image", "image file not found", image_dir=tmp_path)
    _rejected(_row(image=b"not an image at all"), "image", "unreadable image bytes")
    _rejected(_row(image=RGB[: len(RGB) // 2]), "image", "unreadable image bytes")  # truncated PNG
    _rejected(_row(image=None), "image", "missing field")


def test_images_from_paths_dicts_and_pil_are_read(tmp_path):
    (tmp_path / "a.png").write_bytes(RGB)
    for value in (
        "a.png",
        str(tmp_path / "a.png"),
        {"bytes": None, "path": "a.png"},
        {"bytes": RGB, "path": None},
        Image.open(io.BytesIO(RGB)),
    ):
        kept, report = _one(_row(image=value), image_dir=tmp_path)
        assert kept is not None, report.issues
        assert Image.open(io.BytesIO(kept["image"]["bytes"])).size == (40, 20)
    # an RGB file within the size limit is kept byte for byte
    kept, _ = _one(_row(image="a.png"), image_dir=tmp_path)
    assert kept["image"]["bytes"] == RGB


def _converted(image: Image.Image, match: str) -> np.ndarray:
    kept, report = _one(_row(image=_png(image)))
    assert kept is not None and not report.rejected
    (note,) = report.notes
    assert match in note.reason and note.field == "image"
    out = Image.open(io.BytesIO(kept["image"]["bytes"]))
    assert out.mode == "RGB" and out.size == image.size
    return np.asarray(out)


def test_rgba_greyscale_16bit_and_palette_are_converted_with_a_note():
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    pixels = _converted(rgba, "RGBA")
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent -> white, not black
    assert tuple(pixels[5, 5]) == (255, 0, 0)

    assert tuple(_converted(Image.new("L", (40, 20), 77), "converted L")[3, 3]) == (77, 77, 77)

    deep = np.full((20, 40), 65535, dtype=np.uint16)
    deep[0, 0] = 32896
    pixels = _converted(Image.fromarray(deep), "16-bit")
    assert tuple(pixels[5, 5]) == (255, 255, 255) and tuple(pixels[0, 0]) == (128, 128, 128)

    palette = Image.new("RGB", (40, 20), (9, 99, 199)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert tuple(_converted(palette, "palette")[1, 1]) == (9, 99, 199)


def test_oversized_image_is_resized_and_boxes_stay_right():
    big = Image.new("RGB", (400, 200), (255, 255, 255))
    big.paste((255, 0, 0), (100, 50, 200, 150))
    for bbox, fmt in (([100, 50, 200, 150], "xyxy_px"), ([0.25, 0.25, 0.5, 0.75], "xyxy_norm")):
        kept, report = _one(_row(image=_png(big), bbox=bbox, bbox_format=fmt), max_image_side=100)
        assert "resized from 400x200 to 100x50" in report.notes[0].reason
        assert kept["bbox"] == [[0.25, 0.25, 0.5, 0.75]]
        small = np.asarray(Image.open(io.BytesIO(kept["image"]["bytes"])))
        assert small.shape == (50, 100, 3)
        x0, y0, x1, y1 = (round(v * s) for v, s in zip(kept["bbox"][0], (100, 50, 100, 50), strict=True))
        inside = small[y0:y1, x0:x1]
        assert (inside[1:-1, 1:-1] == (255, 0, 0)).all()  # the object fills its box after resizing
        outside = small.copy()
        outside[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
        assert (outside == 255).all()  # and nothing red lies more than a pixel outside it


def test_an_exif_rotated_photo_is_stored_as_displayed_and_its_boxes_fit_that():
    # Stored 40 wide x 20 high, red on the left; EXIF orientation 6 says: show it turned 90 degrees clockwise,
    # i.e. 20 wide x 40 high with the red part at the top, which is where the annotator's box lies.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif, quality=95)
    kept, report = _one(_row(image=buffer.getvalue(), bbox="[0, 0, 1, 0.5]"))
    image = rows_to_dataset([kept], "rl")[0]["image"]
    assert image.size == (20, 40)
    top = np.asarray(image.convert("RGB"))[:18].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the box covers the red half as displayed
    assert any("EXIF orientation 6" in note.reason for note in report.notes)


def test_image_paths_stay_inside_image_dir_unless_allowed(tmp_path):
    inside, outside = tmp_path / "images", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    Image.new("RGB", (40, 20)).save(outside / "secret.png")
    (inside / "link.png").symlink_to(outside / "secret.png")
    for path in (str(outside / "secret.png"), "../elsewhere/secret.png", "link.png"):
        _rejected(_row(image=path), "image", "leads outside --image_dir", image_dir=inside)
    kept, _ = _one(_row(image="link.png"), image_dir=inside, allow_outside_image_dir=True)
    assert kept is not None


@pytest.mark.parametrize(
    ("size", "match"), [((1, 1), "smaller than one vision patch"), ((13, 40), "smaller"), ((3000, 14), "aspect ratio")]
)
def test_images_too_small_or_too_long_for_the_processor_are_rejected(size, match):
    _rejected(_row(image=_png(Image.new("RGB", size))), "image", match)


# ---------------------------------------------------------------- other fields


def test_text_fields_types_ids_and_missing_fields():
    _rejected(_row(problem="   "), "problem", "is empty")
    _rejected(_row(solution=3), "solution", "must be a string, got int")
    _rejected({k: v for k, v in _row().items() if k != "bbox"}, "bbox", "missing field")
    _rejected({k: v for k, v in _row().items() if k != "problem"}, "problem", "missing field")
    kept, report = validate_rows([_row(0), _row(1), _row(0)], on_bad_row="skip")
    assert [r["question_id"] for r in kept] == ["q0", "q1"]
    (issue,) = report.rejected
    assert (issue.index, issue.field) == (2, "question_id") and "first at row 0" in issue.reason


def test_sft_rows_need_reasoning_and_become_messages():
    kept, _ = validate_rows([_row(reasoning="It is at the top.")], "sft")
    (row,) = kept
    assert row["messages"][-1]["content"][0]["text"] == "<think>It is at the top.</think>cat"
    assert len(row["images"]) == 1
    with pytest.raises(BadRowsError, match="reasoning"):
        validate_rows([_row()], "sft")


@pytest.mark.parametrize("written", ["<answer> cat </answer>", "Cat.", "\\boxed{cat}", "Answer: cat"])
def test_answers_lose_their_markup_with_a_note_and_the_reward_agrees(written):
    kept, report = validate_rows([_row(solution=written)])
    assert kept[0]["solution"].lower() == "cat"
    (note,) = report.notes
    assert note.field == "solution" and "answer markup removed" in note.reason
    assert accuracy_reward(None, ["<think>x</think>cat"], solution=[written]) == [1.0]


def test_an_answer_that_is_only_markup_and_reasoning_with_think_tags_are_rejected():
    _rejected(_row(solution="<answer> </answer>"), "solution", "no answer left")
    with pytest.raises(BadRowsError, match="'reasoning': contains </think>"):
        validate_rows([_row(reasoning="It is red.</think>No, blue.")], "sft")


def test_error_mode_lists_every_bad_row_and_skip_mode_reports_them(tmp_path):
    rows = [_row(0), _row(1, bbox=[0.5, 0.5, 0.2, 0.8]), _row(2, problem=""), _row(3, image=b"xx"), _row(4)]
    with pytest.raises(BadRowsError) as err:
        validate_rows(rows)
    message = str(err.value)
    assert "3 of 5 rows are bad" in message
    for qid, field in (("q1", "bbox"), ("q2", "problem"), ("q3", "image")):
        assert f"({qid}), field '{field}'" in message
    kept, report = validate_rows(rows, on_bad_row="skip")
    assert [r["question_id"] for r in kept] == ["q0", "q4"]
    assert report.summary() == "5 rows: 2 kept, 3 rejected, 0 conversion notes"
    report.write_jsonl(tmp_path / "r.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(d["row_id"], d["field"], d["action"]) for d in lines] == [
        ("q1", "bbox", "rejected"),
        ("q2", "problem", "rejected"),
        ("q3", "image", "rejected"),
    ]
    data = rows_to_dataset(kept, "rl")
    assert data[1]["image"].size == (40, 20) and math.isclose(data[1]["bbox"][0][2], 0.5)


def test_all_problems_of_one_row_are_reported():
    _, report = _one(_row(problem="", solution=None, bbox=[0.5, 0.5, 0.2]))
    assert {i.field for i in report.rejected} == {"problem", "solution", "bbox"}


def test_bad_arguments_name_the_flag():
    with pytest.raises(ValueError, match="on_bad_row"):
        validate_rows([], on_bad_row="ignore")
    with pytest.raises(ValueError, match="kind"):
        validate_rows([], "dpo")
    with pytest.raises(ValueError, match="unreadable"):
        load_image(b"garbage")


# ---------------------------------------------------------------- decoy columns


def test_decoy_columns_are_kept_checked_and_reach_the_dataset():
    cued = _row(0, decoy_answer="dog", decoy_bbox=[[0.8, 0.8, 1.0, 1.0]])
    clean = _row(1, decoy_answer="", decoy_bbox=[])
    kept, report = validate_rows([cued, clean], "rl")
    assert not report.issues
    assert [(r["decoy_answer"], r["decoy_bbox"]) for r in kept] == [("dog", [[0.8, 0.8, 1.0, 1.0]]), ("", [])]
    dataset = rows_to_dataset(kept, "rl")
    assert dataset["decoy_answer"] == ["dog", ""] and dataset[1]["decoy_bbox"] == []
    plain, _ = validate_rows([_row(2)], "rl")
    assert "decoy_answer" not in rows_to_dataset(plain, "rl").column_names  # an ordinary source is unchanged


@pytest.mark.parametrize(
    "fields, field, match",
    [
        ({"decoy_answer": "dog"}, "decoy_bbox", "needs both"),
        ({"decoy_bbox": [[0.8, 0.8, 1.0, 1.0]]}, "decoy_answer", "needs both"),
        ({"decoy_answer": 3, "decoy_bbox": []}, "decoy_answer", "must be a string"),
        ({"decoy_answer": "", "decoy_bbox": [[0.8, 0.8, 1.0, 1.0]]}, "decoy_answer", "places a cue"),
        ({"decoy_answer": "dog", "decoy_bbox": []}, "decoy_bbox", "non-empty"),
        ({"decoy_answer": "dog", "decoy_bbox": [[130, 130, 160, 160]]}, "decoy_bbox", "pixel boxes"),
        ({"decoy_answer": "dog", "decoy_bbox": [[0.9, 0.8, 0.8, 1.0]]}, "decoy_bbox", "swapped corners"),
    ],
)
def test_bad_decoy_columns_name_the_field(fields, field, match):
    _rejected(_row(0, **fields), field, match)
