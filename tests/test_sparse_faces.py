"""One-pass sparse face detection (affectfuse.faces.sparse): same faces as detecting the detection frames
alone, interpolation in between, a bounded frame buffer, and extract's use of it."""

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
    batches = list(iter_faces_sparse(video, det, crops=[SPEC], detect_fps=8.0, detect_max_side=320))
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
