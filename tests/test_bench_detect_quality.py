"""benchmarks/bench_detect_quality.py: its variant syntax and its quality figures (a path against itself is perfect;
a worse path reads worse)."""

import numpy as np

from repo_scripts import load_script


def test_variants_parse_as_python_literals():
    bench = load_script("benchmarks/bench_detect_quality.py")
    assert bench.parse_variant("") == {}
    assert bench.parse_variant("tracked_smallest=0.5,full_search_s=2, detect_fps=None,x=abc") == {
        "tracked_smallest": 0.5, "full_search_s": 2, "detect_fps": None, "x": "abc"}


def test_quality_figures_on_a_real_clip(shared_data):
    """single_face.mp4: the default path measured against its own output is exact (IoU 1, no landmark error,
    nothing missed) and the counts see MTCNN's searches; against shifted reference boxes the IoU drops."""
    from affectfuse.faces import load_mtcnn
    from affectfuse.faces.sparse import iter_faces_sparse

    bench = load_script("benchmarks/bench_detect_quality.py")
    clip = shared_data / "media" / "single_face.mp4"
    detector = load_mtcnn()
    batches = list(iter_faces_sparse(clip, detector))
    own = tuple(np.concatenate([getattr(b, k) for b in batches]) for k in ("found", "boxes", "landmarks"))
    counted = bench._Counted(detector)
    row = bench.run_variant([clip], counted, {clip: own}, {})
    assert row["frames"] == row["found"] == int(own[0].sum()) > 0 and row["missed"] == 0
    assert row["iou_median"] == row["iou_min"] == 1.0 and row["landmarks_p95"] == 0.0
    assert row["whole"] >= 1 and row["rnet"] >= row["onet"] > 0

    width = own[1][:, 2] - own[1][:, 0]
    shifted = (own[0], own[1] + (width / 10)[:, None] * np.array([1, 0, 1, 0]), own[2])  # boxes 10 % to the right
    worse = bench.run_variant([clip], counted, {clip: shifted}, {})
    assert 0.75 < worse["iou_median"] < 0.9  # 0.9 / 1.1 of the width overlaps
