"""The command line: every subcommand runs and writes what it promises."""

import json

import pytest

from mrcnn_np.cli import main
from mrcnn_np.data import ShapesDataset, export_coco
from mrcnn_np.model.presets import maskrcnn_small
from mrcnn_np.train.runs import coco_folder, train_run


def test_info_and_gradcheck_run(capsys):
    assert main(["info"]) == 0
    assert "numba threads" in capsys.readouterr().out
    assert main(["gradcheck"]) == 0
    assert "all gradients agree" in capsys.readouterr().out


def _read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_on_shapes_writes_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "shapes", "--num-images", "4", "--num-val", "2",
                 "--image-size", "64", "--iterations", "3", "--batch-size", "2",
                 "--out", str(out)])
    assert code == 0
    for name in ("summary.md", "summary.json", "detections.png", "loss_curves.png",
                 "log.jsonl", "weights.npz", "checkpoint.npz"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3
    assert {"bbox_AP", "segm_AP50"} <= set(summary)
    assert [r["step"] for r in _read_log(out / "log.jsonl")] == [1, 2, 3]
    assert "| bbox |" in (out / "summary.md").read_text()
    assert str(out) in capsys.readouterr().out


def test_train_on_a_coco_folder_and_resume_weights(tmp_path):
    folder = tmp_path / "coco"
    export_coco(ShapesDataset(3, 64, seed=4), folder)
    first = tmp_path / "first"
    args = ["train", "--dataset", str(folder), "--val", str(folder), "--iterations", "1",
            "--batch-size", "1"]
    assert main([*args, "--out", str(first)]) == 0
    # the saved weights load back as the starting point of another run
    assert main([*args, "--weights", str(first / "weights.npz"),
                 "--out", str(tmp_path / "second")]) == 0


def test_coco_folder_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="annotations.json"):
        coco_folder(tmp_path)


def test_train_run_needs_exactly_one_stopping_rule(tmp_path):
    model = maskrcnn_small(num_classes=4, min_size=64, max_size=64)
    with pytest.raises(ValueError, match="iterations, minutes"):
        train_run(model, ShapesDataset(2, 64), None, tmp_path, None)
    with pytest.raises(ValueError, match="iterations, minutes"):
        train_run(model, ShapesDataset(2, 64), None, tmp_path, None, iterations=1, minutes=1)


def test_train_resumes_from_the_checkpoint_step(tmp_path):
    # exactness of a resume (same losses as an uninterrupted run) is tested in
    # tests/train/test_trainer.py; here: the command line picks up the step and the weights
    args = ["train", "--num-images", "4", "--num-val", "1", "--image-size", "64",
            "--batch-size", "1"]
    assert main([*args, "--iterations", "2", "--out", str(tmp_path / "first")]) == 0
    assert main([*args, "--iterations", "4", "--resume", str(tmp_path / "first/checkpoint.npz"),
                 "--out", str(tmp_path / "resumed")]) == 0
    resumed = _read_log(tmp_path / "resumed/log.jsonl")
    assert [r["step"] for r in resumed] == [3, 4]
    summary = json.loads((tmp_path / "resumed/summary.json").read_text())
    assert summary["iterations"] == 4
