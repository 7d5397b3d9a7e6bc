"""Greedy detection matching and precision/recall accumulation of COCOeval (COCOEVAL.md §2.5-2.6).

Matching, for one (image, category, area range) and each IoU threshold: detections in score
order each take the still-free gt with the highest IoU >= threshold (on exact ties the later
gt wins). Gts outside the area range, and crowd gts, are *ignored*: they sort last, a det
matched to one is neither TP nor FP, and a crowd gt can absorb any number of dets. Once a
det has found a regular gt it never looks at ignored ones. Unmatched dets outside the area
range are ignored too.

Accumulation, per category, area range and max-detections cut: the first maxDet dets of
every image are pooled and stably sorted by score; cumulative TP / FP give recall
`tp / n_gt` and precision `tp / (tp + fp + eps)`; precision is made monotone from the right
and read at the 101 recall thresholds (`searchsorted`, side='left'; 0 past the last recall).
-1 marks a category/area with no non-ignored gt.

The flat layout shared by both kernels: groups are (image, category) cells sorted by
category then image id; group g owns detections `grp_dt_ptr[g]:grp_dt_ptr[g+1]` (already
sorted by score and cut to maxDets[-1]) and gts `grp_gt_ptr[g]:...` (file order), and its
IoU block `iou[iou_ptr[g]:iou_ptr[g+1]]`, row-major (dets, gts), which is empty when
pycocotools has no IoU matrix for the cell.
"""

import numba
import numpy as np

__all__ = ["accumulate", "accumulate_reference", "evaluate_image_reference", "match_groups"]

_EPS = np.spacing(1.0)
_MAX_IOU_THR = 1 - 1e-10  # a threshold of 1.0 would otherwise need a perfect float match


def evaluate_image_reference(
    ious, gt_ids, gt_ignore, gt_crowd, gt_area, dt_area, area_rng, iou_thrs
):
    """pycocotools `evaluateImg` for one cell. `ious` is (D, G), dets in score order.

    Returns `dtm` (T, D) matched gt ids (0 = unmatched), `dt_ignore` (T, D) bool and the gt
    ignore flags in their sorted order (G,).
    """
    lo, hi = area_rng
    ignore = [bool(ig or a < lo or a > hi) for ig, a in zip(gt_ignore, gt_area, strict=True)]
    order = sorted(range(len(ignore)), key=lambda g: ignore[g])  # stable: regular gts first
    ignore = [ignore[g] for g in order]
    n_thr, n_dt, n_gt = len(iou_thrs), len(dt_area), len(order)
    dtm = np.zeros((n_thr, n_dt))
    dt_ignore = np.zeros((n_thr, n_dt), dtype=bool)
    gt_matched = np.zeros((n_thr, n_gt), dtype=bool)
    if len(ious):
        for t, thr in enumerate(iou_thrs):
            for d in range(n_dt):
                best, m = min(thr, _MAX_IOU_THR), -1
                for s, g in enumerate(order):
                    if gt_matched[t, s] and not gt_crowd[g]:
                        continue
                    if m > -1 and not ignore[m] and ignore[s]:
                        break  # a regular match is never traded for an ignored gt
                    if ious[d][g] < best:
                        continue
                    best, m = ious[d][g], s
                if m == -1:
                    continue
                dt_ignore[t, d] = ignore[m]
                dtm[t, d] = gt_ids[order[m]]
                gt_matched[t, m] = True
    outside = np.array([a < lo or a > hi for a in dt_area], dtype=bool)
    dt_ignore |= (dtm == 0) & outside[None, :]
    return dtm, dt_ignore, np.array(ignore, dtype=bool)


