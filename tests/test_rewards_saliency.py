"""The saliency reward as the trainer calls it, and choosing rewards by name or import path with their options."""

import pickle
import sys

import numpy as np
import pytest

from rewards import (
    DEFAULT_REWARD_FUNCS,
    REWARD_FUNCS,
    SaliencyReward,
    format_reward,
    get_reward_funcs,
)

GOOD = "<think>The red square is top left.</think>red"
BOX = "[0.0, 0.0, 0.5, 0.5]"  # the public data's string form: the top-left quarter


def peaked(row, col, shape=(4, 4), background=0.0):
    saliency = np.full(shape, background)
    saliency[row, col] = 1.0
    return saliency


def test_energy_pg_times_format_per_completion():
    three_quarters = np.zeros((4, 4))
    three_quarters[0, 0], three_quarters[3, 3] = 3.0, 1.0  # 3 inside, 1 outside -> 0.75
    completions = [GOOD, GOOD, "red", GOOD, GOOD]
    maps = [peaked(0, 0), three_quarters, peaked(0, 0), None, np.zeros((4, 4))]
    reward = SaliencyReward()
    # 1: all mass inside; 0.75 by hand; bad format -> 0 even with a perfect map; no map -> 0; empty map -> 0.
    assert reward(["q"] * 5, completions, saliency_map=maps, bbox=[BOX] * 5) == [1.0, 0.75, 0.0, 0.0, 0.0]
    assert reward.counts == {"scored": 2, "bad_format": 1, "no_map": 1, "empty_map": 1}


def test_pointing_game_variant():
    reward = SaliencyReward(metric="pg")
    maps = [peaked(1, 1), peaked(2, 2), np.full((4, 4), 0.5)]  # hit, miss, constant = miss
    assert reward(["q"] * 3, [GOOD] * 3, saliency_map=maps, bbox=[BOX] * 3) == [1.0, 0.0, 0.0]
    # Pixel (0, 2) has its centre 0.5 px right of the quarter box (x in [0, 2] px on a 4-wide map).
    near = SaliencyReward(metric="pg", tolerance_px=0.5)
    assert near(["q"], [GOOD], saliency_map=[peaked(0, 2)], bbox=[BOX]) == [1.0]


def test_map_key_selects_another_column_and_names_the_reward():
    reward = SaliencyReward(map_key="saliency_map_direct")
    assert reward.__name__ == "saliency_direct_energy_pg"
    columns = {"saliency_map": [peaked(3, 3)], "saliency_map_direct": [peaked(0, 0)], "bbox": [BOX]}
    assert reward(["q"], [GOOD], **columns) == [1.0]
    assert SaliencyReward().__name__ == "saliency_energy_pg"
    assert SaliencyReward(metric="pg").__name__ == "saliency_pg"
    assert SaliencyReward(name="mine").__name__ == "mine"


def test_when_correct_scores_right_answers_only():
    reward = REWARD_FUNCS["saliency_if_correct"]()
    assert reward.__name__ == "saliency_energy_pg_if_correct"
    completions = [GOOD, "<think>The blue square is top left.</think>blue", "red", GOOD]
    maps = [peaked(0, 0), peaked(0, 0), peaked(0, 0), None]
    logged = {}
    rewards = reward(
        ["q"] * 4, completions, saliency_map=maps, bbox=[BOX] * 4, solution=["red"] * 4, log_metric=logged.__setitem__
    )
    # right and pointing inside: 1; wrong answer with the same perfect map: 0; bad format: 0; right, no map: 0.
    assert rewards == [1.0, 0.0, 0.0, 0.0]
    assert reward.counts == {"scored": 1, "bad_format": 1, "no_map": 1, "empty_map": 0, "wrong_answer": 1}
    assert logged["saliency_energy_pg_if_correct/wrong_answer"] == 0.25
    with pytest.raises(ValueError, match="'solution', which is missing"):
        reward(["q"], [GOOD], saliency_map=[peaked(0, 0)], bbox=[BOX])


def test_counts_accumulate_and_reset():
    reward = SaliencyReward()
    for _ in range(2):
        reward(["q"] * 2, [GOOD, GOOD], saliency_map=[None, np.zeros((2, 2))], bbox=[BOX] * 2)
    assert reward.reset_counts() == {"scored": 0, "bad_format": 0, "no_map": 2, "empty_map": 2}
    assert reward.counts == {"scored": 0, "bad_format": 0, "no_map": 0, "empty_map": 0}


def test_batch_fractions_are_logged_through_trl_log_metric():
    logged = {}
    reward = SaliencyReward()
    maps = [peaked(0, 0), None, np.full((4, 4), np.nan), np.zeros((4, 4))]
    reward(["q"] * 4, [GOOD] * 4, saliency_map=maps, bbox=[BOX] * 4, log_metric=logged.__setitem__)
    assert logged == {
        "saliency_energy_pg/bad_format": 0.0,
        "saliency_energy_pg/no_map": 0.25,
        "saliency_energy_pg/empty_map": 0.5,
    }


