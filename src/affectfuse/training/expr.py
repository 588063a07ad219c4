"""Training, prediction and checkpoints of the EXPR frame transformer.

Recipe: windows of ``window`` frames every ``stride`` frames over each training video, focal loss with
per-class alpha from label frequencies, AdamW, gradient clipping, optional EMA of the weights
(``torch.optim.swa_utils``; the EMA copy is what is validated, saved and early-stopped), early stopping
on the validation macro F1 (8 classes, -1 frames excluded). Prediction averages the per-frame
probabilities of overlapping windows.

The loop is the shared :mod:`affectfuse.training.engine` (:class:`ExprTask` is EXPR's entry). Checkpoints
describe themselves (the schema of :mod:`affectfuse.training.checkpoint`, kind ``expr``; older files were
``affectfuse-expr/1`` and still load): model and training config, class names, the feature sets they were
trained on (name, dim, extractor), fill policy and frame rate, metrics and versions; they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.data.windows import overlap_average, window_starts
from affectfuse.labels import EXPR_CLASSES
from affectfuse.metrics.classification import classification_scores
from affectfuse.models.expr import ExprModelConfig, ExprTransformer, center_video
from affectfuse.models.expr_decoder import label_statistics
from affectfuse.data.tasks import TaskSpec, task_from_labels
from affectfuse.training.checkpoint import (SCHEMA, VERSION, checkpoint_payload, plain, read_checkpoint,
                                            write_checkpoint)
from affectfuse.training.checkpoint_legacy import expr_feature_sets
from affectfuse.training.engine import Engine, EngineConfig, Validation
from affectfuse.training.frame_probe import (choose_centring, compare_with_probe, frame_probe, probe_summary,
                                            start_at_probe)
from affectfuse.training.losses import WEIGHT_SCHEMES, FocalLoss, class_weights
from affectfuse.training.resolver import check_choice, dump_yaml
from affectfuse.training.resolver import from_dict as resolve_from_dict
from affectfuse.training.temporal import smoothed_scores
from affectfuse.utils import seed_everything, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
KIND = "expr"  # the checkpoint kind (training.checkpoint); files before the schema were "affectfuse-expr/1"
CHECKPOINT_FORMAT = KIND


FEW_VIDEO_MODEL = {"d_model": 64, "n_layers": 1, "dropout": 0.3, "input_dropout": 0.2, "standardize": True,
                   "probe_skip": True, "frame_dropout": 0.1, "input_noise": 0.5}


@dataclass
class ExprTrainConfig:
    """Typed training configuration (dataclass defaults -> YAML -> ``--set key=value``)."""

    window: int = 32  # frames per training / prediction window
    stride: int = 16  # frames between training window starts
    predict_stride: int = 8  # frames between prediction window starts (overlaps averaged)
    batch_size: int = 32
    epochs: int = 30
    lr: float = 3e-4
    weight_decay: float = 5e-2
    # class-balanced cross-entropy (gamma 0, inverse-frequency alpha): the objective of the per-frame probe the
    # model starts from, so training moves it only where that helps (focal / inverse_sqrt pulled it off)
    gamma: float = 0.0  # focal loss focusing parameter, [0, 5]
    class_weights: str = "inverse"  # focal alpha: none | inverse | inverse_sqrt | effective
    ema_decay: float = 0.0  # 0 = no EMA; e.g. 0.99
    patience: int = 6  # epochs without validation improvement before stopping
    clip_norm: float = 1.0  # gradient clipping max-norm (0 = off)
    seed: int = 0
    device: str = "cpu"
    # ExprModelConfig overrides; the defaults hold up with few training videos (docs/expr.md: the table of
    # what was tried): a small encoder started at the per-frame probe, standardised inputs, frame dropout
    model: dict = field(default_factory=lambda: dict(FEW_VIDEO_MODEL), metadata={"schema": ExprModelConfig})
    probe: bool = True  # fit the per-frame logistic probe (reported; starts a probe_skip model)
    smoothing: str = "auto"  # validation smoothing: auto (chosen from a grid) | none | mean:N | mode:N
    # auto: the HMM decoder over the frame posteriors (transitions from the training labels) is a candidate
    # of the validation choice next to the fixed windows; none: windows only
    decoder: str = "hmm"
    # per-video centring of the inputs (models.expr.center_video): auto = on when the per-frame probe on
    # centred frames beats the probe on raw frames on validation (both with their best window)
    video_center: str | bool = "auto"  # bool: YAML 1.1 reads an unquoted on / off as true / false (validate)
    center_prior_frames: float = 150.0  # shrinkage: a video of n frames has n / (n + 150) of its mean removed

    def validate(self) -> None:
        """Choices of the string fields (a ConfigError names the field)."""
        check_choice(self.class_weights, WEIGHT_SCHEMES, "class_weights", "EXPR training options")
        check_choice(self.decoder, ("hmm", "none"), "decoder", "EXPR training options")
        if isinstance(self.video_center, bool):   # --set video_center=off arrives as False
            self.video_center = "on" if self.video_center else "off"
        check_choice(self.video_center, ("auto", "on", "off"), "video_center", "EXPR training options")

    @classmethod
    def from_dict(cls, d: dict, source: str = "EXPR training options") -> "ExprTrainConfig":
        """Through the shared resolver: model keys given (``model.d_model=128``) replace those of the defaults
        (the others stay); unknown keys and wrong types are errors naming them."""
        return resolve_from_dict(cls, d, source)


class _FrameBank:
    """All videos' frames in one (F, D) tensor, so a batch of windows is one gather (no copies per video)."""

    def __init__(self, videos: list[ExprVideo]):
        self.x = torch.from_numpy(np.concatenate([v.features for v in videos]).astype(np.float32))
        self.valid = torch.from_numpy(np.concatenate([v.valid for v in videos]))
        self.y = torch.from_numpy(np.concatenate([v.labels for v in videos]).astype(np.int64))
        lengths = np.array([v.n_frames for v in videos])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.lengths = lengths

    def windows(self, length: int, stride: int) -> np.ndarray:
        """(W, 2) rows of (video index, start frame)."""
        rows = [(i, s) for i, n in enumerate(self.lengths) for s in window_starts(int(n), length, stride)]
        return np.asarray(rows, dtype=np.int64)

    def gather(self, rows: np.ndarray, length: int):
        """x (B, L, D), valid (B, L), y (B, L) with -1 at padding, pad (B, L)."""
        local = rows[:, 1:2] + np.arange(length)[None, :]  # (B, L) frame index inside each video
        n = self.lengths[rows[:, 0]][:, None]
        pad = local >= n
        index = torch.from_numpy(self.offsets[rows[:, 0]][:, None] + np.minimum(local, n - 1))
        pad_t = torch.from_numpy(pad)
        y = torch.where(pad_t, torch.full_like(self.y[index], -1), self.y[index])
        return self.x[index], self.valid[index] | pad_t, y, pad_t


