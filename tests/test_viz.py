"""Drawing detections: runs on every kind of input and leaves the image visible."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mrcnn_np.viz import COCO_CATEGORY_NAMES, draw_detections, instance_colors  # noqa: E402


def test_coco_names_have_torchvision_indices():
    assert len(COCO_CATEGORY_NAMES) == 91
    assert COCO_CATEGORY_NAMES[1] == "person" and COCO_CATEGORY_NAMES[90] == "toothbrush"
    assert COCO_CATEGORY_NAMES[12] == "N/A"


def test_draw_detections_with_masks_and_keypoints():
    image = np.zeros((3, 40, 60), np.float32)
    boxes = np.array([[5, 5, 30, 35], [20, 10, 55, 30]], np.float32)
    masks = np.zeros((2, 1, 40, 60), np.float32)
    masks[0, 0, 5:35, 5:30] = 0.9
    keypoints = np.random.default_rng(0).uniform(5, 35, (2, 17, 3)).astype(np.float32)
    fig, ax = plt.subplots()
    draw_detections(ax, image, boxes, labels=[1, 2], scores=[0.9, 0.3], masks=masks,
                    keypoints=keypoints, class_names=COCO_CATEGORY_NAMES, score_threshold=0.5)
    drawn = ax.get_images()[0].get_array()
    assert drawn[20, 10].sum() > 0  # the mask of the kept detection is tinted
    assert len(ax.patches) == 1  # the 0.3-score box is below the threshold
    assert ax.texts[0].get_text() == "person 0.90"
    plt.close(fig)


def test_bad_image_shape_is_named():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="image"):
        draw_detections(ax, np.zeros((4, 4)), np.zeros((0, 4)))
    plt.close(fig)
    assert len(instance_colors(5)) == 5


def test_precision_recall_plot_has_one_curve_per_threshold():
    from mrcnn_np.eval import COCOEvaluator
    from mrcnn_np.viz import plot_precision_recall

    gt = {"images": [{"id": 1, "height": 50, "width": 50}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                           "area": 100.0, "iscrowd": 0}]}
    evaluator = COCOEvaluator(gt, "bbox")
    evaluator.evaluate([{"image_id": 1, "category_id": 1, "bbox": [2, 0, 10, 10],
                         "score": 0.9}])
    fig, ax = plt.subplots()
    plot_precision_recall(ax, evaluator)
    # IoU = 8*10 / (100 + 100 - 80) = 0.67: a hit at 0.5, a miss at 0.75 and 0.95
    assert [line.get_label() for line in ax.lines] == [
        "IoU 0.50: AP 1.000", "IoU 0.75: AP 0.000", "IoU 0.95: AP 0.000"]
    plt.close(fig)


def test_loss_curves_are_moving_means_of_each_loss():
    from mrcnn_np.viz import plot_loss_curves

    history = [{"step": s, "loss_mask": float(s), "loss_box_reg": 1.0, "lr": 0.1}
               for s in range(1, 6)]
    fig, ax = plt.subplots()
    plot_loss_curves(ax, history, window=2)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"loss_mask", "loss_box_reg"}  # not lr
    # means of (1, 2), (2, 3), ... drawn at the window's last step
    np.testing.assert_array_equal(lines["loss_mask"].get_xdata(), [2, 3, 4, 5])
    np.testing.assert_array_equal(lines["loss_mask"].get_ydata(), [1.5, 2.5, 3.5, 4.5])
    assert ax.get_yscale() == "log"
    plt.close(fig)
