"""EXPR output files: per-frame probability CSVs, ABAW submissions, per-video txt files, a validator.

- Probability CSV (ours; what ensembles average): header
  ``video,frame,image_location,face,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other,predicted``;
  one row per frame; class columns are probabilities in [0, 1] summing to 1; ``face`` is 1 where a face
  was found; ``predicted`` is the class name of the argmax.
- ABAW5/6 submission: one file, header ``image_location,Neutral,...,Other``, then one row
  ``<video>/<k:05d>.jpg,<class index 0-7>`` for every frame of the organisers' list, faceless frames included
  (frames without a prediction take the class of the nearest predicted frame of the same video).
- Older rounds: ``<video>.txt`` per video: the header ``Neutral,...,Other``, then one class per frame 1..N.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from affectfuse.labels import EXPR_CLASSES
from affectfuse.utils import UnsafePathError, inside, write_text_atomic

SUBMISSION_HEADER = "image_location," + ",".join(EXPR_CLASSES)
TXT_HEADER = ",".join(EXPR_CLASSES)
PROB_COLUMNS = ["video", "frame", "image_location", "face", *EXPR_CLASSES, "predicted"]


class SubmissionError(ValueError):
    """A submission or prediction file is invalid; the message names the file and every problem found."""


def image_location(video: str, frame: int) -> str:
    return f"{video}/{int(frame):05d}.jpg"


def labels_at(frames: np.ndarray, labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Class of each wanted frame: the predicted one, else that of the nearest predicted frame (ties: earlier)."""
    frames, labels, wanted = (np.asarray(a, dtype=np.int64) for a in (frames, labels, wanted))
    order = np.argsort(frames, kind="stable")
    frames, labels = frames[order], labels[order]
    right = np.clip(np.searchsorted(frames, wanted), 0, len(frames) - 1)
    left = np.clip(right - 1, 0, len(frames) - 1)
    nearest = np.where(np.abs(frames[left] - wanted) <= np.abs(frames[right] - wanted), left, right)
    return labels[nearest]


# -- probability CSV ---------------------------------------------------------------------------------
def write_probabilities(path, probs: dict[str, np.ndarray], frames: dict[str, np.ndarray] | None = None,
                        face: dict[str, np.ndarray] | None = None) -> Path:
    """Write per-frame probabilities of several videos: ``probs[id]`` (N, 8), frames default 1..N."""
    import pandas as pd

    parts = []
    for vid, p in probs.items():
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(EXPR_CLASSES):
            raise ValueError(f"{vid}: probabilities must be (N, {len(EXPR_CLASSES)}), got {p.shape}")
        fr = np.asarray(frames[vid]) if frames else np.arange(1, len(p) + 1)
        fc = np.asarray(face[vid]).astype(int) if face else np.ones(len(p), dtype=int)
        df = pd.DataFrame(p, columns=list(EXPR_CLASSES))
        df.insert(0, "face", fc)
        df.insert(0, "image_location", [image_location(vid, k) for k in fr])
        df.insert(0, "frame", fr)
        df.insert(0, "video", vid)
        df["predicted"] = np.asarray(EXPR_CLASSES)[p.argmax(axis=1)]
        parts.append(df)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PROB_COLUMNS)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.6f"))
    return Path(path)


def is_probability_header(header: list[str]) -> bool:
    """True for the header of a per-frame EXPR probability CSV (used by ``affectfuse ensemble``)."""
    return {"video", "frame", *EXPR_CLASSES} <= {h.strip() for h in header}


