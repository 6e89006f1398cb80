"""Fixation readers (AiR, OSIE, SALICON json/.mat), fixation maps, the export reader and the dataset."""

import json

import numpy as np
import pytest
from PIL import Image

from predictor import (
    ExportRecord,
    FixationDataset,
    Proposal,
    collate,
    density_map,
    fixation_map,
    read_air_fixations,
    read_export,
    read_osie_fixations,
    read_salicon_fixations,
    write_export,
)


def _air_rows():
    return [
        {
            "question_id": "q1",
            "image_id": "a.jpg",
            "subject": "s1",
            "width": 40,
            "height": 30,
            "X": [1.5, 10.0],
            "Y": [2.5, 20.0],
            "T_start": [0, 100],
            "T_end": [90, 300],
            "length": 2,
            "split": "train",
        },
        {
            "question_id": "q1",
            "image_id": "a.jpg",
            "subject": "s2",
            "width": 40,
            "height": 30,
            "X": [39.0],
            "Y": [29.0],
            "length": 1,
            "split": "train",
        },
        {
            "question_id": "q2",
            "image_id": "a.jpg",
            "subject": "s1",
            "width": 40,
            "height": 30,
            "X": [5.0],
            "Y": [5.0],
            "length": 1,
            "split": "train",
        },
    ]


def test_air_reader_merges_subjects_per_question(tmp_path):
    path = tmp_path / "AiR_fixations_train.json"
    path.write_text(json.dumps(_air_rows()))
    records = {r.key: r for r in read_air_fixations(path, tmp_path / "stimuli")}
    assert sorted(records) == ["q1", "q2"]
    q1 = records["q1"]
    assert (q1.width, q1.height, q1.image_path) == (40, 30, tmp_path / "stimuli" / "a.jpg")
    np.testing.assert_allclose(q1.points, [[1.5, 2.5], [10.0, 20.0], [39.0, 29.0]])


def test_air_reader_names_bad_records(tmp_path):
    rows = _air_rows()
    rows[1]["Y"] = [29.0, 3.0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"record 1: fields 'X' and 'Y' have different lengths"):
        read_air_fixations(path, tmp_path)
    rows = _air_rows()
    del rows[2]["width"]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"record 2: missing field 'width'"):
        read_air_fixations(path, tmp_path)


def test_out_of_image_fixations_error_or_drop(tmp_path):
    rows = _air_rows()
    rows[0]["X"] = [45.0, 10.0]
    path = tmp_path / "f.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"'q1'.*outside the 40x30 image.*--on_out_of_bounds drop"):
        read_air_fixations(path, tmp_path)
    q1 = {r.key: r for r in read_air_fixations(path, tmp_path, on_out_of_bounds="drop")}["q1"]
    np.testing.assert_allclose(q1.points, [[10.0, 20.0], [39.0, 29.0]])


def test_osie_reader_reads_size_from_the_stimulus(tmp_path):
    Image.new("RGB", (80, 60)).save(tmp_path / "1001.jpg")
    rows = [
        {"name": "1001.jpg", "subject": 1, "X": [10, 20], "Y": [5, 6], "T": [200, 300], "length": 2},
        {"name": "1001.jpg", "subject": 2, "X": [70], "Y": [50], "T": [250], "length": 1},
    ]
    path = tmp_path / "osie_fixations_train.json"
    path.write_text(json.dumps(rows))
    (rec,) = read_osie_fixations(path, tmp_path)
    assert (rec.key, rec.width, rec.height) == ("1001", 80, 60)
    assert rec.points.shape == (3, 2)
    rows[0]["name"] = "missing.jpg"
    path.write_text(json.dumps(rows))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_osie_fixations(path, tmp_path)


def test_salicon_json_fixations_are_one_based_row_col(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 6, "height": 4}],
        "annotations": [
            {"image_id": 7, "worker_id": 1, "fixations": [[1, 1], [4, 6]]},
            {"image_id": 7, "worker_id": 2, "fixations": [[2, 3]]},
        ],
    }
    path = tmp_path / "fixations_val2014.json"
    path.write_text(json.dumps(data))
    (rec,) = read_salicon_fixations(path, tmp_path)
    assert rec.key == "COCO_val2014_000000000007"
    fmap = fixation_map(rec.points, rec.height, rec.width)
    assert {tuple(ix) for ix in np.argwhere(fmap)} == {(0, 0), (3, 5), (1, 2)}  # (row - 1, col - 1)