@numba.njit(cache=True)
def _match_kernel(
    iou,
    iou_ptr,
    grp_dt_ptr,
    grp_gt_ptr,
    gt_area,
    gt_ignore,
    gt_crowd,
    gt_id_nonzero,
    dt_area,
    area_rng,
    iou_thrs,
):
    n_groups = grp_dt_ptr.shape[0] - 1
    n_area, n_thr, n_dt = area_rng.shape[0], iou_thrs.shape[0], grp_dt_ptr[-1]
    matched = np.zeros((n_area, n_thr, n_dt), np.bool_)
    ignored = np.zeros((n_area, n_thr, n_dt), np.bool_)
    n_regular = np.zeros((n_area, n_groups), np.int64)
    for grp in range(n_groups):
        d0, g0 = grp_dt_ptr[grp], grp_gt_ptr[grp]
        n_d, n_g = grp_dt_ptr[grp + 1] - d0, grp_gt_ptr[grp + 1] - g0
        has_iou = iou_ptr[grp + 1] > iou_ptr[grp]
        order = np.empty(n_g, np.int64)
        ignore = np.empty(n_g, np.bool_)
        taken = np.zeros(n_g, np.bool_)
        for a in range(n_area):
            lo, hi = area_rng[a, 0], area_rng[a, 1]
            s = 0
            for pass_ignored in (False, True):  # stable sort by the ignore flag
                for g in range(n_g):
                    ig = gt_ignore[g0 + g] or gt_area[g0 + g] < lo or gt_area[g0 + g] > hi
                    if ig == pass_ignored:
                        order[s] = g
                        ignore[s] = ig
                        s += 1
                        if not ig:
                            n_regular[a, grp] += 1
            for t in range(n_thr):
                taken[:] = False
                for d in range(n_d):
                    best, m = min(iou_thrs[t], _MAX_IOU_THR), -1
                    if has_iou:
                        row = iou_ptr[grp] + d * n_g
                        for s in range(n_g):
                            g = order[s]
                            if taken[s] and not gt_crowd[g0 + g]:
                                continue
                            if m > -1 and not ignore[m] and ignore[s]:
                                break
                            if iou[row + g] < best:
                                continue
                            best, m = iou[row + g], s
                    if m > -1:
                        taken[m] = True
                        ignored[a, t, d0 + d] = ignore[m]
                        matched[a, t, d0 + d] = gt_id_nonzero[g0 + order[m]]
                    # pycocotools tests "dtm == 0", which a gt with id 0 also passes
                    if not matched[a, t, d0 + d] and (dt_area[d0 + d] < lo or dt_area[d0 + d] > hi):
                        ignored[a, t, d0 + d] = True
    return matched, ignored, n_regular


def match_groups(
    iou,
    iou_ptr,
    grp_dt_ptr,
    grp_gt_ptr,
    gt_area,
    gt_ignore,
    gt_crowd,
    gt_id,
    dt_area,
    area_rng,
    iou_thrs,
):
    """Match every (cell, area range, threshold) in one kernel call.

    gt_* are per gt in the flat group order, dt_area per det. Returns `matched` (A, T, N)
    (det matched to a gt whose id is non-zero, i.e. pycocotools' dtm != 0), `ignored`
    (A, T, N) (pycocotools' dtIgnore) and `n_regular` (A, n_groups): non-ignored gts per cell.
    """
    return _match_kernel(
        np.asarray(iou, np.float64),
        np.asarray(iou_ptr, np.int64),
        np.asarray(grp_dt_ptr, np.int64),
        np.asarray(grp_gt_ptr, np.int64),
        np.asarray(gt_area, np.float64),
        np.asarray(gt_ignore, np.bool_),
        np.asarray(gt_crowd, np.bool_),
        np.asarray(gt_id) != 0,
        np.asarray(dt_area, np.float64),
        np.asarray(area_rng, np.float64).reshape(-1, 2),
        np.asarray(iou_thrs, np.float64),
    )


def accumulate_reference(
    cat_grp_ptr, grp_dt_ptr, dt_score, matched, ignored, n_regular, rec_thrs, max_dets
):
    """pycocotools `accumulate`, written as its loops. Returns precision, recall, scores."""
    n_area, n_thr, _ = matched.shape
    n_cat, n_rec, n_max = len(cat_grp_ptr) - 1, len(rec_thrs), len(max_dets)
    precision = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    recall = -np.ones((n_thr, n_cat, n_area, n_max))
    scores = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    for k in range(n_cat):
        groups = range(cat_grp_ptr[k], cat_grp_ptr[k + 1])
        if len(groups) == 0:
            continue  # no image has a gt or a det of this category
        for m, max_det in enumerate(max_dets):
            sel = np.concatenate(
                [
                    np.arange(grp_dt_ptr[g], min(grp_dt_ptr[g] + max_det, grp_dt_ptr[g + 1]))
                    for g in groups
                ]
            ).astype(np.int64)
            order = np.argsort(-dt_score[sel], kind="mergesort")
            sel, sorted_scores = sel[order], dt_score[sel][order]
            for a in range(n_area):
                npig = int(sum(n_regular[a, g] for g in groups))
                if npig == 0:
                    continue
                tps = matched[a][:, sel] & ~ignored[a][:, sel]
                fps = ~matched[a][:, sel] & ~ignored[a][:, sel]
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t in range(n_thr):
                    tp, fp, nd = tp_sum[t], fp_sum[t], len(sel)
                    rc = tp / npig
                    pr = (tp / (fp + tp + _EPS)).tolist()
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    q, ss = np.zeros(n_rec), np.zeros(n_rec)
                    for r, i in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
                        if i >= nd:
                            break
                        q[r], ss[r] = pr[i], sorted_scores[i]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss
    return precision, recall, scores


@numba.njit(cache=True)
def _precision_recall_curve(sel, matched_t, ignored_t, npig, rc, pr):
    """Cumulative recall and precision of the dets `sel` (score order), precision made
    monotone from the right. Ignored dets add to neither TP nor FP."""
    tp, fp = 0.0, 0.0
    for i in range(sel.shape[0]):
        if not ignored_t[sel[i]]:
            if matched_t[sel[i]]:
                tp += 1.0
            else:
                fp += 1.0
        rc[i] = tp / npig
        pr[i] = tp / (fp + tp + _EPS)
    for i in range(sel.shape[0] - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]


