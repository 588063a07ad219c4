"""Face tracks over a video: IoU association, stitching of broken tracks, choice of the main person.

Steps (all on boxes only, so a whole video's worth costs a few bytes per frame):

1. :class:`IoUTracker` links each frame's boxes to the live tracks by IoU (Hungarian assignment,
   ``scipy.optimize.linear_sum_assignment``); a track dies after ``max_gap_s`` seconds unseen.
2. :func:`stitch_tracks` joins a track to an earlier, finished one when the face reappears near
   where it vanished (centre distance <= ``max_shift`` x face side, similar size) within
   ``stitch_gap_s`` seconds: a person who looks away for a few seconds keeps one id.
3. :func:`select_main_track`: the main person is the track with the largest sum over its frames
   of the face side ``sqrt(box area)``, i.e. persistence x size: a track seen twice as often
   counts as much as a face twice as wide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _side(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


@dataclass
class TrackStats:
    """Summary of one track: enough to stitch and rank tracks without keeping frames."""

    track_id: int
    first_t: float
    last_t: float
    first_box: np.ndarray
    last_box: np.ndarray
    n_frames: int = 0
    side_sum: float = 0.0  # sum over frames of sqrt(box area), pixels

    @property
    def score(self) -> float:
        """Persistence x size, the main-person criterion."""
        return self.side_sum


def _assign(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the largest-total-IoU matching of (L, F) ``iou``. One track and one face (the usual
    case) needs no solver; scipy.optimize, 0.4-0.9 CPU-s to import, is loaded only for more."""
    if iou.shape == (1, 1):
        return np.zeros(1, np.intp), np.zeros(1, np.intp)
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(-iou)


@dataclass
class IoUTracker:
    """Online IoU tracker. Call :meth:`update` once per sampled frame, in time order."""

    iou_threshold: float = 0.3
    max_gap_s: float = 1.0
    stats: dict[int, TrackStats] = field(default_factory=dict)
    _next_id: int = 0
    _live: dict[int, TrackStats] = field(default_factory=dict)  # tracks not yet expired

    def update(self, t: float, boxes: np.ndarray) -> np.ndarray:
        """Assign track ids (F,) int64 to a frame's (F, 4) boxes at time ``t`` seconds."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self._live = {i: s for i, s in self._live.items() if t - s.last_t <= self.max_gap_s}
        live = [s for s in self._live.values() if s.last_t < t]
        ids = np.full(len(boxes), -1, np.int64)
        if live and len(boxes):
            iou = box_iou(np.stack([s.last_box for s in live]), boxes)
            rows, cols = _assign(iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    ids[c] = live[r].track_id
        for k, box in enumerate(boxes):
            if ids[k] < 0:
                ids[k] = self._next_id
                self.stats[self._next_id] = TrackStats(self._next_id, t, t, box.copy(), box.copy())
                self._live[self._next_id] = self.stats[self._next_id]
                self._next_id += 1
            s = self.stats[int(ids[k])]
            s.last_t, s.last_box = t, box.copy()
            s.n_frames += 1
            s.side_sum += _side(box)
        return ids


def stitch_tracks(stats: dict[int, TrackStats], stitch_gap_s: float = 10.0, max_shift: float = 1.0,
                  max_size_ratio: float = 1.6) -> dict[int, int]:
    """Map every track id to the id of the chain it joins (the chain's first track).

    A track B joins the chain ending with track A when B starts after A ends, within
    ``stitch_gap_s`` seconds, B's first box centre lies within ``max_shift`` x A's last face side
    of A's last box centre, and their sides differ by at most ``max_size_ratio``. Among several
    candidates the nearest (in centre distance) wins. Chains never overlap in time.
    """
    order = sorted(stats.values(), key=lambda s: (s.first_t, s.track_id))
    chain_of: dict[int, int] = {}
    chain_end: dict[int, TrackStats] = {}  # chain id -> its last track
    for b in order:
        best, best_dist = None, np.inf
        # chains that ended too long ago can never be joined again (tracks come in start order)
        chain_end = {c: a for c, a in chain_end.items() if a.last_t + stitch_gap_s >= b.first_t}
        for cid, a in chain_end.items():
            if not (a.last_t < b.first_t <= a.last_t + stitch_gap_s):
                continue
            side_a, side_b = _side(a.last_box), _side(b.first_box)
            if min(side_a, side_b) <= 0 or max(side_a, side_b) / min(side_a, side_b) > max_size_ratio:
                continue
            ca = (a.last_box[:2] + a.last_box[2:]) / 2
            cb = (b.first_box[:2] + b.first_box[2:]) / 2
            dist = float(np.linalg.norm(ca - cb))
            if dist <= max_shift * side_a and dist < best_dist:
                best, best_dist = cid, dist
        cid = best if best is not None else b.track_id
        chain_of[b.track_id] = cid
        chain_end[cid] = b
    return chain_of


def merge_stats(stats: dict[int, TrackStats], chain_of: dict[int, int]) -> dict[int, TrackStats]:
    """Combine per-track stats into per-chain stats (ids = chain ids)."""
    out: dict[int, TrackStats] = {}
    for tid in sorted(stats, key=lambda i: stats[i].first_t):
        s, cid = stats[tid], chain_of.get(tid, tid)
        if cid not in out:
            out[cid] = TrackStats(cid, s.first_t, s.last_t, s.first_box, s.last_box, s.n_frames, s.side_sum)
        else:
            m = out[cid]
            m.last_t, m.last_box = s.last_t, s.last_box
            m.n_frames += s.n_frames
            m.side_sum += s.side_sum
    return out


def select_main_track(stats: dict[int, TrackStats]) -> int | None:
    """Id of the main person's track (largest persistence x size), ``None`` when there is no track."""
    if not stats:
        return None
    return max(stats.values(), key=lambda s: (s.score, s.n_frames, -s.track_id)).track_id
