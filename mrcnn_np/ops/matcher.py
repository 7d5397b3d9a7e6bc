"""Assigning anchors / proposals to ground truth, and sampling a balanced minibatch.

`Matcher` is torchvision's (`models/detection/_utils.py`, REFERENCE.md §4.5): the labelling
rule of Faster R-CNN §3.1.2 (Ren et al., 2015): positive if IoU >= high with some gt box,
negative if IoU < low with all of them, ignored in between, plus the "low-quality" rule that
also makes positive the anchor(s) with the highest IoU for each gt box, so that no gt box is
left without an anchor. `BalancedPositiveNegativeSampler` draws the minibatch of §3.1.3
(256 anchors per image, up to half of them positive; 512 RoIs with 25% positives in the box
head, Fast R-CNN §2.3).
"""

import numpy as np

__all__ = ["BalancedPositiveNegativeSampler", "Matcher"]


class Matcher:
    """Match every prediction (column) of a quality matrix to at most one gt box (row).

    `matches = Matcher(high, low, allow_low_quality_matches)(iou)` with `iou` of shape
    (M_gt, N_pred) returns an int64 array (N,) holding, for each prediction:

    * the index of its best gt (the first one on ties) if that IoU is >= high_threshold;
    * BELOW_LOW_THRESHOLD (-1) if its best IoU is < low_threshold;
    * BETWEEN_THRESHOLDS (-2) if its best IoU is in [low_threshold, high_threshold).

    With `allow_low_quality_matches`, for each gt g every prediction p whose IoU equals g's
    best IoU (exact float equality, so ties all count) gets back *its own* best gt (which is g
    unless p overlaps another gt even more). A gt that overlaps nothing has best IoU 0, so
    every prediction with IoU 0 to it becomes a match; this is torchvision's behaviour too.

    Empty inputs: torchvision raises ValueError when there is no gt or no prediction. Here an
    image without gt gives all BELOW_LOW_THRESHOLD (every prediction is background, which is
    what the RPN and box head do for such images anyway), and no prediction gives an empty
    (0,) array.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        if not low_threshold <= high_threshold:
            raise ValueError(
                f"low_threshold: expected <= high_threshold ({high_threshold}), got {low_threshold}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix):
        quality = np.asarray(match_quality_matrix)
        if quality.ndim != 2:
            raise ValueError(
                f"match_quality_matrix: expected shape (M_gt, N_pred), got {quality.shape}"
            )
        num_gt, num_pred = quality.shape
        if num_gt == 0 or num_pred == 0:
            return np.full(num_pred, self.BELOW_LOW_THRESHOLD, dtype=np.int64)
        if np.isnan(quality).any():
            raise ValueError(
                "match_quality_matrix: contains NaN (box_iou of two disjoint zero-area boxes?)"
            )

        best_gt = quality.argmax(axis=0)  # first maximum wins, like torch.max(dim=0)
        best_quality = quality[best_gt, np.arange(num_pred)]
        matches = best_gt.astype(np.int64)
        matches[best_quality < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS

        if self.allow_low_quality_matches:
            best_for_each_gt = quality.max(axis=1, keepdims=True)
            _, preds_to_update = np.nonzero(quality == best_for_each_gt)
            matches[preds_to_update] = best_gt[preds_to_update]
        return matches


class BalancedPositiveNegativeSampler:
    """Sample up to `batch_size_per_image` elements per image with a fixed positive share.

    For each image's label array: positives are `labels >= 1`, negatives `labels == 0`, and
    anything else (-1, ignored) is never sampled. `num_pos = min(#pos, int(B * fraction))`,
    `num_neg = min(#neg, B - num_pos)`; each subset is drawn uniformly without replacement
    from `rng` (a numpy Generator, or a seed; the same seed gives the same samples). Returns
    two lists of bool masks, positives and negatives, each mask the shape of its labels.

    The draws are not torch's `randperm`, so the sampled subsets differ from torchvision's;
    the counts are the same. (For bit-exact parity, make B large enough to take everything.)
    """

    def __init__(self, batch_size_per_image, positive_fraction, rng=None):
        if batch_size_per_image < 0:
            raise ValueError(
                f"batch_size_per_image: expected a non-negative int, got {batch_size_per_image}"
            )
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction: expected in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.rng = np.random.default_rng(rng)

    def __call__(self, matched_labels):
        pos_masks, neg_masks = [], []
        for image_index, labels in enumerate(matched_labels):
            labels = np.asarray(labels)
            if labels.ndim != 1:
                raise ValueError(
                    f"matched_labels[{image_index}]: expected a 1-D array, got shape {labels.shape}"
                )
            positive = np.flatnonzero(labels >= 1)
            negative = np.flatnonzero(labels == 0)
            num_pos = min(len(positive), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(len(negative), self.batch_size_per_image - num_pos)
            pos_masks.append(self._mask(len(labels), positive, num_pos))
            neg_masks.append(self._mask(len(labels), negative, num_neg))
        return pos_masks, neg_masks

    def _mask(self, length, candidates, count):
        mask = np.zeros(length, dtype=bool)
        mask[self.rng.permutation(candidates)[:count]] = True
        return mask
