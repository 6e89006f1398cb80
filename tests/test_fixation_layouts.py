"""Image ids that meet: the export's id rule against fixation files laid out as SALICON, OSIE, AiR, MIT1003 ship them.

Each fixture is written into ``tmp_path`` with the public release's own folder and file names (tiny images, a few
subjects). The export side is the toolkit's own: `evaluation.export.folder_items` (or the data set items for AiR's
question-driven records) and `export_record`, read back by the predictor's `read_export`; the join is
`FixationDataset`, which stops with "fixation records have no exported proposals" when the ids do not meet.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from evaluation import ExportArguments
from evaluation.export import (
    ExportItem,
    _append,
    _completions,
    _dataset_items,
    _open,
    export_record,
    finished_ids,
    folder_items,
)
from predictor.config import PredictorDataConfig
from predictor.dataset import FixationDataset
from predictor.fixations import (
    fixation_map,
    read_air_fixations,
    read_fixations,
    read_mit1003_fixations,
    read_osie_fixations,
    read_salicon_fixations,
)
from predictor.image_ids import exported_image_id, image_id
from predictor.proposals import read_export

QUESTION = "What objects are in the image, and where are they?"


def _image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A small random RGB image at ``path`` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _no_map_completion() -> SimpleNamespace:
    """What the tracer returns for a completion without the reasoning format: no map, so no proposals."""
    return SimpleNamespace(text="a red circle", maps=SimpleNamespace(has_map=False, reason="no <think> block"))


def _export(items: list[ExportItem], out: Path, rows=None) -> Path:
    """Write ``proposals.jsonl`` for ``items`` with the export's own record writer; return its path."""
    for folder in ("masks", "images"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    jsonl = out / "proposals.jsonl"
    args = ExportArguments(output_dir=str(out))
    for item in items:
        image, image_path = _open(item, out, rows)
        _append(jsonl, export_record(item, image, _no_map_completion(), None, args, out, image_path))
    return jsonl


def _named(path: Path) -> str:
    """A regular expression matching ``path`` literally (errors must name the file)."""
    return re.escape(str(path))


def _meet(records, jsonl: Path) -> FixationDataset:
    """Join fixation records with the export as the predictor does (ids and image sizes must agree)."""
    return FixationDataset(records, read_export(jsonl), image_size=16)


# --- the rule itself ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("COCO_val2014_000000000000.jpg", "COCO_val2014_000000000000"),
        ("i05june05_static_street_boston_p1010764.jpeg", "i05june05_static_street_boston_p1010764"),
        ("sub/img01.png", "sub/img01"),
        (Path("sub") / "deeper" / "a.b.JPG", "sub/deeper/a.b"),
        ("no_extension", "no_extension"),
    ],
)
def test_image_id_is_the_relative_path_without_the_extension(path, expected):
    assert image_id(path) == expected


@pytest.mark.parametrize("path", ["/abs/a.jpg", "../a.jpg", "sub/../../a.jpg", ""])
def test_image_id_refuses_paths_that_leave_the_folder(path):
    with pytest.raises(ValueError, match="not a file path relative to the image folder"):
        image_id(path)


def test_export_record_keeps_the_original_file_name(tmp_path):
    folder = tmp_path / "my_images"
    _image(folder / "sub" / "img01.png", (20, 16))
    _image(folder / "COCO_val2014_000000000000.jpg", (24, 18), seed=1)
    items = folder_items(folder, QUESTION)
    assert [(i.image_id, i.file_name) for i in items] == [
        ("COCO_val2014_000000000000", "COCO_val2014_000000000000.jpg"),
        ("sub/img01", "sub/img01.png"),
    ]
    jsonl = _export(items, tmp_path / "out")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(x["image_id"], x["file_name"], x["width"], x["height"]) for x in lines] == [
        ("COCO_val2014_000000000000", "COCO_val2014_000000000000.jpg", 24, 18),
        ("sub/img01", "sub/img01.png", 20, 16),
    ]
    for line in lines:  # the file name leads back to the very file the record was made from
        assert (tmp_path / "out" / line["image_path"]).resolve() == (folder / line["file_name"]).resolve()
    assert sorted(read_export(jsonl)) == ["COCO_val2014_000000000000", "sub/img01"]


def test_two_files_with_one_id_stop_the_export_naming_both(tmp_path):
    _image(tmp_path / "a.jpg", (16, 16))
    _image(tmp_path / "a.png", (16, 16))
    with pytest.raises(ValueError, match=r"'a.jpg' and 'a.png' both have the image id 'a'"):
        folder_items(tmp_path, QUESTION)


