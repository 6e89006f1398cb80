"""Pointing game and energy pointing game on tiny maps whose answers are counted by hand.

Conventions used in every comment below: `map[row, col]`; pixel (r, c) of an H x W map has its centre at
x = (c + 0.5) / W, y = (r + 0.5) / H; a pixel belongs to a box when its centre is inside (bounds included).
"""

import doctest
import math

import numpy as np
import pytest

import rewards.pointing
from rewards import (
    PointingGameAccumulator,
    box_area_fraction,
    box_mask,
    centre_point_game,
    energy_pointing_game,
    is_empty_map,
    pointing_game,
)

TOP_LEFT_QUARTER = [0.0, 0.0, 0.5, 0.5]


def test_energy_pg_counts_positive_mass_inside_the_box():
    # 4x4, box = top-left quarter: centres x, y in {0.125, 0.375} are inside, so pixels rows 0-1 x cols 0-1.
    saliency = np.array(
        [
            [1.0, 2.0, 0.0, 0.0],
            [3.0, 4.0, 0.0, 0.0],
            [0.0, 0.0, 5.0, 5.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    # inside = 1 + 2 + 3 + 4 = 10, total = 20
    assert energy_pointing_game(saliency, TOP_LEFT_QUARTER) == 0.5


def test_energy_pg_ignores_negative_values():
    saliency = np.array(
        [
            [1.0, 2.0, 0.0, -100.0],
            [3.0, 4.0, 0.0, 0.0],
            [-7.0, 0.0, 5.0, 5.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    # Negative pixels carry no mass: still 10 inside out of 20.
    assert energy_pointing_game(saliency, TOP_LEFT_QUARTER) == 0.5


def test_energy_pg_uses_the_union_of_boxes_without_double_counting():
    saliency = np.arange(16, dtype=float).reshape(4, 4)  # values 0..15, total 120
    # Box A = top-left quarter -> pixels (0,0) (0,1) (1,0) (1,1) = 0 + 1 + 4 + 5 = 10.
    # Box B = [0.25, 0.25, 0.75, 0.75]: centres 0.375 and 0.625 inside -> rows 1-2 x cols 1-2
    #       = (1,1) (1,2) (2,1) (2,2) = 5 + 6 + 9 + 10 = 30. They share pixel (1,1) = 5.
    # Union = 10 + 30 - 5 = 35.
    assert energy_pointing_game(saliency, [TOP_LEFT_QUARTER, [0.25, 0.25, 0.75, 0.75]]) == 35 / 120


def test_y_bound_uses_the_height_on_a_portrait_map():
    # Published mistake: the y bound computed from the width. Portrait map H=4, W=2, all ones.
    # Box [0, 0, 1, 0.5]: y centres 0.125, 0.375 <= 0.5 -> rows 0-1, both columns -> 4 of 8 pixels.
    # (With y scaled by the width, 0.5 * W = 1 row would be taken: 2 of 8.)
    saliency = np.ones((4, 2))
    expected_mask = [[True, True], [True, True], [False, False], [False, False]]
    assert box_mask(saliency.shape, [[0.0, 0.0, 1.0, 0.5]]).tolist() == expected_mask
    assert energy_pointing_game(saliency, [0.0, 0.0, 1.0, 0.5]) == 0.5


def test_x_bound_uses_the_width_on_a_landscape_map():
    # Landscape H=2, W=6. Box [0.5, 0, 1, 1]: x centres 7/12, 9/12, 11/12 -> cols 3-5; all rows. 6 of 12 pixels.
    # Mass: one pixel at (0, 5) inside with value 3 and one at (1, 0) outside with value 1 -> 3/4.
    saliency = np.zeros((2, 6))
    saliency[0, 5] = 3.0
    saliency[1, 0] = 1.0
    assert energy_pointing_game(saliency, [0.5, 0.0, 1.0, 1.0]) == 0.75
    assert pointing_game(saliency, [0.5, 0.0, 1.0, 1.0]) == 1.0


def test_box_touching_the_border_includes_the_last_row_and_column():
    # Published mistake: boxes that touch the border lose their last pixel. Box [0.5, 0.5, 1, 1] on 4x4 covers
    # rows 2-3 x cols 2-3, including pixel (3, 3) whose centre is (0.875, 0.875).
    saliency = np.zeros((4, 4))
    saliency[3, 3] = 1.0
    assert box_mask((4, 4), [[0.5, 0.5, 1.0, 1.0]]).sum() == 4
    assert energy_pointing_game(saliency, [0.5, 0.5, 1.0, 1.0]) == 1.0
    assert pointing_game(saliency, [0.5, 0.5, 1.0, 1.0]) == 1.0


def test_full_image_box_contains_every_pixel():
    saliency = np.random.default_rng(0).random((3, 5))
    assert box_mask((3, 5), [[0.0, 0.0, 1.0, 1.0]]).all()
    assert energy_pointing_game(saliency, [0.0, 0.0, 1.0, 1.0]) == 1.0


def test_one_pixel_box_covers_that_pixel():
    # Published mistake: a box one pixel wide became an empty slice. 10x10, box [0.4, 0.4, 0.5, 0.5]:
    # the only centre inside is 0.45 on both axes -> pixel (4, 4).
    saliency = np.zeros((10, 10))
    saliency[4, 4] = 2.0
    saliency[0, 0] = 2.0
    assert box_mask((10, 10), [[0.4, 0.4, 0.5, 0.5]]).sum() == 1
    assert energy_pointing_game(saliency, [0.4, 0.4, 0.5, 0.5]) == 0.5  # 2 of 4


def test_box_smaller_than_a_pixel_covers_the_pixel_holding_its_centre():
    # Box [0.41, 0.41, 0.44, 0.44] holds no pixel centre of a 10x10 map (they are at 0.35 and 0.45);
    # it covers the pixel that contains its centre 0.425 -> pixel (4, 4).
    mask = box_mask((10, 10), [[0.41, 0.41, 0.44, 0.44]])
    assert mask.sum() == 1 and mask[4, 4]
    saliency = np.zeros((10, 10))
    saliency[4, 4] = 1.0
    assert pointing_game(saliency, [0.41, 0.41, 0.44, 0.44]) == 1.0
    assert energy_pointing_game(saliency, [0.41, 0.41, 0.44, 0.44]) == 1.0


def test_one_by_one_map():
    # The single pixel's centre (0.5, 0.5) is in any box holding the image centre; otherwise the fallback covers it.
    assert energy_pointing_game(np.array([[3.0]]), [0.0, 0.0, 0.1, 0.1]) == 1.0
    # A 1x1 map is constant, so it points at nothing: a pointing-game miss.
    assert pointing_game(np.array([[3.0]]), [0.0, 0.0, 1.0, 1.0]) == 0.0


@pytest.mark.parametrize(
    "saliency",
    [np.zeros((3, 3)), -np.ones((3, 3)), np.array([[1.0, np.nan], [0.0, 0.0]]), np.array([[np.inf, 0.0]])],
    ids=["all-zero", "all-negative", "nan", "inf"],
)
def test_empty_maps_score_none(saliency):
    assert is_empty_map(saliency)
    assert energy_pointing_game(saliency, TOP_LEFT_QUARTER) is None
    assert pointing_game(saliency, TOP_LEFT_QUARTER) is None


def test_pointing_game_hit_and_miss():
    saliency = np.zeros((4, 4))
    saliency[1, 1] = 1.0  # centre (0.375, 0.375): inside the top-left quarter
    assert pointing_game(saliency, TOP_LEFT_QUARTER) == 1.0
    saliency[2, 2] = 2.0  # the new maximum, centre (0.625, 0.625): outside
    assert pointing_game(saliency, TOP_LEFT_QUARTER) == 0.0


def test_pointing_game_ties_need_every_maximum_inside():
    saliency = np.zeros((4, 4))
    saliency[0, 0] = saliency[1, 1] = 5.0  # both inside the top-left quarter
    assert pointing_game(saliency, TOP_LEFT_QUARTER) == 1.0
    saliency[3, 3] = 5.0  # a third maximum outside
    assert pointing_game(saliency, TOP_LEFT_QUARTER) == 0.0


def test_constant_map_is_a_pointing_game_miss_even_for_a_full_image_box():
    assert pointing_game(np.full((4, 4), 0.3), [0.0, 0.0, 1.0, 1.0]) == 0.0


def test_pointing_game_tolerance_in_pixels():
    # Box [0, 0, 0.25, 0.25] on 4x4 = pixel (0, 0), spanning x, y in [0, 1] px.
    box = [0.0, 0.0, 0.25, 0.25]
    right = np.zeros((4, 4))
    right[0, 1] = 1.0  # centre (1.5, 0.5) px: 0.5 px right of the box
    assert pointing_game(right, box) == 0.0
    assert pointing_game(right, box, tolerance_px=0.49) == 0.0
    assert pointing_game(right, box, tolerance_px=0.5) == 1.0
    diagonal = np.zeros((4, 4))
    diagonal[1, 1] = 1.0  # centre (1.5, 1.5) px: sqrt(0.5^2 + 0.5^2) = 0.7071 px away
    assert pointing_game(diagonal, box, tolerance_px=0.70) == 0.0
    assert pointing_game(diagonal, box, tolerance_px=0.71) == 1.0


def test_tolerance_on_a_portrait_map_is_measured_in_pixels_on_both_axes():
    # H=8, W=2; box [0, 0, 1, 0.25] = rows 0-1 (y in [0, 2] px). Peak at row 3: centre y = 3.5 px, 1.5 px below.
    saliency = np.zeros((8, 2))
    saliency[3, 0] = 1.0
    assert pointing_game(saliency, [0.0, 0.0, 1.0, 0.25], tolerance_px=1.49) == 0.0
    assert pointing_game(saliency, [0.0, 0.0, 1.0, 0.25], tolerance_px=1.5) == 1.0


def test_box_area_fraction_is_pixel_counted():
    assert box_area_fraction((4, 4), TOP_LEFT_QUARTER) == 4 / 16
    # Union from the energy test above: 4 + 4 - 1 shared = 7 pixels.
    assert box_area_fraction((4, 4), [TOP_LEFT_QUARTER, [0.25, 0.25, 0.75, 0.75]]) == 7 / 16
    # 3x3 and a box [0, 0, 0.5, 0.5]: centres 1/6 inside, 3/6 = 0.5 inside (bound included), 5/6 out -> 2x2 = 4 of 9.
    assert box_area_fraction((3, 3), TOP_LEFT_QUARTER) == 4 / 9


def test_uniform_map_scores_the_box_area_fraction():
    assert energy_pointing_game(np.full((3, 3), 7.0), TOP_LEFT_QUARTER) == 4 / 9


def test_centre_point_baseline():
    assert centre_point_game((4, 4), TOP_LEFT_QUARTER) == 1.0  # (0.5, 0.5) lies on the box's corner
    assert centre_point_game((4, 4), [0.0, 0.0, 0.4, 0.4]) == 0.0
    # 10x10 px: centre (5, 5) px, box corner (4, 4) px -> sqrt(2) = 1.414 px away.
    assert centre_point_game((10, 10), [0.0, 0.0, 0.4, 0.4], tolerance_px=1.41) == 0.0
    assert centre_point_game((10, 10), [0.0, 0.0, 0.4, 0.4], tolerance_px=1.42) == 1.0
    assert centre_point_game((4, 4), [[0.0, 0.0, 0.1, 0.1], [0.45, 0.45, 0.55, 0.55]]) == 1.0  # any box of the union


def test_map_must_be_two_dimensional():
    with pytest.raises(ValueError, match="2-D"):
        energy_pointing_game(np.ones(4), TOP_LEFT_QUARTER)
    with pytest.raises(ValueError, match="2-D"):
        pointing_game(np.ones((0, 3)), TOP_LEFT_QUARTER)


def test_invalid_boxes_are_reported():
    with pytest.raises(ValueError, match="zero area"):
        energy_pointing_game(np.ones((2, 2)), [0.5, 0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="tolerance_px"):
        pointing_game(np.eye(2), TOP_LEFT_QUARTER, tolerance_px=-1)


def test_accumulator_excludes_and_counts_rows_without_a_usable_map():
    accumulator = PointingGameAccumulator()
    hit = np.zeros((4, 4))
    hit[0, 0] = 1.0  # inside the top-left quarter: energy 1, PG 1
    miss = np.zeros((4, 4))
    miss[0, 0], miss[3, 3] = 1.0, 3.0  # energy 1/4, PG 0
    assert accumulator.add(hit, TOP_LEFT_QUARTER).energy_pg == 1.0
    assert accumulator.add(miss, TOP_LEFT_QUARTER).pg == 0.0
    assert accumulator.add(None, TOP_LEFT_QUARTER) is None
    assert accumulator.add(np.zeros((4, 4)), TOP_LEFT_QUARTER) is None
    assert accumulator.add(np.full((4, 4), np.nan), TOP_LEFT_QUARTER) is None
    summary = accumulator.summary()
    assert summary == {
        "energy_pg": (1.0 + 0.25) / 2,
        "pg": 0.5,
        "box_area_fraction": 0.25,
        "centre_point_pg": 1.0,
        "n_scored": 2,
        "n_no_map": 1,
        "n_empty_map": 2,
    }


def test_accumulator_without_scored_rows_reports_none_not_nan():
    accumulator = PointingGameAccumulator()
    accumulator.add(np.zeros((2, 2)), TOP_LEFT_QUARTER)
    summary = accumulator.summary()
    assert summary["energy_pg"] is None and summary["pg"] is None and summary["n_empty_map"] == 1
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())


def test_docstring_examples():
    assert doctest.testmod(rewards.pointing).failed == 0