@torch.no_grad()
def predict_videos(model: ExprTransformer, videos: list[ExprVideo], window: int, stride: int,
                   batch_size: int = 64, device: str = "cpu",
                   smoothing: dict | tuple[str, int] = ("none", 1)) -> dict[str, np.ndarray]:
    """id -> per-frame class probabilities (N, C) of each video, overlapping windows averaged, then
    optionally smoothed or decoded (a spec of :mod:`affectfuse.training.temporal`, or ``(method, window)``).
    Videos are centred first when the model says so (``video_center``). Windows of all videos share
    batches, so many short videos (or single images) cost one forward pass per batch."""
    from affectfuse.training.temporal import apply_smoothing, smoothing_spec

    if not videos:
        return {}
    model.eval()
    if model.config.video_center:
        videos = centred_videos(videos, model.config.center_prior_frames)
    bank = _FrameBank(videos)
    rows = bank.windows(window, stride)
    outputs = []
    for b in range(0, len(rows), batch_size):
        x, valid, _, pad = bank.gather(rows[b:b + batch_size], window)
        logits = model(x.to(device), valid.to(device), pad.to(device))
        outputs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    probs = np.concatenate(outputs)
    out = {}
    for i, v in enumerate(videos):
        mine = rows[:, 0] == i
        out[v.id] = overlap_average(probs[mine], rows[mine, 1], v.n_frames)
    spec = smoothing if isinstance(smoothing, dict) else smoothing_spec(*smoothing)
    return apply_smoothing(out, spec) if spec["method"] != "none" else out