def test_older_exports_resume_under_the_new_ids(tmp_path):
    jsonl = tmp_path / "proposals.jsonl"
    old = [
        {"image_id": "COCO_val2014_000000000000.jpg", "image_path": "../imgs/COCO_val2014_000000000000.jpg"},
        {"image_id": "sub/img01.png", "image_path": "../imgs/sub/img01.png"},
        {"image_id": "q.7.png", "image_path": "images/q.7.png-0a1b2c3d-00.png"},  # a data set row: id kept
        {"image_id": "1001", "file_name": "1001.jpg", "image_path": "../imgs/1001.jpg"},  # written under the rule
    ]
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in old))
    assert finished_ids(jsonl) == {"COCO_val2014_000000000000", "sub/img01", "q.7.png", "1001"}
    assert [exported_image_id(x) for x in old] == ["COCO_val2014_000000000000", "sub/img01", "q.7.png", "1001"]


def test_an_older_export_is_read_under_the_new_ids_and_meets_the_readers(tmp_path):
    paths = _salicon(tmp_path / "salicon")
    jsonl = _export(folder_items(paths["images"], QUESTION), tmp_path / "export")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for line in lines:  # as written before the id rule: the file name as id, no file_name field
        line["image_id"] = line.pop("file_name")
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert sorted(read_export(jsonl)) == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    _meet(read_salicon_fixations(paths["json"], paths["images"]), jsonl)


def test_a_completions_file_keyed_by_file_name_is_still_read(tmp_path):
    _image(tmp_path / "imgs" / "b.png", (16, 16))
    items = folder_items(tmp_path / "imgs", QUESTION)
    by_id, by_name, neither = (tmp_path / f"{n}.jsonl" for n in ("id", "name", "neither"))
    by_id.write_text(json.dumps({"question_id": "b", "completion": "<think>x</think>by id"}) + "\n")
    by_name.write_text(json.dumps({"question_id": "b.png", "completion": "<think>x</think>by name"}) + "\n")
    neither.write_text(json.dumps({"question_id": "c", "completion": "<think>x</think>c"}) + "\n")
    assert _completions(str(by_id), items) == ["<think>x</think>by id"]
    assert _completions(str(by_name), items) == ["<think>x</think>by name"]
    with pytest.raises(ValueError, match=r"no completion for 1 rows, e.g. question_id 'b'"):
        _completions(str(neither), items)


# --- SALICON --------------------------------------------------------------------------------------------------------


def _salicon(root: Path) -> dict[str, Path]:
    """SALICON: images/{train,val}/COCO_*.jpg, fixations/fixations_{train,val}2014.json, maps/train/COCO_*.png."""
    sizes = {"COCO_train2014_000000000009": (32, 24), "COCO_train2014_000000000025": (28, 20)}
    images = root / "images" / "train"
    for i, (stem, size) in enumerate(sizes.items()):
        _image(images / f"{stem}.jpg", size, seed=i)
    _image(root / "images" / "val" / "COCO_val2014_000000000042.jpg", (30, 22), seed=9)  # another split's image
    data = {
        "info": {"description": "SALICON fixations"},
        "type": "fixations",
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 32, "height": 24},
            {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "width": 28, "height": 20},
        ],
        "annotations": [
            {"id": 1, "image_id": 9, "worker_id": 3, "fixations": [[1, 1], [24, 32], [10, 5]]},
            {"id": 2, "image_id": 9, "worker_id": 4, "fixations": [[12, 16]]},
            {"id": 3, "image_id": 25, "worker_id": 3, "fixations": [[20, 28], [2, 3]]},
        ],
    }
    (root / "fixations").mkdir()
    (root / "fixations" / "fixations_train2014.json").write_text(json.dumps(data))
    (root / "maps" / "train").mkdir(parents=True)
    for stem, (w, h) in sizes.items():
        Image.fromarray(np.full((h, w), 100, dtype=np.uint8)).save(root / "maps" / "train" / f"{stem}.png")
    return {"images": images, "json": root / "fixations" / "fixations_train2014.json", "maps": root / "maps" / "train"}


def test_salicon_json_keys_meet_the_export_of_its_image_folder(tmp_path):
    paths = _salicon(tmp_path / "salicon")
    items = folder_items(paths["images"], QUESTION)
    records = read_fixations("salicon", paths["json"], paths["images"], maps_dir=paths["maps"])
    expected = ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    assert [i.image_id for i in items] == expected
    assert sorted(r.key for r in records) == expected
    assert all(r.image_id == r.key and r.map_path == paths["maps"] / f"{r.key}.png" for r in records)
    by_key = {r.key: r for r in records}
    fmap = fixation_map(by_key["COCO_train2014_000000000009"].points, 24, 32)
    assert {tuple(ix) for ix in np.argwhere(fmap)} == {(0, 0), (23, 31), (9, 4), (11, 15)}  # 1-based (row, col)
    dataset = _meet(records, _export(items, tmp_path / "export"))
    assert sorted(r.key for r in dataset.records) == expected


