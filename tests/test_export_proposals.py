"""Export of explanations and semantic proposals: masks, boxes, the predictor's reader, resume, corrupt images."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import build_assets
from PIL import Image
from trl import ModelConfig

from data_tools import generate_split
from evaluation import ExportArguments, mask_box, noun_phrases, run_export
from evaluation.export import finished_ids, mask_png
from predictor.proposals import read_export

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ["circle", "square", "triangle", "diamond"]


def _folder(root: Path, num_images: int) -> tuple[Path, Path, dict[str, str]]:
    """``num_images`` synthetic images and one corrupt file in a folder, and reference completions keyed by image id
    (the file's path in the folder without the extension)."""
    folder, completions = root / "images", {}
    (folder / "sub").mkdir(parents=True)
    for i, row in enumerate(generate_split("eval", num_images, seed=1)):
        name = f"sub/img{i:02d}.png" if i % 2 else f"img{i:02d}.png"
        row["image"].save(folder / name)
        completions[name.removesuffix(".png")] = f"<think>{row['reasoning']}</think>{row['solution']}"
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    completions["broken"] = "<think>x</think>y"
    path = root / "completions.jsonl"
    path.write_text("".join(json.dumps({"question_id": k, "completion": v}) + "\n" for k, v in completions.items()))
    return folder, path, completions


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {**build_assets(root, num_rows=3), "root": root}


def test_mask_box_bounds_the_pixels_above_the_threshold():
    mask = np.zeros((10, 20))
    mask[2:4, 5:9] = 1.0
    mask[8, 18] = 0.4
    box, score = mask_box(mask, 0.5)
    assert box == [5 / 20, 2 / 10, 9 / 20, 4 / 10]
    assert score == pytest.approx(8 / 8.4)
    box, score = mask_box(mask, 0.3)
    assert box == [5 / 20, 2 / 10, 19 / 20, 9 / 10] and score == pytest.approx(1.0)
    assert mask_box(np.zeros((4, 4)), 0.5) is None and mask_box(-np.ones((4, 4)), 0.5) is None


def test_mask_png_scales_to_255():
    png = np.asarray(mask_png(np.array([[0.0, 0.5], [-1.0, 2.0]])))
    assert png.dtype == np.uint8 and png.tolist() == [[0, 64], [0, 255]]


def test_finished_ids_removes_a_cut_off_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"image_id": "a"}\n{"image_id": "b"}\n{"image_id": "c", "expl')
    assert finished_ids(path) == {"a", "b"}
    assert path.read_text() == '{"image_id": "a"}\n{"image_id": "b"}\n'
    assert finished_ids(tmp_path / "missing.jsonl") == set()


def _args(**kwargs) -> ExportArguments:
    return ExportArguments(object_nouns=SHAPES, batch_size=2, **kwargs)


def test_folder_export_is_read_by_the_predictor_and_resumes(assets):
    root = assets["root"] / "folder_run"
    folder, completions_file, completions = _folder(root, 3)
    out = root / "out"
    model_args = ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32")
    args = _args(image_folder=str(folder), completions_file=str(completions_file), output_dir=str(out))
    jsonl = run_export(args, model_args)

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["image_id"], e["file_name"]) for e in errors] == [("broken", "broken.png")]
    assert "unreadable" in errors[0]["error"]
    records = read_export(jsonl)  # the downstream predictor's own reader validates every field and path
    assert sorted(records) == ["img00", "img02", "sub/img01"]  # ids: paths in the folder without the extension
    lines = {x["image_id"]: x for x in map(json.loads, jsonl.read_text().splitlines())}
    for image_id, record in records.items():
        assert lines[image_id]["file_name"] == f"{image_id}.png"  # the original file name is kept beside the id
        assert record.image_path.resolve() == (folder / f"{image_id}.png").resolve()
        assert (record.width, record.height) == Image.open(folder / f"{image_id}.png").size
        thinking, answer = completions[image_id].removeprefix("<think>").split("</think>")
        assert record.explanation == thinking and record.answer == answer
        expected = {p.text for p in noun_phrases(thinking, object_nouns=SHAPES)}
        expected |= {p.text for p in noun_phrases(answer, object_nouns=SHAPES, whole_text_is_phrase=True)}
        line = lines[image_id]
        assert {p.phrase for p in record.proposals} | set(line["phrases_without_mask"]) == expected
        for index, proposal in enumerate(record.proposals):
            assert proposal.reason in thinking or proposal.reason == answer
            mask = record.load_mask(index)
            assert mask.shape == (record.height, record.width) and mask.max() == 1.0
            box, _ = mask_box(mask, args.mask_threshold)
            assert np.allclose(box, proposal.box, atol=1 / record.width) and 0 < proposal.score <= 1

    before = jsonl.read_text(), (out / "errors.jsonl").read_text()
    run_export(args, model_args)  # everything is done: nothing is redone, nothing duplicated
    assert (jsonl.read_text(), (out / "errors.jsonl").read_text()) == before


def test_dataset_export_saves_images_beside_the_jsonl(assets):
    out = assets["root"] / "dataset_run"
    args = _args(dataset_name=str(assets["data"]), completions_file=str(assets["completions"]), output_dir=str(out))
    records = read_export(run_export(args, ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32")))
    assert len(records) == 3
    for record in records.values():
        assert record.image_path.parent == out / "images" and record.image_path.is_file()
    lines = [json.loads(line) for line in (out / "proposals.jsonl").read_text().splitlines()]
    assert sorted(x["image_id"] for x in lines) == sorted(records)  # a data set row keeps its question_id as id
    assert all(x["file_name"] is None for x in lines)  # and has no file name (the data set holds image bytes)
    assert not (out / "errors.jsonl").exists()
    for x in lines:  # the answer's own map beside the proposals' masks (reference completions: all have one)
        answer_map = np.asarray(Image.open(out / x["saliency_map_path"]))
        assert answer_map.shape == (x["height"], x["width"]) and answer_map.max() == 255
    summary = json.loads((out / "summary.json").read_text())  # written once the export is complete
    assert summary == {"model": str(assets["model"]), "images": 3, "exported": 3, "errors": 0, "with_map": 3,
                       "proposals": sum(len(x["proposals"]) for x in lines)}  # fmt: skip


def test_bad_flags_are_named():
    with pytest.raises(ValueError, match="--mask_threshold"):
        ExportArguments(mask_threshold=0.0)
    with pytest.raises(FileNotFoundError, match="--image_folder"):
        run_export(ExportArguments(image_folder="/nonexistent/folder", output_dir="/tmp/unused-export"), ModelConfig())


@pytest.mark.slow
def test_a_killed_export_resumes_without_duplicates(assets):
    root = assets["root"] / "kill_run"
    folder, completions_file, _ = _folder(root, 16)
    out = root / "out"
    command = [
        sys.executable,
        str(ROOT / "launch" / "export.py"),
        "--config",
        str(ROOT / "configs/eval/export_tiny.yaml"),
        "--model_name_or_path",
        str(assets["model"]),
        "--image_folder",
        str(folder),
        "--completions_file",
        str(completions_file),
        "--output_dir",
        str(out),
        "--batch_size",
        "1",
    ]
    jsonl = out / "proposals.jsonl"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (jsonl.is_file() and jsonl.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            assert process.poll() is None, "the export ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    done_before = jsonl.read_text().count("\n")
    assert 2 <= done_before < 16, "the kill came too late to test resuming"

    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    ids = [json.loads(line)["image_id"] for line in jsonl.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 16
    errors = [json.loads(line)["image_id"] for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == ["broken"]
    assert len(read_export(jsonl)) == 16
