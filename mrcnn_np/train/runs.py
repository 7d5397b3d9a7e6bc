"""Whole training runs as the command line starts them (`mrcnn-np train`, `mrcnn-np demo`):
datasets by name, training within a time budget, and the report written at the end
(weights, detections drawn on held-out images, loss curves, an AP summary).
"""

import json
import os
import time
from datetime import datetime
from pathlib import Path

from ..data import CocoDataset, ShapesDataset, to_tensor
from ..io.weights import save_npz
from .trainer import Trainer

DEMO = {
    # the `demo` run: maskrcnn_small on 128 px shapes, sized to learn in about 2-3 minutes
    "num_train": 2000, "num_val": 50, "image_size": 128, "batch_size": 4, "lr": 0.02,
    "warmup_steps": 50, "minutes": 2.5,
}


def default_out_dir(kind):
    """runs/<kind>-YYYYmmdd-HHMMSS under the working directory (a fresh folder per run)."""
    return Path("runs") / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"


def shapes_split(num_train, num_val, image_size=128, seed=0):
    """Training and held-out shapes datasets; the held-out images come from another seed."""
    return (ShapesDataset(num_train, image_size, seed=seed),
            ShapesDataset(num_val, image_size, seed=seed + 10_000))


def coco_folder(folder):
    """A CocoDataset from `folder/annotations.json` and `folder/images/` (the layout that
    `mrcnn_np.data.export_coco` writes)."""
    folder = Path(folder)
    annotations, images = folder / "annotations.json", folder / "images"
    if not annotations.is_file() or not images.is_dir():
        raise ValueError(f"dataset: expected 'shapes' or a folder holding annotations.json and "
                         f"images/, got {os.fspath(folder)!r}")
    return CocoDataset(annotations, images)


def detect(model, dataset, indices):
    """Inference on dataset items -> list of (image, target, detections)."""
    model.eval()
    out = []
    for index in indices:
        image, target = dataset[int(index)]
        (det,) = model([to_tensor(image)])
        out.append((image, target, det))
    return out


def save_detections_figure(path, results, class_names, score_threshold=0.5, columns=4):
    """The detections above `score_threshold` drawn over each image, with the gt count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import draw_detections

    rows = -(-len(results) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, target, det) in zip(axes.flat, results):
        draw_detections(ax, image, det["boxes"], det["labels"], det["scores"],
                        masks=det.get("masks"), class_names=class_names,
                        score_threshold=score_threshold)
        kept = int((det["scores"] >= score_threshold).sum())
        ax.set_title(f"{kept} found / {len(target['labels'])} in gt", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_loss_curves(path, history):
    """Every loss against the step, smoothed over a window of 20 steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import plot_loss_curves

    fig, ax = plt.subplots(figsize=(6, 3.5))
    plot_loss_curves(ax, history)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def ap_table(evaluators, class_names):
    """A markdown table of AP, AP50, AP75 and per-class AP for each evaluated iou type."""
    names = list(class_names[1:])
    header = "| | AP | AP50 | AP75 | " + " | ".join(names) + " |"
    lines = [header, "|" + "---|" * (4 + len(names))]
    for kind, ev in evaluators.items():
        per_class = ev.per_category_ap()
        cells = [f"{per_class.get(k, -1.0):.3f}" for k in range(1, len(names) + 1)]
        lines.append(f"| {kind} | {ev.stats[0]:.3f} | {ev.stats[1]:.3f} | {ev.stats[2]:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out_dir, model, trainer, history, val_dataset, class_names, seconds,
                 figure_images=8):
    """weights.npz, log.jsonl (written while training), loss_curves.png, detections.png,
    summary.md and summary.json in `out_dir`. Returns the summary dict."""
    from .evaluate import evaluate_model

    out_dir = Path(out_dir)
    save_npz(out_dir / "weights.npz", model.state_dict())
    if history:
        save_loss_curves(out_dir / "loss_curves.png", history)
    summary = {"iterations": trainer.step, "train_seconds": round(seconds, 1),
               "seconds_per_iteration": round(seconds / max(len(history), 1), 3),
               "final_losses": {k: round(v, 4) for k, v in history[-1].items()
                                if k.startswith("loss")} if history else {}}
    table = ""
    if val_dataset is not None and len(val_dataset):
        evaluators = evaluate_model(model, val_dataset, class_names=class_names)
        summary |= {f"{kind}_{name}": round(float(ev.stats[i]), 4)
                    for kind, ev in evaluators.items()
                    for i, name in ((0, "AP"), (1, "AP50"), (2, "AP75"))}
        table = ap_table(evaluators, class_names)
        shown = detect(model, val_dataset, range(min(figure_images, len(val_dataset))))
        save_detections_figure(out_dir / "detections.png", shown, class_names)
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    lines = [f"# Training run: {out_dir.name}", "",
             f"{trainer.step} iterations ({len(history)} in this run) in {seconds / 60:.1f} min "
             f"({summary['seconds_per_iteration']} s each).", "",
             "Final losses: " + ", ".join(f"{k} {v}" for k, v in
                                          summary["final_losses"].items()), ""]
    if table:
        lines += [f"COCO AP on {len(val_dataset)} held-out images:", "", table, "",
                  "![detections](detections.png)", ""]
    lines += ["![losses](loss_curves.png)", "", "## Model configuration", "", "```",
              str(model.config), "```"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def train_run(model, dataset, val_dataset, out_dir, class_names, iterations=None, minutes=None,
              resume=None, **trainer_options):
    """Train (`iterations` steps, or for about `minutes`; from the checkpoint `resume` if
    given), evaluate on `val_dataset` and write the report into `out_dir`.
    Returns (summary dict, trainer)."""
    if (iterations is None) == (minutes is None):
        raise ValueError("iterations, minutes: give exactly one of them")
    if resume is not None and minutes is not None:
        raise ValueError("resume: a resumed run continues to a fixed `iterations`, not minutes")
    trainer = Trainer(model, dataset, out_dir, iterations=iterations or 10**9,
                      val_dataset=val_dataset, class_names=class_names, **trainer_options)
    if resume is not None:
        trainer.load_checkpoint(resume)
    start = time.perf_counter()
    history = trainer.fit(seconds=minutes * 60) if minutes else trainer.fit()
    seconds = time.perf_counter() - start
    trainer.save_checkpoint(Path(out_dir) / "checkpoint.npz")
    summary = write_report(out_dir, model, trainer, history, val_dataset, class_names, seconds)
    return summary, trainer
