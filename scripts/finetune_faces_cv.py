"""Fine-tuning vs the frozen-features probe on ../shared/data/faces, same stratified 5-fold split.

For each fold k of a stratified 5-fold split (seed 0) of the 1,357 labelled photographs (8 ABAW classes,
contempt counted as Other), on the same MTCNN-aligned 112 px crops:

- zero-shot: the shipped face-api head, its 7 classes mapped to ABAW (Other never predicted);
- probe: logistic regression (standardised, class-balanced, C = 0.01) on the frozen 256-d
  FaceExpressionNet embeddings of the training folds;
- fine-tuned: ``affectfuse finetune`` from the shipped weights, starting from that very probe as its head
  (``--head-init probe``: linear probe, then fine-tune), the whole network trained for 6 epochs at
  lr 1e-3 (AdamW, warm-up + cosine), label smoothing 0.1, inverse-square-root class weights; the last
  epoch scored (no model selection on the evaluation fold). That schedule was chosen by
  ``scripts/finetune_faces_tune.py`` (inner 4-fold CV inside the training part of fold 0).

Scores: macro F1 over the 8 classes, accuracy. Run (about 15 min on a quiet 2-core CPU)::

    .venv/bin/python scripts/finetune_faces_cv.py --out /tmp/affectfuse_finetune_cv

Writes ``OUT/cv_results.json`` and prints a Markdown table (pasted into docs/finetune.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "faces" / "labels.csv"))
    parser.add_argument("--out", default="/tmp/affectfuse_finetune_cv")
    parser.add_argument("--crop-cache", default=None, help="default ~/.cache/affectfuse/face_crops")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-fold", type=int, default=None, help="run this fold only")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze", default="", help="network parts kept fixed (e.g. dense0,dense1; '' = none)")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--class-weights", default="inverse_sqrt", help="inverse, inverse_sqrt or effective")
    parser.add_argument("--probe-c", type=float, default=0.01)
    parser.add_argument("--head-lr-mult", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    from affectfuse.features.registry import create_extractor
    from affectfuse.metrics.classification import classification_scores
    from affectfuse.training.finetune import FinetuneConfig
    from affectfuse.training.finetune_probe import fit_probe
    from affectfuse.training.finetune_data import CropDataset
    from affectfuse.training.finetune_run import make_split, prepare_data, run_finetune
    from affectfuse.utils import FailureLog, write_json_atomic

    if not Path(args.data).is_file():
        print(f"{args.data}: not found (the real face data lives in ../shared/data/faces)", file=sys.stderr)
        return 2
    out = Path(args.out)
    extractor = create_extractor("faceexpressionnet")
    prep = prepare_data(args.data, "expr8", extractor.input.size, "mtcnn", args.crop_cache,
                        FailureLog(out / "failures.csv"), progress=True, template=extractor.input.template)
    data, classes = prep.data, prep.data.classes
    crops = CropDataset(prep.files, data.labels, extractor.input.size, train=False, preload=True).images
    crops = crops.permute(0, 2, 3, 1).numpy()  # (N, 112, 112, 3) uint8
    t0 = time.perf_counter()
    frozen = np.concatenate([extractor(crops[i:i + 64]) for i in range(0, len(crops), 64)])
    emb, probs = frozen[:, :256], frozen[:, 256:]
    zero_shot = extractor.to_abaw(probs).argmax(1)
    log = logging.getLogger("finetune_faces_cv")
    log.info("frozen features of %d crops in %.1f s", len(crops), time.perf_counter() - t0)

    cfg = FinetuneConfig(model="faceexpressionnet", data=args.data, classes="expr8", align="mtcnn",
                         crop_cache=args.crop_cache, folds=args.folds, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, freeze=args.freeze, seed=args.seed, select="last",
                         head_init="probe", probe_c=args.probe_c, head_lr_mult=args.head_lr_mult,
                         label_smoothing=args.label_smoothing, class_weights=args.class_weights, device="cpu")
    rows = []
    folds = [args.only_fold] if args.only_fold is not None else range(args.folds)
    for k in folds:
        train, val = make_split(data.labels, args.folds, k, 0.0, args.seed)
        y_val = data.labels[val]
        weight, bias = fit_probe(emb[train], data.labels[train], len(classes), args.probe_c)
        s_probe = classification_scores(y_val, (emb[val] @ weight.T + bias).argmax(1), class_names=classes)
        s_zero = classification_scores(y_val, zero_shot[val], class_names=classes)
        t1 = time.perf_counter()
        summary = run_finetune(dataclasses.replace(cfg, fold=k), out / f"fold{k}", resume=True, prepared=prep)
        s_ft = summary["metrics"]
        rows.append({"fold": k, "n_train": len(train), "n_val": len(val),
                     "zero_shot": {m: s_zero[m] for m in ("macro_f1", "accuracy")},
                     "probe": {m: s_probe[m] for m in ("macro_f1", "accuracy")},
                     "finetuned": {m: s_ft[m] for m in ("macro_f1", "accuracy")},
                     "finetune_seconds": round(time.perf_counter() - t1, 1)})
        log.info("fold %d: %s", k, rows[-1])
        write_json_atomic(out / "cv_results_partial.json", rows)
    result = {"data": args.data, "n": len(data), "classes": list(classes), "counts": data.counts(),
              "no_face": prep.no_face, "config": dataclasses.asdict(cfg), "folds": rows}
    for name in ("zero_shot", "probe", "finetuned"):
        for m in ("macro_f1", "accuracy"):
            v = [r[name][m] for r in rows]
            result[f"{name}_{m}"] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
    write_json_atomic(out / "cv_results.json", result)
    print("| fold | zero-shot F1 | probe F1 | fine-tuned F1 | zero-shot acc | probe acc | fine-tuned acc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fold']} | {r['zero_shot']['macro_f1']:.3f} | {r['probe']['macro_f1']:.3f} | "
              f"{r['finetuned']['macro_f1']:.3f} | {r['zero_shot']['accuracy']:.3f} | {r['probe']['accuracy']:.3f} | "
              f"{r['finetuned']['accuracy']:.3f} |")
    mean = {k: result[k]["mean"] for k in result if k.endswith(("_macro_f1", "_accuracy"))}
    std = {k: result[k]["std"] for k in mean}
    print("| mean ± sd | " + " | ".join(f"{mean[k]:.3f} ± {std[k]:.3f}" for k in (
        "zero_shot_macro_f1", "probe_macro_f1", "finetuned_macro_f1",
        "zero_shot_accuracy", "probe_accuracy", "finetuned_accuracy")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
