"""The RoI heads of Mask R-CNN (He et al., 2017, Sec. 3 and Fig. 4 right, the FPN variant),
with torchvision's numbers (REFERENCE.md Sec. 5).

* Box branch (Fast R-CNN): RoIAlign 7x7 from the FPN level chosen by the RoI's size ->
  fc6, fc7 (1024, ReLU) -> class logits (C) and per-class box deltas (4C, weights 10,10,5,5).
* Mask branch: RoIAlign 14x14 -> 4 x (conv 3x3 256 + ReLU) -> deconv 2x2 stride 2 + ReLU ->
  1x1 conv to one 28x28 logit map per class. The loss uses only the gt class's map: a per-pixel
  sigmoid, so classes do not compete for a pixel (the paper's decoupling, Sec. 3).
* Keypoint branch (Keypoint R-CNN, Sec. 5): RoIAlign 14x14 -> 8 x (conv 3x3 512 + ReLU) ->
  deconv 4x4 stride 2 -> 2x bilinear upsampling -> one 56x56 logit map per keypoint; the loss is
  a softmax over the 56*56 positions of each visible keypoint.

Training: the gt boxes are appended to the proposals, proposals are matched to gts at IoU 0.5,
512 per image are sampled (at most a quarter positive), and each loss returns its gradient,
which `backward()` sends through the heads and the RoIAlign into the FPN levels.
"""

import numpy as np

from .. import nn
from ..nn import functional as F
from ..nn import init
from ..nn.module import Module, Sequential
from ..ops.boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from ..ops.interpolate import resize_bicubic, resize_bilinear, resize_bilinear_backward
from ..ops.masks import project_masks_on_boxes
from ..ops.matcher import BalancedPositiveNegativeSampler, Matcher
from ..ops.nms import batched_nms


class TwoMLPHead(Module):
    """Flatten (K, C, 7, 7) -> fc6 -> ReLU -> fc7 -> ReLU."""

    def __init__(self, in_channels, representation_size, rng=None):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size, rng=rng)
        self.relu6 = nn.ReLU()
        self.fc7 = nn.Linear(representation_size, representation_size, rng=rng)
        self.relu7 = nn.ReLU()

    def forward(self, x):
        self._save(x.shape)
        return self.relu7(self.fc7(self.relu6(self.fc6(x.reshape(x.shape[0], -1)))))

    def backward(self, dout):
        shape = self._take_cache()
        d = self.fc6.backward(self.relu6.backward(self.fc7.backward(self.relu7.backward(dout))))
        return d.reshape(shape)


class FastRCNNPredictor(Module):
    """cls_score (C logits) and bbox_pred (4C deltas, class c at columns 4c..4c+3)."""

    def __init__(self, in_channels, num_classes, rng=None):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes, rng=rng)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4, rng=rng)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)

    def backward(self, dscores, ddeltas):
        return self.cls_score.backward(dscores) + self.bbox_pred.backward(ddeltas)


def _head_conv(in_channels, out_channels, rng):
    # torchvision's heads: kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero bias
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, rng=rng)
    conv.weight.data = init.kaiming_normal(conv.weight.shape, mode="fan_out", rng=rng)
    conv.bias.data = np.zeros_like(conv.bias.data)
    return conv


def mask_rcnn_heads(in_channels, layers=(256, 256, 256, 256), rng=None):
    """4 x (conv 3x3 + ReLU), named `{i}.0.weight` as torchvision's MaskRCNNHeads."""
    blocks, channels = [], in_channels
    for width in layers:
        blocks.append(Sequential(_head_conv(channels, width, rng), nn.ReLU()))
        channels = width
    return Sequential(*blocks)


class MaskRCNNPredictor(Module):
    """conv5_mask: 2x2 stride-2 deconv + ReLU (14 -> 28), then mask_fcn_logits: 1x1 to C maps."""

    def __init__(self, in_channels, dim_reduced, num_classes, rng=None):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2, rng=rng)
        self.relu = nn.ReLU()
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1, rng=rng)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            layer.weight.data = init.kaiming_normal(layer.weight.shape, mode="fan_out", rng=rng)

    def forward(self, x):
        return self.mask_fcn_logits(self.relu(self.conv5_mask(x)))

    def backward(self, dout):
        return self.conv5_mask.backward(self.relu.backward(self.mask_fcn_logits.backward(dout)))


