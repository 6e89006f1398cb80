import io
import json

import pytest
from datasets import Dataset, Features, Image, Value, load_from_disk
from PIL import Image as PILImage
from trl.data_utils import prepare_multimodal_messages

from data_tools import SYSTEM_PROMPT, BadRowsError, generate_synthetic, load_source
from data_tools.convert import main as convert_main
from data_tools.loaders import read_records


def _save_png(path, size=(40, 20), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, color).save(path)
    return path


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def saliency_r1(tmp_path):
    _save_png(tmp_path / "img" / "a.png")
    records = [
        {"image": "a.png", "problem": "What is red?", "solution": "box", "bbox": "[0.1, 0.2, 0.5, 0.6]"},
        {"image": "a.png", "problem": "Where?", "solution": "left", "bbox": "[0.5, 0.2, 0.1, 0.6]"},  # swapped
        {"image": "gone.png", "problem": "Where?", "solution": "left", "bbox": "[0.1, 0.2, 0.5, 0.6]"},
    ]
    return _jsonl(tmp_path / "s.jsonl", records), tmp_path / "img"


def test_saliency_r1_from_jsonl_keeps_provenance_and_reports_bad_rows(saliency_r1):
    path, image_dir = saliency_r1
    data, report = load_source("saliency_r1", path, image_dir=image_dir, on_bad_row="skip")
    assert len(data) == 1
    row = data[0]
    assert row["bbox"] == [[0.1, 0.2, 0.5, 0.6]] and row["image"].size == (40, 20)
    assert (row["dataset"], row["question_id"]) == ("saliency_r1_8k", "saliency_r1_8k-train-000000")
    assert [(i.row_id, i.field) for i in report.rejected] == [
        ("saliency_r1_8k-train-000001", "bbox"),
        ("saliency_r1_8k-train-000002", "image"),
    ]
    with pytest.raises(BadRowsError, match="2 of 3 rows are bad"):
        load_source("saliency_r1", path, image_dir=image_dir)


def test_saliency_r1_from_a_saved_dataset_with_an_image_feature(tmp_path):
    buffer = io.BytesIO()
    PILImage.new("RGBA", (30, 30), (0, 0, 255, 128)).save(buffer, format="PNG")
    features = Features(
        {
            "image": Image(),
            "problem": Value("string"),
            "solution": Value("string"),
            "bbox": Value("string"),
            "question_id": Value("int64"),
        }
    )
    Dataset.from_dict(
        {
            "image": [{"bytes": buffer.getvalue(), "path": None}],
            "problem": ["Colour?"],
            "solution": ["blue"],
            "bbox": ["[0.0, 0.0, 1.0, 1.0]"],
            "question_id": [17],
        },
        features=features,
    ).save_to_disk(str(tmp_path / "ds"))
    data, report = load_source("saliency_r1", tmp_path / "ds", kind="eval")
    assert data[0]["question_id"] == "17" and data[0]["image"].mode == "RGB"
    assert data[0]["reasoning"] is None
    assert "RGBA" in report.notes[0].reason


def test_visual_cot_pixel_boxes_become_normalised(tmp_path):
    _save_png(tmp_path / "cot" / "gqa" / "1.jpg", size=(100, 50))
    _save_png(tmp_path / "cot" / "textvqa" / "2.jpg", size=(100, 50))
    records = [
        {
            "dataset": "gqa",
            "split": "train",
            "image": "1.jpg",
            "question": "What is on the left?",
            "answer": "a cup",
            "bboxs": [[10, 5, 30, 25], [50, 0, 100, 50]],
            "width": 100,
            "height": 50,
        },
        {
            "dataset": "textcap",
            "split": "train",
            "image": "2.jpg",
            "question": "What does it say?",
            "answer": "stop",
            "bboxs": [[0, 0, 50, 25]],
            "width": 100,
            "height": 50,
        },
        {
            "dataset": "gqa",
            "split": "train",
            "image": "1.jpg",
            "question": "Which?",
            "answer": "that",
            "bboxs": [[10, 5, 30, 25]],
            "width": 200,
            "height": 100,
        },  # size disagrees with the image
    ]
    data, report = load_source(
        "visual_cot", _jsonl(tmp_path / "v.jsonl", records), image_dir=tmp_path / "cot", on_bad_row="skip"
    )
    assert data["bbox"] == [[[0.1, 0.1, 0.3, 0.5], [0.5, 0.0, 1.0, 1.0]], [[0.0, 0.0, 0.5, 0.5]]]
    assert data["dataset"] == ["visual_cot/gqa", "visual_cot/textcap"]
    assert data["question_id"] == ["visual_cot-0", "visual_cot-1"]
    ((issue),) = report.rejected
    assert issue.field == "bbox" and "200x100" in issue.reason


