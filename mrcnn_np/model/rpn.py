"""Region Proposal Network (Ren et al., 2015, Sec. 3.1; Mask R-CNN uses it with FPN, Lin et al.
2017, Sec. 4.1), with torchvision's numbers (REFERENCE.md Sec. 3-4).

A 3x3 conv + ReLU shared by every FPN level, then two 1x1 convs: `objectness` (one logit per
anchor) and `deltas` (four box offsets per anchor). Proposals are the anchors moved by the
deltas, kept per level by top-k on the logits, clipped to the image, filtered, and reduced by
NMS per level. Proposals are constants for the later stages: no gradient flows through their
coordinates.

Training: each anchor is matched to the gt boxes (IoU >= 0.7 positive, < 0.3 negative, plus
each gt's best anchors), 256 anchors per image are sampled (at most half positive), and

    loss_objectness  = mean BCE over the sampled anchors S (of the whole batch)
    loss_rpn_box_reg = sum of smooth-L1 (beta 1/9) over the positive anchors / |S|

Their gradients with respect to the head's outputs are kept for `backward()`.
"""

import numpy as np

from .. import nn
from ..nn import functional as F
from ..nn import init
from ..nn.module import Module, Sequential
from ..ops.boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from ..ops.matcher import BalancedPositiveNegativeSampler, Matcher
from ..ops.nms import batched_nms


class RPNHead(Module):
    """conv 3x3 + ReLU -> cls_logits (A) and bbox_pred (4A), applied to every level.

    One call takes all levels as a list, so one forward has one backward; the parameter
    gradients are the sums over levels.
    """

    def __init__(self, in_channels, num_anchors, rng=None):
        super().__init__()
        # torchvision wraps the conv twice (Conv2dNormActivation in a Sequential)
        self.conv = Sequential(Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1)))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in (self.conv[0][0], self.cls_logits, self.bbox_pred):
            conv.weight.data = init.normal(conv.weight.shape, 0.01, rng=rng)
            conv.bias.data = np.zeros_like(conv.bias.data)

    def forward(self, features):
        conv = self.conv[0][0]
        objectness, deltas, caches = [], [], []
        for x in features:
            t, conv_cache = F.conv2d(x, conv.weight.data, conv.bias.data, 1, 1)
            t, relu_cache = F.relu(t)
            logits, cls_cache = F.conv2d(t, self.cls_logits.weight.data,
                                         self.cls_logits.bias.data)
            offsets, box_cache = F.conv2d(t, self.bbox_pred.weight.data,
                                          self.bbox_pred.bias.data)
            objectness.append(logits)
            deltas.append(offsets)
            caches.append((conv_cache, relu_cache, cls_cache, box_cache))
        self._save(caches)
        return objectness, deltas

    def backward(self, dobjectness, ddeltas):
        """Gradients per level of the two outputs -> gradients per level of the features."""
        conv = self.conv[0][0]
        dfeatures = []
        for (conv_cache, relu_cache, cls_cache, box_cache), dobj, ddel in zip(
                self._take_cache(), dobjectness, ddeltas):
            dt, dw, db = F.conv2d_backward(dobj, cls_cache)
            self.cls_logits.weight.accumulate_grad(dw)
            self.cls_logits.bias.accumulate_grad(db)
            dt_box, dw, db = F.conv2d_backward(ddel, box_cache)
            self.bbox_pred.weight.accumulate_grad(dw)
            self.bbox_pred.bias.accumulate_grad(db)
            dt = F.relu_backward(dt + dt_box, relu_cache)
            dx, dw, db = F.conv2d_backward(dt, conv_cache)
            conv.weight.accumulate_grad(dw)
            conv.bias.accumulate_grad(db)
            dfeatures.append(dx)
        return dfeatures