def test_several_boxes_and_portrait_maps():
    # Portrait 6 x 2 map, boxes: top third [0, 0, 1, 1/3] -> rows 0-1; bottom row [0, 5/6, 1, 1] -> row 5.
    saliency = np.zeros((6, 2))
    saliency[0, 0] = saliency[5, 1] = 1.0  # both inside the union
    saliency[3, 0] = 2.0  # outside -> energy 2/4
    reward = SaliencyReward()
    boxes = [[0.0, 0.0, 1.0, 1 / 3], [0.0, 5 / 6, 1.0, 1.0]]
    assert reward(["q"], [GOOD], saliency_map=[saliency], bbox=[boxes]) == [0.5]


def test_missing_columns_and_bad_maps_are_reported_by_name():
    reward = SaliencyReward()
    with pytest.raises(ValueError, match="column 'saliency_map', which is missing"):
        reward(["q"], [GOOD], bbox=[BOX])
    with pytest.raises(ValueError, match="column 'bbox', which is missing"):
        reward(["q"], [GOOD], saliency_map=[peaked(0, 0)])
    with pytest.raises(ValueError, match="row 1, column 'saliency_map': .*2-D"):
        reward(["q"] * 2, [GOOD] * 2, saliency_map=[peaked(0, 0), np.ones(3)], bbox=[BOX] * 2)
    with pytest.raises(ValueError, match="row 0, field 'bbox'"):
        reward(["q"], [GOOD], saliency_map=[peaked(0, 0)], bbox=["[0.5, 0.5, 0.2, 0.2]"])
    with pytest.raises(ValueError, match="'saliency_map' has 1 entries for 2"):
        reward(["q"] * 2, [GOOD] * 2, saliency_map=[None], bbox=[BOX] * 2)
    with pytest.raises(ValueError, match="metric"):
        SaliencyReward(metric="iou")
    with pytest.raises(ValueError, match="tolerance_px"):
        SaliencyReward(tolerance_px=2)


def test_saliency_reward_pickles_with_its_settings():
    reward = pickle.loads(pickle.dumps(SaliencyReward(metric="pg", map_key="saliency_map_direct")))
    assert (reward.metric, reward.map_key, reward.__name__) == ("pg", "saliency_map_direct", "saliency_direct_pg")


def test_get_reward_funcs_by_name():
    funcs = get_reward_funcs()
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward", "saliency_energy_pg"]
    assert DEFAULT_REWARD_FUNCS == ("format", "accuracy", "saliency")
    funcs = get_reward_funcs(["format", "saliency_direct_pg", "saliency_pg"], pointing_tolerance_px=2.0)
    assert [f.__name__ for f in funcs] == ["format_reward", "saliency_direct_pg", "saliency_pg"]
    assert funcs[1].tolerance_px == funcs[2].tolerance_px == 2.0
    # Each call gets its own SaliencyReward, so two trainers do not share counts.
    assert get_reward_funcs()[2] is not get_reward_funcs()[2]
    assert set(REWARD_FUNCS) >= {"format", "accuracy", "iou", "judge", "saliency", "saliency_pg", "saliency_direct"}


def test_the_pointing_tolerance_reaches_the_pointing_game_reward():
    near = np.zeros((8, 8))
    near[0, 5] = 1.0  # the peak is one pixel right of the box (columns 0-3)
    box = "[0.0, 0.0, 0.5, 0.5]"
    strict, tolerant = (get_reward_funcs(["saliency_pg"], pointing_tolerance_px=px)[0] for px in (0.0, 1.5))
    assert strict(["q"], [GOOD], saliency_map=[near], bbox=[box]) == [0.0]
    assert tolerant(["q"], [GOOD], saliency_map=[near], bbox=[box]) == [1.0]


def test_an_unknown_reward_names_the_flag_and_the_known_rewards():
    with pytest.raises(ValueError, match=r"--reward_funcs: 'formatt' is neither a known reward \(format, accuracy, "):
        get_reward_funcs(["formatt"])
    with pytest.raises(ValueError, match="--reward_funcs: cannot import the reward 'rewards.no_such_reward'"):
        get_reward_funcs(["rewards.no_such_reward"])
    with pytest.raises(ValueError, match="--reward_funcs: cannot import the reward 'no_such_pkg.reward'"):
        get_reward_funcs(["no_such_pkg.reward"])
    with pytest.raises(TypeError, match="'rewards.REWARD_FUNCS' is a dict, not a reward function"):
        get_reward_funcs(["rewards.REWARD_FUNCS"])
    with pytest.raises(ValueError, match="at least one reward"):
        get_reward_funcs([])
    with pytest.raises(ValueError, match="--judge_model at --judge_base_url: set both"):
        get_reward_funcs(["judge"], judge={"base_url": "http://127.0.0.1:9/v1"})


def test_a_reward_by_dotted_path_is_imported_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length_reward(prompts, completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    fmt, length = get_reward_funcs(["format", "my_rewards.length_reward"])
    assert fmt is format_reward and length.__name__ == "length_reward"
    assert length(["q"], ["abc"]) == [3.0]