def _think(messages):
    return messages[-1]["content"][0]["text"]


def test_llava_cot_tags_become_think_and_answer(tmp_path):
    _save_png(tmp_path / "img" / "x.png")
    gpt = (
        "<SUMMARY>I will look at the sign.</SUMMARY> <CAPTION>A red sign.</CAPTION> "
        "<REASONING>The sign is red.</REASONING> <CONCLUSION>red</CONCLUSION>"
    )
    records = [
        {
            "id": "a1",
            "image": "x.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the sign?"},
                {"from": "gpt", "value": gpt},
            ],
        },
        {
            "id": "a2",
            "image": "x.png",
            "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "no tags here"}],
        },
    ]
    data, report = load_source(
        "llava_cot", _jsonl(tmp_path / "l.jsonl", records), image_dir=tmp_path / "img", on_bad_row="skip"
    )
    (row,) = data
    system, user, _ = row["messages"]
    assert system["content"][0]["text"] == SYSTEM_PROMPT
    assert user["content"][1]["text"] == "What colour is the sign?"
    assert _think(row["messages"]) == ("<think>I will look at the sign.\n\nA red sign.\n\nThe sign is red.</think>red")
    assert row["question_id"] == "llava_cot-a1" and row["dataset"] == "llava_cot"
    ((issue),) = report.rejected
    assert (issue.row_id, issue.field) == ("llava_cot-a2", "solution") and "CONCLUSION" in issue.reason
    # TRL can fill the image placeholder of the converted conversation
    filled = prepare_multimodal_messages(row["messages"], images=row["images"])
    assert filled[1]["content"][0]["image"].size == (40, 20)


def test_mulberry_final_answer_marker_splits_reasoning(tmp_path):
    _save_png(tmp_path / "img" / "m.png")
    records = [
        {
            "messages": [
                {"role": "user", "content": "<image>How many apples?"},
                {"role": "assistant", "content": "### Step 1: Count them: 3.\n### The final answer is: 3"},
            ],
            "images": ["m.png"],
        },
        {"messages": [{"role": "user", "content": "<image>How many?"}], "images": ["m.png"]},
    ]
    (tmp_path / "m.json").write_text(json.dumps(records))
    data, report = load_source("mulberry", tmp_path / "m.json", image_dir=tmp_path / "img", on_bad_row="skip")
    (row,) = data
    assert _think(row["messages"]) == "<think>### Step 1: Count them: 3.</think>3"
    assert row["messages"][1]["content"][1]["text"] == "How many apples?"
    ((issue),) = report.rejected
    assert (issue.row_id, issue.field) == ("mulberry-1", "messages")


def test_convert_cli_skip_writes_data_and_report_error_writes_nothing(saliency_r1, tmp_path, capsys):
    path, image_dir = saliency_r1
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    args = [
        "--source",
        "saliency_r1",
        "--input",
        str(path),
        "--image_dir",
        str(image_dir),
        "--output_dir",
        str(out),
        "--report",
        str(report),
    ]
    assert convert_main(args + ["--on_bad_row", "skip"]) == 0
    assert len(load_from_disk(str(out))) == 1
    assert [json.loads(line)["field"] for line in report.read_text().splitlines()] == ["bbox", "image"]
    assert "3 rows: 1 kept, 2 rejected" in capsys.readouterr().out

    assert convert_main(args[:-4] + ["--output_dir", str(tmp_path / "out2"), "--report", str(report)]) == 1
    assert not (tmp_path / "out2").exists()
    assert "swapped corners" in capsys.readouterr().err
    assert len(report.read_text().splitlines()) == 2


def test_a_missing_split_of_a_saved_dataset_dict_is_named_with_the_ones_it_has(tmp_path):
    generate_synthetic(2, 2, 2, seed=0).save_to_disk(str(tmp_path / "data"))
    with pytest.raises(ValueError, match=r"no split 'caption'; it has \['eval', 'rl', 'sft'\].*--num_caption"):
        read_records(tmp_path / "data", "caption")


