"""The saliency reward as the trainer calls it, and composing rewards with weights."""

import math
import pickle

import numpy as np
import pytest

from rewards import (
    DEFAULT_REWARD_WEIGHTS,
    REWARD_FUNCS,
    SaliencyReward,
    accuracy_reward,
    combine,
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


def test_get_reward_funcs_for_trl():
    funcs, weights = get_reward_funcs()
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward", "saliency_energy_pg"]
    assert weights == [1.0, 1.0, 1.0] and list(DEFAULT_REWARD_WEIGHTS) == ["format", "accuracy", "saliency"]
    funcs, weights = get_reward_funcs({"format": 0.5, "saliency_direct_pg": 2})
    assert [f.__name__ for f in funcs] == ["format_reward", "saliency_direct_pg"] and weights == [0.5, 2.0]
    # Each call gets its own SaliencyReward, so two trainers do not share counts.
    assert get_reward_funcs()[0][2] is not get_reward_funcs()[0][2]
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_funcs({"formatt": 1.0})
    assert set(REWARD_FUNCS) >= {"format", "accuracy", "iou", "saliency", "saliency_pg", "saliency_direct"}


def test_combine_is_the_weighted_sum_trl_computes():
    completions = [GOOD, "<think>x</think>blue", "red"]
    total = combine([format_reward, accuracy_reward], [0.5, 2.0], name="fmt_acc")
    # format: 1, 1, 0; accuracy vs "red": 1, 0, 1  ->  0.5 + 2, 0.5 + 0, 0 + 2
    assert total(["q"] * 3, completions, solution=["red"] * 3) == [2.5, 0.5, 2.0]
    assert total.__name__ == "fmt_acc"
    assert combine([format_reward])(["q"], [GOOD]) == [1.0]


def test_combine_leaves_out_none_like_trl_nansum():
    def sometimes_none(prompts, completions, completion_ids=None, **kwargs):
        return [None, 0.25]

    def always_none(prompts, completions, completion_ids=None, **kwargs):
        return [None, None]

    total = combine([sometimes_none, format_reward], [4.0, 1.0])
    assert total(["q"] * 2, [GOOD, "bad"]) == [1.0, 1.0]  # [0 + 1, 4 * 0.25 + 0]
    assert combine([always_none])(["q"] * 2, [GOOD, GOOD]) == [None, None]


def test_combine_checks_its_inputs():
    with pytest.raises(ValueError, match="one weight per reward"):
        combine([format_reward], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        combine([format_reward], [math.nan])

    def too_short(prompts, completions, completion_ids=None, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match="'too_short' returned 1 values for 2"):
        combine([too_short])(["q"] * 2, [GOOD] * 2)
