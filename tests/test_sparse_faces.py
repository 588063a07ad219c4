"""One-pass sparse face detection (affectfuse.faces.sparse): same faces as detecting the detection frames
alone, interpolation in between, a bounded frame buffer, and extract's use of it."""

import math

import numpy as np
import pytest

from affectfuse.faces.mtcnn import Detections
from affectfuse.faces.plan import CropSpec

SPEC = CropSpec(112, "mtcnn_box", 0.0, "rgb")


def _cat(batches, key):
    return np.concatenate([getattr(b, key) for b in batches])


def test_one_pass_matches_detecting_the_detection_frames_alone(shared_data):
    """single_face.mp4 (640x360, 30 fps): at the 8 frames/s detection frames the one-pass landmarks are the
    detector's on those frames alone (the former pass 1), up to the downscaling filter; in between they lie
    on the line between the neighbouring detections; the crops come from the full-size frames."""
    from affectfuse.faces import detect_video, load_mtcnn
    from affectfuse.faces.sparse import iter_faces_sparse

    video = shared_data / "media" / "single_face.mp4"
    det = load_mtcnn()
    batches = list(iter_faces_sparse(video, det, crops=[SPEC], detect_fps=8.0, detect_max_side=320,
                                     steady_stride=1))
    alone = detect_video(video, fps=8.0, detector=det, detect_max_side=320)
    times, found, marks = _cat(batches, "timestamps"), _cat(batches, "found"), _cat(batches, "landmarks")
    assert len(times) == 72 and found[:-1].all()  # the last frame lies over half a gap after the last detection
    at = np.searchsorted(times, alone.timestamps)
    assert np.allclose(times[at], alone.timestamps)
    ref = np.stack([alone.frame(i)[2][0] for i in range(len(alone))])  # (N, 5, 2) the one face
    err = np.abs(marks[at] - ref).max(axis=(1, 2))  # pixels of the 640x360 frame
    assert np.median(err) < 2.0 and err.max() < 6.0
    mid = at[1] - 1  # a frame between the first two detections
    w = (times[mid] - times[at[0]]) / (times[at[1]] - times[at[0]])
    np.testing.assert_allclose(marks[mid], (1 - w) * marks[at[0]] + w * marks[at[1]], atol=1e-3)
    crops = _cat_crops(batches)
    assert crops.shape == (72, 112, 112, 3) and crops.std() > 20  # real face pixels, not black


def _cat_crops(batches):
    return np.concatenate([b.crops[SPEC] for b in batches])


class _FakeDetector:
    """One face at a fixed place in every frame; counts the frames it saw."""

    def __init__(self, box=(20.0, 20.0, 60.0, 60.0)):
        import torch

        self.device, self.seen, self.box = torch.device("cpu"), 0, np.asarray(box, np.float32)

    def detect(self, images):
        self.seen += len(images)
        marks = np.array([[30, 30], [50, 30], [40, 40], [32, 52], [48, 52]], np.float32)
        return [Detections(self.box[None], np.ones(1, np.float32), marks[None]) for _ in images]


def test_frame_buffer_is_bounded_whatever_the_length():
    """1,000 frames, a detection every 3rd: at most one detection batch's frames wait, every frame gets its
    face, and the detector sees only the detection frames."""
    from affectfuse.faces.sparse import _Frame, _Pass

    det = _FakeDetector()
    state = _Pass(det, (SPEC,), None, max_gap=0.2, det_batch=4, timer=None)
    image = np.zeros((80, 80, 3), np.uint8)
    for k in range(1000):
        state.push(_Frame(k, k / 30.0, image, detect=k % 3 == 0))
    state.finish()
    assert det.seen == 334
    assert state.most_waiting <= 4 * 3 + 1
    assert sorted(set(state.rows.frame)) == list(range(1000))
    state.rows.close()


class _MovingDetector(_FakeDetector):
    """The face of :class:`_FakeDetector`, 30 px further right from frame ``jump`` on; a frame's number is
    written in its first two pixels."""

    def __init__(self, jump: int):
        super().__init__()
        self.jump, self.frames = jump, []

    def detect(self, images):
        out = super().detect(images)
        for k, image in enumerate(images):
            number = int(image[0, 0, 0]) * 256 + int(image[0, 0, 1])
            self.frames.append(number)
            if number >= self.jump:
                out[k] = Detections(out[k].boxes + [30, 0, 30, 0], out[k].scores, out[k].landmarks + [30, 0])
        return out


