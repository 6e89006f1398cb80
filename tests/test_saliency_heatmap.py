"""Heatmap overlays: the colormap's ends and order, blending, boxes drawn where they belong, panels, bad input."""

import numpy as np
import pytest
from PIL import Image

from saliency.heatmap import BOX_COLOUR, colormap, normalised, overlay, side_by_side


def test_colormap_runs_dark_to_bright_and_clips():
    values = np.linspace(0, 1, 11)
    colours = colormap(values)
    assert colours.shape == (11, 3) and colours.dtype == np.uint8
    brightness = colours.astype(int).sum(-1)
    assert (np.diff(brightness) > 0).all()
    assert (colormap(np.array([-3.0, 7.0])) == colours[[0, -1]]).all()


def test_normalised_scales_by_the_peak_and_refuses_bad_maps():
    np.testing.assert_allclose(normalised(np.array([[0.0, 2.0], [1.0, 4.0]])), [[0, 0.5], [0.25, 1]])
    assert (normalised(np.zeros((2, 3))) == 0).all()
    with pytest.raises(ValueError, match="NaN"):
        normalised(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="negative"):
        normalised(np.array([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        normalised(np.ones(3))


def test_overlay_blends_the_map_and_draws_the_boxes():
    image = Image.new("RGB", (100, 50), (0, 0, 255))
    heat = np.zeros((50, 100), dtype=np.float32)
    heat[:, 50:] = 1.0  # right half hot
    out = np.asarray(overlay(image, heat, boxes=[[0.1, 0.2, 0.3, 0.8]], opacity=0.5, box_width=1))
    assert out.shape == (50, 100, 3)
    hot, cold = colormap(np.array([1.0, 0.0])).astype(float)
    np.testing.assert_allclose(out[25, 80], 0.5 * np.array([0, 0, 255]) + 0.5 * hot, atol=1)
    np.testing.assert_allclose(out[25, 60], out[25, 80], atol=1)
    np.testing.assert_allclose(out[25, 40], 0.5 * np.array([0, 0, 255]) + 0.5 * cold, atol=1)
    # The outline lies on the box edges (x = 0.1 * 99 ~ 10, y = 0.2 * 49 ~ 10), not inside it.
    assert tuple(out[25, 10]) == BOX_COLOUR and tuple(out[10, 20]) == BOX_COLOUR
    assert tuple(out[25, 20]) != BOX_COLOUR


def test_overlay_resizes_a_patch_grid_map_to_the_image():
    image = Image.new("RGB", (64, 32), "white")
    out = np.asarray(overlay(image, np.array([[0.0, 1.0]]), opacity=1.0))
    assert out.shape == (32, 64, 3)
    assert out[:, :16].astype(int).sum() < out[:, 48:].astype(int).sum()  # bilinear: left dark, right bright


def test_overlay_names_a_bad_box():
    image = Image.new("RGB", (10, 10))
    with pytest.raises(ValueError, match="4 coordinates"):
        overlay(image, np.zeros((10, 10)), boxes=[[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="swapped corners"):
        overlay(image, np.zeros((10, 10)), boxes=[[0.5, 0.2, 0.3, 0.4]])


def test_side_by_side_lays_panels_out_in_one_row_at_one_height():
    panels = [Image.new("RGB", (20, 10), "red"), Image.new("RGB", (10, 20), "blue")]
    sheet = side_by_side(panels, ["a", "b"], gap=2)
    assert sheet.size == (40 + 2 + 10, 20 + 14)  # the first panel is scaled to height 20
    assert sheet.getpixel((5, 20)) == (255, 0, 0) and sheet.getpixel((45, 20)) == (0, 0, 255)
    with pytest.raises(ValueError, match="2 panels"):
        side_by_side(panels, ["only one"])
