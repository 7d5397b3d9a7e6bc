"""Mask R-CNN / Keypoint R-CNN: transform -> backbone -> RPN -> RoI heads -> postprocess
(torchvision's GeneralizedRCNN), each stage callable alone, plus the backward pass that walks
the same stages in reverse (DESIGN.md, "How the backward pass is organised").
"""

import numpy as np

from ..nn.module import Module, no_grad

LOSS_ORDER = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_keypoint",
              "loss_objectness", "loss_rpn_box_reg")


def check_targets(targets, images, num_classes, num_keypoints=None, needs_masks=False):
    """Validate training targets against their images; raise naming the bad field."""
    if not isinstance(targets, list | tuple) or len(targets) != len(images):
        raise ValueError(f"targets: expected a list with one dict per image ({len(images)})")
    for i, (target, image) in enumerate(zip(targets, images)):
        name = f"targets[{i}]"
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"{name}: expected a dict with 'boxes' and 'labels'")
        boxes = np.asarray(target["boxes"])
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.floating):
            raise ValueError(f"{name}['boxes']: expected float (N, 4), got {boxes.dtype} "
                             f"{boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"{name}['boxes']: contains NaN or infinite values")
        bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        if len(bad):
            raise ValueError(f"{name}['boxes']: box {int(bad[0])} {boxes[bad[0]].tolist()} has "
                             "x2 <= x1 or y2 <= y1 (boxes are x1, y1, x2, y2)")
        h, w = image.shape[-2:]
        outside = np.flatnonzero((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w)
                                 | (boxes[:, 3] > h))
        if len(outside):
            raise ValueError(f"{name}['boxes']: box {int(outside[0])} "
                             f"{boxes[outside[0]].tolist()} lies outside the {h}x{w} image")
        labels = np.asarray(target["labels"])
        if labels.shape != (len(boxes),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}['labels']: expected integer ({len(boxes)},), got "
                             f"{labels.dtype} {labels.shape}")
        if len(labels) and (labels.min() < 1 or labels.max() >= num_classes):
            raise ValueError(f"{name}['labels']: expected values in 1..{num_classes - 1} "
                             f"(0 is background), got {labels.min()}..{labels.max()}")
        if needs_masks:
            masks = np.asarray(target.get("masks", np.zeros((0,))))
            if masks.shape != (len(boxes), h, w):
                raise ValueError(f"{name}['masks']: expected ({len(boxes)}, {h}, {w}), "
                                 f"got {masks.shape}")
        if num_keypoints is not None:
            kps = np.asarray(target.get("keypoints", np.zeros((0,))))
            if kps.shape != (len(boxes), num_keypoints, 3):
                raise ValueError(f"{name}['keypoints']: expected ({len(boxes)}, "
                                 f"{num_keypoints}, 3), got {kps.shape}")


class MaskRCNN(Module):
    """`model(images)` in eval mode returns one dict of detections per image; in train mode
    `model(images, targets)` returns the losses and `model.backward()` fills every trainable
    parameter's `.grad` with the gradient of their sum."""

    def __init__(self, transform, backbone, rpn, roi_heads, num_classes, config=None):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.num_classes = num_classes
        self.config = config

    def forward(self, images, targets=None):
        if not self.training:
            with no_grad():
                return self._forward(images, None)
        if targets is None:
            raise ValueError("targets: required in training mode (call model.eval() to detect)")
        return self._forward(images, targets)

    def _forward(self, images, targets):
        from .transform import check_images

        images = check_images(images)
        # the model computes in its parameters' dtype (float64 only after astype, for checks)
        dtype = next(self.parameters()).data.dtype
        images = [image.astype(dtype, copy=False) for image in images]
        if targets is not None:
            num_kp = None
            if self.roi_heads.has_keypoint:
                num_kp = self.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
            check_targets(targets, images, self.num_classes, num_kp, self.roi_heads.has_mask)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes,
                                                 targets)
        if self.training:
            losses = {**head_losses, **rpn_losses}
            return {name: losses[name] for name in LOSS_ORDER if name in losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def load_state_dict(self, state_dict, strict=True):
        """Also accepts older torchvision names (see io.weights.upgrade_torchvision_keys);
        `num_batches_tracked` entries are ignored where this model has no such buffer."""
        from ..io.weights import upgrade_torchvision_keys

        own = self._state_slots()
        state = {k: v for k, v in upgrade_torchvision_keys(state_dict).items()
                 if k in own or not k.endswith("num_batches_tracked")}
        return super().load_state_dict(state, strict)

    def backward(self):
        """Send the gradient of the summed losses back through heads, RPN, FPN and ResNet."""
        dfeatures = self.roi_heads.backward()
        for name, grad in self.rpn.backward().items():
            dfeatures[name] = grad if name not in dfeatures else dfeatures[name] + grad
        self.backbone.backward(dfeatures)