def _numbered(k: int) -> np.ndarray:
    image = np.zeros((80, 120, 3), np.uint8)
    image[0, 0, :2] = divmod(k, 256)
    return image


def _steady_pass(det, n: int, stride: int, picked_every: int = 3):
    """Frames 0..n-1 at 30 frames/s, every ``picked_every``-th picked for detection, every ``stride``-th of
    those detected for sure (iter_faces_sparse's rule); returns the finished pass."""
    from affectfuse.faces.sparse import _Frame, _Pass

    state = _Pass(det, (SPEC,), None, max_gap=1.5 * stride * picked_every / 30.0, det_batch=4, timer=None)
    for k in range(n):
        picked = k % picked_every == 0
        state.push(_Frame(k, k / 30.0, _numbered(k), picked and (k // picked_every) % stride == 0,
                          optional=picked and (k // picked_every) % stride != 0))
    state.finish()
    return state


def test_still_faces_are_detected_at_every_other_detection_frame():
    """A face that holds still: with steady_stride 2 only every 2nd picked frame is detected (plus the last
    picked one, which closes the video), and every frame still gets its face."""
    det = _MovingDetector(jump=10**6)
    state = _steady_pass(det, 1000, stride=2)
    assert sorted(det.frames) == list(range(0, 1000, 6)) + [999]
    assert sorted(set(state.rows.frame)) == list(range(1000))
    state.rows.close()


def test_a_moving_face_is_detected_between_the_detections_that_disagree():
    """The face jumps at frame 500: the picked frame skipped between the detections at 498 and 504 is
    detected (501, the middle one), and so the faces on both sides of the jump come from a detection, not a
    blend of the two places; with stride 4 the gap is halved until the faces agree."""
    for stride, extra in ((2, [501]), (4, [498, 501])):
        det = _MovingDetector(jump=500)
        state = _steady_pass(det, 1000, stride=stride)
        coarse = list(range(0, 1000, 3 * stride))
        assert sorted(det.frames) == sorted(coarse + extra + ([999] if 999 not in coarse else []))
        boxes = np.asarray(state.rows.boxes)[np.argsort(state.rows.frame, kind="stable")]
        assert boxes[501, 0] == 50.0 and boxes[498, 0] == 20.0  # detected / before: no blend across the jump
        state.rows.close()


def _count_calls(det) -> list[int]:
    """The frames of each ``det.detect`` call from now on, in a list that fills as the detector is called."""
    calls, detect = [], det.detect

    def counting(images, *args, **kwargs):
        calls.append(len(images))
        return detect(images, *args, **kwargs)

    det.detect = counting
    return calls


def test_steady_stride_keeps_the_faces_on_a_real_video(shared_data):
    """single_face.mp4 at 8 frames/s on 320 px copies: steady_stride 2 finds the face in every frame
    stride 1 does, with landmarks within a few pixels, from fewer detections."""
    from affectfuse.faces import load_mtcnn
    from affectfuse.faces.sparse import iter_faces_sparse

    video, det = shared_data / "media" / "single_face.mp4", load_mtcnn()
    seen = _count_calls(det)
    runs = {}
    for stride in (1, 2):
        seen.clear()
        runs[stride] = (list(iter_faces_sparse(video, det, crops=[SPEC], steady_stride=stride)), sum(seen))
    (one, n_one), (two, n_two) = runs[1], runs[2]
    assert (_cat(two, "found") >= _cat(one, "found")).all()
    both = _cat(one, "found") & _cat(two, "found")
    err = np.abs(_cat(one, "landmarks") - _cat(two, "landmarks"))[both].max(axis=(1, 2))
    assert np.median(err) < 3.0 and err.max() < 12.0
    assert n_two < 0.8 * n_one


def test_the_frame_buffer_sets_the_detection_frames_per_call(shared_data):
    """single_face.mp4 at the defaults: a buffer 4x as large gives MTCNN fewer calls of more frames each, and the
    same faces (landmarks within 1e-3 px: only the networks' batches differ)."""
    from affectfuse.faces import load_mtcnn
    from affectfuse.faces.sparse import FULL_BUFFER_PIXELS, iter_faces_sparse

    video, det = shared_data / "media" / "single_face.mp4", load_mtcnn()
    calls = _count_calls(det)
    runs = []
    for pixels in (FULL_BUFFER_PIXELS // 4, FULL_BUFFER_PIXELS):
        calls.clear()
        runs.append((list(iter_faces_sparse(video, det, crops=[SPEC], buffer_pixels=pixels)), list(calls)))
    (small, small_calls), (large, large_calls) = runs
    assert len(large_calls) < len(small_calls) and max(large_calls) > max(small_calls)
    assert _cat(large, "found").all() and np.array_equal(_cat(small, "found"), _cat(large, "found"))
    np.testing.assert_allclose(_cat(large, "landmarks"), _cat(small, "landmarks"), atol=1e-3)


def test_tracked_scales_find_what_the_whole_pyramid_finds(shared_data):
    """single_face.mp4 at 8 frames/s on 320 px copies, in detection batches of 6: the tracked-scales search
    finds the face in every frame the whole pyramid does, with the same box and landmarks."""
    import cv2

    from affectfuse.faces import load_mtcnn
    from affectfuse.faces.sparse import detect_tracked
    from affectfuse.faces.track import box_iou
    from affectfuse.media import iter_frames

    frames = np.concatenate([b.images for b in iter_frames(shared_data / "media" / "single_face.mp4", fps=8.0)])
    h, w = frames.shape[1:3]
    small = np.stack([cv2.resize(f, (320, round(320 * h / w)), interpolation=cv2.INTER_AREA) for f in frames])
    det = load_mtcnn()
    for k in range(0, len(small), 6):
        whole, tracked = det.detect(small[k:k + 6]), detect_tracked(det, small[k:k + 6])
        assert [len(d) for d in tracked] == [len(d) for d in whole]
        for a, b in zip(whole, tracked):
            if len(a):
                assert box_iou(a.boxes[:1], b.boxes[:1])[0, 0] > 0.98
                assert np.abs(a.landmarks[0] - b.landmarks[0]).max() < 1.0


class _RecordingDetector(_FakeDetector):
    """:class:`_FakeDetector` that records each call's (frames, ``smallest``)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def detect(self, images, smallest=None):
        self.calls.append((len(images), smallest))
        return super().detect(images)


class _ShrinkingDetector(_RecordingDetector):
    """A 40-px face in the first frame; searched only for large faces (``smallest``), the 3rd frame shows none."""

    def detect(self, images, smallest=None):
        out = super().detect(images, smallest)
        if smallest is not None and len(images) > 2:
            out[1] = Detections.empty()  # the 3rd frame of the batch: its face got small
        return out


def test_tracked_scales_search_again_where_a_face_is_lost():
    """The first frame over the whole pyramid, the others for faces >= TRACKED_SMALLEST x its smallest; a frame
    with fewer faces than the first is detected again over the whole pyramid; no face at first: no limit."""
    from affectfuse.faces.sparse import TRACKED_SMALLEST, detect_tracked

    det = _ShrinkingDetector()
    found = detect_tracked(det, np.zeros((4, 80, 80, 3), np.uint8))
    assert [len(d) for d in found] == [1, 1, 1, 1]
    assert det.calls == [(1, None), (3, TRACKED_SMALLEST * 41), (1, None)]  # box (20, 20, 60, 60): 41 whole px
    det = _ShrinkingDetector()
    detect_tracked(det, np.zeros((4, 80, 80, 3), np.uint8), smallest_fraction=0.5)
    assert det.calls[1] == (3, 20.5)

    class _Nobody(_FakeDetector):
        def detect(self, images, smallest=None):
            assert smallest is None
            return [Detections.empty() for _ in images]

    assert [len(d) for d in detect_tracked(_Nobody(), np.zeros((3, 80, 80, 3), np.uint8))] == [0, 0, 0]


def test_the_whole_pyramid_is_searched_every_few_seconds_only():
    """With tracked scales a detection batch starts with a whole-pyramid search only when FULL_SEARCH_S have
    passed since the last one; the other batches look for faces of the size seen last (``smallest`` given)."""
    from affectfuse.faces.sparse import FULL_SEARCH_S, TRACKED_SMALLEST, _Frame, _Pass

    det = _RecordingDetector()
    state = _Pass(det, (SPEC,), None, max_gap=0.2, det_batch=4, timer=None, tracked_scales=True)
    for k in range(300):  # 10 s at 30 frames/s, every 3rd frame detected, batches of 4 detections (0.4 s)
        state.push(_Frame(k, k / 30.0, np.zeros((80, 80, 3), np.uint8), detect=k % 3 == 0))
    state.finish()
    state.rows.close()
    whole = [c for c in det.calls if c[1] is None]
    assert len(whole) == math.ceil(10 / FULL_SEARCH_S) and all(n == 1 for n, _ in whole)  # at 0, 4, 8 s
    assert sum(n for n, _ in det.calls) == 100  # every detection frame once: no search was repeated
    assert all(s == TRACKED_SMALLEST * 41 for _, s in det.calls if s is not None)  # of the 41-px face

    det = _RecordingDetector()  # the pass's own settings
    state = _Pass(det, (SPEC,), None, max_gap=0.2, det_batch=4, timer=None, tracked_scales=True,
                  tracked_smallest=0.5, full_search_s=2.0)
    for k in range(300):
        state.push(_Frame(k, k / 30.0, np.zeros((80, 80, 3), np.uint8), detect=k % 3 == 0))
    state.finish()
    state.rows.close()
    assert sum(1 for _, s in det.calls if s is None) == 5  # at 0, 2, 4, 6, 8 s
    assert all(s == 20.5 for _, s in det.calls if s is not None)


def test_stages_are_timed_in_wall_and_cpu_seconds():
    """The pass gives its timer every stage's wall and CPU seconds (predict's per-stage CPU figures):
    Timer keeps both, and a stage that only sleeps costs wall time, not CPU time."""
    import time

    from affectfuse.faces.sparse import _Frame, _Pass
    from affectfuse.inference.video import Timer

    timer = Timer()
    state = _Pass(_FakeDetector(), (SPEC,), None, max_gap=0.2, det_batch=4, timer=timer)
    for k in range(40):
        state.push(_Frame(k, k / 30.0, np.zeros((80, 80, 3), np.uint8), detect=k % 3 == 0))
    state.finish()
    state.rows.close()
    assert set(timer.seconds) == set(timer.cpu_seconds) == {"detect", "align"}
    assert all(v >= 0 for v in timer.cpu_seconds.values())
    with timer("sleep"):
        time.sleep(0.05)
    assert timer.seconds["sleep"] >= 0.05 and timer.cpu_seconds["sleep"] < 0.04
    timer.add("extra", 1.0)  # a caller without CPU seconds: wall only
    assert "extra" in timer.seconds and "extra" not in timer.cpu_seconds


def test_sparse_detection_finds_the_same_faces_as_detecting_every_frame(shared_data):
    """talking_face_pexels.mp4, first 5 s by 5 frames/s in extract's way: detecting at 2.5 frames/s finds the
    face wherever detecting every sampled frame does, with the same landmarks to a few pixels."""
    from affectfuse.faces import load_mtcnn
    from affectfuse.faces.sparse import iter_faces_sparse

    video = shared_data / "media" / "single_face.mp4"
    det = load_mtcnn()
    dense = list(iter_faces_sparse(video, det, fps=5.0, crops=[SPEC], detect_fps=None))
    sparse = list(iter_faces_sparse(video, det, fps=5.0, crops=[SPEC], detect_fps=2.5))
    assert _cat(dense, "found").all() and _cat(sparse, "found").all()
    err = np.abs(_cat(dense, "landmarks") - _cat(sparse, "landmarks")).max(axis=(1, 2))
    assert np.median(err) < 4.0 and err.max() < 15.0


def test_no_video_stream_is_a_clear_error(tmp_path):
    from affectfuse.faces.sparse import iter_faces_sparse
    from affectfuse.media import MediaError

    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(MediaError) as err:
        list(iter_faces_sparse(bad, _FakeDetector()))
    assert str(bad) in str(err.value)