def test_splits_joined_with_a_plus_are_read_in_turn_each_row_with_its_own_columns(tmp_path):
    data = generate_synthetic(3, 2, 2, seed=0, num_multi_image=2)
    data.save_to_disk(str(tmp_path / "data"))
    same = read_records(tmp_path / "data", "rl+rl")  # same columns: one data set
    ids = {name: list(data[name]["question_id"]) for name in ("rl", "multi")}
    assert isinstance(same, Dataset) and list(same["question_id"]) == ids["rl"] * 2
    mixed = read_records(tmp_path / "data", "rl+multi")
    assert [row["question_id"] for row in mixed] == ids["rl"] + ids["multi"]
    assert "images" not in mixed[0] and "image" not in mixed[-1]
    rows, report = load_source("saliency_r1", tmp_path / "data", split="multi+rl", kind="rl")
    assert not report.issues and [len(images) for images in rows["images"]] == [2, 3, 1, 1]
    with pytest.raises(ValueError, match=r"no split 'clip'; it has"):
        read_records(tmp_path / "data", "rl+clip")
    with pytest.raises(ValueError, match=r"split 'rl\+': an empty split name"):
        read_records(tmp_path / "data", "rl+")
    _save_png(tmp_path / "a.png")
    file = _jsonl(tmp_path / "rows.jsonl", [{"image": "a.png", "problem": "?", "solution": "x", "bbox": "[]"}])
    with pytest.raises(ValueError, match="joining splits needs a save_to_disk folder or a hub data set, not a file"):
        read_records(file, "train+test")


def _broken_jsonl(path):
    good = {"image": "a.png", "problem": "What is red?", "solution": "box", "bbox": "[0.1, 0.2, 0.5, 0.6]"}
    lines = [
        b"\xef\xbb\xbf" + json.dumps(good).encode(),  # 1: a byte-order mark, allowed
        b'{"image": "a.png", "problem": "caf\xe9"}',  # 2: Latin-1, not UTF-8
        b'{"image": "a.png",',  # 3: cut off
        b"",  # 4: blank, not a record
        b'["a", "list"]',  # 5: not an object
        json.dumps({**good, "id": "second"}).encode(),  # 6
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_unreadable_jsonl_lines_are_named_by_number_in_both_modes(saliency_r1, tmp_path):
    _, image_dir = saliency_r1
    path = _broken_jsonl(tmp_path / "broken.jsonl")
    with pytest.raises(BadRowsError) as error:
        load_source("saliency_r1", path, image_dir=image_dir)
    message = str(error.value)
    assert "3 of 5 rows are bad" in message
    for expected in (
        "line 2, field 'line': not UTF-8",
        "line 3, field 'line': not JSON",
        "line 5, field 'line': a JSON list",
    ):
        assert expected in message
    data, report = load_source("saliency_r1", path, image_dir=image_dir, on_bad_row="skip")
    assert len(data) == 2 and report.num_kept == 2
    assert [issue.row_id for issue in report.rejected] == ["line 2", "line 3", "line 5"]


def test_a_missing_input_and_a_skip_run_that_keeps_nothing_are_errors(saliency_r1, tmp_path, capsys):
    _, image_dir = saliency_r1
    common = ["--source", "saliency_r1", "--image_dir", str(image_dir), "--output_dir", str(tmp_path / "out")]
    assert convert_main([*common, "--input", str(tmp_path / "nowhere.jsonl")]) == 2
    assert "--input:" in capsys.readouterr().err and not (tmp_path / "out").exists()
    only_bad = _jsonl(
        tmp_path / "bad.jsonl", [{"image": "gone.png", "problem": "?", "solution": "a", "bbox": "[0, 0, 1, 1]"}]
    )
    assert convert_main([*common, "--input", str(only_bad), "--on_bad_row", "skip"]) == 1
    assert "no row kept" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_saliency_r1_layout_keeps_a_decoy_benchmarks_columns(tmp_path):
    from data_tools.synthetic import DECOY_QUESTION_TYPES, SyntheticConfig

    config = SyntheticConfig(decoy=True, question_types=DECOY_QUESTION_TYPES)
    generate_synthetic(2, 2, 3, seed=3, config=config).save_to_disk(str(tmp_path / "d"))
    rows, report = load_source("saliency_r1", str(tmp_path / "d"), split="conflict", kind="eval")
    assert not report.issues
    written = load_from_disk(str(tmp_path / "d"))["conflict"]
    assert rows["decoy_answer"] == written["decoy_answer"] and rows["decoy_bbox"] == written["decoy_bbox"]
    assert all(rows["decoy_answer"])
