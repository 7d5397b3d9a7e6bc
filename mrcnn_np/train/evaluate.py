"""Run a model over a dataset and score it with COCOEvaluator (box and mask AP)."""

import numpy as np

from ..data.transforms import to_tensor
from ..eval.coco_eval import COCOEvaluator, detections_to_results
from ..eval.rle import rle_area, rle_encode


def coco_ground_truth(dataset, indices=None, class_names=None):
    """A COCO-format gt dict (image ids = dataset indices + 1, category ids = labels) made from
    a dataset whose items are (image, target) with boxes, labels and masks. `class_names` is
    indexed by label, "__background__" first, like the datasets' `class_names` and `viz`."""
    indices = range(len(dataset)) if indices is None else indices
    images, annotations = [], []
    labels_seen = set()
    for index in indices:
        image, target = dataset[index]
        image_id = int(index) + 1
        h, w = image.shape[:2]
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        masks = np.asarray(target["masks"])
        rles = rle_encode(masks) if len(masks) else []
        for box, label, rle in zip(np.asarray(target["boxes"], np.float64), target["labels"],
                                   rles):
            labels_seen.add(int(label))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "area": float(rle_area(rle)), "iscrowd": 0, "segmentation": rle,
            })
    num_labels = max(labels_seen | {len(class_names) - 1 if class_names else 0})
    categories = [{"id": c, "name": class_names[c] if class_names else str(c)}
                  for c in range(1, num_labels + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def evaluate_model(model, dataset, indices=None, class_names=None, iou_types=("bbox", "segm")):
    """Detect on each image and return {iou_type: COCOEvaluator} after evaluation."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    gt = coco_ground_truth(dataset, indices, class_names)
    was_training = model.training
    model.eval()
    results = []
    for index in indices:
        image, _ = dataset[index]
        (det,) = model([to_tensor(image)])
        results += detections_to_results(index + 1, det["boxes"], det["scores"], det["labels"],
                                         masks=det.get("masks") if "segm" in iou_types else None)
    model.train(was_training)
    evaluators = {}
    for iou_type in iou_types:
        evaluator = COCOEvaluator(gt, iou_type=iou_type)
        evaluator.evaluate(results)
        evaluators[iou_type] = evaluator
    return evaluators
