"""Tracking: ids follow moving faces, broken tracks are stitched, the main person is persistent x large."""

from __future__ import annotations

import numpy as np

from affectfuse.faces.track import IoUTracker, box_iou, merge_stats, select_main_track, stitch_tracks


def _box(cx, cy, side):
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], float)


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0, 1]])
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_two_moving_faces_keep_their_ids_even_when_listed_in_any_order():
    tr = IoUTracker()
    seen = []
    for k in range(20):
        left, right = _box(100 + 3 * k, 100, 80), _box(400 - 3 * k, 120, 60)
        boxes = np.stack([left, right] if k % 2 else [right, left])
        ids = tr.update(k * 0.1, boxes)
        seen.append((ids[0], ids[1]) if k % 2 else (ids[1], ids[0]))
    assert len(set(seen)) == 1 and seen[0][0] != seen[0][1]
    assert {s.n_frames for s in tr.stats.values()} == {20}


def test_gap_breaks_track_and_stitching_rejoins_only_nearby_faces():
    tr = IoUTracker(max_gap_s=0.5)
    for k in range(10):
        tr.update(k * 0.1, _box(200, 200, 100)[None])
    for k in range(30, 40):  # 2 s later, the same face nearby; plus a stranger far away
        tr.update(k * 0.1, np.stack([_box(220, 205, 105), _box(600, 200, 100)]))
    assert len(tr.stats) == 3  # the gap is longer than max_gap_s
    chain = stitch_tracks(tr.stats, stitch_gap_s=5.0)
    assert chain[0] == 0 and chain[1] == 0 and chain[2] == 2
    merged = merge_stats(tr.stats, chain)
    assert merged[0].n_frames == 20 and merged[2].n_frames == 10
    assert stitch_tracks(tr.stats, stitch_gap_s=1.0)[1] == 1  # too long a gap: not joined


def test_main_track_is_persistent_times_large():
    tr = IoUTracker()
    for k in range(30):
        boxes = [_box(100, 100, 100)]  # big, present throughout
        if k < 10:
            boxes.append(_box(400, 100, 200))  # bigger but brief
        boxes.append(_box(700, 100, 30))  # small background face, present throughout
        tr.update(k * 0.1, np.stack(boxes))
    stats = merge_stats(tr.stats, stitch_tracks(tr.stats))
    main = select_main_track(stats)
    assert stats[main].n_frames == 30 and stats[main].side_sum == 30 * 100
    assert select_main_track({}) is None