def centred_videos(videos: list[ExprVideo], prior_frames: float) -> list[ExprVideo]:
    """Copies of ``videos`` with per-video centred features (:func:`affectfuse.models.expr.center_video`)."""
    return [replace(v, features=center_video(v.features, v.valid, prior_frames)) for v in videos]


def predict_video(model: ExprTransformer, video: ExprVideo, window: int, stride: int,
                  batch_size: int = 64, device: str = "cpu",
                  smoothing: dict | tuple[str, int] = ("none", 1)) -> np.ndarray:
    """Per-frame class probabilities (N, C) of one video, overlapping windows averaged, then ``smoothing``."""
    return predict_videos(model, [video], window, stride, batch_size, device, smoothing)[video.id]


def evaluate_probabilities(videos: list[ExprVideo], probs: dict[str, np.ndarray], class_names=EXPR_CLASSES) -> dict:
    """Frame-level scores (macro F1 over all classes, -1 frames excluded) of predictions on labelled videos."""
    y_true = np.concatenate([v.labels for v in videos])
    y_pred = np.concatenate([probs[v.id].argmax(axis=1) for v in videos])
    return classification_scores(y_true, y_pred, len(class_names), class_names)


def save_checkpoint(path, model: ExprTransformer, train_config: ExprTrainConfig, info: dict) -> Path:
    """Write a checkpoint of the schema (kind ``expr``, see training.checkpoint) atomically. ``info``:
    class_names, feature_sets, fill, fps, audio set, epoch, val, smoothing ..."""
    names = list(info.get("class_names") or EXPR_CLASSES)
    task = task_from_labels("expr", "frame", "classification", names)
    payload = checkpoint_payload(
        KIND, model_name="expr_transformer", model_args=model.config.to_dict(), state_dict=model.state_dict(),
        task=task.to_dict(), train_config=asdict(train_config), feature_sets=expr_feature_sets(info),
        info=info, epoch=info.get("epoch"), metrics=info.get("val"))
    return write_checkpoint(payload, path)


