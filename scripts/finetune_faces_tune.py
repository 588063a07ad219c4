"""Choose the fine-tuning schedule without touching an evaluation fold: inner CV inside fold 0's training part.

``scripts/finetune_faces_cv.py`` compares fine-tuning with the frozen-features probe on a stratified
5-fold split of ../shared/data/faces. Its schedule was picked here: the training part of outer fold 0
(1,085 photographs) is split again into 4 stratified inner folds (seed 1); for every candidate
schedule, each inner fold starts from the linear probe of its own training crops (LP-FT), fine-tunes
the whole network and predicts its inner validation crops (last epoch). Scores are pooled over the 4
inner folds (one macro F1 over all 1,085 predictions, steadier than a mean of four with 1-2 images of
the rarest class each). The probe's own pooled score is printed first.

Candidates (``--candidates`` JSON, FinetuneConfig fields) default to the three of docs/finetune.md.
Run (about 20 min on a quiet 2-core CPU)::

    .venv/bin/python scripts/finetune_faces_tune.py
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {
    "lr1e-3": {"epochs": 6, "lr": 1e-3},
    "lr1e-3, smoothing 0.1, inverse_sqrt": {"epochs": 6, "lr": 1e-3, "label_smoothing": 0.1,
                                            "class_weights": "inverse_sqrt"},
    "lr3e-4, smoothing 0.1, inverse_sqrt": {"epochs": 6, "lr": 3e-4, "label_smoothing": 0.1,
                                            "class_weights": "inverse_sqrt"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "faces" / "labels.csv"))
    parser.add_argument("--candidates", default=json.dumps(CANDIDATES), help="JSON {name: {field: value}}")
    parser.add_argument("--inner-folds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from sklearn.model_selection import StratifiedKFold

    from affectfuse.features.registry import create_extractor
    from affectfuse.metrics.classification import classification_scores
    from affectfuse.training.finetune import FinetuneConfig, build_classifier, fit, predict_logits
    from affectfuse.training.finetune_data import CropDataset
    from affectfuse.training.finetune_probe import probe_head
    from affectfuse.training.finetune_run import make_split, prepare_data

    if not Path(args.data).is_file():
        print(f"{args.data}: not found (the real face data lives in ../shared/data/faces)", file=sys.stderr)
        return 2
    candidates = json.loads(args.candidates)
    extractor = create_extractor("faceexpressionnet")
    prep = prepare_data(args.data, "expr8", extractor.input.size, "mtcnn", None, None,
                        template=extractor.input.template)
    labels, classes, size = prep.data.labels, prep.data.classes, extractor.input.size
    outer_train, _ = make_split(labels, 5, 0, 0.0, 0)  # the evaluation fold 0 is never read
    cpu = torch.device("cpu")
    pooled = {name: np.zeros(len(outer_train), np.int64) for name in ["probe", *candidates]}
    inner = StratifiedKFold(args.inner_folds, shuffle=True, random_state=1).split(outer_train, labels[outer_train])
    work = Path(tempfile.mkdtemp(prefix="affectfuse_tune_"))
    for k, (fit_rows, val_rows) in enumerate(inner):
        a, b = outer_train[fit_rows], outer_train[val_rows]
        train_set = CropDataset([prep.files[i] for i in a], labels[a], size, True, True)
        val_set = CropDataset([prep.files[i] for i in b], labels[b], size, False, True)
        for n, (name, fields) in enumerate(candidates.items()):
            cfg = FinetuneConfig(model="faceexpressionnet", data=args.data, classes="expr8", batch_size=32,
                                 select="last", probe_c=0.01, head_lr_mult=1.0, device="cpu", **fields)
            model = build_classifier(create_extractor("faceexpressionnet"), classes)
            probe_head(model, train_set, cfg, cpu)
            if n == 0:
                pooled["probe"][val_rows] = predict_logits(model, val_set, cfg, cpu).argmax(1)
            t0 = time.perf_counter()
            run = work / f"{k}_{n}"
            fit(model, train_set, val_set, cfg, run)  # cfg.head_init "pretrained": keeps the probe head set above
            pooled[name][val_rows] = predict_logits(model, val_set, cfg, cpu).argmax(1)
            print(f"inner fold {k}: {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    y = labels[outer_train]
    print("\n| schedule | pooled macro F1 | accuracy | " + " | ".join(classes) + " |")
    print("|---|---|---|" + "---|" * len(classes))
    for name, pred in pooled.items():
        s = classification_scores(y, pred, len(classes), classes)
        print(f"| {name} | {s['macro_f1']:.3f} | {s['accuracy']:.3f} | " +
              " | ".join(f"{s['per_class'][c]['f1']:.2f}" for c in classes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
