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


class CrowdDataset(TinyDataset):
    """TinyDataset's image 0 plus a crowd region over its left half."""

    def __getitem__(self, index):
        image, target = super().__getitem__(0)
        crowd = np.zeros((1, 64, 64), np.uint8)
        crowd[0, :, :32] = 1
        return image, {"boxes": np.concatenate([target["boxes"], [[0, 0, 32, 64]]]),
                       "labels": np.array([1, 1]), "masks": np.concatenate([target["masks"],
                                                                            crowd]),
                       "iscrowd": np.array([0, 1])}


def test_crowd_regions_are_dropped_from_the_targets(tmp_path):
    model = mn.models.maskrcnn_small(num_classes=2, **MICRO)
    trainer = Trainer(model, CrowdDataset(), tmp_path, hflip=False, progress=False)
    image, target = trainer._load(0)
    # image 0's square: x = 12, y = 8, side 20 -> [12, 8, 32, 28]; the crowd box is gone
    np.testing.assert_array_equal(target["boxes"], [[12, 8, 32, 28]])
    np.testing.assert_array_equal(target["labels"], [1])
    assert target["masks"].shape == (1, 64, 64) and target["masks"][0, 8:28, 12:32].all()
    assert image.shape == (3, 64, 64) and image.dtype == np.float32


def test_flips_are_drawn_from_the_trainers_generator(tmp_path):
    model = mn.models.maskrcnn_small(num_classes=2, **MICRO)
    trainer = Trainer(model, TinyDataset(), tmp_path, seed=3, progress=False)
    draws = np.random.default_rng(3).random(8) < 0.5  # one draw per loaded image
    assert draws.any() and not draws.all()
    for flipped in draws:
        image, target = trainer._load(0)
        # mirrored in a 64 px wide image: x1' = 64 - 32 = 32, x2' = 64 - 12 = 52
        expected = [[32, 8, 52, 28]] if flipped else [[12, 8, 32, 28]]
        np.testing.assert_array_equal(target["boxes"], expected)
        x1 = int(expected[0][0])
        assert (image[:, 8:28, x1:x1 + 20] > 0.8).all()  # the square's pixels moved too
        assert target["masks"][0, 8:28, x1:x1 + 20].all() and target["masks"].sum() == 400


def test_train_step_on_a_given_batch_matches_the_next_batch(tmp_path):
    a, b = make_trainer(tmp_path, "a"), make_trainer(tmp_path, "b")
    for _ in range(2):
        record = a.train_step()
        images, targets = b.next_batch()
        assert len(images) == len(targets) == 2
        assert b.train_step(batch=(images, targets)) == record


def test_a_zero_time_budget_runs_the_compile_step_and_one_timed_step(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.iterations = 10**9  # as train_run sets it for a time budget
    history = trainer.fit(seconds=0.0)
    assert trainer.iterations == trainer.step == 2
    assert [r["step"] for r in history] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in history)


def test_the_time_budget_is_replanned_as_steps_slow_down(tmp_path, monkeypatch):
    # a fake clock: step k (1-based) takes 10 s (the compile step), then 1 s up to step 10,
    # then 2 s; the budget is 40 s
    from mrcnn_np.train import trainer as trainer_module

    trainer = make_trainer(tmp_path)
    trainer.iterations = 10**9
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock["now"])

    def fake_step(batch=None):
        trainer.step += 1
        clock["now"] += 10.0 if trainer.step == 1 else 1.0 if trainer.step <= 10 else 2.0
        return {"loss": 1.0, "lr": 0.0}

    monkeypatch.setattr(trainer, "train_step", fake_step)
    history = trainer.fit(seconds=40.0)
    # after step 10 (19 s) the mean of steps 2..10 is 1 s: 21 more planned, to step 31.
    # Steps of 2 s raise the mean and shrink the plan: after step 13 (25 s, mean 15/12 s)
    # to 13 + int(15 / 1.25) = 25, ..., after step 20 (39 s, mean 29/19 s, 1 s left) to 20.
    assert trainer.step == trainer.iterations == 20 == len(history)
    assert clock["now"] == 39.0  # within the budget; the first plan (31 steps) ended at 61 s


def test_fit_takes_a_step_limit_or_a_time_budget_not_both(tmp_path):
    with pytest.raises(ValueError, match="until, seconds"):
        make_trainer(tmp_path).fit(until=2, seconds=1.0)