def load_checkpoint(path, device: str = "cpu") -> tuple[ExprTransformer, dict]:
    """Rebuild the model from a checkpoint file alone (old ``affectfuse-expr/1`` files too); returns
    (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path, KIND, "EXPR checkpoint", map_location=device, role="best")
    return model_from_payload(ckpt, device), ckpt


def model_from_payload(ckpt: dict, device: str = "cpu") -> ExprTransformer:
    """The model (eval mode, on ``device``) of an EXPR checkpoint payload already read."""
    model = ExprTransformer(ExprModelConfig.from_dict(ckpt["model"]["args"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


@dataclass
class ExprRun:
    model: ExprTransformer  # the validated copy (EMA weights when EMA is on)
    history: list[dict]
    best: dict  # validation scores of the best epoch
    best_epoch: int
    smoothing: dict | None = None  # {"method", "window"} chosen on validation (stored in best.pt's info)
    versus_probe: dict | None = None  # validation macro F1 of the model and of its per-frame probe


def train_expr(train: list[ExprVideo], val: list[ExprVideo], config: ExprTrainConfig,
               run_dir: str | Path | None = None, info: dict | None = None,
               class_names=EXPR_CLASSES, progress: bool = False, resume: bool = False) -> ExprRun:
    """Train on ``train`` windows, early-stop on ``val`` macro F1; write ``run_dir`` when given.

    ``run_dir`` gets ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch), ``best.pt`` and
    ``last.pt`` (after every epoch: weights, optimizer, EMA, random states, history). ``resume=True``
    goes on from ``last.pt`` with the same config and gives the same weights and history as an
    uninterrupted run; a finished run is not trained again. Without ``resume`` an existing run is an error.
    """
    if not train or not val:
        raise ValueError("training needs at least one training and one validation video")
    seed_everything(config.seed)
    n_classes = len(class_names)
    dims = {v.features.shape[1] for v in train + val}
    if len(dims) != 1:
        raise ValueError(f"videos have different feature dims {sorted(dims)}")
    audio_dim = int((info or {}).get("audio_dim", 0))
    skip = bool(config.model.get("probe_skip", False))
    probe = frame_probe(train, val, n_classes, config.seed) if config.probe or skip else None  # the baseline
    centre, start_probe, centring = choose_centring(
        train, val, config.video_center, config.center_prior_frames, probe, n_classes, config.seed,
        lambda videos: centred_videos(videos, config.center_prior_frames))
    model_cfg = ExprModelConfig.from_dict({**config.model, "face_dim": dims.pop() - audio_dim,
                                           "audio_dim": audio_dim, "n_classes": n_classes, "video_center": centre,
                                           "center_prior_frames": config.center_prior_frames})
    model = ExprTransformer(model_cfg)
    if start_probe is not None:
        start_at_probe(model, start_probe)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}  # a probe_skip model: the probe
    model = model.to(config.device)
    bank = _FrameBank(centred_videos(train, config.center_prior_frames) if centre else train)
    stats = label_statistics([v.labels for v in train], n_classes) if config.decoder == "hmm" else None
    alpha = class_weights(bank.y.numpy(), n_classes, config.class_weights)
    criterion = FocalLoss(config.gamma, torch.from_numpy(alpha)).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = None
    if config.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    info = {**(info or {}), "class_names": list(class_names), "class_weights": alpha.tolist(),
            "probe": probe_summary(probe), "centring": centring}
    spec = task_from_labels("expr", "frame", "classification", class_names)
    run_dir = Path(run_dir) if run_dir is not None else None
    engine = Engine(model, optimizer, EngineConfig(
        max_epochs=config.epochs, patience=config.patience, mode=spec.mode, clip_norm=config.clip_norm,
        best_in_last=True, log_epochs=progress,
        meta={"format": SCHEMA, "version": VERSION, "kind": KIND, "train_config": plain(asdict(config))}),
        ema=ema, generator=torch.Generator().manual_seed(config.seed), run_dir=run_dir)
    if run_dir is not None:
        _check_run_folder(run_dir, config, resume)
        if resume:
            engine.resume(KIND)
        write_text_atomic(run_dir / "config.yaml", dump_yaml(config))
    task = ExprTask(bank, bank.windows(config.window, config.stride), val, config, criterion, spec, info, stats)
    state = engine.run(task)
    best, best_state = engine.best_extra, engine.best_model_state()
    if best_state is None:
        raise ValueError(f"{run_dir}: the run holds no trained epoch (config epochs={config.epochs})")
    final = ExprTransformer(model_cfg)
    final.load_state_dict(best_state)
    if model_cfg.probe_skip and start_probe is not None:  # early stopping that counts the start (a probe)
        kept = _keep_start(task, model_cfg, start, run_dir, best["macro_f1"])
        if kept is not None:
            final, best, state = kept, task.scores, {**state, "best_epoch": 0}
    versus = compare_with_probe(best, probe)
    if run_dir is not None:
        write_json_atomic(run_dir / "result.json", {"best_epoch": state["best_epoch"], "val": plain(best),
                                                    "versus_probe": versus, "probe": probe_summary(probe),
                                                    "centring": centring})
    return ExprRun(final.to(config.device).eval(), state["history"], best, state["best_epoch"],
                   best.get("smoothing"), versus)


def _keep_start(task: "ExprTask", model_cfg: ExprModelConfig, start: dict, run_dir: Path | None,
                trained_f1: float) -> ExprTransformer | None:
    """The untrained probe_skip model (= the per-frame probe it started from) when its validation macro F1
    (with its own smoothing or decoder; scores left in ``task.scores``) beats ``trained_f1``, written as
    ``best.pt`` (epoch 0); None when training did better."""
    model = ExprTransformer(model_cfg)
    model.load_state_dict(start)
    model = model.to(task.config.device).eval()
    trained_scores = task.scores
    if task.validate(model).score <= trained_f1:
        task.scores = trained_scores
        return None
    log.warning("EXPR training did not beat its start (the per-frame probe) on validation; best.pt is the start")
    if run_dir is not None:
        write_checkpoint(task.best_payload(model, 0, {}), run_dir / "best.pt")
    return model


class ExprTask:
    """The engine's entry for per-frame classification: shuffled windows, focal loss, the task spec's
    metric (macro F1, after the smoothing chosen on validation) and ``best.pt``."""

    def __init__(self, bank: _FrameBank, rows: np.ndarray, val: list[ExprVideo], config: ExprTrainConfig,
                 criterion, spec: TaskSpec, info: dict, label_stats: dict | None = None):
        self.bank, self.rows, self.val, self.config, self.criterion = bank, rows, val, config, criterion
        self.spec, self.info, self.scores, self.label_stats = spec, info, None, label_stats

    def train_epoch(self, engine: Engine, epoch: int) -> dict:
        cfg, losses = self.config, []
        for b in torch.randperm(len(self.rows), generator=engine.generator).split(cfg.batch_size):
            x, valid, y, pad = self.bank.gather(self.rows[b.numpy()], cfg.window)
            logits = engine.model(x.to(cfg.device), valid.to(cfg.device), pad.to(cfg.device))
            loss = self.criterion(logits, y.to(cfg.device))
            engine.backward_step(loss)
            losses.append(loss.item())
        return {"train_loss": float(np.mean(losses))}

    def validate(self, model: ExprTransformer) -> Validation:
        cfg = self.config
        probs = predict_videos(model, self.val, cfg.window, cfg.predict_stride, device=cfg.device)
        scores = smoothed_scores([v.labels for v in self.val], [probs[v.id] for v in self.val],
                                 list(self.spec.label_names), cfg.smoothing, self.label_stats)
        self.scores = scores
        row = {"val_macro_f1": scores["macro_f1"], "val_uar": scores["uar"], "val_accuracy": scores["accuracy"],
               "val_unsmoothed_macro_f1": scores["unsmoothed_macro_f1"]}
        return Validation(scores[self.spec.metric], row, scores)

    def best_payload(self, model: ExprTransformer, epoch: int, row: dict) -> dict:
        summary = {k: self.scores[k] for k in ("macro_f1", "uar", "accuracy")}
        info = {**self.info, "epoch": epoch, "val": summary, "smoothing": self.scores["smoothing"]}
        names = list(self.spec.label_names)
        return checkpoint_payload(
            KIND, model_name="expr_transformer", model_args=model.config.to_dict(), state_dict=model.state_dict(),
            task=self.spec.to_dict(), train_config=asdict(self.config), feature_sets=expr_feature_sets(info),
            info={**info, "class_names": names}, epoch=epoch, metrics=summary)


def _check_run_folder(run_dir: Path, config: ExprTrainConfig, resume: bool) -> None:
    """An existing run is an error without ``resume``; with it, the saved config must be this one."""
    if not (run_dir / "last.pt").is_file():
        return
    if not resume:
        raise ValueError(f"{run_dir}: an EXPR run exists here already; pass --resume to go on or choose "
                         "another --out")
    old = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
    if old != dump_yaml(config):
        raise ValueError(f"{run_dir / 'config.yaml'}: the training config differs from this one; "
                         "resume with the same config or choose another --out")


# -- the generic path: labelled items (images, clips) -----------------------------------------------
def item_probabilities(frame_probs: dict[str, np.ndarray], items: list[ExprVideo]) -> np.ndarray:
    """(I, C) item probabilities: the mean of each item's frame probabilities over its face frames
    (over all its frames when it has none)."""
    out = []
    for item in items:
        p = frame_probs[item.id]
        out.append(p[item.valid].mean(axis=0) if item.valid.any() else p.mean(axis=0))
    return np.asarray(out, dtype=np.float32)