def keypoint_rcnn_heads(in_channels, layers=(512,) * 8, rng=None):
    """8 x (conv 3x3 + ReLU) in one Sequential: convs at even indices, as torchvision names them."""
    modules, channels = [], in_channels
    for width in layers:
        modules += [_head_conv(channels, width, rng), nn.ReLU()]
        channels = width
    return Sequential(*modules)


class KeypointRCNNPredictor(Module):
    """kps_score_lowres: 4x4 stride-2 deconv (14 -> 28), then 2x bilinear upsampling (-> 56)."""

    def __init__(self, in_channels, num_keypoints, rng=None):
        super().__init__()
        self.kps_score_lowres = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2,
                                                   padding=1, rng=rng)
        layer = self.kps_score_lowres
        layer.weight.data = init.kaiming_normal(layer.weight.shape, mode="fan_out", rng=rng)
        layer.bias.data = np.zeros_like(layer.bias.data)

    def forward(self, x):
        out, cache = resize_bilinear(self.kps_score_lowres(x), scale_factor=2.0)
        self._save(cache)
        return out

    def backward(self, dout):
        return self.kps_score_lowres.backward(resize_bilinear_backward(dout,
                                                                       self._take_cache()))


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def keypoints_to_heatmap(keypoints, rois, heatmap_size):
    """Target position (y*M + x) of each keypoint in its RoI's MxM heatmap, and its validity."""
    x1, y1 = rois[:, 0:1], rois[:, 1:2]
    scale_x = np.float32(heatmap_size) / (rois[:, 2:3] - x1)
    scale_y = np.float32(heatmap_size) / (rois[:, 3:4] - y1)
    x, y = keypoints[..., 0], keypoints[..., 1]
    xi = np.floor((x - x1) * scale_x).astype(np.int64)
    yi = np.floor((y - y1) * scale_y).astype(np.int64)
    # a keypoint exactly on the right/bottom edge belongs to the last cell
    xi[x == rois[:, 2:3]] = heatmap_size - 1
    yi[y == rois[:, 3:4]] = heatmap_size - 1
    valid = (xi >= 0) & (yi >= 0) & (xi < heatmap_size) & (yi < heatmap_size)
    valid &= keypoints[..., 2] > 0
    return np.where(valid, yi * heatmap_size + xi, 0), valid


def heatmaps_to_keypoints(maps, rois):
    """(D, K, 56, 56) logits -> keypoints (D, K, 3) (x, y, 1) and scores (D, K): each map is
    resized bicubically to the box's ceil'd size and its argmax taken at the cell centre."""
    num, k = maps.shape[:2]
    keypoints = np.zeros((num, k, 3), np.float32)
    scores = np.zeros((num, k), np.float32)
    widths = np.maximum(rois[:, 2] - rois[:, 0], np.float32(1))
    heights = np.maximum(rois[:, 3] - rois[:, 1], np.float32(1))
    for i in range(num):
        w_c, h_c = int(np.ceil(widths[i])), int(np.ceil(heights[i]))
        roi_map = resize_bicubic(maps[i], (h_c, w_c))
        pos = roi_map.reshape(k, -1).argmax(axis=1)
        xi, yi = pos % w_c, pos // w_c
        keypoints[i, :, 0] = (xi.astype(np.float32) + np.float32(0.5)) * (widths[i] / w_c) \
            + rois[i, 0]
        keypoints[i, :, 1] = (yi.astype(np.float32) + np.float32(0.5)) * (heights[i] / h_c) \
            + rois[i, 1]
        keypoints[i, :, 2] = 1
        scores[i] = roi_map[np.arange(k), yi, xi]
    return keypoints, scores


