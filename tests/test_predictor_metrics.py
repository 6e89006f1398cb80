"""Saliency metrics against values worked out by hand (see each test's comment)."""

import math

import numpy as np
import pytest
import torch

from predictor import auc_judd, auc_shuffled, cc, kld, nss, saliency_loss, sim
from predictor.metrics import MATLAB_EPS

RAMP = np.array([[0.0, 1.0], [2.0, 3.0]])
PRED = np.array([[0.1, 0.4], [0.35, 0.8]])


def test_nss_uses_sample_standard_deviation():
    # mean 1.5, sample std sqrt(5/3); the fixated value 3 -> 1.5 / sqrt(5/3)
    fix = np.array([[0, 0], [0, 1]])
    assert float(nss(RAMP, fix)) == pytest.approx(1.5 / math.sqrt(5 / 3))
    # fixations on 0 and 3 average to the mean -> 0
    assert float(nss(RAMP, np.array([[1, 0], [0, 1]]))) == pytest.approx(0.0)


def test_nss_counts_a_pixel_once_and_rejects_empty_fixations():
    assert float(nss(RAMP, np.array([[0, 0], [0, 5]]))) == pytest.approx(1.5 / math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="no fixated pixel"):
        nss(RAMP, np.zeros((2, 2)))


def test_cc_hand_case_and_bounds():
    # x = (1,0,0,0), y = (1,1,0,0): cov 0.5, var_x 0.75, var_y 1 -> 0.5 / sqrt(0.75)
    assert float(cc(np.array([[1.0, 0], [0, 0]]), np.array([[1.0, 1], [0, 0]]))) == pytest.approx(0.5 / math.sqrt(0.75))
    assert float(cc(RAMP, 2 * RAMP + 1)) == pytest.approx(1.0)
    assert float(cc(RAMP, -RAMP)) == pytest.approx(-1.0)


def test_kld_hand_case_with_matlab_epsilon():
    # uniform prediction (0.25 each) against all mass on one pixel: log(eps + 1 / (0.25 + eps)) ~ log 4
    value = float(kld(np.ones((2, 2)), np.array([[1.0, 0], [0, 0]])))
    assert value == pytest.approx(math.log(MATLAB_EPS + 1 / (0.25 + MATLAB_EPS)))
    assert value == pytest.approx(math.log(4))
    assert float(kld(RAMP + 1, 3 * (RAMP + 1))) == pytest.approx(0.0, abs=1e-12)


def test_kld_epsilon_matters_where_the_prediction_is_zero():
    pred, gt = np.array([[1.0, 0], [0, 0]]), np.array([[1.0, 1], [0, 0]])
    # 0.5 * log(eps + 0.5 / (1 + eps)) + 0.5 * log(eps + 0.5 / eps)
    expected = 0.5 * math.log(1e-7 + 0.5 / (1 + 1e-7)) + 0.5 * math.log(1e-7 + 0.5 / 1e-7)
    assert float(kld(pred, gt, eps=1e-7)) == pytest.approx(expected)


def test_sim_hand_case():
    # p -> (1,0,0,0), g -> (0.5,0.5,0,0): sum of minima 0.5
    assert float(sim(np.array([[1.0, 0], [0, 0]]), np.array([[1.0, 1], [0, 0]]))) == pytest.approx(0.5)
    assert float(sim(RAMP, RAMP * 7)) == pytest.approx(1.0)


def test_auc_judd_hand_case():
    # rescaled s = (0, 3/7, 5/14, 1); fixations on 0.8 and 0.35.
    # thresholds 1 -> (fp 0, tp 1/2); 5/14 -> 3 pixels above, (fp 1/2, tp 1); area 0.375 + 0.5
    fix = np.array([[0, 0], [1, 1]])
    assert auc_judd(PRED, fix, jitter=False) == pytest.approx(0.875)
    assert auc_judd(PRED, fix, jitter=True) == pytest.approx(0.875, abs=1e-5)


def test_auc_shuffled_hand_case():
    # positives s = (1, 5/14), negatives (0, 3/7); thresholds 1.0, 0.9, ..., 0:
    # (fp, tp) = (0, .5) down to t=.5, (.5, .5) at .4, (.5, 1) at .3 ... (1, 1) at 0 -> 0.25 + 0.5
    fix, other = np.array([[0, 0], [1, 1]]), np.array([[1, 1], [0, 0]])
    assert auc_shuffled(PRED, fix, other, n_splits=3) == pytest.approx(0.75)
    # negatives on the very same pixels as the positives: chance
    assert auc_shuffled(PRED, fix, fix, n_splits=3) == pytest.approx(0.5)


def test_auc_shuffled_samples_at_most_as_many_negatives_as_fixations():
    pred = np.arange(16, dtype=float).reshape(4, 4)
    fix = np.zeros((4, 4))
    fix[3, 3] = 1
    other = np.zeros((4, 4))
    other[0, :] = 1  # four candidate negatives, all below the positive
    assert auc_shuffled(pred, fix, other, n_splits=10) == pytest.approx(1.0)


def test_constant_prediction_is_rejected_not_nan():
    for fn in (
        lambda p: cc(p, RAMP),
        lambda p: nss(p, RAMP > 2),
        lambda p: sim(p, RAMP),
        lambda p: auc_judd(p, RAMP > 2, jitter=False),
    ):
        with pytest.raises(ValueError, match="constant"):
            fn(np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        cc(np.ones((2, 3)), np.ones((2, 2)))


def test_batched_torch_metrics_match_per_map_values():
    torch.manual_seed(0)
    pred, dens = torch.rand(3, 5, 6, dtype=torch.float64), torch.rand(3, 5, 6, dtype=torch.float64)
    fix = (torch.rand(3, 5, 6) > 0.7).double()
    for fn, target in ((cc, dens), (kld, dens), (sim, dens), (nss, fix)):
        batched = fn(pred, target)
        assert batched.shape == (3,)
        for i in range(3):
            assert float(batched[i]) == pytest.approx(float(fn(pred[i].numpy(), target[i].numpy())))


def test_loss_is_minus_nss_plus_ten_kl_minus_two_cc_on_max_normalised_maps():
    torch.manual_seed(1)
    pred = torch.rand(2, 6, 6) * 0.5 + 0.1
    dens = torch.rand(2, 6, 6)
    fix = (dens > 0.8).float()
    scaled = pred / pred.amax(dim=(1, 2), keepdim=True)
    expected = (-nss(scaled, fix) + 10 * kld(scaled, dens, eps=1e-7) - 2 * cc(scaled, dens)).mean()
    assert float(saliency_loss(pred, dens, fix)) == pytest.approx(float(expected), rel=1e-5)
    # scale invariance: max normalisation makes the loss ignore a global gain
    assert float(saliency_loss(pred * 0.3, dens, fix)) == pytest.approx(float(expected), rel=1e-4)
