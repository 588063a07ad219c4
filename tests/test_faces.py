"""MTCNN weights, detection parity with the reference implementation, batching, and the video pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectfuse.faces import (MTCNN, MTCNN_WEIGHTS, align_face, detect_video, iter_face_images, iter_faces,
                              load_mtcnn, read_image)
from affectfuse.faces.track import box_iou
from affectfuse.media import MediaError, iter_frames
from affectfuse.weights import WeightsChecksumError, WeightsNotFoundError, resolve, sha256_file
from affectfuse.media.write import write_video

# facenet-pytorch 2.6.0 MTCNN (the reference implementation of these weights) on single_face.jpg and
# multi_face.jpg, run once with its default settings; our detector must agree within a few pixels.
REF_SINGLE_BOX = np.array([191.1, 145.3, 373.1, 402.0])
REF_SINGLE_LANDMARKS = np.array([[230.5, 249.1], [311.7, 245.9], [267.6, 298.9], [232.9, 329.2], [319.4, 325.9]])
REF_MULTI_BOXES = np.array([[682.5, 286.3, 790.5, 419.2], [530.8, 299.1, 632.8, 437.6], [316.0, 234.0, 409.5, 360.6],
                            [220.6, 65.4, 302.4, 174.3], [438.6, 213.4, 516.9, 307.9]])


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    """MTCNN runs many small ops: on this shared, loaded machine one thread is ~10x faster than two
    (no waiting at OpenMP barriers for a second time slice)."""
    torch.set_num_threads(1)
    yield



@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return load_mtcnn()


@pytest.fixture(scope="module")
def fast(mtcnn) -> MTCNN:
    """The same weights with a 40 px smallest face: the test videos' faces are >= 80 px (4x less P-Net work)."""
    model = MTCNN(min_face_size=40)
    model.load_state_dict(mtcnn.state_dict())
    return model


@pytest.fixture(scope="module")
def face(shared_data) -> np.ndarray:
    """A real face photograph (RGB), cropped loosely around the face, 160x160."""
    import cv2

    img = read_image(shared_data / "media" / "single_face.jpg")
    return cv2.resize(img[100:460, 100:460], (160, 160), interpolation=cv2.INTER_AREA)


def test_shipped_weights_are_checked_and_load_strictly():
    path = resolve(MTCNN_WEIGHTS)
    assert sha256_file(path) == MTCNN_WEIGHTS.sha256
    state = torch.load(path, weights_only=True)
    model = MTCNN()
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    assert load_mtcnn().weights_info["random_weights"] is False
    assert (path.parent / "LICENSE.txt").read_text().count("MIT License") == 1


def test_weights_lookup_errors_and_random_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=MTCNN_WEIGHTS.filename):
        load_mtcnn(weights_dir=tmp_path)
    torch.save(MTCNN().state_dict(), tmp_path / MTCNN_WEIGHTS.filename)  # right names, wrong numbers
    with pytest.raises(WeightsChecksumError, match="sha256"):
        load_mtcnn(weights_dir=tmp_path)
    model = load_mtcnn(random_weights=True)
    assert model.weights_info["random_weights"] is True
    assert len(model.detect(np.zeros((2, 40, 50, 3), np.uint8))) == 2


def test_matches_reference_implementation(shared_data, mtcnn, fast):
    det = mtcnn.detect(read_image(shared_data / "media" / "single_face.jpg"))[0]
    assert len(det) == 1 and det.scores[0] > 0.99
    assert box_iou(det.boxes, REF_SINGLE_BOX[None])[0, 0] > 0.85
    side = REF_SINGLE_BOX[2] - REF_SINGLE_BOX[0]
    assert np.abs(det.landmarks[0] - REF_SINGLE_LANDMARKS).max() < 0.05 * side
    multi = fast.detect(read_image(shared_data / "media" / "multi_face.jpg"))[0]  # faces >= 80 px
    iou = box_iou(multi.boxes, REF_MULTI_BOXES)
    assert (iou.max(axis=0) > 0.8).all()  # every reference face found
    assert multi.boxes.dtype == np.float32 and multi.landmarks.shape == (len(multi), 5, 2)
    assert np.all(np.diff(multi.scores) <= 0)  # sorted by score


def test_batched_equals_one_by_one_and_lists(face, fast):
    frames = np.full((3, 200, 260, 3), 90, np.uint8)
    frames[0, 20:180, 30:190] = face
    frames[2, 30:190, 90:250] = face
    batched = fast.detect(frames)
    single = [fast.detect(f)[0] for f in frames]
    assert [len(d) for d in batched] == [1, 0, 1]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)
    assert batched[2].boxes[0, 0] - batched[0].boxes[0, 0] == pytest.approx(60, abs=2)
    mixed = fast.detect([frames[0], frames[1, :150], frames[2]])  # different sizes, order kept
    assert [len(d) for d in mixed] == [1, 0, 1]


def _face_video(tmp_path, face, n=8, blank=(3, 4), second=False):
    frames = np.full((n, 240, 320, 3), 90, np.uint8)
    for k in range(n):
        if k in blank:
            continue
        frames[k, 40:200, 20 + 8 * k:180 + 8 * k] = face
        if second:  # a smaller second person on the right, present in the first half only
            small = face[::2, ::2]
            if k < n // 2:
                frames[k, 10:90, 230:310] = small
    return write_video(tmp_path / "faces.mp4", frames, fps=10)