class RoIHeads(Module):
    def __init__(self, box_roi_pool, box_head, box_predictor, fg_iou_thresh=0.5,
                 bg_iou_thresh=0.5, batch_size_per_image=512, positive_fraction=0.25,
                 bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.05, nms_thresh=0.5,
                 detections_per_img=100, mask_roi_pool=None, mask_head=None,
                 mask_predictor=None, keypoint_roi_pool=None, keypoint_head=None,
                 keypoint_predictor=None, mask_loss="sigmoid", rng=None):
        super().__init__()
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss: expected one of {MASK_LOSSES}, got {mask_loss!r}")
        self.mask_loss = mask_loss
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh,
                                        allow_low_quality_matches=False)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image,
                                                             positive_fraction, self.rng)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.keypoint_roi_pool = keypoint_roi_pool
        self.keypoint_head = keypoint_head
        self.keypoint_predictor = keypoint_predictor
        self._grads = None

    @property
    def has_mask(self):
        return self.mask_predictor is not None

    @property
    def has_keypoint(self):
        return self.keypoint_predictor is not None

    # -- training targets ------------------------------------------------------------------

    def select_training_samples(self, proposals, targets):
        """Append the gts to the proposals, match at IoU 0.5 and sample 512 per image.
        Returns per image: sampled proposals, matched gt index, class label, box targets."""
        out_props, out_idxs, out_labels, out_targets = [], [], [], []
        for props, target in zip(proposals, targets):
            gt_boxes = np.asarray(target["boxes"], props.dtype).reshape(-1, 4)
            gt_labels = np.asarray(target["labels"], np.int64).reshape(-1)
            props = np.concatenate([props, gt_boxes])
            if len(gt_boxes) == 0:
                matched = np.zeros(len(props), np.int64)
                labels = np.zeros(len(props), np.int64)
                gt_boxes = np.zeros((1, 4), props.dtype)
            else:
                matches = self.proposal_matcher(box_iou(gt_boxes, props))
                matched = np.maximum(matches, 0)
                labels = gt_labels[matched]
                labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            (pos,), (neg,) = self.fg_bg_sampler([labels])
            keep = np.flatnonzero(pos | neg)  # ascending: proposals first, then gts
            props, matched, labels = props[keep], matched[keep], labels[keep]
            out_props.append(props)
            out_idxs.append(matched)
            out_labels.append(labels)
            # without gt boxes there are no positives, whose targets alone are used
            out_targets.append(self.box_coder.encode(gt_boxes[matched], props)
                               if len(target["boxes"]) else np.zeros_like(props))
        return out_props, out_idxs, out_labels, out_targets

    # -- forward ---------------------------------------------------------------------------

    def forward(self, features, proposals, image_sizes, targets=None):
        """Returns (detections: list of dicts per image, losses: dict; empty in eval)."""
        self._grads = None
        if self.training:
            if targets is None:
                raise ValueError("targets: required in training mode")
            proposals, matched_idxs, labels, regression_targets = \
                self.select_training_samples(proposals, targets)
        box_features = self.box_roi_pool(features, proposals, image_sizes)
        class_logits, box_regression = self.box_predictor(self.box_head(box_features))

        if not self.training:
            detections = self.postprocess_detections(class_logits, box_regression, proposals,
                                                     image_sizes)
            if self.has_mask:
                self._infer_masks(features, detections, image_sizes)
            if self.has_keypoint:
                self._infer_keypoints(features, detections, image_sizes)
            return detections, {}

        grads = {}
        losses = {}
        loss_cls, loss_box, dlogits, dregression = fastrcnn_loss(
            class_logits, box_regression, np.concatenate(labels),
            np.concatenate(regression_targets))
        losses.update(loss_classifier=loss_cls, loss_box_reg=loss_box)
        grads["box"] = (dlogits, dregression)
        positive = [lab > 0 for lab in labels]
        pos_props = [p[m] for p, m in zip(proposals, positive)]
        pos_idxs = [i[m] for i, m in zip(matched_idxs, positive)]
        pos_labels = np.concatenate([lab[m] for lab, m in zip(labels, positive)])
        if self.has_mask:
            mask_logits = self.mask_predictor(self.mask_head(
                self.mask_roi_pool(features, pos_props, image_sizes)))
            size = mask_logits.shape[-1]
            mask_targets = [project_masks_on_boxes(np.asarray(t["masks"]), p, i, size)
                            for t, p, i in zip(targets, pos_props, pos_idxs)]
            losses["loss_mask"], grads["mask"] = maskrcnn_loss(
                mask_logits, pos_labels, np.concatenate(mask_targets).reshape(-1, size, size),
                self.mask_loss)
        if self.has_keypoint:
            kp_logits = self.keypoint_predictor(self.keypoint_head(
                self.keypoint_roi_pool(features, pos_props, image_sizes)))
            heatmaps, valid = [], []
            for t, p, i in zip(targets, pos_props, pos_idxs):
                kps = np.asarray(t["keypoints"], np.float32)[i]
                h, v = keypoints_to_heatmap(kps, p, kp_logits.shape[-1])
                heatmaps.append(h)
                valid.append(v)
            losses["loss_keypoint"], grads["keypoint"] = keypointrcnn_loss(
                kp_logits, np.concatenate(heatmaps), np.concatenate(valid))
        self._grads = grads
        return [], losses

    def _infer_masks(self, features, detections, image_sizes):
        boxes = [d["boxes"] for d in detections]
        logits = self.mask_predictor(self.mask_head(
            self.mask_roi_pool(features, boxes, image_sizes)))
        labels = np.concatenate([d["labels"] for d in detections])
        probs = mask_probabilities(logits, labels, self.mask_loss)
        start = 0
        for d in detections:
            d["masks"] = probs[start:start + len(d["boxes"])]
            start += len(d["boxes"])

    def _infer_keypoints(self, features, detections, image_sizes):
        boxes = [d["boxes"] for d in detections]
        logits = self.keypoint_predictor(self.keypoint_head(
            self.keypoint_roi_pool(features, boxes, image_sizes)))
        start = 0
        for d in detections:
            n = len(d["boxes"])
            d["keypoints"], d["keypoints_scores"] = heatmaps_to_keypoints(
                logits[start:start + n], d["boxes"])
            start += n

    def postprocess_detections(self, class_logits, box_regression, proposals, image_sizes):
        """Softmax scores, per-class decoded boxes, clip, score > 0.05, size >= 0.01,
        per-class NMS at 0.5, top 100, per image."""
        num_classes = class_logits.shape[-1]
        pred_boxes = self.box_coder.decode(box_regression, np.concatenate(proposals))
        pred_boxes = pred_boxes.reshape(-1, num_classes, 4)
        scores_all = softmax(class_logits)
        detections, start = [], 0
        for props, image_size in zip(proposals, image_sizes):
            stop = start + len(props)
            boxes = clip_boxes_to_image(pred_boxes[start:stop].reshape(-1, 4), image_size)
            boxes = boxes.reshape(-1, num_classes, 4)[:, 1:].reshape(-1, 4)
            scores = scores_all[start:stop, 1:].reshape(-1)
            labels = np.tile(np.arange(1, num_classes, dtype=np.int64), stop - start)
            start = stop
            keep = np.flatnonzero(scores > self.score_thresh)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            detections.append({"boxes": boxes[keep], "labels": labels[keep],
                               "scores": scores[keep]})
        return detections

    # -- backward --------------------------------------------------------------------------

    def backward(self):
        """Gradient of the head losses -> dict FPN level -> d(features)."""
        if self._grads is None:
            raise RuntimeError("RoIHeads.backward: run a training forward first")
        grads, self._grads = self._grads, None
        total = {}
        dlogits, dregression = grads["box"]
        dbox_features = self.box_head.backward(self.box_predictor.backward(dlogits, dregression))
        _add_into(total, self.box_roi_pool.backward(dbox_features))
        if "mask" in grads:
            d = self.mask_head.backward(self.mask_predictor.backward(grads["mask"]))
            _add_into(total, self.mask_roi_pool.backward(d))
        if "keypoint" in grads:
            d = self.keypoint_head.backward(self.keypoint_predictor.backward(grads["keypoint"]))
            _add_into(total, self.keypoint_roi_pool.backward(d))
        return total


