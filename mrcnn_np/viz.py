"""Figures for the notebooks and the CLI: detections (boxes, labels, scores, translucent masks,
keypoint skeletons) drawn over an image with matplotlib, and COCO's category names."""

import numpy as np

# torchvision's 91-entry COCO label list: index = label, "N/A" for ids COCO never used
COCO_CATEGORY_NAMES = [
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]

COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
# pairs of keypoint indices joined by a line in a skeleton drawing
COCO_SKELETON = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]


def instance_colors(n, seed=0):
    """`n` distinct bright RGB colours in [0, 1], the same for the same seed."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895 + rng.random()) % 1.0
    import matplotlib.colors as mcolors

    return [mcolors.hsv_to_rgb((h, 0.75, 0.95)) for h in hues]


def _as_hwc_image(image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3) or (3, H, W), got {image.shape}")
    if np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image


def draw_detections(ax, image, boxes, labels=None, scores=None, masks=None, keypoints=None,
                    class_names=None, score_threshold=0.0, mask_threshold=0.5, mask_alpha=0.45,
                    linestyle="-", show_image=True, seed=0):
    """Draw detections on a matplotlib axis.

    image (H, W, 3) uint8 or (3, H, W) float in [0, 1]; boxes (N, 4) x1, y1, x2, y2;
    labels (N,), scores (N,); masks (N, 1, H, W) or (N, H, W) probabilities (drawn where
    > mask_threshold); keypoints (N, K, 3) x, y, visibility (COCO skeleton when K = 17).
    """
    image = _as_hwc_image(image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep = np.ones(len(boxes), bool) if scores is None else np.asarray(scores) >= score_threshold
    colors = instance_colors(len(boxes), seed)
    canvas = image.astype(np.float32) / 255
    if masks is not None:
        masks = np.asarray(masks)
        masks = masks[:, 0] if masks.ndim == 4 else masks
        for i in np.flatnonzero(keep):
            on = masks[i] > mask_threshold
            canvas[on] = (1 - mask_alpha) * canvas[on] + mask_alpha * np.asarray(colors[i])
    if show_image:
        ax.imshow(canvas)
    for i in np.flatnonzero(keep):
        x1, y1, x2, y2 = boxes[i]
        ax.add_patch(_rectangle((x1, y1), x2 - x1, y2 - y1, colors[i], linestyle))
        text = []
        if labels is not None:
            label = int(labels[i])
            text.append(class_names[label] if class_names is not None else str(label))
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            ax.text(x1, y1, " ".join(text), fontsize=7, color="white", va="bottom",
                    bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"})
        if keypoints is not None:
            _draw_keypoints(ax, np.asarray(keypoints)[i], colors[i])
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.axis("off")
    return ax


def _rectangle(xy, w, h, color, linestyle):
    import matplotlib.patches as patches

    return patches.Rectangle(xy, w, h, fill=False, edgecolor=color, linewidth=1.5,
                             linestyle=linestyle)


def _draw_keypoints(ax, points, color):
    visible = points[:, 2] > 0
    if len(points) == len(COCO_KEYPOINT_NAMES):
        for a, b in COCO_SKELETON:
            if visible[a] and visible[b]:
                ax.plot(points[[a, b], 0], points[[a, b], 1], color=color, linewidth=1.5)
    ax.scatter(points[visible, 0], points[visible, 1], s=8, color=color, edgecolors="black",
               linewidths=0.5, zorder=3)


def draw_boxes(ax, boxes, color="red", linestyle="-", labels=None):
    """Just the rectangles (anchors, proposals, RoIs) on an existing axis."""
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        ax.add_patch(_rectangle((x1, y1), x2 - x1, y2 - y1, color, linestyle))
        if labels is not None:
            ax.text(x1, y1, str(labels[i]), fontsize=7, color=color, va="bottom")
    return ax


def plot_precision_recall(ax, evaluator, iou_thresholds=(0.5, 0.75, 0.95), area_index=0,
                          max_dets_index=-1):
    """Precision-recall curves of an evaluated COCOEvaluator, averaged over categories
    (categories without gt are left out), one curve per IoU threshold."""
    precision = evaluator.precision  # (T, R, K, A, M), -1 where undefined
    recall_levels = np.asarray(evaluator.params.recThrs)
    iou_levels = np.asarray(evaluator.params.iouThrs)
    for threshold in iou_thresholds:
        t = int(np.argmin(np.abs(iou_levels - threshold)))
        curves = precision[t, :, :, area_index, max_dets_index]
        valid = curves[0] > -1
        if valid.any():
            ax.plot(recall_levels, curves[:, valid].mean(axis=1),
                    label=f"IoU {iou_levels[t]:.2f}: AP {curves[:, valid].mean():.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend()
    return ax


def plot_loss_curves(ax, history, window=20):
    """Every `loss_*` of a training history (the Trainer's records) against the step, as a
    moving mean over `window` steps, on a log scale."""
    names = [k for k in history[0] if k.startswith("loss_")] if history else []
    steps = np.array([r["step"] for r in history])
    for name in names:
        values = np.array([r[name] for r in history])
        w = min(window, len(values))
        ax.plot(steps[w - 1:], np.convolve(values, np.ones(w) / w, mode="valid"), label=name)
    ax.set(xlabel="step", ylabel=f"loss (moving mean of {window})", yscale="log")
    if names:
        ax.legend(fontsize=7)
    return ax
