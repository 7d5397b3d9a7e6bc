"""The training loop on a micro model: it steps, logs, resumes exactly, and stops loudly."""

import json

import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.train.trainer import NonFiniteLossError, Trainer

MICRO = dict(width=4, fpn_channels=8, min_size=64, max_size=64, box_representation_size=16,
             mask_layers=(8, 8), rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
             rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
             box_batch_size_per_image=32, rpn_batch_size_per_image=64)


class TinyDataset:
    """Squares on a plain background; image 2 has no object at all."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        image = np.full((64, 64, 3), 40, np.uint8)
        masks = np.zeros((0, 64, 64), np.uint8)
        boxes = np.zeros((0, 4), np.float32)
        if index != 2:
            y, x, s = 8 + 10 * index, 12 + 5 * index, 20 + 6 * index
            image[y:y + s, x:x + s] = 220
            masks = np.zeros((1, 64, 64), np.uint8)
            masks[0, y:y + s, x:x + s] = 1
            boxes = np.array([[x, y, x + s, y + s]], np.float32)
        return image, {"boxes": boxes, "labels": np.ones(len(boxes), np.int64), "masks": masks}


def make_trainer(tmp_path, name="run", **kwargs):
    model = mn.models.maskrcnn_small(num_classes=2, **MICRO)
    return Trainer(model, TinyDataset(), tmp_path / name, iterations=4, batch_size=2, lr=0.01,
                   warmup_steps=1, progress=False, **kwargs)


def test_steps_log_and_resume_exactly(tmp_path):
    straight = make_trainer(tmp_path, "straight").fit()
    assert len(straight) == 4
    lines = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]

    first = make_trainer(tmp_path, "first")
    for _ in range(2):  # interrupted after two of its four steps
        first.train_step()
    path = first.save_checkpoint(tmp_path / "ckpt.npz")
    second = make_trainer(tmp_path, "second").load_checkpoint(path)
    resumed = second.fit()
    assert [r["step"] for r in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed):
        for key in ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                    "loss_rpn_box_reg"):
            assert a[key] == b[key], key


def test_a_non_finite_loss_names_the_loss_and_step(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.model.roi_heads.box_predictor.cls_score.bias.data[:] = np.nan
    with pytest.raises(NonFiniteLossError, match="loss_classifier is nan at step 0"):
        trainer.train_step()


def test_empty_dataset_is_rejected(tmp_path):
    model = mn.models.maskrcnn_small(num_classes=2, **MICRO)
    with pytest.raises(ValueError, match="dataset"):
        Trainer(model, [], tmp_path)
