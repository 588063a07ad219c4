"""MTCNN weights, detection parity with the reference implementation, batching, and the video pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse.faces import (MTCNN, MTCNN_WEIGHTS, align_face, detect_video, iter_face_images, iter_faces,
                              load_mtcnn, read_image)
from affectfuse.faces.plan import CropSpec
from affectfuse.faces.track import box_iou
from affectfuse.media import MediaError, iter_frames
from affectfuse.weights import WeightsChecksumError, WeightsNotFoundError, resolve, sha256_file
from affectfuse.media.write import write_video

# facenet-pytorch's detections (boxes, landmarks, scores) on a spread of the shared images and video frames,
# written by scripts/compare_mtcnn_facenet.py --golden (numbers only).
GOLDEN = Path(__file__).parent / "data" / "mtcnn_facenet_golden.json"


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


def _golden_images(data: Path, keys: list[str]) -> list[np.ndarray]:
    """The images the golden keys name: ``path`` (image file) or ``video#frame`` (1-based frame number)."""
    frames: dict[str, np.ndarray] = {}
    wanted: dict[str, set[int]] = {}
    for key in keys:
        path, _, num = key.partition("#")
        if num:
            wanted.setdefault(path, set()).add(int(num))
    for path, nums in wanted.items():
        for batch in iter_frames(data / path):
            for num, img in zip(batch.frame_numbers, batch.images):
                if num in nums:
                    frames[f"{path}#{num}"] = img
            if batch.frame_numbers[-1] >= max(nums):
                break
    return [frames[k] if "#" in k else read_image(data / k) for k in keys]


@pytest.fixture(scope="module")
def golden(shared_data) -> tuple[list[dict], list[np.ndarray]]:
    items = json.loads(GOLDEN.read_text())["items"]
    return items, _golden_images(shared_data, [it["image"] for it in items])


def _assert_same_detections(ours, boxes, landmarks, iou_min: float, px: float, where: str):
    """Same number of faces, each of ours matching a reference face by IoU >= iou_min, landmarks within px."""
    boxes, landmarks = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    assert len(ours) == len(boxes), f"{where}: {len(ours)} faces, reference {len(boxes)}"
    if not len(boxes):
        return
    iou = box_iou(ours.boxes, boxes)
    pair = iou.argmax(axis=1)
    assert len(set(pair)) == len(pair) and iou.max(axis=1).min() >= iou_min, f"{where}: IoU {iou.max(axis=1)}"
    err = np.linalg.norm(ours.landmarks - landmarks[pair], axis=-1).max()
    assert err <= px, f"{where}: landmarks {err:.3f} px off"


def test_matches_facenet_golden_detections(golden, mtcnn):
    """facenet-pytorch's detections, stored, hold for ours: IoU >= 0.99, landmarks within 1 px, no extra/missing."""
    items, images = golden
    assert len(items) >= 40 and sum(len(it["boxes"]) for it in items) >= 40
    dets = [d for k in range(0, len(images), 8) for d in mtcnn.detect(images[k:k + 8])]  # batched, as in videos
    for item, det in zip(items, dets):
        _assert_same_detections(det, item["boxes"], item["landmarks"], 0.99, 1.0, item["image"])
        np.testing.assert_allclose(det.scores, item["scores"], atol=1e-3)


def test_equals_facenet_pytorch(golden, mtcnn):
    """The real facenet-pytorch MTCNN, run here on the same images, gives our detections (to float rounding)."""
    facenet = pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is not installed (pip install --no-deps "
                                                            "facenet-pytorch)")
    reference = facenet.MTCNN(keep_all=True, device="cpu")
    items, images = golden
    dets = [d for k in range(0, len(images), 8) for d in mtcnn.detect(images[k:k + 8])]
    for item, img, det in zip(items, images, dets):
        boxes, _, marks = reference.detect(img, landmarks=True)
        boxes, marks = (np.zeros((0, 4)), np.zeros((0, 5, 2))) if boxes is None else (boxes, marks)
        _assert_same_detections(det, boxes, marks, 0.9999, 0.01, item["image"])
        _assert_same_detections(det, item["boxes"], item["landmarks"], 0.999, 0.01, f"{item['image']} (stored)")