def is_probability_file(path) -> bool:
    """True when ``path`` is a per-frame EXPR probability CSV."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return is_probability_header(fh.readline().strip().split(","))
    except OSError:
        return False


def read_probabilities(path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read a probability CSV: video -> (frames (N,), probs (N, 8), face (N,) bool), rows sorted by frame."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"video": str})
    except Exception as exc:
        raise SubmissionError(f"{path}: unreadable probability CSV ({exc})") from exc
    missing = [c for c in ("video", "frame", *EXPR_CLASSES) if c not in df.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {missing}; expected {','.join(PROB_COLUMNS)}")
    values = df[list(EXPR_CLASSES)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise SubmissionError(f"{path}: class probabilities must be finite and in [0, 1]")
    if df.duplicated(["video", "frame"]).any():
        raise SubmissionError(f"{path}: duplicate (video, frame) rows")
    face = df["face"].to_numpy(dtype=bool) if "face" in df.columns else np.ones(len(df), dtype=bool)
    out = {}
    for vid, idx in df.groupby("video", sort=False).indices.items():
        order = idx[np.argsort(df["frame"].to_numpy()[idx], kind="stable")]
        out[str(vid)] = (df["frame"].to_numpy(dtype=np.int64)[order], values[order], face[order])
    return out


def average_probabilities(files, weights=None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ensemble: the (weighted) mean of per-frame probabilities over several runs' probability CSVs.

    ``weights``: one per file (normalised to sum 1; default equal). Every file must hold the same videos
    and frames; otherwise one error names the file and the difference. The ``face`` flags of the first file
    are kept.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no probability files to average")
    runs = [read_probabilities(f) for f in files]
    base = runs[0]
    for f, run in zip(files[1:], runs[1:]):
        if set(run) != set(base):
            diff = sorted(set(run) ^ set(base))[:5]
            raise SubmissionError(f"{f}: videos differ from {files[0]} (e.g. {diff})")
        for vid in base:
            if not np.array_equal(run[vid][0], base[vid][0]):
                raise SubmissionError(f"{f}: frames of video {vid!r} differ from {files[0]}")
    w = np.full(len(runs), 1.0 / len(runs)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(runs),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(runs)} non-negative weights with a positive sum, got {weights}")
    w = w / w.sum()
    return {vid: (fr, np.tensordot(w, np.stack([run[vid][1] for run in runs]), axes=1), face)
            for vid, (fr, _, face) in base.items()}


def submission_labels(runs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], smooth: str | None = None
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (frames (N,), class index (N,)): the argmax per frame of (averaged) probabilities, after the
    temporal smoothing ``smooth`` (``none``/None, ``mean:N``, ``mode:N``; one implementation for evaluate,
    predict and submit: :func:`affectfuse.training.temporal.apply_smoothing`). ``expr predict`` writes
    probabilities already smoothed with the checkpoint's stored smoothing, so None adds nothing."""
    from affectfuse.training.temporal import apply_smoothing, resolve_smoothing

    spec = resolve_smoothing(smooth, None)
    return {vid: (fr, apply_smoothing(p, spec).argmax(1)) for vid, (fr, p, _) in runs.items()}


def ensemble_probability_files(files, output, weights=None) -> Path:
    """Average several probability CSVs (see :func:`average_probabilities`) into ``output``."""
    avg = average_probabilities(files, weights)
    return write_probabilities(output, {v: p for v, (_, p, _) in avg.items()},
                               {v: fr for v, (fr, _, _) in avg.items()}, {v: fc for v, (_, _, fc) in avg.items()})


