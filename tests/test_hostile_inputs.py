"""Hostile and faulty inputs a user's files and machine produce: every case is made here, each with its
documented outcome (docs/hostile_inputs.md): a clean error naming the file, or the documented behaviour;
never a traceback, lost data or a file outside the output folder."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import wave

import av
import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.data.claims import Claims
from affectfuse.data.store import FeatureSet, FeatureSetMeta, FeatureStoreError, VideoFeatures, store_key
from affectfuse.features.base import AudioInput, Extractor
from affectfuse.features.pipeline import extract, find_inputs


# -- inputs made by the tests ---------------------------------------------------------------------------

def _wav(path, seconds=1.5, hz=220.0):
    """A 16 kHz mono int16 sine tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16).tobytes())
    return path


def _faststart_clip(path, seconds=3.0, fps=10, size=48):
    """Noise frames + a 220 Hz tone as an mp4 whose header (moov) comes first, like a web video."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        aus = c.add_stream("aac", rate=16000, layout="mono")
        for _ in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format="rgb24")
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(int(16000 * seconds)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for i in range(0, len(tone), 1024):
            af = av.AudioFrame.from_ndarray(tone[i:i + 1024][None], format="flt", layout="mono")
            af.sample_rate, af.pts = 16000, i
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    return path


class Loudness(Extractor):
    """A tiny audio extractor: (N windows) -> (N, 2) mean |x| and std; ``gate`` pauses its first call."""

    name, modality, dim, rate = "loudness", "audio", 2, 2.0
    input = AudioInput(16000, 1.0, 0.5)

    def __init__(self, gate=None):
        self.gate = gate  # (started, release) events

    def extract(self, batch):
        if self.gate is not None:
            started, release = self.gate
            started.set()
            assert release.wait(20)
            self.gate = None
        return np.array([[np.abs(x).mean(), np.std(x)] for x in batch], np.float32)


def _fs(path, dim=2):
    return FeatureSet.create(path, FeatureSetMeta("x", dim))


def _vf(vid, value=0.0, steps=3):
    return VideoFeatures(vid, np.full((steps, 2), value), np.arange(steps) * 0.5)


def _last_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()][-1]


# -- 1. ids: one input, one key, one file ----------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("a/b", "a_b"), ("clip 1", "clip_1"), ("[00001]", "_00001_"), ("x%41", "xA")])
def test_ids_that_used_to_share_a_file_get_their_own(tmp_path, a, b):
    fs = _fs(tmp_path / "set")
    fs.write(_vf(a, 1.0))
    fs.write(_vf(b, 2.0))
    assert len(fs) == 2 and sorted(fs.ids()) == sorted([a, b])
    assert fs[a].values[0, 0] == 1.0 and fs[b].values[0, 0] == 2.0


def test_store_keys_are_injective_plain_and_never_dotfiles():
    ids = ["00001", "a/b", "a_b", "a%2Fb", "..", ".", ".hidden", "~x", "é", "a b", "A", "a"]
    keys = [store_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert store_key("video10_1_left") == "video10_1_left"  # plain ids keep their old file names
    assert all(not k.startswith(".") and "/" not in k for k in keys)
    with pytest.raises(FeatureStoreError, match="too long"):
        store_key("x" * 300)
    with pytest.raises(FeatureStoreError, match="empty"):
        store_key("")


def test_read_checks_the_id_inside_the_file(tmp_path):
    fs = _fs(tmp_path / "set")
    # a folder written by affectfuse < 0.2: id 'a/b' stored under the old key a_b.npz
    with open(tmp_path / "set" / "a_b.npz", "wb") as fh:
        np.savez(fh, id=np.array("a/b"), values=np.ones((2, 2), np.float32), timestamps=np.zeros(2),
                 mask=np.ones(2, bool))
    assert fs["a/b"].values.shape == (2, 2)  # still found, by the id inside
    assert "a_b" not in fs
    with pytest.raises(FeatureStoreError, match="a_b.npz: holds the features of video 'a/b', not of 'a_b'"):
        fs.read("a_b")


def test_inputs_sharing_an_id_are_refused_listing_every_input(tmp_path):
    root = tmp_path / "in"
    for name in ("clip.wav", "clip.flac", "sub/x.wav", "sub/x.mp3", "other.wav"):
        _wav(root / name)
    with pytest.raises(ValueError) as err:
        find_inputs(root)
    msg = str(err.value)
    assert "2 id(s) shared" in msg and "other.wav" not in msg
    assert all(str(root / n) in msg for n in ("clip.wav", "clip.flac", "sub/x.wav", "sub/x.mp3"))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,id\n{root / 'clip.wav'},v\n{root / 'other.wav'},v\n")
    with pytest.raises(ValueError, match="id 'v'"):
        find_inputs(manifest)


def test_extract_keeps_a_b_and_a_slash_b_apart(tmp_path):
    root = tmp_path / "in"
    _wav(root / "a" / "b.wav", hz=200), _wav(root / "a_b.wav", hz=900, seconds=3.0)
    _wav(root / "clip 1.wav", hz=300), _wav(root / "clip_1.wav", hz=600, seconds=2.5)
    rep = extract(root, [Loudness()], tmp_path / "feats", progress=False)
    fs = FeatureSet.open(tmp_path / "feats" / "loudness")
    assert sorted(rep.written["loudness"]) == sorted(fs.ids()) == ["a/b", "a_b", "clip 1", "clip_1"]
    assert fs["a/b"].steps == 3 and fs["a_b"].steps == 6 and fs["clip 1"].steps == 3 and fs["clip_1"].steps == 5


# -- 2. output paths stay inside the output folder ----------------------------------------------------------

def _probabilities(path, videos, frames=3):
    from affectfuse.outputs.expr_files import write_probabilities

    probs = {v: np.tile(np.eye(8)[[1]], (frames, 1)) for v in videos}
    write_probabilities(path, probs)
    return path


@pytest.mark.parametrize("bad", ["../../X", "ABS"])
def test_expr_submit_txt_refuses_video_names_leaving_out(tmp_path, capsys, bad):
    bad = str(tmp_path / "elsewhere" / "X") if bad == "ABS" else bad
    probs = _probabilities(tmp_path / "p.csv", ["ok", bad])
    (tmp_path / "frames.txt").write_text("".join(f"{v}/{k:05d}.jpg\n" for v in ("ok", bad) for k in (1, 2, 3)))
    out = tmp_path / "a" / "b" / "out"
    rc = main(["expr", "submit", "--probabilities", str(probs), "--frame-list", str(tmp_path / "frames.txt"),
               "--format", "txt", "--out", str(out)])
    assert rc == 1
    assert "outside" in capsys.readouterr().err
    assert list(tmp_path.rglob("*.txt")) == [tmp_path / "frames.txt"]  # nothing written, anywhere


def test_index_links_are_url_encoded(tmp_path):
    from affectfuse.outputs.report import write_index

    names = ["javascript:alert(1)", "a#b?c%d", "x'y"]
    page = write_index(tmp_path, [{"video_id": n, "video": n, "top_emotion": None, "report": f"{n}/report.html"}
                                  for n in names]).read_text()
    assert "href='javascript%3Aalert%281%29/report.html'" in page
    assert "href='a%23b%3Fc%25d/report.html'" in page and "href='x%27y/report.html'" in page
    assert "href='javascript:" not in page


def test_predict_output_names_are_distinct():
    from pathlib import Path

    from affectfuse.inference.batch import output_names

    names = output_names([Path("a.mp4"), Path("x/a.mp4"), Path("a_2.mp4"), Path("y/a.mp4")])
    assert len(set(names)) == 4 and names[2] == "a_2"


# -- 3. interrupted writes and concurrent runs --------------------------------------------------------------

def test_kill_9_inside_a_write_leaves_nothing_a_later_run_trusts(tmp_path):
    folder = tmp_path / "set"
    _fs(folder).write(_vf("done", 1.0))
    code = (
        "import os, signal, numpy as np\n"
        "from affectfuse.data.store import FeatureSet, VideoFeatures\n"
        f"fs = FeatureSet.open({str(folder)!r})\n"
        "def dying(fh, **kw):\n"
        "    fh.write(b'PK\\x03\\x04 half a file'); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.savez = dying\n"
        "fs.write(VideoFeatures('v1', np.zeros((3, 2)), np.arange(3.0)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(left) == 1 and left[0].startswith(".v1.npz.") and left[0].endswith(".tmp")
    (folder / ".v2.npz.abc123.tmp.npz").write_bytes(b"PK half")  # the leftover name of affectfuse < 0.2
    fs = FeatureSet.open(folder)
    assert fs.ids() == ["done"] and len(fs) == 1 and "v1" not in fs
    FeatureSet.create(folder, FeatureSetMeta("x", 2))  # the next run: the dead writer's temp is removed
    assert not (folder / left[0]).exists() and fs.ids() == ["done"]
    from affectfuse.outputs.report import ExpressionRows

    (tmp_path / "video").mkdir()
    (tmp_path / "video" / left[0].replace("v1.npz", "expressions.csv")).write_text("frame,time_s\n1,")
    with ExpressionRows(tmp_path / "video" / "expressions.csv", ["a"]) as rows:  # predict redoing a video
        rows.add([1], [0.0], [True], [[1.0]])
    assert sorted(p.name for p in (tmp_path / "video").iterdir()) == ["expressions.csv"]


def test_resume_redoes_a_file_that_no_finished_write_made(tmp_path):
    root = tmp_path / "in"
    _wav(root / "a.wav"), _wav(root / "b.wav")
    out = tmp_path / "feats"
    extract(root, [Loudness()], out, progress=False)
    (out / "loudness" / "b.npz").write_bytes(b"PK\x03\x04 truncated by a copy")
    stamp = (out / "loudness" / "a.npz").stat().st_mtime_ns
    rep = extract(root, [Loudness()], out, progress=False)
    assert rep.skipped == ["a"] and rep.written["loudness"] == ["b"]
    assert (out / "loudness" / "a.npz").stat().st_mtime_ns == stamp
    assert FeatureSet.open(out / "loudness")["b"].steps == 3


def test_two_concurrent_extract_runs_share_the_work(tmp_path):
    root = tmp_path / "in"
    for k in range(4):
        _wav(root / f"v{k}.wav", hz=200 + 50 * k)
    out = tmp_path / "feats"
    started, release = threading.Event(), threading.Event()
    first = {}
    runner = threading.Thread(target=lambda: first.update(rep=extract(
        root, [Loudness(gate=(started, release))], out, batch_size=1, progress=False)))
    runner.start()
    assert started.wait(20)  # run A is inside v0 and holds its claim
    second = extract(root, [Loudness()], out, batch_size=1, progress=False)
    release.set()
    runner.join(20)
    a, b = first["rep"], second
    assert b.busy == ["v0"] and sorted(b.written["loudness"]) == ["v1", "v2", "v3"]
    assert a.written["loudness"] == ["v0"] and sorted(a.skipped) == ["v1", "v2", "v3"]
    assert sorted(FeatureSet.open(out / "loudness").ids()) == ["v0", "v1", "v2", "v3"]
    assert not (out / ".claims").exists()


def test_a_dead_runs_claim_is_taken_over(tmp_path):
    root = tmp_path / "in"
    _wav(root / "v.wav")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims = Claims(tmp_path / "feats")
    claims.dir.mkdir(parents=True)
    (claims.dir / "v.claim").write_text(f"{claims.me.rsplit(' ', 1)[0]} {dead.stdout.strip()}\n")
    rep = extract(root, [Loudness()], tmp_path / "feats", progress=False)
    assert rep.written["loudness"] == ["v"] and not rep.busy


# -- 4. one error policy: OSError -> one line naming the file, exit 1, finished work intact ------------------

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "disk quota")])
def test_extract_stops_on_an_output_error_with_one_line(tmp_path, monkeypatch, capsys, code, words):
    import affectfuse.features.build as cli_extract

    monkeypatch.setattr(cli_extract, "build_extractors", lambda *a, **k: [Loudness()])
    root = tmp_path / "in"
    _wav(root / "a.wav"), _wav(root / "b.wav")
    out = tmp_path / "feats"
    assert main(["extract", str(root), "--out", str(out), "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in (out / "loudness").glob("*.npz")}
    _wav(root / "c.wav")

    def refuse(fh, **kw):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(np, "savez", refuse)
    assert main(["extract", str(root), "--out", str(out), "--no-progress"]) == 1
    line = _last_error_line(capsys)
    assert line.startswith(f"affectfuse extract: error: {out / 'loudness' / 'c.npz'}: {words}")
    assert {p: p.read_bytes() for p in (out / "loudness").glob("*.npz")} == before  # finished work intact
    assert not [p for p in out.rglob(".*") if p.name != ".claims"] and not (out / ".claims").exists()


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import affectfuse.features.build as cli_extract
    import affectfuse.utils as utils

    def read_only(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", f"{dir}/.meta.json.1.x.tmp")

    monkeypatch.setattr(cli_extract, "build_extractors", lambda *a, **k: [Loudness()])
    monkeypatch.setattr(utils.tempfile, "mkstemp", read_only)
    _wav(tmp_path / "in" / "a.wav")
    assert main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "feats"), "--no-progress"]) == 1
    line = _last_error_line(capsys)
    assert line.startswith("affectfuse extract: error: ") and line.endswith(": read-only file system")


def test_checkpoint_writer_failure_names_the_file(tmp_path, monkeypatch):
    import shutil

    import torch

    from affectfuse.cli import error_line
    from affectfuse.training.checkpoint import save_checkpoint

    def torch_enforce(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "best.pt")
    monkeypatch.setattr(torch, "save", torch_enforce)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(OSError) as err:
        save_checkpoint({"w": torch.ones(2)}, tmp_path / "best.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "best.pt")
    assert error_line(err.value).startswith(f"{tmp_path / 'best.pt'}: disk full")
    assert torch.load(tmp_path / "best.pt", weights_only=True)["w"].sum() == 0  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_checkpoint_disk_full_through_the_file_handle(tmp_path, monkeypatch):
    import builtins

    from affectfuse.training.checkpoint import save_checkpoint

    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(builtins, "open", lambda f, mode="r", *a, **k: Full(real_open(f, mode, *a, **k))
                        if "w" in mode and ".tmp" in str(f) else real_open(f, mode, *a, **k))
    with pytest.raises(OSError) as err:
        save_checkpoint({"w": 1}, tmp_path / "last.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "last.pt")


def test_train_resume_on_a_corrupt_last_pt_names_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    rc = main(["train", "--table", str(tmp_path / "none.csv"), "--features", f"a={tmp_path}", "--out", str(run),
               "--resume"])
    assert rc == 1
    line = _last_error_line(capsys)
    assert str(run / "last.pt") in line and "unreadable ERI resume checkpoint" in line


# -- 4b, 5. predict: output errors, names leaving OUT, partial media ----------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    whole = _faststart_clip(root / "whole.mp4")
    data = whole.read_bytes()
    (root / "cut.mp4").write_bytes(data[:int(len(data) * 0.3)])
    (root / "...mp4").write_bytes(data)
    return root


def _predict(*args):
    return main(["predict", *map(str, args), "--thumbnails", "0"])


def test_predict_partial_media_is_a_warning_or_with_strict_a_failure(clips, tmp_path, monkeypatch):
    import affectfuse.media as media

    monkeypatch.setattr(media, "read_audio", None)  # predict streams audio; reading it whole would fail here
    out = tmp_path / "out"
    assert _predict(clips / "whole.mp4", clips / "cut.mp4", "--out", out) == 0
    whole = json.loads((out / "whole" / "summary.json").read_text())
    cut = json.loads((out / "cut" / "summary.json").read_text())
    assert whole["warnings"] == [] and whole["media"]["coverage"]["decoded_frames"] == 30
    assert len(cut["warnings"]) == 2 and "(6 of 30 frames)" in cut["warnings"][0]
    assert cut["media"]["coverage"]["decoded_audio_s"] < 1.0 and "audio" in cut["warnings"][1]
    rows = list(csv.DictReader(open(out / "failures.csv")))
    assert [r["item"] for r in rows] == [str(clips / "cut.mp4")] * 2
    assert all(r["error"].startswith("warning: partial media") for r in rows)
    assert "partial media" in (out / "index.html").read_text()

    strict = tmp_path / "strict"
    assert _predict(clips / "cut.mp4", "--out", strict, "--strict") == 1
    rows = list(csv.DictReader(open(strict / "failures.csv")))
    assert len(rows) == 1 and "--strict" in rows[0]["error"] and not (strict / "cut").exists()


def test_extract_partial_media_is_a_warning_or_with_strict_a_failure(clips, tmp_path):
    from affectfuse.features.inputs import MediaItem

    items = [MediaItem("whole", clips / "whole.mp4"), MediaItem("cut", clips / "cut.mp4")]
    rep = extract(items, [Loudness()], tmp_path / "feats", progress=False)
    assert rep.ok and sorted(rep.written["loudness"]) == ["cut", "whole"]
    assert [i for i, _ in rep.warnings] == ["cut [media]"] and "audio decoded to 0.64 s" in rep.warnings[0][1]
    rows = list(csv.DictReader(open(tmp_path / "feats" / "failures.csv")))
    assert [(r["item"], r["error"][:22]) for r in rows] == [("cut [media]", "warning: partial media")]
    strict = extract(items, [Loudness()], tmp_path / "strict", progress=False, strict=True)
    assert strict.written["loudness"] == ["whole"] and "(--strict)" in strict.failures[0][1]
    assert "cut" not in FeatureSet.open(tmp_path / "strict" / "loudness")


def test_predict_refuses_a_stem_leaving_out(clips, tmp_path):
    out = tmp_path / "box" / "out"
    assert _predict(clips / "...mp4", clips / "whole.mp4", "--out", out) == 1
    rows = list(csv.DictReader(open(out / "failures.csv")))
    assert len(rows) == 1 and rows[0]["item"].endswith("...mp4") and "outside the output folder" in rows[0]["error"]
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["out"]  # nothing in OUT's parent
    assert (out / "whole" / "summary.json").is_file()


def test_predict_disk_full_stops_with_one_line_and_keeps_finished_videos(clips, tmp_path, monkeypatch, capsys):
    import affectfuse.utils as utils

    real = utils.tempfile.mkstemp

    def full_in_cut(*a, dir=None, **k):
        if os.path.basename(str(dir)) == "cut":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(utils.tempfile, "mkstemp", full_in_cut)
    out = tmp_path / "out"
    assert _predict(clips / "whole.mp4", clips / "cut.mp4", "--out", out) == 1
    line = _last_error_line(capsys)
    assert line == f"affectfuse predict: error: {out / 'cut' / 'expressions.csv'}: disk full (No space left on device)"
    assert json.loads((out / "whole" / "summary.json").read_text())["video_id"] == "whole"
    assert not (out / "failures.csv").exists() and not list(out.rglob(".*.tmp"))


# -- 6. memory: streamed windows and decimated plot series ---------------------------------------------------

def test_streamed_voice_windows_equal_the_whole_cut():
    from affectfuse.inference.voice import WindowStream, cut_audio_windows

    audio = np.random.default_rng(0).standard_normal(16000 * 7 + 123).astype(np.float32)
    windows, times = cut_audio_windows(audio, 1.0, 0.5)
    stream = WindowStream(1.0, 0.5, block=4)
    parts = list(stream.run(audio[i:i + 5000] for i in range(0, len(audio), 5000)))
    np.testing.assert_array_equal(np.concatenate([w for w, _ in parts]), windows)
    np.testing.assert_allclose(np.concatenate([t for _, t in parts]), times)
    assert stream.samples == len(audio) and max(len(w) for w, _ in parts) == 4


def test_plot_series_is_decimated_to_a_fixed_size():
    from affectfuse.outputs.report import Decimator

    short, long = Decimator(8, max_points=100), Decimator(8, max_points=100)
    probs = np.tile(np.eye(8)[[2]], (50, 1))
    short.add(np.arange(50) / 10, np.ones(50, bool), probs)
    t, found, p = short.series()
    np.testing.assert_allclose(t, np.arange(50) / 10)
    np.testing.assert_allclose(p, probs)
    for k in range(0, 30000, 1000):  # 20 minutes at 25 frames/s
        found = (np.arange(k, k + 1000) // 5000) % 2 == 0
        long.add(np.arange(k, k + 1000) / 25, found, np.tile(np.eye(8)[[3]], (1000, 1)))
    t, found, p = long.series()
    assert len(t) <= 100 and np.all(np.diff(t) > 0) and 0.3 < found.mean() < 0.7
    np.testing.assert_allclose(p[found][:, 3], 1.0)
