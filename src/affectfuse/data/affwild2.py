"""Aff-Wild2 expression (EXPR) data: annotation files, frame lists, and features aligned to frames.

Conventions (those of the ABAW organisers):

- ``<video>.txt``: a header line ``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other``, then
  one integer per frame; line k after the header is frame k (1-based), i.e. image ``<video>/<k:05d>.jpg``;
  ``-1`` = not annotated (not scored).
- Videos with two people have ``<video>_left.txt`` and ``<video>_right.txt`` over one media file
  (:func:`media_id` strips the suffix); their ``cropped_aligned`` folders carry the suffix.
- ``cropped_aligned/<video>/<k:05d>.jpg``: a face crop for frame k; frames with no face have no image.

Feature rows to frames: every feature set row has a timestamp t (seconds). With the video's frame rate
``fps`` the row belongs to frame ``round(t * fps) + 1`` -- so an extractor that writes one row per frame
at every frame (t = (k-1)/fps) gives row k-1 = frame k. When rows were sampled at a lower rate, every
frame takes the nearest row in time (nearest-frame assignment). Frames whose row is masked (no face),
or that have no row within ``max_gap_s`` (about half the row spacing), are "faceless" and handled by the fill policy:

- ``"ffill"``: copy the last face frame before (the first one after, at the start of a video);
- ``"interpolate"``: linear interpolation between the face frames on either side;
- ``"mask"``: zeros, with ``valid = False`` so the model substitutes its learned no-face embedding.

A video with no face at all gets zeros and ``valid = False`` everywhere under every policy.
Letters: N frames, D feature dim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectfuse.data.store import FeatureSet, FeatureStoreError, VideoFeatures
from affectfuse.labels import EXPR_CLASSES, EXPR_IGNORE

FILL_POLICIES = ("ffill", "interpolate", "mask")
_SIDE = re.compile(r"_(left|right)$")
_FRAME_IMAGE = re.compile(r"^(?P<video>.+)/(?P<frame>\d+)\.jpg$")


class AffWild2Error(ValueError):
    """A malformed Aff-Wild2 file; the message names the file, the line and the cause."""


@dataclass
class ExprVideo:
    """One video's per-frame inputs and labels.

    Attributes:
        id: annotation id, e.g. ``"video10_1_left"``.
        features: (N, D) float32 face features (+ audio columns) per frame, after the fill policy.
        valid: (N,) bool, False at faceless frames left unfilled (policy ``"mask"``) or without any face.
        labels: (N,) int64 class per frame, -1 = not scored; all -1 when unlabelled.
        frames: (N,) int64 1-based frame numbers (frame k = image ``<id>/<k:05d>.jpg``).
        face: (N,) bool, True where the face features came from a detected face (before filling).
    """

    id: str
    features: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    frames: np.ndarray
    face: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.features.shape[0])


def media_id(video_id: str) -> str:
    """Media file stem of an annotation id: ``video10_1_left`` -> ``video10_1``."""
    return _SIDE.sub("", video_id)


def read_expr_annotation(path: str | Path) -> np.ndarray:
    """Read one ``<video>.txt``: (N,) int64 labels for frames 1..N (-1 = not annotated)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise AffWild2Error(f"{path}: cannot read annotation file ({exc})") from exc
    if not lines:
        raise AffWild2Error(f"{path}: empty annotation file (expected a header line, then one label per frame)")
    header = [h.strip() for h in lines[0].split(",")]
    if [h.lower() for h in header] != [c.lower() for c in EXPR_CLASSES]:
        raise AffWild2Error(f"{path}: line 1: header {lines[0]!r} is not {','.join(EXPR_CLASSES)}")
    labels = []
    for number, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text:
            if all(not rest.strip() for rest in lines[number - 1:]):
                break  # trailing blank lines
            raise AffWild2Error(f"{path}: line {number}: empty line inside the labels")
        try:
            value = int(text)
        except ValueError:
            raise AffWild2Error(f"{path}: line {number}: {text!r} is not an integer label") from None
        if value != EXPR_IGNORE and not 0 <= value < len(EXPR_CLASSES):
            raise AffWild2Error(f"{path}: line {number}: label {value} outside -1..{len(EXPR_CLASSES) - 1}")
        labels.append(value)
    if not labels:
        raise AffWild2Error(f"{path}: no frame labels after the header")
    return np.asarray(labels, dtype=np.int64)