def test_area_resampling_equals_interpolate():
    """Pyramid levels and crops from the summed-area table equal F.interpolate(mode="area"), bit for bit."""
    from torch.nn import functional as F

    from affectfuse.faces.resample import _resample_frames, _resample_windows, _summed_area, _summed_area_torch

    images = np.random.default_rng(0).integers(0, 256, (2, 61, 97, 3), dtype=np.uint8)
    table = _summed_area(images, torch.device("cpu"))
    torch.testing.assert_close(_summed_area_torch(torch.from_numpy(images)), table.long(), rtol=0, atol=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # channels-last strides, as the reference's
    for size in [(37, 59), (12, 12), (24, 17), (61, 97)]:
        torch.testing.assert_close(_resample_frames(table, *size), F.interpolate(x, size=size, mode="area"),
                                   rtol=0, atol=0)
    windows = torch.tensor([[0, 0, 97, 61], [5, 3, 40, 60], [90, 50, 97, 61], [10, 20, 11, 21]])
    idx = torch.tensor([0, 1, 1, 0])
    for size in (24, 48):
        ref = torch.cat([F.interpolate(x[i, :, y0:y1, x0:x1].unsqueeze(0), size=(size, size), mode="area")
                         for i, (x0, y0, x1, y1) in zip(idx.tolist(), windows.tolist())])
        torch.testing.assert_close(_resample_windows(table, idx, windows, size), ref, rtol=0, atol=0)


def test_min_nms_and_box_conventions():
    from affectfuse.faces.mtcnn import Detections, _min_nms

    boxes = np.array([[10, 10, 49, 49], [20, 20, 29, 29], [45, 10, 84, 49], [200, 200, 239, 239]], np.float32)
    scores = np.array([0.9, 0.99, 0.8, 0.7], np.float32)
    # the small box lies inside the big one (intersection / smaller area = 1): the big, worse one goes;
    # the third overlaps the first by 5 whole pixels of 40 (0.125): kept
    np.testing.assert_array_equal(_min_nms(boxes, scores, 0.7), [1, 2, 3])
    det = Detections(boxes[:1], scores[:1], np.full((1, 5, 2), 30, np.float32)).unscaled(0.5)
    # the box spans [x1 - 1, x2]: its edges 9 and 49 scale to 18 and 98
    np.testing.assert_allclose(det.boxes, [[19, 19, 98, 98]])
    np.testing.assert_allclose(det.landmarks, 60)


def test_max_side_maps_back_to_original_pixels(face, fast):
    big = np.repeat(np.repeat(face, 2, axis=0), 2, axis=1)  # (320, 320): INTER_AREA back to 160 gives face exactly
    small, down = fast.detect(face)[0], fast.detect(big, max_side=160)[0]
    assert len(small) == len(down) == 1
    np.testing.assert_allclose(down.boxes, 2 * small.boxes - [[1, 1, 0, 0]], atol=1e-4)  # edge x1 - 1 doubles
    np.testing.assert_allclose(down.landmarks, 2 * small.landmarks, atol=1e-4)


def test_batched_equals_one_by_one_and_lists(face, fast):
    frames = np.full((3, 200, 260, 3), 90, np.uint8)
    frames[0, 20:180, 30:190] = face
    frames[2, 30:190, 90:250] = face
    batched = fast.detect(frames)
    single = [fast.detect(f)[0] for f in frames]
    assert [len(d) for d in batched] == [1, 0, 1]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    # the face moved by (60, 10) px; MTCNN's pyramid grid is not shift-equivariant, its landmarks nearly are
    shift = batched[2].landmarks[0].mean(axis=0) - batched[0].landmarks[0].mean(axis=0)
    np.testing.assert_allclose(shift, [60, 10], atol=1)
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
    box112, box224, arc224 = CropSpec(112, "mtcnn_box"), CropSpec(224, "mtcnn_box"), CropSpec(224, "arcface")
    batches = list(iter_faces(path, crops=(box112, box224), batch_size=3, detector=fast))
    assert [len(b) for b in batches] == [3, 3, 2]
    found = np.concatenate([b.found for b in batches])
    np.testing.assert_array_equal(found, [True, True, True, False, False, True, True, True])
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in batches]), np.arange(1, 9))
    crops = np.concatenate([b.crops[box224] for b in batches])
    assert crops.shape == (8, 224, 224, 3) and crops.dtype == np.uint8
    assert crops[3].max() == 0 and crops[0].mean() > 40
    ids = np.concatenate([b.track_ids for b in batches])
    assert set(ids[found]) == {ids[0]} and (ids[~found] == -1).all()  # stitched across the gap
    boxes = np.concatenate([b.boxes for b in batches])
    assert np.isnan(boxes[3]).all() and boxes[7, 0] - boxes[0, 0] == pytest.approx(56, abs=3)
    arc = next(iter_faces(path, crops=(arc224, box224), detector=fast))  # two templates of one size, one pass
    full = next(iter_frames(path)).images[0]
    np.testing.assert_array_equal(arc.crops[arc224][0], align_face(full, arc.landmarks[0], 224, "arcface"))
    np.testing.assert_array_equal(arc.crops[box224][0], crops[0])
    assert not np.array_equal(arc.crops[arc224][0], crops[0])


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
    spec = CropSpec(112, "arcface")
    batch = next(iter_faces(path, crops=(spec,), detector=fast, detections=det))
    full = next(iter_frames(path)).images[0]
    np.testing.assert_array_equal(batch.crops[spec][0], align_face(full, batch.landmarks[0], 112, "arcface"))


def test_image_folders_and_files(tmp_path, face, fast):
    import cv2

    folder = tmp_path / "cropped_aligned" / "video1"
    folder.mkdir(parents=True)
    for k in (1, 2, 5):
        cv2.imwrite(str(folder / f"{k:05d}.jpg"), cv2.cvtColor(cv2.resize(face, (112, 112)), cv2.COLOR_RGB2BGR))
    s112, s160 = CropSpec(112, "mtcnn_box"), CropSpec(160, "mtcnn_box")
    batch = next(iter_face_images(folder, crops=(s112, s160), n_frames=6, fps=30))
    np.testing.assert_array_equal(batch.frame_numbers, np.arange(1, 7))
    np.testing.assert_array_equal(batch.found, [True, True, False, False, True, False])
    assert batch.crops[s160].shape == (6, 160, 160, 3) and batch.crops[s112][2].max() == 0
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