def test_video_pipeline_keeps_faceless_frames(tmp_path, face, fast):
    path = _face_video(tmp_path, face)
    batches = list(iter_faces(path, sizes=(112, 224), batch_size=3, detector=fast))
    assert [len(b) for b in batches] == [3, 3, 2]
    found = np.concatenate([b.found for b in batches])
    np.testing.assert_array_equal(found, [True, True, True, False, False, True, True, True])
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in batches]), np.arange(1, 9))
    crops = np.concatenate([b.crops[224] for b in batches])
    assert crops.shape == (8, 224, 224, 3) and crops.dtype == np.uint8
    assert crops[3].max() == 0 and crops[0].mean() > 40
    ids = np.concatenate([b.track_ids for b in batches])
    assert set(ids[found]) == {ids[0]} and (ids[~found] == -1).all()  # stitched across the gap
    boxes = np.concatenate([b.boxes for b in batches])
    assert np.isnan(boxes[3]).all() and boxes[7, 0] - boxes[0, 0] == pytest.approx(56, abs=3)
    arc = next(iter_faces(path, sizes=(224,), templates={224: "arcface"}, detector=fast))
    full = next(iter_frames(path)).images[0]
    np.testing.assert_array_equal(arc.crops[224][0], align_face(full, arc.landmarks[0], 224, "arcface"))
    assert not np.array_equal(arc.crops[224][0], crops[0])


def test_keep_all_and_main_person(tmp_path, face, fast):
    path = _face_video(tmp_path, face, blank=(), second=True)
    det = detect_video(path, detector=fast)
    rows = list(iter_faces(path, keep="all", detections=det))[0]
    assert len(rows) == 8 + 4 and len(set(rows.track_ids)) == 2
    main = list(iter_faces(path, keep="main", detections=det))[0]
    assert len(main) == 8 and main.found.all()
    assert (main.boxes[:, 2] - main.boxes[:, 0] > 60).all()  # the big (~80 px), always-present face


def test_4k_detection_downscaled_crops_from_original(tmp_path, face, fast):
    import cv2

    big_face = cv2.resize(face, (640, 640), interpolation=cv2.INTER_CUBIC)
    frames = np.full((1, 2160, 3840, 3), 90, np.uint8)
    frames[:, 1000:1640, 2000:2640] = big_face
    path = write_video(tmp_path / "uhd.mp4", frames, fps=5, options={"preset": "ultrafast"})
    det = detect_video(path, detector=fast, detect_max_side=640)
    assert det.found_fraction == 1.0
    ref = fast.detect(face)[0]  # same face at 160 px, scaled by 4 and shifted
    expect = ref.landmarks[0] * 4 + np.array([2000, 1000])
    assert np.abs(det.landmarks[0] - expect).max() < 0.05 * 640
    batch = next(iter_faces(path, detector=fast, detections=det))
    full = next(iter_frames(path)).images[0]
    np.testing.assert_array_equal(batch.crops[112][0], align_face(full, batch.landmarks[0], 112))


def test_image_folders_and_files(tmp_path, face, fast):
    import cv2

    folder = tmp_path / "cropped_aligned" / "video1"
    folder.mkdir(parents=True)
    for k in (1, 2, 5):
        cv2.imwrite(str(folder / f"{k:05d}.jpg"), cv2.cvtColor(cv2.resize(face, (112, 112)), cv2.COLOR_RGB2BGR))
    batch = next(iter_face_images(folder, sizes=(112, 160), n_frames=6, fps=30))
    np.testing.assert_array_equal(batch.frame_numbers, np.arange(1, 7))
    np.testing.assert_array_equal(batch.found, [True, True, False, False, True, False])
    assert batch.crops[160].shape == (6, 160, 160, 3) and batch.crops[112][2].max() == 0
    np.testing.assert_allclose(batch.timestamps, np.arange(6) / 30)
    plain = tmp_path / "plain.png"
    canvas = np.full((220, 300, 3), 90, np.uint8)
    canvas[30:190, 70:230] = face
    cv2.imwrite(str(plain), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    out = next(iter_face_images([plain, plain], detector=fast))
    assert out.found.all() and np.isfinite(out.landmarks).all()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(MediaError, match="not a readable image") as err:
        next(iter_face_images([bad], detector=fast))
    assert str(bad) in str(err.value)


def test_pipeline_bad_input(tmp_path, fast):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="broken.mp4"):
        next(iter_faces(bad, detector=fast))
    with pytest.raises(ValueError, match="keep"):
        next(iter_faces(bad, keep="largest", detector=fast))


@pytest.mark.slow
def test_real_clips_face_found(shared_data, fast):
    pexels = detect_video(shared_data / "media" / "talking_face_pexels.mp4", fps=0.5, detector=fast)
    assert len(pexels.frame_numbers) == 10 and pexels.found_fraction >= 0.95
    clips = sorted((shared_data / "crema-d" / "clips").glob("1001_*.flv"))
    assert len(clips) == 6
    found = [detect_video(c, fps=1, detector=fast) for c in clips]
    n = sum(len(d.frame_numbers) for d in found)
    assert n >= 12 and sum(d.found_fraction * len(d.frame_numbers) for d in found) / n >= 0.95
    none = detect_video(shared_data / "media" / "no_face.mp4", fps=1, detector=fast, detect_max_side=640)
    assert len(none.frame_numbers) >= 3 and none.main_track is None
    assert len(none.boxes) == 0 and (none.offsets == 0).all()