# -- submissions -------------------------------------------------------------------------------------
def write_submission(path, predictions: dict[str, tuple[np.ndarray, np.ndarray]],
                     frame_list: dict[str, np.ndarray]) -> Path:
    """The ABAW5/6 single file: a row for every frame of ``frame_list`` (video -> 1-based frames).

    ``predictions``: video -> (frames (N,), classes (N,) ints 0-7). A listed video without predictions
    is an error (all such videos are named); listed frames without a prediction take the nearest one's.
    """
    missing = [v for v in frame_list if v not in predictions or len(predictions[v][0]) == 0]
    if missing:
        raise SubmissionError(f"{path}: no predictions for {len(missing)} listed video(s): {missing[:10]}")
    buf = io.StringIO()
    buf.write(SUBMISSION_HEADER + "\n")
    for vid, wanted in frame_list.items():
        labels = labels_at(*predictions[vid], wanted)
        buf.writelines(f"{image_location(vid, k)},{int(c)}\n" for k, c in zip(wanted, labels))
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def write_txt_folder(folder, predictions: dict[str, tuple[np.ndarray, np.ndarray]],
                     n_frames: dict[str, int]) -> list[Path]:
    """Older rounds: ``<folder>/<video>.txt`` with the header and one class for each frame 1..n_frames.

    Every file must land inside ``folder``: video names that would leave it (``../x``, ``/abs/x``) are all
    refused in one :class:`SubmissionError` before anything is written."""
    folder = Path(folder)
    paths, bad = {}, []
    for vid in n_frames:
        try:
            paths[vid] = inside(folder, f"{vid}.txt", "video name")
        except UnsafePathError as exc:
            bad.append(str(exc))
    if bad:
        raise SubmissionError(f"{folder}: {len(bad)} video name(s) of the frame list would write outside it:\n  "
                              + "\n  ".join(bad))
    out = []
    for vid, n in n_frames.items():
        if vid not in predictions:
            raise SubmissionError(f"{folder}: no predictions for video {vid!r}")
        labels = labels_at(*predictions[vid], np.arange(1, int(n) + 1))
        write_text_atomic(paths[vid], TXT_HEADER + "\n" + "".join(f"{int(c)}\n" for c in labels))
        out.append(folder / f"{vid}.txt")
    return out


def _check_class(text: str) -> bool:
    return text.isdigit() and 0 <= int(text) < len(EXPR_CLASSES)


def validate_submission(path, frame_list: dict[str, np.ndarray], max_examples: int = 5) -> dict:
    """Check an ABAW5/6 submission against the organisers' frame list.

    Rejects (one :class:`SubmissionError` listing every kind of problem found): a header other than
    ``image_location,Neutral,...,Other``; a malformed row; a class that is not an integer 0-7; a duplicate
    row; a frame that is not in the list; a listed frame that is missing. Returns {"rows", "videos"}.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read submission ({exc})") from exc
    problems: list[str] = []
    if not lines or lines[0].strip().replace(" ", "") != SUBMISSION_HEADER:
        problems.append(f"header {lines[0] if lines else ''!r} is not {SUBMISSION_HEADER!r}")
    wanted = {image_location(v, k) for v, frames in frame_list.items() for k in frames}
    seen: set[str] = set()
    bad_rows, bad_class, dupes, extra = [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            bad_rows.append(f"line {number}: {line!r}")
            continue
        location, cls = parts
        if not _check_class(cls):
            bad_class.append(f"line {number}: {cls!r}")
        if location in seen:
            dupes.append(f"line {number}: {location}")
        seen.add(location)
        if location not in wanted:
            extra.append(f"line {number}: {location}")
    missing = sorted(wanted - seen)
    for label, items in (("malformed row(s) (want image_location,class)", bad_rows),
                         ("class value(s) not an integer 0-7", bad_class), ("duplicate row(s)", dupes),
                         ("frame(s) not in the frame list", extra), ("listed frame(s) missing", missing)):
        if items:
            problems.append(f"{len(items)} {label}, e.g. {', '.join(items[:max_examples])}")
    if problems:
        raise SubmissionError(f"{path}: invalid submission:\n  " + "\n  ".join(problems))
    return {"rows": len(seen), "videos": len(frame_list)}


def validate_txt_folder(folder, n_frames: dict[str, int]) -> dict:
    """Check older-round ``<video>.txt`` files: header, one class 0-7 per frame, the right frame count."""
    folder = Path(folder)
    problems = []
    for vid, n in n_frames.items():
        path = folder / f"{vid}.txt"
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or lines[0].replace(" ", "") != TXT_HEADER:
            problems.append(f"{path.name}: header is not {TXT_HEADER!r}")
            continue
        bad = [i + 2 for i, t in enumerate(lines[1:]) if not _check_class(t)]
        if bad:
            problems.append(f"{path.name}: {len(bad)} line(s) not a class 0-7, e.g. line {bad[0]}")
        if len(lines) - 1 != int(n):
            problems.append(f"{path.name}: {len(lines) - 1} frame rows, expected {int(n)}")
    if problems:
        raise SubmissionError(f"{folder}: invalid prediction files:\n  " + "\n  ".join(problems))
    return {"videos": len(n_frames)}
