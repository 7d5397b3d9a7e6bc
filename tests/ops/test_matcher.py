"""Matcher and BalancedPositiveNegativeSampler (REFERENCE.md §4.5, §4.6)."""

import numpy as np
import pytest

from mrcnn_np.ops import BalancedPositiveNegativeSampler, Matcher, box_iou

BELOW, BETWEEN = Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS


def test_named_constants():
    assert (BELOW, BETWEEN) == (-1, -2)


def test_thresholds_by_hand():
    iou = np.float32([
        [0.9, 0.5, 0.1, 0.00],
        [0.2, 0.6, 0.1, 0.35],
    ])
    # column 0: best 0.9 (gt 0) >= 0.7 -> 0; column 1: best 0.6 (gt 1) in [0.3, 0.7) -> -2;
    # column 2: best 0.1 < 0.3 -> -1; column 3: best 0.35 (gt 1) -> -2
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(iou), [0, BETWEEN, BELOW, BETWEEN])
    # low-quality rule: gt 0's best is 0.9 (column 0), gt 1's best is 0.6 (column 1), so
    # column 1 gets back its own best gt, 1
    np.testing.assert_array_equal(Matcher(0.7, 0.3, True)(iou), [0, 1, BELOW, BETWEEN])
    assert Matcher(0.7, 0.3)(iou).dtype == np.int64


def test_threshold_boundaries():
    iou = np.float32([[0.3, 0.7, 0.2999, 0.6999]])
    # exactly low -> between; exactly high -> matched
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(iou), [BETWEEN, 0, BELOW, BETWEEN])
    # the RoI heads' 0.5 / 0.5: no band, < 0.5 is background, >= 0.5 foreground
    iou = np.float32([[0.4999, 0.5, 0.0]])
    np.testing.assert_array_equal(Matcher(0.5, 0.5)(iou), [BELOW, 0, BELOW])


def test_first_gt_wins_ties():
    iou = np.float32([[0.8, 0.1], [0.8, 0.1], [0.2, 0.1]])
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(iou), [0, BELOW])


def test_low_quality_ties_and_own_argmax():
    iou = np.float32([
        [0.1, 0.4, 0.4, 0.0],
        [0.2, 0.1, 0.5, 0.0],
    ])
    # before the rule: [-1 (0.2), -2 (0.4), -2 (0.5), -1 (tie at 0 -> gt 0)]
    # gt 0's best is 0.4, reached at columns 1 AND 2 (tie); gt 1's best is 0.5 at column 2.
    # Column 1 -> its own argmax, gt 0. Column 2 is one of gt 0's best too, but gets its own
    # argmax, gt 1, not gt 0.
    np.testing.assert_array_equal(Matcher(0.7, 0.3, True)(iou), [BELOW, 0, 1, BELOW])


def test_gt_that_overlaps_nothing_matches_every_zero_column():
    iou = np.float32([
        [0.0, 0.0, 0.0],
        [0.8, 0.1, 0.0],
    ])
    # gt 0's best IoU is 0, equal to every column, so every column gets its own argmax:
    # column 0 -> gt 1 (0.8), column 1 -> gt 1 (0.1, although below low), column 2 -> gt 0
    # (a tie at 0; the first gt wins). torchvision behaves the same way.
    np.testing.assert_array_equal(Matcher(0.7, 0.3, True)(iou), [1, 1, 0])
    np.testing.assert_array_equal(Matcher(0.7, 0.3, False)(iou), [1, BELOW, BELOW])


def test_empty_inputs():
    matches = Matcher(0.7, 0.3, True)(np.zeros((0, 5), np.float32))
    np.testing.assert_array_equal(matches, [BELOW] * 5)  # no gt: everything is background
    assert matches.dtype == np.int64
    matches = Matcher(0.7, 0.3)(np.zeros((3, 0), np.float32))
    assert matches.shape == (0,) and matches.dtype == np.int64