def test_salicon_mat_folder_keys_meet_the_export(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    paths = _salicon(tmp_path / "salicon")
    folder = tmp_path / "salicon" / "fixations" / "train"  # the older release: one .mat per image
    folder.mkdir()
    for stem, (w, h) in {"COCO_train2014_000000000009": (32, 24), "COCO_train2014_000000000025": (28, 20)}.items():
        gaze = np.zeros((2, 1), dtype=[("location", "O"), ("timestamp", "O"), ("fixations", "O")])
        gaze[0, 0] = (np.array([[1, 1]]), np.array([[0]]), np.array([[3, 2], [w, h]]))  # [x, y], 1-based
        gaze[1, 0] = (np.array([[1, 1]]), np.array([[0]]), np.array([[1, 1]]))
        savemat(folder / f"{stem}.mat", {"image": stem, "resolution": np.array([[h, w]]), "gaze": gaze})
    records = read_salicon_fixations(folder, paths["images"], maps_dir=paths["maps"])
    assert sorted(r.key for r in records) == [i.image_id for i in folder_items(paths["images"], QUESTION)]
    _meet(records, _export(folder_items(paths["images"], QUESTION), tmp_path / "export"))


def test_the_whole_image_tree_as_export_folder_does_not_meet_and_says_so(tmp_path):
    """Exporting ``images/`` instead of ``images/train`` gives ``train/COCO_...`` ids: the join names the missing id."""
    paths = _salicon(tmp_path / "salicon")
    items = folder_items(tmp_path / "salicon" / "images", QUESTION)
    assert [i.image_id for i in items][:1] == ["train/COCO_train2014_000000000009"]
    records = read_salicon_fixations(paths["json"], paths["images"])
    with pytest.raises(ValueError, match=r"no exported proposals \(no image_id 'COCO_train2014_000000000009'"):
        _meet(records, _export(items, tmp_path / "export"))


# --- OSIE -----------------------------------------------------------------------------------------------------------


def _osie(root: Path) -> dict[str, Path]:
    """OSIE: data/stimuli/1001.jpg ... and the per-subject fixation JSON made from data/eye/fixations.mat."""
    stimuli = root / "data" / "stimuli"
    for i, name in enumerate(("1001.jpg", "1002.jpg", "1700.jpg")):
        _image(stimuli / name, (40, 30), seed=i)
    rows = []
    for subject in (1, 2):
        for name, x, y in (("1001.jpg", 10.5, 20.5), ("1002.jpg", 39.0, 1.0), ("1700.jpg", 3.0, 29.5)):
            rows.append(
                {"name": name, "subject": subject, "split": "train", "X": [x, 20.0], "Y": [y, 15.0], "T": [250, 300]}
            )
    path = root / "data" / "osie_fixations_train.json"
    path.write_text(json.dumps(rows))
    return {"images": stimuli, "json": path}


def test_osie_keys_meet_the_export_of_its_stimuli(tmp_path):
    paths = _osie(tmp_path / "osie")
    items = folder_items(paths["images"], QUESTION)
    records = read_osie_fixations(paths["json"], paths["images"])
    assert [i.image_id for i in items] == sorted(r.key for r in records) == ["1001", "1002", "1700"]
    assert all(r.points.shape == (4, 2) and (r.width, r.height) == (40, 30) for r in records)
    _meet(records, _export(items, tmp_path / "export"))


# --- AiR ------------------------------------------------------------------------------------------------------------


def _air(root: Path) -> dict[str, Path]:
    """AiR: <root>/stimuli/<GQA image>.jpg and <root>/fixations/AiR_fixations_{train,validation,test}.json."""
    stimuli = root / "stimuli"
    sizes = {"2354786.jpg": (40, 30), "n161313.jpg": (36, 28)}
    for i, (name, size) in enumerate(sizes.items()):
        _image(stimuli / name, size, seed=i)
    questions = [("201307251", "2354786.jpg", "Is the sky blue?"), ("05451384", "n161313.jpg", "What is on the table?")]
    questions.append(("201640614", "2354786.jpg", "Which color is the car?"))  # a second question on one image
    rows = []
    for qid, name, question in questions:
        w, h = sizes[name]
        for subject in (0, 1):
            rows.append(
                {
                    "question_id": qid,
                    "image_id": name,
                    "question": question,
                    "subject_idx": subject,
                    "width": w,
                    "height": h,
                    "X": [w / 2, 3.0],
                    "Y": [h / 2, 4.0],
                    "T_start": [0, 250],
                    "T_end": [240, 500],
                    "length": 2,
                    "answer": "yes",
                    "subject_answer": "yes",
                }
            )
    (root / "fixations").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (root / "fixations" / f"AiR_fixations_{split}.json").write_text(json.dumps(rows if split == "train" else []))
    data = root / "air_questions.jsonl"  # AiR's questions as a data set for the export (saliency_r1 layout)
    data.write_text(
        "".join(
            json.dumps(
                {"question_id": q, "image": name, "problem": text, "solution": "yes", "bbox": "[0.1, 0.1, 0.9, 0.9]"}
            )
            + "\n"
            for q, name, text in questions
        )
    )
    return {"images": stimuli, "json": root / "fixations" / "AiR_fixations_train.json", "data": data}


def test_air_keys_meet_the_export_of_its_questions_and_its_stimuli_meet_the_folder_rule(tmp_path):
    paths = _air(tmp_path / "air")
    records = read_air_fixations(paths["json"], paths["images"])
    assert sorted(r.key for r in records) == ["05451384", "201307251", "201640614"]
    assert {r.key: r.image_id for r in records} == {
        "201307251": "2354786",
        "201640614": "2354786",
        "05451384": "n161313",
    }
    assert {r.image_id for r in records} == {i.image_id for i in folder_items(paths["images"], QUESTION)}

    out = tmp_path / "export"
    out.mkdir()
    args = ExportArguments(dataset_name=str(paths["data"]), image_dir=str(paths["images"]), output_dir=str(out))
    rows, items = _dataset_items(args, out / "errors.jsonl", set())
    assert sorted(i.image_id for i in items) == sorted(r.key for r in records)
    dataset = _meet(records, _export(items, out, rows))
    assert len(dataset) == 3
    assert all(
        line["file_name"] is None for line in map(json.loads, (out / "proposals.jsonl").read_text().splitlines())
    )


# --- MIT1003 --------------------------------------------------------------------------------------------------------

MIT_NAMES = ("i05june05_static_street_boston_p1010764", "i102423191", "istatic_submitted_tilke_p1010780")


def _fix_pts(path: Path, size: tuple[int, int], marks: list[tuple[int, int]]) -> None:
    """A ``<name>_fixPts.jpg``: black, 255 at each fixated (row, col), saved as JPEG (artefacts and all)."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    for r, c in marks:
        pixels[r, c] = 255
    Image.fromarray(pixels).save(path, quality=75)


def _mit1003(root: Path) -> dict[str, Path]:
    """MIT1003: ALLSTIMULI/<name>.jpeg, ALLFIXATIONMAPS/<name>_fixMap.jpg and <name>_fixPts.jpg."""
    stimuli, maps = root / "ALLSTIMULI", root / "ALLFIXATIONMAPS"
    maps.mkdir(parents=True)
    marks = {}
    for i, name in enumerate(MIT_NAMES):
        size = (48 + 8 * i, 36)
        _image(stimuli / f"{name}.jpeg", size, seed=i)
        marks[name] = [(3, 5), (20, 40 + i), (35, size[0] - 1), (10, 11 + i)]
        _fix_pts(maps / f"{name}_fixPts.jpg", size, marks[name])
        blurred = np.random.default_rng(i).integers(0, 256, (size[1], size[0]), dtype=np.uint8)
        Image.fromarray(blurred).save(maps / f"{name}_fixMap.jpg")
    return {"images": stimuli, "maps": maps, "marks": marks}


def test_mit1003_keys_meet_the_export_of_allstimuli(tmp_path):
    paths = _mit1003(tmp_path / "MIT1003")
    items = folder_items(paths["images"], QUESTION)
    records = read_fixations("mit1003", paths["maps"], paths["images"], maps_dir=paths["maps"])
    assert [i.image_id for i in items] == sorted(r.key for r in records) == sorted(MIT_NAMES)
    assert [i.file_name for i in items] == [f"{n}.jpeg" for n in sorted(MIT_NAMES)]
    for r in records:
        assert r.image_path == paths["images"] / f"{r.key}.jpeg"
        assert r.map_path == paths["maps"] / f"{r.key}_fixMap.jpg"
        # exactly the marked pixels (the JPEG's faint halo stays under the threshold), at pixel centres
        expected = sorted((c + 0.5, row + 0.5) for row, c in paths["marks"][r.key])
        assert sorted(map(tuple, r.points.tolist())) == expected
    dataset = _meet(records, _export(items, tmp_path / "export"))
    density = dataset.full_density(0)  # the fixMap is read as the ground-truth density
    assert density.shape == (records[0].height, records[0].width) and 0 < density.max() <= 1


def test_mit1003_is_a_fixation_format_of_the_predictor_cli():
    from trl import TrlParser

    (config,) = TrlParser((PredictorDataConfig,)).parse_args_and_config(["--fixation_format", "mit1003"])
    assert config.fixation_format == "mit1003"
    with pytest.raises(SystemExit):
        TrlParser((PredictorDataConfig,)).parse_args_and_config(["--fixation_format", "mit300"])


# --- malformed files are named --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["air", "osie", "salicon"])
def test_a_cut_off_json_fixation_file_is_named(tmp_path, layout):
    build = {"air": _air, "osie": _osie, "salicon": _salicon}[layout]
    paths = build(tmp_path / layout)
    text = paths["json"].read_text()
    paths["json"].write_text(text[: len(text) // 2])
    with pytest.raises(
        ValueError, match=rf"fixation file {_named(paths['json'])}: not valid JSON \(.* at line 1 column"
    ):
        read_fixations(layout, paths["json"], paths["images"])


def test_salicon_json_with_wrong_types_is_named(tmp_path):
    paths = _salicon(tmp_path / "salicon")
    original = paths["json"].read_text()
    data = json.loads(original)
    data["images"] = {"9": data["images"][0]}
    paths["json"].write_text(json.dumps(data))
    with pytest.raises(TypeError, match=rf"{_named(paths['json'])} field 'images': expected a list, got dict"):
        read_salicon_fixations(paths["json"], paths["images"])
    data = json.loads(original)
    data["images"][0]["file_name"] = "/abs/COCO_train2014_000000000009.jpg"
    paths["json"].write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=rf"{_named(paths['json'])} image 9 field 'file_name': .*not a file path relative"
    ):
        read_salicon_fixations(paths["json"], paths["images"])


def test_a_broken_salicon_mat_file_is_named(tmp_path):
    pytest.importorskip("scipy.io")
    folder = tmp_path / "fixations" / "train"
    folder.mkdir(parents=True)
    (folder / "COCO_train2014_000000000009.mat").write_bytes(b"MATLAB 5.0 MAT-file, cut off")
    with pytest.raises(ValueError, match=r"COCO_train2014_000000000009.mat: not a readable MATLAB .mat file"):
        read_salicon_fixations(folder, tmp_path)


def test_an_unreadable_osie_stimulus_is_named(tmp_path):
    paths = _osie(tmp_path / "osie")
    (paths["images"] / "1002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"record name '1002.jpg': stimulus .*1002.jpg is not a readable image"):
        read_osie_fixations(paths["json"], paths["images"])


def test_malformed_mit1003_files_are_named(tmp_path):
    paths = _mit1003(tmp_path / "MIT1003")
    name = MIT_NAMES[1]
    points = paths["maps"] / f"{name}_fixPts.jpg"
    points.write_bytes(b"\xff\xd8 cut off")
    with pytest.raises(ValueError, match=rf"{_named(points)}: not a readable image"):
        read_mit1003_fixations(paths["maps"], paths["images"])
    _fix_pts(points, (10, 10), [(1, 1)])
    with pytest.raises(ValueError, match=rf"{_named(points)}: 10x10 fixation points for the 56x36 stimulus"):
        read_mit1003_fixations(paths["maps"], paths["images"])
    _fix_pts(points, (56, 36), [])
    with pytest.raises(ValueError, match=rf"{_named(points)}: no fixation \(no pixel at or above 128\)"):
        read_mit1003_fixations(paths["maps"], paths["images"])
    _fix_pts(points, (56, 36), [(1, 1)])
    (paths["images"] / f"{name}.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{_named(points)}: no stimulus .*{name}.jpeg"):
        read_mit1003_fixations(paths["maps"], paths["images"])
    _image(paths["images"] / f"{name}.jpeg", (56, 36))
    fix_map = paths["maps"] / f"{name}_fixMap.jpg"
    Image.new("RGB", (56, 36)).save(fix_map)
    with pytest.raises(
        ValueError, match=rf"fixation map {_named(fix_map)}: 56x36 mode 'RGB', expected a 56x36 greyscale"
    ):
        read_mit1003_fixations(paths["maps"], paths["images"], maps_dir=paths["maps"])
    with pytest.raises(FileNotFoundError, match="expected MIT1003's ALLFIXATIONMAPS folder"):
        read_mit1003_fixations(paths["maps"] / "missing", paths["images"])