def read_expr_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """Every ``*.txt`` of an annotation folder (e.g. ``EXPR_Classification_Challenge/Train_Set``).

    Returns id -> (N,) labels, sorted by id. All malformed files are reported in one error.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise AffWild2Error(f"{folder}: no <video>.txt annotation files")
    out, errors = {}, []
    for f in files:
        try:
            out[f.stem] = read_expr_annotation(f)
        except AffWild2Error as exc:
            errors.append(str(exc))
    if errors:
        raise AffWild2Error(f"{len(errors)} bad annotation file(s):\n" + "\n".join(errors))
    return out


def cropped_aligned_frames(folder: str | Path) -> np.ndarray:
    """(K,) sorted 1-based frame numbers that have a face crop ``<k:05d>.jpg`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AffWild2Error(f"{folder}: cropped_aligned folder does not exist")
    frames = [int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()]
    return np.asarray(sorted(frames), dtype=np.int64)


def read_frame_list(path: str | Path) -> dict[str, np.ndarray]:
    """The organisers' list of frames to predict: ``video -> (K,) 1-based frame numbers`` in file order.

    Accepts the example submission file (header ``image_location,...``, rows ``<video>/<k:05d>.jpg[,...]``)
    or a bare list of image locations, one per line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise AffWild2Error(f"{path}: cannot read frame list ({exc})") from exc
    out: dict[str, list[int]] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or (number == 1 and text.lower().startswith("image_location")):
            continue
        location = text.split(",")[0].strip()
        m = _FRAME_IMAGE.match(location)
        if not m:
            raise AffWild2Error(f"{path}: line {number}: {location!r} is not <video>/<frame>.jpg")
        out.setdefault(m["video"], []).append(int(m["frame"]))
    if not out:
        raise AffWild2Error(f"{path}: no image locations")
    return {v: np.asarray(f, dtype=np.int64) for v, f in out.items()}


def row_frames(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """1-based frame number of each feature row: ``round(t * fps) + 1``."""
    if not fps or fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return np.rint(np.asarray(timestamps, dtype=np.float64) * fps).astype(np.int64) + 1


def align_to_frames(vf: VideoFeatures, n_frames: int, fps: float, max_gap_s: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-row assignment of one video's feature rows to frames 1..n_frames.

    Returns (values (N, D) float32, face (N,) bool): ``face`` is False where the nearest row is masked or
    farther than ``max_gap_s`` (default: half the median row spacing, at least half a frame, plus a quarter
    frame of slack for jittery timestamps) -- so with one row per frame a frame without a row is faceless.
    """
    n_frames = int(n_frames)
    values = np.zeros((n_frames, vf.dim), dtype=np.float32)
    face = np.zeros(n_frames, dtype=bool)
    if vf.steps == 0 or n_frames == 0:
        return values, face
    order = np.argsort(vf.timestamps, kind="stable")
    ts, rows, mask = vf.timestamps[order], vf.values[order], vf.mask[order]
    if max_gap_s is None:
        spacing = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0 / fps
        max_gap_s = max(0.5 * spacing, 0.5 / fps) + 0.25 / fps
    frame_t = np.arange(n_frames) / fps  # time of frame k = (k-1)/fps
    right = np.clip(np.searchsorted(ts, frame_t), 0, ts.size - 1)
    left = np.clip(right - 1, 0, ts.size - 1)
    nearest = np.where(np.abs(ts[left] - frame_t) <= np.abs(ts[right] - frame_t), left, right)
    ok = mask[nearest] & (np.abs(ts[nearest] - frame_t) <= max_gap_s + 1e-9)
    values[ok] = rows[nearest[ok]]
    face[ok] = True
    return values, face


def fill_faceless(values: np.ndarray, face: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply a fill policy (see the module docstring); returns (values (N, D), valid (N,))."""
    if policy not in FILL_POLICIES:
        raise ValueError(f"unknown fill policy {policy!r}; valid: {', '.join(FILL_POLICIES)}")
    idx = np.flatnonzero(face)
    if idx.size == 0:
        return np.zeros_like(values), np.zeros(len(values), dtype=bool)
    if policy == "mask" or idx.size == len(values):
        out = values.copy()
        out[~face] = 0.0
        return out, face.copy()
    positions = np.arange(len(values))
    if policy == "ffill":
        last = np.maximum.accumulate(np.where(face, positions, -1))
        source = np.where(last >= 0, last, idx[0])
        return values[source], np.ones(len(values), dtype=bool)
    out = np.empty_like(values)
    for d in range(values.shape[1]):
        out[:, d] = np.interp(positions, idx, values[idx, d])
    return out, np.ones(len(values), dtype=bool)


def video_fps(feature_set: FeatureSet, video_id: str, fps: float | None, vf: VideoFeatures | None = None) -> float:
    """The video frame rate used to number rows: ``fps`` if given; else ``meta.extra['fps'][id]`` or
    ``meta.extra['fps']`` (one number); else, for a feature set with one row per video frame
    (``meta.rate`` None, as ``affectfuse extract --fps 0`` writes), 1 / the median row spacing.
    Rows sampled at a fixed rate (``meta.rate`` set) cannot tell the video's frame rate: pass ``fps``."""
    if fps:
        return float(fps)
    extra = feature_set.meta.extra.get("fps") if feature_set.meta.extra else None
    if isinstance(extra, dict):
        for key in (video_id, media_id(video_id)):
            if key in extra:
                return float(extra[key])
    elif extra:
        return float(extra)
    if feature_set.meta.rate is None and vf is not None and vf.steps > 1:
        spacing = float(np.median(np.diff(np.sort(vf.timestamps))))
        if spacing > 0:
            return 1.0 / spacing
    raise ValueError(f"{feature_set.path}: the video frame rate of {video_id!r} is unknown (rows sampled at "
                     f"{feature_set.meta.rate} per s); pass the video's fps (e.g. --fps 30)")


def _read_for(feature_set: FeatureSet, video_id: str) -> VideoFeatures:
    """Features of an annotation id; ``_left``/``_right`` ids never fall back to the shared media id."""
    if video_id in feature_set:
        return feature_set.read(video_id)
    if media_id(video_id) == video_id or media_id(video_id) not in feature_set:
        raise FeatureStoreError(f"{feature_set.path}: no features for video {video_id!r}")
    raise FeatureStoreError(
        f"{feature_set.path}: features exist for the media {media_id(video_id)!r} but not for the person "
        f"{video_id!r}; extract one feature file per person (tracks left/right) for two-person videos")


def load_expr_videos(labels: dict[str, np.ndarray] | list[str], face_sets: list[FeatureSet],
                     audio_set: FeatureSet | None = None, fps: float | None = None, fill: str = "ffill",
                     n_frames: dict[str, int] | None = None, on_missing: str = "error",
                     problems: list[str] | None = None) -> list[ExprVideo]:
    """Build one :class:`ExprVideo` per id, features of all face sets concatenated per frame.

    Args:
        labels: id -> (N,) labels (N frames), or a list of ids for unlabelled videos (N is then the larger
            of ``n_frames[id]`` and the last frame the features cover).
        face_sets: face feature sets whose columns are concatenated ("stitched") in this order.
        audio_set: optional audio features, nearest row per frame, appended after the face columns
            (never masked by the face policy).
        fps: frame rate of the videos (see :func:`video_fps`).
        fill: fill policy for faceless frames.
        on_missing: ``"error"`` (one error listing every id without features) or ``"skip"``.
        problems: with ``"skip"``, a list that receives ``"<id>: <why>"`` for every video left out (the real
            cause: missing file, unknown frame rate ...).
    """
    if not face_sets:
        raise ValueError("at least one face feature set is needed")
    ids = list(labels) if isinstance(labels, dict) else list(labels)
    videos, problems = [], problems if problems is not None else []
    for vid in ids:
        try:
            feats = [_read_for(fs, vid) for fs in face_sets]
            rates = [video_fps(fs, vid, fps, f) for fs, f in zip(face_sets, feats)]
            last = int(max(row_frames(f.timestamps, r).max(initial=0) for f, r in zip(feats, rates)))
            if isinstance(labels, dict):
                n = len(labels[vid])
            else:  # unlabelled: every listed frame and every frame the features cover
                n = max(int((n_frames or {}).get(vid, 0)), last)
            parts, face = [], np.ones(n, dtype=bool)
            for f, r in zip(feats, rates):
                values, found = align_to_frames(f, n, r)
                parts.append(values)
                face &= found
            values, valid = fill_faceless(np.concatenate(parts, axis=1), face, fill)
            if audio_set is not None:
                audio = _read_for(audio_set, vid) if vid in audio_set else audio_set.read(media_id(vid))
                audio_values, _ = align_to_frames(audio, n, rates[0], max_gap_s=np.inf)
                values = np.concatenate([values, audio_values], axis=1)
        except (FeatureStoreError, ValueError) as exc:
            problems.append(f"{vid}: {exc}")
            continue
        lab = labels[vid] if isinstance(labels, dict) else np.full(n, EXPR_IGNORE, dtype=np.int64)
        videos.append(ExprVideo(vid, values, valid, np.asarray(lab, dtype=np.int64),
                                np.arange(1, n + 1, dtype=np.int64), face))
    if problems and on_missing == "error":
        raise FeatureStoreError(f"{len(problems)} video(s) without usable features:\n" + "\n".join(problems))
    return videos


def load_items(ids: list[str], labels, face_sets: list[FeatureSet], fill: str = "ffill") -> list[ExprVideo]:
    """Generic labelled items (rows of a manifest: images, clips) as :class:`ExprVideo` sequences.

    Each item's rows are its "frames" in time order (an image gives one row). Several feature sets are
    stitched by nearest timestamp onto the first set's rows; every frame carries the item's label
    ``labels[i]`` (-1 = unlabelled), so a frame model scores items by averaging its frame probabilities.
    An item whose rows are all masked (no face) keeps zeros with ``valid = False``. Every id without
    features is named in one error.
    """
    items, problems = [], []
    for vid, label in zip(ids, labels):
        try:
            feats = [_read_for(fs, vid) for fs in face_sets]
        except FeatureStoreError as exc:
            problems.append(str(exc))
            continue
        base = feats[0]
        n = max(base.steps, 1)
        parts, face = [], np.zeros(n, dtype=bool)
        face[:base.steps] = base.mask
        for f in feats:
            if f.steps == 0:
                parts.append(np.zeros((n, f.dim), np.float32))
                face[:] = False
                continue
            near = np.abs(f.timestamps[None, :] - (base.timestamps if base.steps else np.zeros(1))[:, None]).argmin(1)
            parts.append(f.values[near])
            face &= f.mask[near]
        values, valid = fill_faceless(np.concatenate(parts, axis=1), face, fill)
        items.append(ExprVideo(vid, values, valid, np.full(n, int(label), dtype=np.int64),
                               np.arange(1, n + 1, dtype=np.int64), face))
    if problems:
        raise FeatureStoreError(f"{len(problems)} item(s) without features:\n" + "\n".join(problems))
    return items
