"""SPEC section 5's held-out split: `python -m data_tools.convert --num_heldout N --heldout_seed S`."""

from __future__ import annotations

import json

import pytest
from datasets import DatasetDict, load_from_disk
from PIL import Image

from data_tools import generate_split
from data_tools.convert import hold_out
from data_tools.convert import main as convert
from evaluation import EvalArguments
from evaluation.evaluate import load_rows
from rl import load_grpo_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("heldout") / "data"
    DatasetDict({"rl": generate_split("rl", 24, seed=0)}).save_to_disk(str(path))
    return path


def split(source, out, *flags: str) -> int:
    return convert(
        ["--source", "saliency_r1", "--input", str(source), "--split", "rl", "--output_dir", str(out), *flags]
    )


def test_the_split_is_drawn_by_seed_and_read_by_the_eval_launcher_and_grpo(synthetic, tmp_path):
    assert split(synthetic, tmp_path / "a", "--num_heldout", "5") == 0
    assert split(synthetic, tmp_path / "b", "--num_heldout", "5", "--heldout_seed", "42") == 0
    assert split(synthetic, tmp_path / "c", "--num_heldout", "5", "--heldout_seed", "7") == 0
    a, b, c = (load_from_disk(str(tmp_path / name)) for name in "abc")
    source = load_from_disk(str(synthetic))["rl"]
    every = list(source["question_id"])
    ids = {name: list(a[name]["question_id"]) for name in ("train", "eval")}

    assert isinstance(a, DatasetDict) and (len(a["train"]), len(a["eval"])) == (19, 5)
    assert ids["eval"] == list(b["eval"]["question_id"]) != list(c["eval"]["question_id"])  # default seed 42
    assert sorted(ids["train"] + ids["eval"]) == sorted(every)
    for name in ("train", "eval"):  # both in the input's order
        assert ids[name] == [q for q in every if q in set(ids[name])]
    expected = source.train_test_split(test_size=5, seed=42)["test"]["question_id"]
    assert sorted(ids["eval"]) == sorted(expected)
    record = json.loads((tmp_path / "a" / "heldout.json").read_text())
    assert (record["num_heldout"], record["heldout_seed"]) == (5, 42)
    assert record["eval_question_ids"] == ids["eval"]

    rows, _ = load_rows(EvalArguments(dataset_name=str(tmp_path / "a"), dataset_test_split="eval"))
    assert list(rows["question_id"]) == ids["eval"]
    assert list(load_grpo_dataset(str(tmp_path / "a"), split="train")["question_id"]) == ids["train"]
    image = rows[0]["image"]
    assert image.size == source[every.index(rows[0]["question_id"])]["image"].size  # images are not re-sized


def test_without_the_flag_one_split_is_saved_as_before(synthetic, tmp_path):
    assert split(synthetic, tmp_path / "one") == 0
    assert len(load_from_disk(str(tmp_path / "one"))) == 24
    assert not (tmp_path / "one" / "heldout.json").exists()


def test_too_many_held_out_rows_are_refused_by_flag_before_writing(synthetic, tmp_path, capsys):
    assert split(synthetic, tmp_path / "out", "--num_heldout", "24") == 2
    assert "--num_heldout 24: choose between 1 and 23 for the 24 kept rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    for flag in ("--num_heldout", "--heldout_seed"):
        with pytest.raises(SystemExit):
            split(synthetic, tmp_path / "out", flag, "-1")
        assert f"{flag} must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--num_heldout 0: choose between 1 and 23"):
        hold_out(load_from_disk(str(synthetic))["rl"], 0, 42)


def test_bad_rows_are_named_and_skip_draws_from_the_kept_rows(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "img" / "a.png")
    rows = [{"image": "a.png", "problem": f"Q{i}?", "solution": "red", "bbox": [0.1, 0.1, 0.5, 0.5]} for i in range(6)]
    rows[3]["bbox"] = [0.5, 0.1, 0.1, 0.5]  # x2 < x1
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["--image_dir", str(tmp_path / "img"), "--num_heldout", "2"]
    assert split(source, tmp_path / "out", *flags) == 1
    assert "row 3 (saliency_r1_8k-rl-000003), field 'bbox'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert split(source, tmp_path / "out", *flags, "--on_bad_row", "skip") == 0
    data = load_from_disk(str(tmp_path / "out"))
    assert (len(data["train"]), len(data["eval"])) == (3, 2)
    assert "saliency_r1_8k-rl-000003" not in list(data["train"]["question_id"]) + list(data["eval"]["question_id"])