def test_matcher_rejects_bad_input():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match=r"\(M_gt, N_pred\)"):
        Matcher(0.7, 0.3)(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        Matcher(0.7, 0.3)(np.float32([[0.5, np.nan]]))


# --------------------------------------------------------------------------------------------
# sampler


def test_sampler_counts():
    labels = np.array([1] * 10 + [0] * 100 + [-1] * 30)
    pos, neg = BalancedPositiveNegativeSampler(20, 0.25, rng=0)([labels])
    # num_pos = min(10, int(20*0.25) = 5) = 5; num_neg = min(100, 20 - 5) = 15
    assert pos[0].sum() == 5 and neg[0].sum() == 15
    assert pos[0].dtype == np.bool_ and pos[0].shape == labels.shape
    assert (labels[pos[0]] == 1).all() and (labels[neg[0]] == 0).all()  # -1 never sampled


def test_sampler_fills_with_negatives_and_caps_both():
    sampler = BalancedPositiveNegativeSampler(256, 0.5, rng=0)
    few_pos = np.array([2.0, 1.0] + [0.0] * 300)  # float labels (the RPN's) and class ids > 1
    many_pos = np.array([1] * 300 + [0] * 10)
    pos, neg = sampler([few_pos, many_pos])
    # image 0: num_pos = min(2, 128) = 2, num_neg = min(300, 256 - 2) = 254
    assert (pos[0].sum(), neg[0].sum()) == (2, 254)
    # image 1: num_pos = min(300, 128) = 128, num_neg = min(10, 256 - 128) = 10
    assert (pos[1].sum(), neg[1].sum()) == (128, 10)
    pos, neg = sampler([np.zeros(0)])
    assert pos[0].shape == (0,) and neg[0].shape == (0,)


def test_sampler_is_deterministic_given_a_seed():
    labels = np.array([1] * 50 + [0] * 500)

    def draw(seed):
        pos, neg = BalancedPositiveNegativeSampler(64, 0.25, np.random.default_rng(seed))([labels])
        return np.flatnonzero(pos[0]), np.flatnonzero(neg[0])

    first, again, other = draw(7), draw(7), draw(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    # choosing 48 of 500 negatives: two seeds agreeing is impossible in practice
    assert not np.array_equal(first[1], other[1])


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(10, 1.5)
    with pytest.raises(ValueError, match=r"matched_labels\[0\]"):
        BalancedPositiveNegativeSampler(10, 0.5, 0)([np.zeros((2, 2))])


# --------------------------------------------------------------------------------------------
# parity with torchvision


def iou_with_ties(rng, num_gt, num_pred):
    """box_iou on a coarse grid (ties per prediction are common), plus a copy of each gt's best
    column, so that every gt's best IoU is reached at least twice."""
    def boxes(n):
        xy = rng.integers(0, 12, size=(n, 2))
        wh = rng.integers(1, 6, size=(n, 2))
        return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)

    iou = box_iou(boxes(num_gt), boxes(num_pred))
    return np.concatenate([iou, iou[:, iou.argmax(axis=1)]], axis=1)


@pytest.mark.parity
@pytest.mark.parametrize(("high", "low", "allow"), [(0.7, 0.3, True), (0.7, 0.3, False),
                                                    (0.5, 0.5, False), (0.5, 0.2, True)])
def test_matcher_matches_torchvision(rng, high, low, allow):
    torch = pytest.importorskip("torch")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    theirs = det_utils.Matcher(high, low, allow_low_quality_matches=allow)
    for num_gt, num_pred in ((1, 50), (5, 300), (20, 200)):
        iou = iou_with_ties(rng, num_gt, num_pred)
        if num_gt > 1:
            iou[-1] = 0.0  # a gt overlapping nothing
        expected = theirs(torch.from_numpy(iou)).numpy()
        np.testing.assert_array_equal(Matcher(high, low, allow)(iou), expected)


@pytest.mark.parity
def test_sampler_counts_match_torchvision(rng):
    torch = pytest.importorskip("torch")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    labels = [rng.integers(-1, 3, size=n) for n in (10, 300, 2000)]
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5, rng)(labels)
    their_pos, their_neg = det_utils.BalancedPositiveNegativeSampler(256, 0.5)(
        [torch.from_numpy(x) for x in labels])
    # the draws differ (numpy vs torch RNG), the counts per image do not
    assert [m.sum() for m in pos] == [int(m.sum()) for m in their_pos]
    assert [m.sum() for m in neg] == [int(m.sum()) for m in their_neg]