@numba.njit(cache=True)
def _read_at_recalls(rc, pr, sorted_scores, rec_thrs, q, ss):
    """q[r] = pr[first i with rc[i] >= rec_thrs[r]]; stops at the first threshold past the
    last recall, leaving the rest as they are (0), like pycocotools' try/except."""
    nd = rc.shape[0]
    for r in range(rec_thrs.shape[0]):
        lo, hi = 0, nd  # binary search: searchsorted(rc, rec_thrs[r], side='left')
        while lo < hi:
            mid = (lo + hi) // 2
            if rc[mid] < rec_thrs[r]:
                lo = mid + 1
            else:
                hi = mid
        if lo >= nd:
            return
        q[r] = pr[lo]
        ss[r] = sorted_scores[lo]


@numba.njit(cache=True)
def _accumulate_kernel(
    cat_grp_ptr,
    grp_dt_ptr,
    dt_score,
    dt_rank,
    by_score,
    matched,
    ignored,
    n_regular,
    rec_thrs,
    max_dets,
):
    """Outputs with the recall-threshold axis last: (T, K, A, M, R) and recall (T, K, A, M)."""
    n_area, n_thr, _ = matched.shape
    n_cat, n_rec, n_max = cat_grp_ptr.shape[0] - 1, rec_thrs.shape[0], max_dets.shape[0]
    precision = np.full((n_thr, n_cat, n_area, n_max, n_rec), -1.0)
    scores = np.full((n_thr, n_cat, n_area, n_max, n_rec), -1.0)
    recall = np.full((n_thr, n_cat, n_area, n_max), -1.0)
    for k in range(n_cat):
        g0, g1 = cat_grp_ptr[k], cat_grp_ptr[k + 1]
        if g0 == g1:
            continue  # no image has a gt or a det of this category
        d0, d1 = grp_dt_ptr[g0], grp_dt_ptr[g1]
        for m in range(n_max):
            # the category's dets in pooled score order, keeping each image's first max_dets
            sel = np.empty(d1 - d0, np.int64)
            nd = 0
            for i in range(d0, d1):
                if dt_rank[by_score[i]] < max_dets[m]:
                    sel[nd] = by_score[i]
                    nd += 1
            sel = sel[:nd]
            sorted_scores = dt_score[sel]
            rc, pr = np.empty(nd), np.empty(nd)
            for a in range(n_area):
                npig = n_regular[a, g0:g1].sum()
                if npig == 0:
                    continue  # -1: nothing to recall
                for t in range(n_thr):
                    _precision_recall_curve(sel, matched[a, t], ignored[a, t], npig, rc, pr)
                    recall[t, k, a, m] = rc[nd - 1] if nd else 0.0
                    precision[t, k, a, m, :] = 0.0
                    scores[t, k, a, m, :] = 0.0
                    _read_at_recalls(
                        rc, pr, sorted_scores, rec_thrs, precision[t, k, a, m], scores[t, k, a, m]
                    )
    return precision, recall, scores


def accumulate(cat_grp_ptr, grp_dt_ptr, dt_score, matched, ignored, n_regular, rec_thrs, max_dets):
    """Precision (T, R, K, A, M), recall (T, K, A, M) and scores (T, R, K, A, M) arrays.

    pycocotools pools each image's first maxDet dets (in image order) and mergesorts them by
    score. A stable sort of a subset is the subset of the stable sort of the whole, so one
    `lexsort` by (category, -score, position) serves every maxDet.
    """
    cat_grp_ptr = np.asarray(cat_grp_ptr, np.int64)
    grp_dt_ptr = np.asarray(grp_dt_ptr, np.int64)
    dt_score = np.asarray(dt_score, np.float64)
    n_dt = grp_dt_ptr[-1]
    dt_group = np.repeat(np.arange(len(grp_dt_ptr) - 1), np.diff(grp_dt_ptr))
    dt_rank = np.arange(n_dt) - grp_dt_ptr[dt_group]
    dt_cat = np.searchsorted(cat_grp_ptr, dt_group, side="right") - 1
    by_score = np.lexsort((np.arange(n_dt), -dt_score, dt_cat))
    precision, recall, scores = _accumulate_kernel(
        cat_grp_ptr,
        grp_dt_ptr,
        dt_score,
        dt_rank,
        by_score,
        matched,
        ignored,
        n_regular,
        np.asarray(rec_thrs, np.float64),
        np.asarray(max_dets, np.int64),
    )
    to_trkam = (0, 4, 1, 2, 3)  # pycocotools' axis order
    return (
        np.ascontiguousarray(precision.transpose(to_trkam)),
        recall,
        np.ascontiguousarray(scores.transpose(to_trkam)),
    )