def test_salicon_mat_folder_and_fixation_maps(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    gaze = np.zeros((2, 1), dtype=[("location", "O"), ("timestamp", "O"), ("fixations", "O")])
    gaze[0, 0] = (np.array([[1, 1]]), np.array([[0]]), np.array([[3, 2], [6, 4]]))  # MATLAB [x, y], 1-based
    gaze[1, 0] = (np.array([[1, 1]]), np.array([[0]]), np.array([[1, 1]]))
    (tmp_path / "fix").mkdir()
    savemat(
        tmp_path / "fix" / "COCO_train2014_000000000009.mat",
        {"image": "COCO_train2014_000000000009", "resolution": np.array([[4, 6]]), "gaze": gaze},
    )
    (tmp_path / "maps").mkdir()
    Image.fromarray(np.full((4, 6), 128, dtype=np.uint8)).save(tmp_path / "maps" / "COCO_train2014_000000000009.png")
    (rec,) = read_salicon_fixations(tmp_path / "fix", tmp_path, maps_dir=tmp_path / "maps")
    assert (rec.width, rec.height) == (6, 4)
    assert {tuple(ix) for ix in np.argwhere(fixation_map(rec.points, 4, 6))} == {(1, 2), (3, 5), (0, 0)}
    assert rec.map_path == tmp_path / "maps" / "COCO_train2014_000000000009.png"
    with pytest.raises(FileNotFoundError, match="no fixation map"):
        read_salicon_fixations(tmp_path / "fix", tmp_path, maps_dir=tmp_path)


def test_density_map_is_a_sum_of_gaussians_at_pixel_centres():
    d = density_map(np.array([[2.5, 1.5]]), 4, 5, sigma=1.0)
    assert d[1, 2] == pytest.approx(1.0)
    assert d[1, 3] == pytest.approx(np.exp(-0.5)) and d[1, 1] == pytest.approx(np.exp(-0.5))
    assert d[3, 2] == pytest.approx(np.exp(-2.0))


def _write_export(tmp_path, boxes=((0.0, 0.0, 0.5, 0.5),)):
    Image.new("RGB", (40, 30), (255, 255, 255)).save(tmp_path / "a.jpg")
    props = []
    for j, box in enumerate(boxes):
        mask = np.zeros((30, 40), dtype=np.uint8)
        mask[:15, :20] = 255
        Image.fromarray(mask).save(tmp_path / f"m{j}.png")
        props.append(Proposal(f"thing {j}", f"because {j}", tmp_path / f"m{j}.png", box, 0.5 + 0.1 * j))
    path = tmp_path / "export.jsonl"
    write_export([ExportRecord("q1", tmp_path / "a.jpg", 40, 30, "thinking", "yes", props)], path)
    return path


def test_export_roundtrip_and_mask_loading(tmp_path):
    path = _write_export(tmp_path, boxes=((0.0, 0.0, 0.5, 0.5), (0.1, 0.1, 0.9, 0.9)))
    line = json.loads(path.read_text())
    assert line["proposals"][0]["mask_path"] == "m0.png" and line["image_path"] == "a.jpg"
    rec = read_export(path)["q1"]
    assert [p.phrase for p in rec.proposals] == ["thing 0", "thing 1"]
    mask = rec.load_mask(0)
    assert mask.shape == (30, 40) and mask[0, 0] == 1.0 and mask[20, 30] == 0.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(box=[0.5, 0.1, 0.2, 0.9]), r"line 1 proposals\[0\] field 'box'"),
        (lambda p: p.update(score=1.5), r"field 'score'.*not in \[0, 1\]"),
        (lambda p: p.update(mask_path="nope.png"), r"field 'mask_path'.*nope.png"),
        (lambda p: p.pop("reason"), r"missing field 'reason'"),
    ],
)
def test_export_reader_names_line_and_field(tmp_path, edit, message):
    path = _write_export(tmp_path)
    line = json.loads(path.read_text())
    edit(line["proposals"][0])
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_export(path)


def test_export_reader_rejects_duplicates_and_wrong_mask_size(tmp_path):
    path = _write_export(tmp_path)
    text = path.read_text()
    path.write_text(text + text)
    with pytest.raises(ValueError, match="line 2: duplicate image_id 'q1'"):
        read_export(path)
    path.write_text(text)
    Image.new("L", (10, 10)).save(tmp_path / "m0.png")
    with pytest.raises(ValueError, match="m0.png is 10x10, expected 40x30"):
        read_export(path)["q1"].load_mask(0)


def test_dataset_items_and_collate(tmp_path, caplog):
    export = read_export(_write_export(tmp_path, boxes=((0.0, 0.0, 0.5, 0.5), (0.1, 0.1, 0.9, 0.9))))
    rows = _air_rows()[:2]
    (tmp_path / "f.json").write_text(json.dumps(rows))
    records = read_air_fixations(tmp_path / "f.json", tmp_path)
    ds = FixationDataset(records, export, image_size=16, max_proposals=1)
    assert "more than --max_proposals 1" in caplog.text
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["masks"].shape == (1, 16, 16)
    assert item["scores"].tolist() == [pytest.approx(0.6)]  # highest exported score kept first
    assert ds.proposal_order(0) == [1]
    assert item["fixations"].sum() == 3 and item["density"].max() > 0
    batch = collate([item, FixationDataset(records, None, 16)[0]])
    assert batch["masks"].shape == (2, 1, 16, 16) and batch["valid"].tolist() == [[True], [False]]
    rows[0]["question_id"] = rows[1]["question_id"] = "q9"
    (tmp_path / "f.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="no image_id 'q9'"):
        FixationDataset(read_air_fixations(tmp_path / "f.json", tmp_path), export, 16)
