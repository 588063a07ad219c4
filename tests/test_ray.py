"""Scale-out on a local Ray cluster: same features as one process, worker deaths lose and repeat nothing,
training sweeps give the serial tables. One 2-CPU cluster is shared by the whole module."""

import csv
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from affectfuse.cli import main  # noqa: E402
from affectfuse.features.build import build_extractors  # noqa: E402
from affectfuse.cluster.ray_extract import ExtractWorker, WorkerSpec, ray_extract  # noqa: E402
from affectfuse.data.store import FeatureSet  # noqa: E402
from affectfuse.features.pipeline import extract, find_inputs  # noqa: E402
from affectfuse.media.write import noise_clip  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster takes several seconds to start on a loaded 2-core machine
NAMES = ("egemaps", "faceexpressionnet")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for k, name in enumerate("abcd"):
        noise_clip(root / f"{name}.mp4", seed=k)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    return root


@pytest.fixture(scope="module")
def serial(videos, tmp_path_factory):
    """The single-process engine's output, the reference for every Ray run."""
    out = tmp_path_factory.mktemp("serial")
    extract(find_inputs(videos), build_extractors(list(NAMES), random_weights=True), out, progress=False)
    return out


def _spec(out, names=("egemaps",)):
    return WorkerSpec(str(out), tuple(names), random_weights=True)


def _failures(out):
    with open(out / "failures.csv") as fh:
        return {row["item"]: row["error"] for row in csv.DictReader(fh)}