def flatten_predictions(objectness, deltas):
    """Per level (N, A, H, W) and (N, 4A, H, W) -> (N, sum H*W*A) and (N, sum H*W*A, 4),
    location-major and anchor-minor, the order the anchors are generated in."""
    flat_obj, flat_del = [], []
    for obj, d in zip(objectness, deltas):
        n, a, h, w = obj.shape
        flat_obj.append(obj.transpose(0, 2, 3, 1).reshape(n, h * w * a))
        flat_del.append(d.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return np.concatenate(flat_obj, axis=1), np.concatenate(flat_del, axis=1)


def unflatten_gradients(dobj, ddeltas, shapes):
    """The inverse of `flatten_predictions`, for the gradients."""
    dobj_levels, ddel_levels, start = [], [], 0
    for n, a, h, w in shapes:
        stop = start + h * w * a
        dobj_levels.append(np.ascontiguousarray(
            dobj[:, start:stop].reshape(n, h, w, a).transpose(0, 3, 1, 2)))
        ddel_levels.append(np.ascontiguousarray(
            ddeltas[:, start:stop].reshape(n, h, w, a, 4).transpose(0, 3, 4, 1, 2)
            .reshape(n, 4 * a, h, w)))
        start = stop
    return dobj_levels, ddel_levels


def top_n_per_level(objectness, num_anchors_per_level, top_n):
    """Indices of the `top_n` highest logits of each level (descending), levels in order."""
    picks, start = [], 0
    for count in num_anchors_per_level:
        scores = objectness[:, start:start + count]
        k = min(top_n, count)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < count else \
            np.broadcast_to(np.arange(count), scores.shape)
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        picks.append(np.take_along_axis(part, order, 1) + start)
        start += count
    return np.concatenate(picks, axis=1)


class RegionProposalNetwork(Module):
    def __init__(self, anchor_generator, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                 batch_size_per_image=256, positive_fraction=0.5,
                 pre_nms_top_n=None, post_nms_top_n=None, nms_thresh=0.7, score_thresh=0.0,
                 min_size=1e-3, rng=None):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh,
                                        allow_low_quality_matches=True)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image,
                                                             positive_fraction, self.rng)
        self.pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self.post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size
        self._loss_grads = None

    def _mode(self, table):
        return table["training" if self.training else "testing"]

    def forward(self, images, features, targets=None):
        """images: ImageList; features: dict level -> (N, C, h, w).
        Returns (list of (P_i, 4) proposals, dict of losses (empty in eval))."""
        names = list(features)
        levels = [features[name] for name in names]
        objectness, deltas = self.head(levels)
        # every image of the padded batch has the same anchors
        anchors, num_anchors_per_level = self.anchor_generator(
            images.tensors.shape[-2:], [f.shape[-2:] for f in levels])
        anchors = anchors.astype(deltas[0].dtype, copy=False)  # the features' dtype, as torchvision
        obj_flat, deltas_flat = flatten_predictions(objectness, deltas)
        n = obj_flat.shape[0]
        proposals = self.box_coder.decode(deltas_flat.reshape(-1, 4), np.tile(anchors, (n, 1)))
        proposals = proposals.reshape(n, -1, 4)
        boxes = self.filter_proposals(proposals, obj_flat, images.image_sizes,
                                      num_anchors_per_level)
        self._loss_grads = None
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets: required in training mode")
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            # images without gt boxes have no positives: their targets are never used
            regression_targets = [self.box_coder.encode(g, anchors) if len(t["boxes"]) else
                                  np.zeros_like(anchors) for g, t in zip(matched_gt_boxes, targets)]
            loss_obj, loss_box, dobj, ddel = self.compute_loss(
                obj_flat, deltas_flat, labels, regression_targets)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}
            self._loss_grads = (dobj, ddel, [o.shape for o in objectness], names)
        return boxes, losses

    def filter_proposals(self, proposals, objectness, image_sizes, num_anchors_per_level):
        levels = np.repeat(np.arange(len(num_anchors_per_level)), num_anchors_per_level)
        top = top_n_per_level(objectness, num_anchors_per_level, self._mode(self.pre_nms_top_n))
        post_n = self._mode(self.post_nms_top_n)
        result = []
        for i, image_size in enumerate(image_sizes):
            idx = top[i]
            boxes = clip_boxes_to_image(proposals[i, idx], image_size)
            scores, _ = F.sigmoid(objectness[i, idx])
            lvl = levels[idx]
            keep = remove_small_boxes(boxes, self.min_size)
            keep = keep[scores[keep] >= self.score_thresh]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[:post_n]
            result.append(boxes[keep])
        return result

    def assign_targets_to_anchors(self, anchors, targets):
        """Per image: labels 1 (positive), 0 (negative), -1 (ignored) and the matched gt box."""
        labels, matched = [], []
        for target in targets:
            gt = np.asarray(target["boxes"], anchors.dtype).reshape(-1, 4)
            if len(gt) == 0:
                labels.append(np.zeros(len(anchors), anchors.dtype))
                matched.append(np.zeros_like(anchors))
                continue
            matches = self.proposal_matcher(box_iou(gt, anchors))
            label = (matches >= 0).astype(anchors.dtype)
            label[matches == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
            matched.append(gt[np.maximum(matches, 0)])
        return labels, matched

    def compute_loss(self, objectness, deltas, labels, regression_targets):
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = np.flatnonzero(np.concatenate(pos_masks))
        sampled = np.concatenate([pos, np.flatnonzero(np.concatenate(neg_masks))])
        obj = objectness.reshape(-1)
        dl = deltas.reshape(-1, 4)
        all_labels = np.concatenate(labels)
        all_targets = np.concatenate(regression_targets)
        dobj = np.zeros_like(obj)
        ddel = np.zeros_like(dl)
        if len(sampled) == 0:
            return 0.0, 0.0, dobj.reshape(objectness.shape), ddel.reshape(deltas.shape)
        loss_obj, dsel = F.binary_cross_entropy_with_logits(obj[sampled], all_labels[sampled])
        dobj[sampled] = dsel
        loss_box, dpos = F.smooth_l1(dl[pos], all_targets[pos], beta=1.0 / 9, reduction="sum")
        ddel[pos] = dpos / len(sampled)
        return (float(loss_obj), float(loss_box) / len(sampled),
                dobj.reshape(objectness.shape), ddel.reshape(deltas.shape))

    def backward(self):
        """Gradient of loss_objectness + loss_rpn_box_reg -> dict level -> d(features)."""
        if self._loss_grads is None:
            raise RuntimeError("RegionProposalNetwork.backward: run a training forward first")
        dobj, ddel, shapes, names = self._loss_grads
        self._loss_grads = None
        dobj_levels, ddel_levels = unflatten_gradients(dobj, ddel, shapes)
        return dict(zip(names, self.head.backward(dobj_levels, ddel_levels)))
