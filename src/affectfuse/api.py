"""The Python API: ``affectfuse.predict``, ``extract``, ``train``, ``load`` (the CLI is a layer over these).

>>> import affectfuse
>>> p = affectfuse.predict(affectfuse.sample_clip())      # a VideoPrediction, nothing written
>>> p.top_emotion, p.confidence, p.to_pandas().shape       # fused top emotion, frames x columns
>>> p.save("predict_out/sample_clip")                      # the files `affectfuse predict` writes
>>> affectfuse.extract("videos/", ["egemaps", "faceexpressionnet"], "feats")
>>> affectfuse.train("eri", table="table.csv", features={"audio": "feats/egemaps"}, out="run")
>>> affectfuse.load("run/best.pt").predict({"audio": "feats/egemaps"})   # DataFrame, one row per video

Models are loaded once per set of options and kept for the next call with the same options (one set).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Mapping, Sequence

TASKS = ("eri", "expr", "classify")
_PREDICTOR: dict = {}  # {options tuple: VideoPredictor}: the models of the last predict() options


def sample_clip() -> Path:
    """The clip shipped in the package: one CREMA-D actor, neutral, happy, angry (6.1 s, 480x360, with speech)."""
    from affectfuse.inference.video import sample_clip_path

    return sample_clip_path()


def predict(video: str | Path, **options):
    """Analyse one video -> :class:`~affectfuse.inference.prediction.VideoPrediction` (nothing written; call
    ``.save(folder)`` for the report files).

    ``options``: the fields of :class:`~affectfuse.inference.video.PredictOptions`, named as the CLI flags
    with ``_``: ``fps`` (analyse frames at this rate; default every frame), ``expr_checkpoint`` (per-frame
    EXPR model), ``eri_checkpoint`` (adds the 7 ERI intensities), ``voice_head`` ("default", a path or
    None), ``fusion_weights`` ((face, voice)), ``detect_fps``, ``detect_max_side``, ``min_face_size``,
    ``batch_size``, ``thumbnails``, ``device``, ``precision`` ("fp32" | "bf16" | "auto"), ``strict``
    (a truncated file is an error, not a warning). Unknown names raise ``TypeError`` naming them.
    """
    from affectfuse.inference.video import PredictOptions, VideoPredictor

    valid = {f.name for f in fields(PredictOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"predict() got unknown option(s) {unknown}; valid: {sorted(valid)}")
    if options.get("voice_head", "default") is None:
        options["voice_head"] = "none"
    opts = PredictOptions(**options)
    key = tuple(sorted((k, str(v)) for k, v in asdict(opts).items()))
    if key not in _PREDICTOR:
        _PREDICTOR.clear()  # one set of models at a time: they hold hundreds of MB
        _PREDICTOR[key] = VideoPredictor(opts)
    return _PREDICTOR[key].analyse(video)


def extract(inputs, extractors: Sequence[str] | str | None, out: str | Path, *, weights: Mapping[str, str] | None = None,
            fps: float | None = 5.0, random_weights: bool = False, device: str = "cpu", batch_size: int = 32,
            progress: bool = False, strict: bool = False, **options):
    """Extract features of ``inputs`` into ``out/<extractor>/`` (one feature set each; resumable: what is
    there already is skipped).

    Args:
        inputs: a folder, media file, frame folder or CSV (as ``affectfuse extract`` takes), or a list of them.
        extractors: registry names (``affectfuse.features.list_extractors()``), a list or "a,b"; ``None``:
            the defaults of ``affectfuse extract`` for the kinds of input given (videos, audio files,
            photos; :func:`affectfuse.features.registry.defaults_for_inputs`), photo views included.
        weights: extractor name -> weights file to load instead of the shipped one (recorded in meta.json
            with its sha256).
        fps: face frames sampled per second (None: every frame).
        options: ``sample_rate``, ``window_s``, ``hop_s`` (audio), ``precision`` (face networks), and the
            pipeline's ``workers``, ``keep``, ``frame_rate``, ``crop_cache``.
    Returns:
        the :class:`~affectfuse.features.pipeline.ExtractReport`: ``written`` {extractor: ids}, ``skipped``
        (already done), ``not_applicable`` (e.g. no audio), ``failures`` [(item, error)], ``warnings``.
    """
    from affectfuse.features.build import build_extractors
    from affectfuse.features.pipeline import extract as run_extract
    from affectfuse.features.pipeline import find_inputs

    from affectfuse.features.registry import extractor_plan

    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items = [item for g in given for item in find_inputs(g)]
    pipeline = {k: options.pop(k) for k in ("workers", "keep", "frame_rate", "crop_cache") if k in options}
    names, views = extractor_plan(extractors, items)
    built = build_extractors(names, weights, random_weights, device, per_name=views, **options)
    return run_extract(items, built, out, fps=fps, batch_size=batch_size, progress=progress, strict=strict,
                       **pipeline)


def train(task: str, *, features, out: str | Path, table: str | Path | None = None,
          manifest: str | Path | None = None, annotations: str | Path | None = None,
          val_annotations: str | Path | None = None, config=None, overrides: Sequence[str] | Mapping | None = None,
          label_map: str | None = None, audio: str | Path | None = None, fps: float | None = None,
          fill: str = "ffill", resume: bool = False, progress: bool = False) -> dict:
    """Train a model for ``task`` and write its run folder ``out`` (``best.pt`` is what :func:`load` reads).

    - ``"eri"``: intensities per video; ``features`` {modality: feature-set folder}, ``table`` (dataset
      table with train/val splits); ``config``: recipe name(s) or YAML file(s).
    - ``"expr"``: classes per frame (Aff-Wild2 layout); ``features`` [face folders], ``annotations`` and
      ``val_annotations`` (folders of per-video label files); ``audio`` (a feature set), ``fps``, ``fill``
      (faceless frames: "ffill" | "zero").
    - ``"classify"``: one class per item; ``features`` [folders], ``manifest`` (CSV with id, label, split),
      ``label_map`` ("abaw" or "NAME=CLASS,...").

    ``overrides``: ``["key=value", ...]`` or {key: value}, as ``--set``. ``resume``: go on with an interrupted
    run in ``out`` (a finished item run is reported, not trained again). Returns the run's result dict:
    ``run``, ``checkpoint``, ``best_epoch`` and the validation scores (what the commands print).
    """
    if task not in TASKS:
        raise ValueError(f"train(): task must be one of {', '.join(TASKS)}, got {task!r}")
    sets = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else list(overrides or [])
    out = Path(out)
    if task == "eri":
        if table is None or not isinstance(features, Mapping):
            raise ValueError("train('eri') needs table=... and features={modality: folder}")
        return _train_eri(table, features, out, config, sets, resume)
    if task == "expr":
        if annotations is None or val_annotations is None:
            raise ValueError("train('expr') needs annotations=... and val_annotations=... (Aff-Wild2 layout; "
                             "a manifest: train('classify', manifest=...))")
        return _train_frames(list(features), annotations, val_annotations, out, config, sets, audio=audio, fps=fps,
                             fill=fill, resume=resume, progress=progress)
    if manifest is None:
        raise ValueError("train('classify') needs manifest=... (CSV: id, label, split)")
    return _train_items(list(features), manifest, out, config, sets, label_map, resume)


def _train_eri(table, features: Mapping, out: Path, config, sets: list[str], resume: bool) -> dict:
    from affectfuse.training.config import load_config, resolve_config
    from affectfuse.training.run import train_run

    if resume and (out / "config.yaml").is_file():
        cfg = load_config(out / "config.yaml")  # the interrupted run's own config
        if config or sets:
            cfg = resolve_config(config, sets, base=cfg)
    else:
        cfg = resolve_config(config if isinstance(config, (list, tuple)) else [config], sets)
    result = train_run(table, {k: Path(v) for k, v in features.items()}, out, cfg, resume=resume)
    probe = (result.probe or {}).get("val_mean_pearson")
    return {"run": str(out), "checkpoint": str(out / "best.pt"), "best_val_mean_pearson": result.best_metric,
            "ridge_probe_val_mean_pearson": probe, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "finished": result.finished}


def _train_frames(features: list, annotations, val_annotations, out: Path, config, sets: list[str], *,
                  audio=None, fps: float | None = None, fill: str = "ffill", resume: bool = False,
                  progress: bool = False) -> dict:
    """Per-frame EXPR: the frame transformer on Aff-Wild2 annotation folders, early-stopped on val macro F1."""
    from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder
    from affectfuse.data.manifest_splits import describe_sets, open_sets
    from affectfuse.labels import EXPR_CLASSES
    from affectfuse.training.expr import ExprTrainConfig, train_expr
    from affectfuse.training.resolver import resolve_dataclass

    cfg = resolve_dataclass(ExprTrainConfig, files=config, overrides=sets)
    face = open_sets(features)
    voice = open_sets([audio])[0] if audio else None
    info = {"feature_sets": describe_sets(face), "audio_set": describe_sets([voice])[0] if voice else None,
            "audio_dim": voice.meta.dim if voice else 0, "fill": fill, "fps": fps, "task": "frames"}
    train = load_expr_videos(read_expr_folder(annotations), face, voice, fps, fill)
    val = load_expr_videos(read_expr_folder(val_annotations), face, voice, fps, fill)
    run = train_expr(train, val, cfg, run_dir=out, info=info, class_names=EXPR_CLASSES, progress=progress,
                     resume=resume)
    return {"run": str(out), "checkpoint": str(out / "best.pt"), "best_epoch": run.best_epoch, "val": run.best,
            "versus_probe": run.versus_probe}


def _train_items(features: list, manifest, out: Path, config, sets: list[str], label_map, resume: bool) -> dict:
    """Per-item classification from a manifest: the item classifier, early-stopped on the val rows, next to
    its logistic probe. The result adds ``note`` (what ``predict`` will make of the classes, or None)."""
    import json

    from affectfuse.data.label_map import predict_note
    from affectfuse.data.manifest_splits import describe_sets, manifest_rows, open_sets
    from affectfuse.training.items import ItemTrainConfig, fit_items, write_item_run
    from affectfuse.training.resolver import resolve_dataclass

    if (out / "best.pt").is_file():
        if not resume:
            raise ValueError(f"{out}: a run exists here already; resume to report it or choose another out")
        return {"run": str(out), "checkpoint": str(out / "best.pt"), "finished_earlier": True,
                **json.loads((out / "result.json").read_text())}
    cfg = resolve_dataclass(ItemTrainConfig, files=config, overrides=sets)
    face = open_sets(features)
    table, train_rows = manifest_rows(manifest, "train", face, label_map)
    _, val_rows = manifest_rows(manifest, "val", face, label_map)
    if not len(train_rows) or not len(val_rows):
        raise ValueError(f"{manifest}: item training needs train and val rows (split column)")
    class_names = list(table.label_names)
    note = predict_note(class_names)
    info = {"feature_sets": describe_sets(face), "predict_accepts": note is None, "label_map": label_map}
    run = fit_items(train_rows, val_rows, cfg, class_names)
    result = write_item_run(out, run, cfg, info)
    return {"run": str(out), "checkpoint": str(out / "best.pt"), "note": note, "val": run.val,
            "probe_val": run.probe["val"], **result}


def load(checkpoint: str | Path, device: str = "cpu"):
    """The predictor of any trained affectfuse model (see :mod:`affectfuse.inference.loader`)."""
    from affectfuse.inference.loader import load as load_any

    return load_any(checkpoint, device=device)