def _add_into(total, grads):
    for name, g in grads.items():
        if g is not None:
            total[name] = g if name not in total else total[name] + g


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets):
    """Cross-entropy over all sampled RoIs; smooth-L1 (beta 1/9) of the gt class's deltas over
    the positives, divided by the number of sampled RoIs. Returns losses and their gradients."""
    loss_cls, dlogits = F.cross_entropy(class_logits, labels)
    k = len(labels)
    deltas = box_regression.reshape(k, -1, 4)
    pos = np.flatnonzero(labels > 0)
    dregression = np.zeros_like(deltas)
    loss_box, dpos = F.smooth_l1(deltas[pos, labels[pos]], regression_targets[pos],
                                 beta=1.0 / 9, reduction="sum")
    dregression[pos, labels[pos]] = dpos / max(k, 1)
    return (float(loss_cls), float(loss_box) / max(k, 1), dlogits,
            dregression.reshape(box_regression.shape))


MASK_LOSSES = ("sigmoid", "softmax")


def maskrcnn_loss(mask_logits, labels, mask_targets, loss="sigmoid"):
    """The mask loss of the positive RoIs (P, C, M, M) against their M x M targets (P, M, M).

    "sigmoid" (the paper's choice): mean per-pixel BCE of each RoI's gt-class map only, so the
    classes do not compete for a pixel (with one channel, a class-agnostic head, that channel
    is read for every label). "softmax": per-pixel cross-entropy over the C channels, the
    target class being the RoI's label inside its mask and background (0) outside, as in FCN
    segmentation (the paper's Table 2b ablation). Returns (loss, gradient of the logits)."""
    if loss not in MASK_LOSSES:
        raise ValueError(f"loss: expected one of {MASK_LOSSES}, got {loss!r}")
    p, c, h, w = mask_logits.shape
    if np.shape(mask_targets) != (p, h, w):
        raise ValueError(f"mask_targets: expected shape {(p, h, w)} (one {h}x{w} target per "
                         f"positive RoI), got {np.shape(mask_targets)}")
    if loss == "softmax" and c == 1:
        raise ValueError("loss: 'softmax' needs one mask channel per class, got a "
                         "class-agnostic head with one channel")
    dlogits = np.zeros_like(mask_logits)
    if p == 0:
        return 0.0, dlogits
    labels = np.asarray(labels, np.int64)
    if loss == "softmax":
        pixel_classes = np.asarray(mask_targets, np.int64) * labels[:, None, None]
        flat = mask_logits.transpose(0, 2, 3, 1).reshape(-1, c)
        value, dflat = F.cross_entropy(flat, pixel_classes.reshape(-1))
        return float(value), dflat.reshape(p, h, w, c).transpose(0, 3, 1, 2).copy()
    rows = np.arange(p)
    channels = labels if c > 1 else np.zeros(p, np.int64)
    value, dsel = F.binary_cross_entropy_with_logits(
        mask_logits[rows, channels], np.asarray(mask_targets).astype(mask_logits.dtype))
    dlogits[rows, channels] = dsel
    return float(value), dlogits