def _assert_same(a, b, names=NAMES, ids="abcd"):
    for name in names:
        fa, fb = FeatureSet.open(a / name), FeatureSet.open(b / name)
        assert sorted(fb.ids()) == sorted(ids)
        for vid in ids:
            x, y = fa[vid], fb[vid]
            np.testing.assert_allclose(y.values, x.values, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(y.timestamps, x.timestamps)
            np.testing.assert_array_equal(y.mask, x.mask)


def test_cli_ray_extract_equals_single_process(cluster, videos, serial, tmp_path):
    out = tmp_path / "feats"
    args = ["extract", str(videos), "--extractors", ",".join(NAMES), "--out", str(out), "--random-weights",
            "--no-progress", "--ray", "--ray-workers", "2"]
    assert main(args) == 1  # broken.mp4 fails, the others are written
    _assert_same(serial, out)
    assert set(_failures(out)) == {"broken [egemaps]", "broken [faceexpressionnet]"}
    assert "broken.mp4" in _failures(out)["broken [egemaps]"]
    assert FeatureSet.open(out / "faceexpressionnet").meta.random_weights
    assert (out / "egemaps" / "index.csv").read_text().count("\n") == 1 + 4


def _crashing_worker(marker_dir, write_log, deaths: int, poison: str | None = None):
    """An ExtractWorker that logs every feature write and kills its process: the first ``deaths`` calls
    (the first after writing its files, the next ones before any work), and every call on ``poison``."""

    class Crashing(ExtractWorker):
        def __init__(self, spec):
            super().__init__(spec)
            for name, fs in self.sets.items():
                fs.write = self._logged(name, fs.write)

        @staticmethod
        def _logged(name, write):
            def wrapped(features):
                path = write(features)
                with open(write_log, "a") as fh:
                    fh.write(f"{name},{features.id},{os.getpid()}\n")
                return path
            return wrapped

        def process(self, item, names):
            if item.id == poison:
                os._exit(3)
            for k in range(deaths):  # claim death k (exclusive create: concurrent workers cannot both take it)
                try:
                    os.close(os.open(os.path.join(marker_dir, f"death{k}"), os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
                if k > 0:
                    os._exit(1)  # dies before touching the video
                super().process(item, names)
                os._exit(2)  # dies after its files were renamed into place, before reporting them
            return super().process(item, names)

    return Crashing


def test_killed_workers_lose_nothing_write_nothing_twice_and_resume_skips(cluster, videos, serial, tmp_path):
    """Two workers die on their first videos (one after its file landed, one before any work) and video c
    kills every worker that takes it: the run completes, each file is written once, c is a failure."""
    marks, log, out = tmp_path / "marks", tmp_path / "writes.log", tmp_path / "feats"
    marks.mkdir()
    worker = _crashing_worker(str(marks), str(log), deaths=2, poison="c")
    report = ray_extract(find_inputs(videos), _spec(out), num_workers=2, max_attempts=3, progress=False,
                         worker_cls=worker)
    assert len(os.listdir(marks)) == 2  # two workers really died on good videos
    writes = [tuple(line.split(",")[:2]) for line in log.read_text().splitlines()]
    assert sorted(writes) == [("egemaps", v) for v in "abd"]  # each file written exactly once
    assert len({line.split(",")[2] for line in log.read_text().splitlines()}) >= 2  # by more than one process
    _assert_same(serial, out, ["egemaps"], ids="abd")
    fails = _failures(out)
    assert set(fails) == {"broken [egemaps]", "c [egemaps]"}
    assert "a worker died on this video 3 times" in fails["c [egemaps]"] and "c.mp4" in fails["c [egemaps]"]
    # the video written just before the first death is found done on its retry, not written again
    assert len(report.written["egemaps"]) == 2
    # resumed: every finished video is skipped (files untouched); c (now harmless) and broken are retried
    stamps = {f: f.stat().st_mtime_ns for f in out.glob("*/*.npz")}
    report = ray_extract(find_inputs(videos), _spec(out), num_workers=1, progress=False)
    assert sorted(report.skipped) == list("abd") and report.written == {"egemaps": ["c"]}
    assert {f: f.stat().st_mtime_ns for f in out.glob("*/*.npz") if f.stem != "c"} == stamps
    _assert_same(serial, out, ["egemaps"])

TINY = ["model.d_model=16", "model.ff_dim=32", "model.proj_dim=16", "model.interaction_heads=4", "data.seq_len=8",
        "train.lr=3e-3", "train.batch_size=32", "train.threads=1", "train.progress=false",
        "train.tensorboard=false", "train.max_epochs=2"]


def test_ablate_on_ray_gives_the_serial_tables_and_ensemble_ready_predictions(cluster, tmp_path, capsys):
    from affectfuse.data.synthetic import make_eri_dataset
    from affectfuse.outputs.eri_csv import read_eri_predictions, validate_eri_predictions

    table = make_eri_dataset(tmp_path / "data", n_videos=80, dims={"audio": 16, "visual": 24},
                             steps={"audio": 8, "visual": 12}, seed=0)
    feats = [f"{m}={tmp_path / 'data' / 'features' / m}" for m in ("audio", "visual")]
    common = ["ablate", "--table", str(table), "--features", *feats, "--seeds", "1", "--sets", "A", "A+V+AV",
              "--tricks", "no_ema", "--set", *TINY]
    assert main([*common, "--out", str(tmp_path / "serial")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    capsys.readouterr()
    md = (tmp_path / "ray" / "ablation.md").read_text()
    assert md == (tmp_path / "serial" / "ablation.md").read_text()  # same runs, same numbers, same table
    assert "| A+V+AV | " in md and "| w/o EMA |" in md
    preds = sorted((tmp_path / "ray").glob("runs/*/val_predictions.csv"))
    assert len(preds) == 3
    for p in preds:
        (ids_a, a), (ids_b, b) = read_eri_predictions(p), read_eri_predictions(
            tmp_path / "serial" / p.relative_to(tmp_path / "ray"))
        assert ids_a == ids_b
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert main(["ensemble", *map(str, preds[:2]), "--out", str(tmp_path / "ens.csv")]) == 0
    validate_eri_predictions(tmp_path / "ens.csv")
    stamp = (tmp_path / "ray" / "runs" / "set-A_seed0" / "best.pt").stat().st_mtime_ns
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray"]) == 0  # finished runs are skipped
    assert (tmp_path / "ray" / "runs" / "set-A_seed0" / "best.pt").stat().st_mtime_ns == stamp


def test_cli_ray_extract_of_photos_uses_the_photo_default_and_the_crop_cache(cluster, shared_data, tmp_path):
    """Photos without --extractors on Ray: the photo default's networks and test-time views, the same
    features as one process; the decoding options (here the crop cache) reach the workers."""
    from PIL import Image

    from affectfuse.features.registry import PHOTO_EXTRACTORS, PHOTO_TTA
    from affectfuse.features.tta import parse_tta

    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(shared_data / "media" / "single_face.jpg") as im:  # smaller: faster detection
        small = im.resize((im.width * 320 // max(im.size), im.height * 320 // max(im.size)))
        small.save(photos / "face.png")
        small.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirrored.png")
    common = [str(photos), "--random-weights", "--no-progress"]
    assert main(["extract", *common, "--out", str(tmp_path / "one"), "--no-crop-cache"]) == 0
    cache = tmp_path / "cache"
    assert main(["extract", *common, "--out", str(tmp_path / "ray"), "--crop-cache", str(cache),
                 "--ray", "--ray-workers", "1"]) == 0
    _assert_same(tmp_path / "one", tmp_path / "ray", PHOTO_EXTRACTORS, ["face", "mirrored"])
    for name, tta in PHOTO_TTA.items():
        assert FeatureSet.open(tmp_path / "ray" / name).meta.extra["tta"] == parse_tta(tta).describe()
    assert any(p.is_file() for p in cache.rglob("*"))   # the workers cut their crops through the cache
