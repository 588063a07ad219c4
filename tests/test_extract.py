"""The extraction engine and `affectfuse extract`: one pass per video, resumable, failures isolated."""

import csv

import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.features.build import build_extractors
from affectfuse.data.store import FeatureSet
from affectfuse.features.pipeline import MediaItem, extract, find_inputs
from affectfuse.media.write import noise_clip as write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a.mp4", seed=0)
    write_video(root / "b.mp4", seed=1)
    write_video(root / "silent.mp4", audio=False, seed=2)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


@pytest.fixture(scope="module")
def extractors():
    return build_extractors(["deepspectrum-mobilenetv2", "egemaps", "faceexpressionnet"], random_weights=True)


def _failures(path):
    with open(path) as fh:
        return {row["item"]: row["error"] for row in csv.DictReader(fh)}


def test_extract_writes_sets_isolates_failures_and_resumes(videos, extractors, tmp_path):
    out = tmp_path / "feats"
    rep = extract(videos, extractors, out, fps=5, batch_size=4, progress=False)
    ds, eg, fe = "deepspectrum-mobilenetv2", "egemaps", "faceexpressionnet"
    assert sorted(rep.written[ds]) == sorted(rep.written[eg]) == ["a", "b"]
    assert sorted(rep.written[fe]) == ["a", "b", "silent"]  # no audio: face features still written
    assert rep.calls[ds] == 1  # 2 windows x 2 videos filled one batch of 4 across videos
    fails = _failures(out / "failures.csv")
    assert sorted(rep.not_applicable) == [("silent", ds, "no audio (the file has no audio track)"),
                                          ("silent", eg, "no audio (the file has no audio track)")]
    assert "silent" in (out / "skipped.csv").read_text()  # a skip, not a failure
    assert all("broken.mp4" in fails[f"broken [{n}]"] for n in (ds, eg, fe)) and len(fails) == 3

    dset, fset = FeatureSet.open(out / ds), FeatureSet.open(out / fe)
    assert dset.meta.dim == 1280 and dset.meta.random_weights and dset.meta.rate == 2.0
    a = dset["a"]
    np.testing.assert_array_equal(a.timestamps, [0.0, 0.5])
    assert a.mask.all() and np.abs(a.values - dset["b"].values).max() > 1e-2 * np.abs(a.values).max()
    f = fset["a"]
    np.testing.assert_allclose(f.timestamps, np.arange(6) * 0.2, atol=1e-6)  # 1.2 s sampled at 5 fps
    assert not f.mask.any() and not f.values.any()  # noise frames: no face, zero rows, mask False
    assert fset.meta.rate == 5.0 and (out / fe / "index.csv").is_file()

    files = sorted((out).rglob("*.npz"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    rep2 = extract(videos, extractors, out, fps=5, batch_size=4, progress=False)
    assert rep2.calls == {ds: 0, eg: 0, fe: 0} and sorted(rep2.skipped) == ["a", "b"]
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing rewritten
    assert len(_failures(out / "failures.csv")) == 3  # failures retried, and failed again

    (out / eg / "a.npz").unlink()
    rep3 = extract(videos, extractors, out, fps=5, batch_size=4, progress=False)
    assert rep3.calls == {ds: 0, eg: 1, fe: 0} and rep3.written[eg] == ["a"]


def test_cli_exit_code_weights_option_and_manifest(videos, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,id\n{videos / 'a.mp4'},clip_a\n{videos / 'broken.mp4'},clip_x\n")
    out = tmp_path / "feats"
    rc = main(["extract", str(manifest), "--extractors", "egemaps", "--out", str(out), "--no-progress",
               "--window", "0.6", "--hop", "0.3"])
    assert rc == 1
    fs = FeatureSet.open(out / "egemaps")
    assert fs.ids() == ["clip_a"] and fs.meta.extra["input"]["window_s"] == 0.6
    np.testing.assert_allclose(fs["clip_a"].timestamps, [0.0, 0.3, 0.6, 0.9])
    assert "clip_x [egemaps]" in _failures(out / "failures.csv")
    assert main(["extract", str(videos / "a.mp4"), "--extractors", "egemaps", "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 0
    assert main(["extract", str(manifest), "--extractors", "egemaps", "--out", str(out),
                 "--weights", "deepspectrum=/x.pth"]) == 1  # a weights option for an extractor not asked for


def test_find_inputs_abaw_layout_and_errors(videos, tmp_path):
    table = tmp_path / "data_info.csv"
    table.write_text("File_ID,Split\n[a],Train\n[b],Val\n")
    items = find_inputs(table, media_dir=videos)
    assert items == [MediaItem("a", videos / "a.mp4"), MediaItem("b", videos / "b.mp4")]
    table.write_text("File_ID,Split\n[a],Train\n[zz],Val\n")
    with pytest.raises(FileNotFoundError, match=r"row 3 \(id zz\).*zz\.mp4"):
        find_inputs(table, media_dir=videos)
    assert [i.id for i in find_inputs(videos)] == ["a", "b", "broken", "silent"]


def test_workers_give_the_same_features(videos, tmp_path):
    """8 videos: the default (a worker where there is a second core, this process decoding too) writes what
    one process writes."""
    ext = build_extractors(["egemaps"])
    items = [MediaItem(f"{v}{k}", videos / f"{v}.mp4") for v in "ab" for k in range(4)]
    extract(items, ext, tmp_path / "serial", workers=0, progress=False)
    rep = extract(items, ext, tmp_path / "pool", progress=False)
    assert sorted(rep.written["egemaps"]) == sorted(i.id for i in items)
    for item in items:
        np.testing.assert_array_equal(FeatureSet.open(tmp_path / "serial" / "egemaps")[item.id].values,
                                      FeatureSet.open(tmp_path / "pool" / "egemaps")[item.id].values)


def test_default_workers_give_the_same_face_features(shared_data, tmp_path):
    """A real face clip x 8: a worker and this process decoding (the default on 2+ cores) write the face
    features one process writes, to the bit, whatever this process's own torch threads were."""
    import torch

    clip = shared_data / "media" / "single_face.mp4"
    ext = build_extractors(["faceexpressionnet"])
    items = [MediaItem(f"c{k}", clip) for k in range(8)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # MTCNN's boxes differ between 1 and 2 threads: extract must not use the caller's
    try:
        extract(items, ext, tmp_path / "serial", fps=2, workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    rep = extract(items, ext, tmp_path / "pool", fps=2, progress=False)
    assert rep.ok and torch.get_num_threads() == threads
    serial, pool = (FeatureSet.open(tmp_path / d / "faceexpressionnet") for d in ("serial", "pool"))
    for item in items:
        assert serial[item.id].mask.sum() >= 4
        np.testing.assert_array_equal(serial[item.id].values, pool[item.id].values)


def test_the_consumer_decodes_while_no_worker_video_is_ready(videos):
    """With a worker, a video past the three in flight is decoded here when no worker's video is ready (the
    spawned worker is still starting); each video comes once, as a serial pass decodes it; without sharing,
    the worker decodes all of them in the order given."""
    import os

    from affectfuse.features.decoding import decode_plan, iter_decoded

    plan = decode_plan({"egemaps": build_extractors(["egemaps"])[0]}, ["egemaps"])
    jobs = [(MediaItem(k, videos / f"{v}.mp4"), plan) for k, v in (("w", "b"), ("x", "a"), ("y", "b"), ("z", "a"))]
    serial = {v.item.id: v for v in iter_decoded(jobs, workers=0)}
    assert {v.pid for v in serial.values()} == {os.getpid()} and all(v.cpu_s > 0 for v in serial.values())
    shared = list(iter_decoded(jobs, workers=1))
    assert [v.item.id for v in shared] == ["z", "w", "x", "y"]
    assert shared[0].pid == os.getpid() and {v.pid for v in shared[1:]} == {shared[1].pid} != {os.getpid()}
    for v in shared:
        (starts, chunks), (want_starts, want_chunks) = v.audio["egemaps"], serial[v.item.id].audio["egemaps"]
        np.testing.assert_array_equal(starts, want_starts)
        np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(want_chunks))
    waited = list(iter_decoded(jobs, workers=1, share=False))
    assert [v.item.id for v in waited] == ["w", "x", "y", "z"] and os.getpid() not in {v.pid for v in waited}


def test_worker_crops_come_through_a_file_that_is_then_removed(shared_data, tmp_path, monkeypatch):
    """A worker writes its crops to a file as it cuts them; this process maps it (equal to a serial pass's crops)
    and no file or folder is left. A sink whose folder cannot take a file keeps the crops in memory; one whose
    writes fail fails the video's faces, naming the file."""
    import tempfile

    from affectfuse.features.decoding import CropSink, DecodedVideo, Spooled, decode_plan, iter_decoded, unspooled
    from affectfuse.utils import intra_op_threads, torch_threads

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ext = build_extractors(["faceexpressionnet"])[0]
    plan = decode_plan({ext.name: ext}, [ext.name], fps=None)
    jobs = [(MediaItem(f"c{k}", shared_data / "media" / "single_face.mp4"), plan) for k in range(2)]
    with torch_threads(intra_op_threads()):  # as the worker: MTCNN's boxes move with the thread count
        serial = {v.item.id: v.crops[ext.input.crop] for v in iter_decoded(jobs, workers=0)}
    pooled = list(iter_decoded(jobs, workers=1, share=False))
    assert [v.item.id for v in pooled] == ["c0", "c1"]
    for v in pooled:
        crops = v.crops[ext.input.crop]
        assert isinstance(crops, np.memmap) and len(crops) == len(serial[v.item.id]) > 0
        np.testing.assert_array_equal(crops, serial[v.item.id])
    assert list(tmp_path.iterdir()) == []

    batch = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 3), np.uint8)
    sink = CropSink(4, str(tmp_path / "missing"))
    sink.add(batch)
    np.testing.assert_array_equal(sink.close(), batch)
    sink = CropSink(4, str(tmp_path))
    sink.add(batch)
    sink.add(batch[:1])
    spooled = sink.close()
    assert isinstance(spooled, Spooled) and spooled.rows == 4
    video = unspooled(DecodedVideo(MediaItem("x", "x.mp4"), crops={"k": spooled}))
    np.testing.assert_array_equal(video.crops["k"], np.concatenate([batch, batch[:1]]))
    assert video.face_error is None and list(tmp_path.iterdir()) == []

    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

    sink = CropSink(4, str(tmp_path))
    sink.file.close()
    sink.file = FullDisk()
    with pytest.raises(RuntimeError, match=f"{sink.path}.*No space left"):
        sink.add(batch)


def test_a_worker_failing_mid_video_leaves_no_crop_file(tmp_path, monkeypatch):
    """Crops already written when a video's faces fail -- with a recorded error or an unexpected one on its way
    up -- are deleted at once, not left for the end of the run."""
    import affectfuse.features.decoding as dec

    plan = dec.DecodePlan(faces=(build_extractors(["faceexpressionnet"], random_weights=True)[0].input.crop,))
    for error in (ValueError("bad frame"), KeyError("bug")):
        def failing(item, plan, detector, out, sinks, error=error):
            for sink in sinks.values():
                sink.add(np.zeros((2, sink.size, sink.size, 3), np.uint8))
            raise error

        monkeypatch.setattr(dec, "_decode_faces", failing)
        out = dec.DecodedVideo(MediaItem("v", tmp_path / "v.mp4"))
        if isinstance(error, ValueError):
            assert dec._faces_into(out, plan, None, str(tmp_path)).face_error.endswith("bad frame")
            assert out.crops == {}
        else:
            with pytest.raises(KeyError):
                dec._faces_into(out, plan, None, str(tmp_path))
        assert list(tmp_path.iterdir()) == []


def test_a_finished_photo_run_counts_no_video_to_do(tmp_path, monkeypatch):
    """Resuming 8 done photos with an audio extractor asked for (which never applies to photos) counts 0 inputs
    to do: no decoding worker is started for them."""
    import cv2

    import affectfuse.features.pipeline as pl

    for k in range(8):
        cv2.imwrite(str(tmp_path / f"p{k}.png"), np.random.default_rng(k).integers(0, 255, (64, 64, 3), np.uint8))
    ext = build_extractors(["egemaps", "faceexpressionnet"], random_weights=True)
    assert extract(tmp_path, ext, tmp_path / "out", workers=0, progress=False, crop_cache=None).ok
    counted = []
    monkeypatch.setattr(pl, "auto_workers", lambda n: counted.append(n) or 0)
    rep = extract(tmp_path, ext, tmp_path / "out", progress=False, crop_cache=None)
    assert counted == [0] and len(rep.skipped) == 8


def test_auto_workers_one_per_other_core_per_eight_videos_and_per_gigabyte():
    from affectfuse.features.decoding import VIDEOS_PER_WORKER, WORKER_MEMORY, auto_workers
    from affectfuse.utils import available_memory

    assert VIDEOS_PER_WORKER == 8 and WORKER_MEMORY == 2**30
    plenty = 64 * 2**30
    assert [auto_workers(n, cores=2, memory=plenty) for n in (0, 1, 7, 8, 100)] == [0, 0, 0, 1, 1]
    assert [auto_workers(n, cores=16, memory=plenty) for n in (7, 8, 24, 1000)] == [0, 1, 3, 15]
    assert auto_workers(1000, cores=1, memory=plenty) == 0
    assert [auto_workers(1000, cores=64, memory=m * 2**30) for m in (0.5, 5.9, 32)] == [0, 5, 32]
    assert available_memory() is None or available_memory() > 0


def test_face_rows_follow_sampled_frames_on_a_real_clip(shared_data, tmp_path):
    clip = shared_data / "media" / "single_face.mp4"
    ext = build_extractors(["faceexpressionnet"])
    rep = extract([MediaItem("face", clip)], ext, tmp_path, fps=2, progress=False)
    assert rep.ok
    vf = FeatureSet.open(tmp_path / "faceexpressionnet")["face"]
    np.testing.assert_allclose(vf.timestamps, np.arange(len(vf.timestamps)) * 0.5, atol=0.04)
    assert len(vf.timestamps) == 5 and vf.mask.mean() >= 0.8
    probs = vf.values[vf.mask][:, -7:]  # the 7 expression probabilities close each row
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_frame_folders_and_still_images(shared_data, tmp_path):
    """Aff-Wild2 cropped_aligned folders (frame numbers from the names, gaps = no face) and photos."""
    import cv2

    from affectfuse.faces import read_image

    root = tmp_path / "in"
    crops = root / "cropped_aligned" / "video1"
    crops.mkdir(parents=True)
    face = read_image(shared_data / "media" / "single_face.jpg")
    rng = np.random.default_rng(0)
    tiles = {k: rng.integers(0, 255, (120, 120, 3), dtype=np.uint8) for k in (1, 2, 4)}
    for k, tile in tiles.items():
        cv2.imwrite(str(crops / f"{k:05d}.jpg"), tile[..., ::-1])
    cv2.imwrite(str(root / "photo.png"), face[..., ::-1])
    items = find_inputs(root)
    assert [(i.id, i.path.name) for i in items] == [("cropped_aligned/video1", "video1"), ("photo", "photo.png")]
    assert find_inputs(crops) == [MediaItem("video1", crops)]

    ext = build_extractors(["egemaps", "faceexpressionnet"])
    rep = extract(root, ext, tmp_path / "feats", fps=None, frame_rate=25.0, progress=False)
    assert sorted(rep.written["faceexpressionnet"]) == ["cropped_aligned/video1", "photo"]
    assert not (tmp_path / "feats" / "failures.csv").exists() and rep.ok  # no audio in images: skipped
    assert sorted(rep.not_applicable) == [("cropped_aligned/video1", "egemaps", "no audio (image input)"),
                                          ("photo", "egemaps", "no audio (image input)")]

    fset = FeatureSet.open(tmp_path / "feats" / "faceexpressionnet")
    vid = fset["cropped_aligned/video1"]
    np.testing.assert_allclose(vid.timestamps, np.arange(4) / 25.0)
    np.testing.assert_array_equal(vid.mask, [True, True, False, True])  # frame 3 has no image
    assert not vid.values[2].any()
    # the crops are taken as aligned: frame 1's row is the network on the resized image
    tile1 = cv2.resize(read_image(crops / "00001.jpg"), (112, 112), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(vid.values[0], ext[1](tile1[None])[0], atol=1e-5)
    photo = fset["photo"]
    assert photo.values.shape == (1, 263) and photo.mask.all() and photo.timestamps[0] == 0.0
    # one row per frame (fps=None): the EXPR loader numbers the rows back to the crops' frame numbers
    from affectfuse.data.affwild2 import load_expr_videos

    [video] = load_expr_videos({"cropped_aligned/video1": np.array([0, 4, 4, 5])}, [fset])
    np.testing.assert_array_equal(video.face, [True, True, False, True])
    np.testing.assert_array_equal(video.frames, [1, 2, 3, 4])
    np.testing.assert_allclose(video.features[3], vid.values[3], atol=1e-6)