def mask_probabilities(mask_logits, labels, loss="sigmoid"):
    """Each detection's (N, 1, M, M) mask probabilities: the sigmoid of its label's channel
    (channel 0 for a class-agnostic head), or its label's share of the per-pixel softmax."""
    n = len(mask_logits)
    rows = np.arange(n)
    if loss == "softmax":
        return softmax(np.moveaxis(mask_logits, 1, -1))[rows, ..., labels][:, None]
    channels = labels if mask_logits.shape[1] > 1 else np.zeros(n, np.int64)
    return F.sigmoid(mask_logits[rows, channels])[0][:, None]


def keypointrcnn_loss(keypoint_logits, heatmaps, valid):
    """Cross-entropy over the M*M positions of each valid (RoI, keypoint), averaged."""
    n, k, h, w = keypoint_logits.shape
    dlogits = np.zeros((n * k, h * w), keypoint_logits.dtype)
    valid = np.flatnonzero(valid.reshape(-1))
    if len(valid) == 0:
        return 0.0, dlogits.reshape(keypoint_logits.shape)
    flat = keypoint_logits.reshape(n * k, h * w)
    loss, dsel = F.cross_entropy(flat[valid], heatmaps.reshape(-1)[valid])
    dlogits[valid] = dsel
    return float(loss), dlogits.reshape(keypoint_logits.shape)
