import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest
from datasets import load_from_disk

from data_tools import SYSTEM_PROMPT, SyntheticConfig, corpus_texts, generate_synthetic, make_example, validate_rows
from data_tools.synthetic import (
    COLORS,
    DECOY_QUESTION_TYPES,
    PERCEPTION_TASKS,
    QUESTION_TYPES,
    SHAPES,
    answer_set,
    decoy_box,
    decoy_grey,
    location_phrase,
    main,
    perception_texts,
    sub_scene,
)

CONFIG = SyntheticConfig()


def _digest(data) -> str:
    """Hash every cell of every split, PNG bytes included (rows as stored in Arrow, images undecoded)."""
    h = hashlib.sha256()
    for split in sorted(data):
        for row in data[split].data.to_pylist():
            h.update(json.dumps(row, sort_keys=True, default=lambda b: hashlib.sha256(b).hexdigest()).encode())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b, c = (generate_synthetic(8, 8, 8, seed=s) for s in (3, 3, 4))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    png_a = [row["image"]["bytes"] for row in a["rl"].data.to_pylist()]
    png_b = [row["image"]["bytes"] for row in b["rl"].data.to_pylist()]
    assert png_a == png_b and len(set(png_a)) == len(png_a)


def _pixel_box(image: np.ndarray, obj) -> tuple[int, int, int, int]:
    """Box of the non-background pixels inside the object's cell, checking they all have its colour."""
    cell = image[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
    drawn = np.any(cell != CONFIG.background, axis=-1)
    assert (cell[drawn] == COLORS[obj.color]).all(), "a drawn pixel has another colour (anti-aliasing or overlap)"
    ys, xs = np.nonzero(drawn)
    return obj.x + xs.min(), obj.y + ys.min(), obj.x + xs.max() + 1, obj.y + ys.max() + 1


def _px(box) -> list[int]:
    px = [box[0] * CONFIG.width, box[1] * CONFIG.height, box[2] * CONFIG.width, box[3] * CONFIG.height]
    assert all(abs(v - round(v)) < 1e-9 for v in px), "normalised box edges must be pixel edges"
    return [round(v) for v in px]


@pytest.mark.parametrize("index", range(48))
def test_boxes_match_drawn_objects_and_answers_are_right(index):
    ex = make_example(seed=0, split="rl", index=index)
    image = np.asarray(ex.image)
    # Only the objects are drawn: the union of their cells' drawn pixels is every non-background pixel.
    drawn = np.any(image != CONFIG.background, axis=-1)
    covered = np.zeros_like(drawn)
    for obj in ex.objects:
        covered[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size] = True
        assert tuple(_pixel_box(image, obj)) == obj.box_px
    assert not (drawn & ~covered).any()

    (box,) = ex.bbox
    if ex.question_type == "color":
        shape = re.fullmatch(r"What color is the (\w+)\?", ex.problem).group(1)
        (target,) = [o for o in ex.objects if o.shape == shape]
        assert ex.solution == target.color
    elif ex.question_type == "shape":
        color = re.fullmatch(r"What shape is the (\w+) object\?", ex.problem).group(1)
        (target,) = [o for o in ex.objects if o.color == color]
        assert ex.solution == target.shape
    elif ex.question_type == "left_of":
        color, shape = re.fullmatch(r"Which shape is left of the (\w+) (\w+)\?", ex.problem).groups()
        (ref,) = [o for o in ex.objects if (o.color, o.shape) == (color, shape)]
        (target,) = [o for o in ex.objects if _pixel_box(image, o)[2] <= _pixel_box(image, ref)[0]]
        assert all(o.centre[0] > ref.centre[0] for o in ex.objects if o not in (ref, target))
        assert ex.solution == target.shape
    else:
        half = re.fullmatch(r"How many shapes are in the (\w+) half\?", ex.problem).group(1)
        x0, y0, x1, y1 = _px(box)
        assert {
            "top": (0, 0, 168, 84),
            "bottom": (0, 84, 168, 168),
            "left": (0, 0, 84, 168),
            "right": (84, 0, 168, 168),
        }[half] == (x0, y0, x1, y1)
        counted = [o for o in ex.objects if _inside(_pixel_box(image, o), (x0, y0, x1, y1))]
        assert ex.solution == str(len(counted))
        # every other shape lies wholly outside the half: the drawn pixels in it are the counted shapes'
        assert drawn[y0:y1, x0:x1].sum() == sum(_drawn_pixels(image, o) for o in counted)
        return
    assert _px(box) == list(_pixel_box(image, target))
    assert ex.solution in ex.reasoning


def _inside(box, region) -> bool:
    return region[0] <= box[0] and region[1] <= box[1] and box[2] <= region[2] and box[3] <= region[3]


def _drawn_pixels(image: np.ndarray, obj) -> int:
    cell = image[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
    return int(np.any(cell != CONFIG.background, axis=-1).sum())


def test_answers_are_balanced_and_types_alternate():
    data = generate_synthetic(0, 400, 0, seed=1)["rl"]
    by_type: dict[str, list[str]] = {}
    for row in data.select_columns(["dataset", "solution"]):
        by_type.setdefault(row["dataset"].split("/")[1], []).append(row["solution"])
    assert {k: len(v) for k, v in by_type.items()} == {"color": 100, "shape": 100, "left_of": 100, "count": 100}
    expected = {"color": set(COLORS), "shape": set(SHAPES), "left_of": set(SHAPES), "count": {"0", "1", "2", "3"}}
    for qtype, answers in by_type.items():
        assert set(answers) == expected[qtype]
        # no answer more than twice as frequent as chance
        assert max(answers.count(a) for a in set(answers)) < 2 * len(answers) / len(expected[qtype])


def test_eval_split_is_disjoint_and_sft_rows_are_conversational():
    data = generate_synthetic(40, 40, 40, seed=0)
    train = {r["image"]["bytes"] for r in data["rl"].data.to_pylist()}
    train |= {r["images"][0]["bytes"] for r in data["sft"].data.to_pylist()}
    assert not train & {r["image"]["bytes"] for r in data["eval"].data.to_pylist()}
    row = data["sft"][0]
    system, user, assistant = row["messages"]
    assert system["content"][0]["text"] == SYSTEM_PROMPT
    assert [block["type"] for block in user["content"]] == ["image", "text"]
    assert re.fullmatch(r"<think>[^<]+</think>\w+", assistant["content"][0]["text"])
    assert len(row["images"]) == 1 and row["images"][0].size == (168, 168)
    assert set(data["eval"].column_names) == set(data["rl"].column_names) | {"reasoning"}


def test_captions_name_every_shape_in_reading_order_and_come_only_when_asked():
    assert "caption" not in generate_synthetic(2, 2, 2, seed=0)
    data = generate_synthetic(0, 0, 0, seed=0, num_caption=12)["caption"]
    config = SyntheticConfig()
    for index, row in enumerate(data):
        scene = make_example(0, "caption", index, config)
        system, user, assistant = row["messages"]
        assert system["content"][0]["text"] == SYSTEM_PROMPT and user["content"][1]["text"] == "Describe the image."
        assert row["images"][0].tobytes() == scene.image.tobytes() and row["dataset"] == "synthetic_shapes/caption"
        caption = assistant["content"][0]["text"]
        named = re.findall(r"an? (\w+) (\w+) at the ([\w ]+?)[,.]", caption)
        rows_of = {"top": 0, "middle": 1, "centre": 1, "bottom": 2}
        assert sorted(named) == sorted(
            (o.color, o.shape, location_phrase(*o.centre, config.width, config.height)) for o in scene.objects
        )
        assert [rows_of[where.split()[0]] for _, _, where in named] == sorted(rows_of[w.split()[0]] for *_, w in named)
        assert caption.startswith(
            f"There are {len(scene.objects)} shapes: " if len(scene.objects) > 1 else "There is 1"
        )


def test_corpus_covers_every_word_the_data_says():
    vocab = set(re.findall(r"[\w<>/]+", " ".join(corpus_texts())))
    data = generate_synthetic(200, 0, 200, seed=5, num_caption=100)
    said = [m["content"][-1]["text"] for split in ("sft", "caption") for row in data[split]["messages"] for m in row]
    said += [*data["eval"]["problem"], *data["eval"]["reasoning"], *data["eval"]["solution"]]
    said = " ".join(said)
    assert set(re.findall(r"[\w<>/]+", said)) <= vocab


def test_config_is_validated_and_size_is_configurable():
    with pytest.raises(ValueError, match="shapes"):
        SyntheticConfig(shapes=("hexagon",))
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticConfig(min_objects=4, max_objects=3)
    ex = make_example(0, "rl", 3, SyntheticConfig(width=224, height=112))
    assert ex.image.size == (224, 112)
    assert all(0 <= v <= 1 for box in ex.bbox for v in box)


def test_cli_writes_a_loadable_dataset_dict(tmp_path):
    main(["--output_dir", str(tmp_path / "d"), "--num_sft", "4", "--num_rl", "5", "--num_eval", "6", "--seed", "2"])
    data = load_from_disk(str(tmp_path / "d"))
    assert {k: len(v) for k, v in data.items()} == {"sft": 4, "rl": 5, "eval": 6}
    assert data["rl"][0]["question_id"] == "synthetic_shapes-rl-2-000000"


def test_generated_rows_pass_validation_unchanged():
    data = generate_synthetic(8, 8, 8, seed=9)
    for kind in ("rl", "eval"):
        rows = data[kind].data.to_pylist()
        kept, report = validate_rows(rows, kind)
        assert not report.issues
        assert [r["bbox"] for r in kept] == [r["bbox"] for r in rows]
        assert [r["image"]["bytes"] for r in kept] == [r["image"]["bytes"] for r in rows]


def _norm(box, config):
    return [box[0] / config.width, box[1] / config.height, box[2] / config.width, box[3] / config.height]


@pytest.mark.parametrize("kind", ["perception", "grounding", "attention"])
def test_short_answer_rows_are_right_about_their_scene_and_cycle_through_the_tasks(kind):
    data = generate_synthetic(0, 0, 0, seed=0, **{f"num_{kind}": 128})[kind]
    config = SyntheticConfig()
    tasks = [row["dataset"].split("/")[-1] for row in data]
    assert {row["dataset"].split("/")[1] for row in data} == {kind}
    if kind == "attention":  # a third each; a scene with nothing unique to point at or read is captioned
        assert set(tasks) <= {"point", "read", "answer", "caption"}
        assert [t == "answer" for t in tasks] == [(i // len(QUESTION_TYPES)) % 3 == 2 for i in range(len(tasks))]
    else:
        assert set(tasks) == set(PERCEPTION_TASKS)
    on_full_scene = []
    for index, row in enumerate(data):
        scene = make_example(0, kind, index, config)
        on_full_scene.append(row["images"][0].tobytes() == scene.image.tobytes())
        if not on_full_scene[-1]:  # captions, pointing and reading may see a part of the scene
            assert tasks[index] != "answer"
            part = sub_scene(scene, config)
            assert set(part.objects) <= set(scene.objects) and len(part.objects) >= 1
            assert row["images"][0].tobytes() == part.image.tobytes()
            scene = part
        user, assistant = row["messages"]  # no system prompt: the chat template's default one
        question, answer = user["content"][1]["text"], assistant["content"][0]["text"]
        where = {o: location_phrase(*o.centre, config.width, config.height) for o in scene.objects}
        if tasks[index] == "point":
            color, shape = re.fullmatch(r"Where is the (\w+) (\w+)\?", question).groups()
            (obj,) = [o for o in scene.objects if (o.color, o.shape) == (color, shape)]  # unique in the scene
            assert answer == where[obj]
            assert row["bbox"] == [_norm(obj.box_px, config)]  # the evidence: the shape asked about
        elif tasks[index] == "read":
            cell = re.fullmatch(r"What is at the ([\w ]+)\?", question).group(1)
            (obj,) = [o for o in scene.objects if where[o] == cell]  # the only object there
            assert answer == f"{'an' if obj.color[0] in 'aeiou' else 'a'} {obj.color} {obj.shape}"
            assert row["bbox"] == [_norm(obj.box_px, config)]
        elif tasks[index] == "answer":
            assert (question, answer, row["bbox"]) == (scene.problem, scene.solution, scene.bbox)
        else:
            assert question == "Describe the image." and answer.startswith("There ")
            assert sorted(row["bbox"]) == sorted(_norm(o.box_px, config) for o in scene.objects)
    answered = {make_example(0, kind, i, config).question_type for i, t in enumerate(tasks) if t == "answer"}
    assert answered == set(QUESTION_TYPES)
    full_points = sum(t == "point" and full for t, full in zip(tasks, on_full_scene)) / len(tasks)
    full_reads = sum(t == "read" and full for t, full in zip(tasks, on_full_scene)) / len(tasks)
    if kind == "attention":
        assert all(on_full_scene) and full_points > 0.25 and full_reads > 0.25
    elif kind == "grounding":  # half the rows ask for a place on a full scene, a quarter what is at one
        assert full_points > 0.4 and full_reads > 0.2
    else:
        assert full_points < 0.15 and full_reads < 0.15


def test_attention_count_rows_are_the_attention_tasks_on_scenes_that_ask_to_count():
    data = generate_synthetic(0, 0, 0, seed=3, num_attention=24, num_attention_count=24)
    rows, plain = data["attention_count"], data["attention"]
    count_scenes = dataclasses.replace(SyntheticConfig(), question_types=("count",))
    tasks = [row["dataset"].split("/")[-1] for row in rows]
    assert [t == "answer" for t in tasks] == [(i // len(QUESTION_TYPES)) % 3 == 2 for i in range(len(tasks))]
    for index, row in enumerate(rows):
        scene = make_example(3, "attention_count", index, count_scenes)
        assert scene.question_type == "count" and row["images"][0].tobytes() == scene.image.tobytes()
        assert row["question_id"] == scene.question_id
        if tasks[index] == "answer":
            assert row["messages"][1]["content"][0]["text"] == scene.solution and row["bbox"] == scene.bbox
    assert not set(rows["question_id"]) & set(plain["question_id"])  # new scenes, not the attention split's
    assert [make_example(3, "attention", i).question_type for i in range(4)] == list(QUESTION_TYPES)


def test_perception_texts_caption_the_scene_when_no_object_is_unique():
    scene = make_example(0, "perception", 0)
    crowded = dataclasses.replace(scene, objects=(scene.objects[0], scene.objects[0]))
    for task in ("point", "read"):
        assert perception_texts(crowded, task, CONFIG) == perception_texts(crowded, "caption", CONFIG)
    with pytest.raises(ValueError, match="unknown perception task 'draw'"):
        perception_texts(scene, "draw", CONFIG)


def test_corpus_covers_the_perception_texts():
    vocab = set(re.findall(r"[\w<>/]+", " ".join(corpus_texts())))
    data = generate_synthetic(0, 0, 0, seed=5, num_perception=200)["perception"]
    said = " ".join(m["content"][-1]["text"] for row in data["messages"] for m in row)
    assert set(re.findall(r"[\w<>/]+", said)) <= vocab


def test_cli_leaves_out_splits_of_zero_rows_so_the_folder_loads(tmp_path):
    main(["--output_dir", str(tmp_path / "d"), "--num_sft", "0", "--num_rl", "0", "--num_eval", "0",
          "--num_perception", "8"])  # fmt: skip
    data = load_from_disk(str(tmp_path / "d"))
    assert {k: len(v) for k, v in data.items()} == {"perception": 8}


def test_the_module_runs_as_a_script_without_a_runpy_warning(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "data_tools.synthetic"]
    command += ["--output_dir", str(tmp_path / "d"), "--num_sft", "2", "--num_rl", "0", "--num_eval", "0"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(load_from_disk(str(tmp_path / "d"))["sft"]) == 2


DECOY = SyntheticConfig(decoy=True, question_types=DECOY_QUESTION_TYPES)


def _swatch(image) -> np.ndarray:
    x0, y0, x1, y1 = decoy_box(DECOY)
    return np.asarray(image)[y0:y1, x0:x1]


def test_decoy_swatch_says_its_answer_and_never_touches_a_shape_or_the_evidence():
    data = generate_synthetic(60, 60, 30, seed=4, config=DECOY, decoy_fraction=0.5)
    x0, y0, x1, y1 = decoy_box(DECOY)
    cued = 0
    for split in ("rl", "clean", "conflict"):
        for row in data[split]:
            image = np.asarray(row["image"])
            qtype = row["dataset"].split("/")[1]
            if row["decoy_answer"]:
                cued += 1
                assert (_swatch(row["image"]) == decoy_grey(row["decoy_answer"], qtype, DECOY)).all()
                assert row["decoy_answer"] in answer_set(qtype, DECOY)
                assert row["decoy_bbox"] == [[x0 / DECOY.width, y0 / DECOY.height, x1 / DECOY.width, y1 / DECOY.height]]
            else:  # no swatch: the corner is background
                assert (_swatch(row["image"]) == DECOY.background).all() and row["decoy_bbox"] == []
            # every pixel outside the swatch is the background or a shape colour (the swatch's grey is nowhere else)
            outside = image.copy()
            outside[y0:y1, x0:x1] = DECOY.background
            allowed = {DECOY.background, *COLORS.values()}
            assert {tuple(p) for p in outside.reshape(-1, 3)} <= allowed
            for bx0, by0, bx1, by1 in row["bbox"]:  # the evidence stays clear of the swatch by the gap
                W, H = DECOY.width, DECOY.height
                assert bx1 * W + DECOY.gap <= x0 or by1 * H + DECOY.gap <= y0
    assert cued > 0


def test_decoy_splits_clean_and_conflict_show_the_same_scenes_and_the_conflict_cue_lies():
    data = generate_synthetic(4, 4, 24, seed=5, config=DECOY)
    for split in ("rl", "clean", "conflict"):  # the evaluation reads the decoy columns through row validation
        kept, report = validate_rows(data[split].data.to_pylist(), "eval" if split != "rl" else "rl")
        assert not report.issues and kept[0]["decoy_bbox"] == data[split][0]["decoy_bbox"]
    assert set(data) == {"sft", "rl", "clean", "conflict"}
    assert set(data["clean"]["decoy_answer"]) == {""}
    for clean, conflict in zip(data["clean"], data["conflict"]):
        assert clean["question_id"] == conflict["question_id"] and clean["bbox"] == conflict["bbox"]
        assert conflict["decoy_answer"] not in ("", conflict["solution"])
        a, b = np.asarray(clean["image"]).copy(), np.asarray(conflict["image"]).copy()
        x0, y0, x1, y1 = decoy_box(DECOY)
        a[y0:y1, x0:x1] = b[y0:y1, x0:x1] = 0
        assert (a == b).all()
    assert {r.split("/")[1] for r in data["clean"]["dataset"]} == set(DECOY_QUESTION_TYPES)


@pytest.mark.parametrize("fraction", [0.0, 0.7, 1.0])
def test_decoy_fraction_of_training_rows_carry_a_cue_that_agrees(fraction):
    data = generate_synthetic(400, 10, 2, seed=6, config=DECOY, decoy_fraction=fraction)
    said = data["sft"]["decoy_answer"]
    share = sum(1 for s in said if s) / len(said)
    assert abs(share - fraction) < 0.07
    answers = [m[-1]["content"][0]["text"].rsplit(">", 1)[1] for m in data["sft"]["messages"]]
    assert all(s in ("", a) for s, a in zip(said, answers))


def test_decoy_conflict_fraction_of_training_rows_carry_a_cue_that_lies():
    data = generate_synthetic(400, 10, 2, seed=6, config=DECOY, decoy_fraction=0.5, decoy_conflict_fraction=0.3)
    answers = [m[-1]["content"][0]["text"].rsplit(">", 1)[1] for m in data["sft"]["messages"]]
    kinds = [
        "none" if s == "" else "agree" if s == a else "conflict" for s, a in zip(data["sft"]["decoy_answer"], answers)
    ]
    assert abs(kinds.count("agree") / 400 - 0.5) < 0.07 and abs(kinds.count("conflict") / 400 - 0.3) < 0.07
    same = generate_synthetic(400, 10, 2, seed=6, config=DECOY, decoy_fraction=0.5)
    agreeing = [k == "agree" for k in kinds]
    assert agreeing == [
        s != "" for s in same["sft"]["decoy_answer"]
    ]  # adding lies leaves the agreeing rows as they were


def test_decoy_is_refused_where_it_cannot_stay_off_the_evidence():
    with pytest.raises(ValueError, match="count"):
        SyntheticConfig(decoy=True)
    with pytest.raises(ValueError, match="decoy=True"):
        make_example(0, "rl", 0, CONFIG, cue="agree")
    with pytest.raises(ValueError, match="cue_fraction"):
        generate_synthetic(2, 2, 2, config=DECOY, decoy_fraction=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        generate_synthetic(2, 2, 2, config=DECOY, decoy_fraction=0.8, decoy_conflict_fraction=0.3)
    with pytest.raises(SystemExit):
        main(["--output_dir", "unused", "--decoy_conflict_fraction", "0.1"])  # needs --decoy_fraction
    with pytest.raises(SystemExit):
        main(["--output_dir", "unused", "--decoy_fraction", "-0.1"])


def test_cli_writes_the_decoy_benchmark(tmp_path):
    main(["--output_dir", str(tmp_path / "d"), "--num_sft", "3", "--num_rl", "3", "--num_eval", "5",
          "--decoy_fraction", "0.9"])  # fmt: skip
    data = load_from_disk(str(tmp_path / "d"))
    assert {k: len(v) for k, v in data.items()} == {"sft": 3, "rl": 3, "clean": 5, "conflict": 5}
