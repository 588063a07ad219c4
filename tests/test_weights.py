import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse.weights import (WeightsChecksumError, WeightsNotFoundError, WeightsSpec, load_state_dict,
                                resolve)


def _save(path, value=1.0):
    torch.save({"w": torch.full((2,), value)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv("AFFECTFUSE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("AFFECTFUSE_OFFLINE", "1")
    (hub / "checkpoints").mkdir(parents=True)
    return hub / "checkpoints"


def test_lookup_order_env_then_dir_then_hub(tmp_path, caches, monkeypatch):
    digest = _save(caches / "net.pt", 1.0)
    spec = WeightsSpec("net", "net.pt", sha256=digest, env_var="NET_WEIGHTS")
    assert resolve(spec) == caches / "net.pt"
    mine = tmp_path / "dir"
    mine.mkdir()
    _save(mine / "net.pt", 1.0)
    monkeypatch.setenv("AFFECTFUSE_WEIGHTS_DIR", str(mine))
    assert resolve(spec) == mine / "net.pt"
    tuned = tmp_path / "tuned.pt"
    _save(tuned, 3.0)  # a user's own file (another name): different hash, still accepted
    monkeypatch.setenv("NET_WEIGHTS", str(tuned))
    assert torch.equal(load_state_dict(spec)["w"], torch.full((2,), 3.0))
    assert resolve(spec, path=tuned) == tuned


def test_corrupt_file_under_the_declared_name_is_named(tmp_path, caches):
    _save(caches / "net.pt", 2.0)
    spec = WeightsSpec("net", "net.pt", sha256="0" * 64)
    with pytest.raises(WeightsChecksumError, match="net.pt: sha256 .* does not match"):
        resolve(spec)
    with pytest.raises(WeightsChecksumError):
        resolve(spec, path=caches / "net.pt")


def test_missing_file_message_says_what_and_where(tmp_path, caches):
    spec = WeightsSpec("net", "net-123.pt", url="https://example.org/net-123.pt", env_var="NET_WEIGHTS")
    with pytest.raises(WeightsNotFoundError) as err:
        resolve(spec)
    msg = str(err.value)
    assert "net-123.pt" in msg and "https://example.org/net-123.pt" in msg
    assert str(caches / "net-123.pt") in msg and "NET_WEIGHTS" in msg
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve(spec, path=tmp_path / "nope.pt")


def test_pickled_objects_are_refused(tmp_path, caches):
    import argparse

    torch.save({"obj": argparse.Namespace(a=1)}, caches / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        load_state_dict(WeightsSpec("evil", "evil.pt"))


# -- provenance: the file actually loaded, never the declared one (issue 12 item 7) ---------------------------
@pytest.fixture(scope="module")
def tuned_faceapi(tmp_path_factory):
    """The shipped faceexpressionnet weights with one tensor changed, saved under a user's own name."""
    from affectfuse.features.faceapi import FACE_EXPRESSION_WEIGHTS

    state = load_state_dict(FACE_EXPRESSION_WEIGHTS)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    path = tmp_path_factory.mktemp("tuned") / "my_tuned_faceapi.pt"
    torch.save(state, path)
    return path


def test_recording_collects_the_resolved_files_and_nests(tmp_path, caches):
    from affectfuse.weights import recording

    _save(caches / "a.pt")
    _save(tmp_path / "b.pt", 2.0)
    with recording() as outer:
        resolve(WeightsSpec("a", "a.pt"))
        with recording() as inner:
            resolve(WeightsSpec("b", "b.pt"), path=tmp_path / "b.pt")
    assert inner == [(tmp_path / "b.pt").resolve()]
    assert outer == [(caches / "a.pt").resolve(), (tmp_path / "b.pt").resolve()]
    resolve(WeightsSpec("a", "a.pt"))  # outside any block: nothing recorded, no error


def test_meta_json_names_the_weights_file_actually_loaded(tuned_faceapi, tmp_path):
    """`extract --weights faceexpressionnet=PATH` records PATH and its sha256 in meta.json (not the shipped
    file's), random weights record "random", and the default records the shipped file with its hash."""
    from affectfuse.cli import main
    from affectfuse.data.store import FeatureSet
    from affectfuse.features.faceapi import FACE_EXPRESSION_WEIGHTS
    from affectfuse.inference.video import sample_clip_path

    import av

    digest = hashlib.sha256(tuned_faceapi.read_bytes()).hexdigest()
    assert digest != FACE_EXPRESSION_WEIGHTS.sha256
    with av.open(str(sample_clip_path())) as c:  # one photo keeps the three extracts short
        next(c.decode(video=0)).to_image().save(tmp_path / "photo.png")
    runs = {"tuned": ["--weights", f"faceexpressionnet={tuned_faceapi}"], "random": ["--random-weights"],
            "default": []}
    for name, flags in runs.items():
        assert main(["extract", str(tmp_path / "photo.png"), "--extractors", "faceexpressionnet",
                     "--out", str(tmp_path / name), "--no-progress", *flags]) == 0
    w = {name: FeatureSet.open(tmp_path / name / "faceexpressionnet").meta.weights for name in runs}
    assert (w["tuned"]["path"], w["tuned"]["filename"], w["tuned"]["sha256"]) == (
        str(tuned_faceapi.resolve()), "my_tuned_faceapi.pt", digest)
    assert w["tuned"]["release"] == {"filename": FACE_EXPRESSION_WEIGHTS.filename,
                                     "sha256": FACE_EXPRESSION_WEIGHTS.sha256}
    assert w["random"]["path"] == w["random"]["filename"] == w["random"]["sha256"] == "random"
    assert w["default"]["sha256"] == FACE_EXPRESSION_WEIGHTS.sha256
    assert w["default"]["filename"] == FACE_EXPRESSION_WEIGHTS.filename
    # what a checkpoint records of its feature sets at training time (ERI: feature_meta; EXPR/classify:
    # describe_sets) is the same file
    from affectfuse.data.manifest_splits import describe_sets
    from affectfuse.training.run import feature_meta

    tuned = FeatureSet.open(tmp_path / "tuned" / "faceexpressionnet")
    assert feature_meta({"visual": tuned})["visual"]["weights"]["sha256"] == digest
    assert describe_sets([tuned])[0]["weights"]["path"] == str(tuned_faceapi.resolve())


def test_random_and_real_features_never_mix(tmp_path):
    """A checkpoint trained on random-weight features refuses real ones (and the reverse), naming both."""
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
    from affectfuse.training.run import inputs_for_checkpoint
    from affectfuse.weights import WeightsMismatchError, check_same_weights

    real = {"random_weights": False, "weights": {"path": "/w/net.pt", "sha256": "ab" * 32}}
    fake = {"random_weights": True, "weights": {"path": "random", "sha256": "random"}}
    check_same_weights(real, dict(real), "ckpt.pt", "set")
    check_same_weights(fake, dict(fake), "ckpt.pt", "set")
    for trained, used in ((real, fake), (fake, real)):
        with pytest.raises(WeightsMismatchError) as err:
            check_same_weights(trained, used, "run/best.pt (feature set 'visual')", "feature set 'visual' (feats/v)")
        msg = str(err.value)
        assert "run/best.pt" in msg and "feats/v" in msg and "random weights" in msg and "/w/net.pt" in msg

    fs = FeatureSet.create(tmp_path / "v", FeatureSetMeta(name="v", dim=2, random_weights=True))
    fs.write(VideoFeatures("a", np.zeros((3, 2), np.float32), np.arange(3.0), np.ones(3, bool)))
    ckpt = {"path": "run/best.pt", "feature_sets": {"visual": {"name": "v", "dim": 2, **real}}}
    with pytest.raises(WeightsMismatchError, match=r"run/best.pt \(feature set 'visual'\).*random"):
        inputs_for_checkpoint(ckpt, {"visual": FeatureSet.open(tmp_path / "v")})


def test_expr_and_classify_checkpoints_refuse_features_of_the_other_kind(tmp_path):
    """The per-frame and per-item commands check the stored feature-set description the same way."""
    from affectfuse.data.manifest_splits import checkpoint_sets, describe_sets
    from affectfuse.data.store import FeatureSet, FeatureSetMeta
    from affectfuse.weights import WeightsMismatchError

    FeatureSet.create(tmp_path / "real", FeatureSetMeta(
        name="f", dim=2, weights={"path": "/w/net.pt", "filename": "net.pt", "sha256": "cd" * 32}))
    fake = FeatureSet.create(tmp_path / "fake", FeatureSetMeta(name="f", dim=2, random_weights=True))
    info = {"feature_sets": describe_sets([fake])}  # what train stored
    assert checkpoint_sets("run/best.pt", info, [tmp_path / "fake"])[0][0].path == fake.path
    with pytest.raises(WeightsMismatchError, match=r"feature set 'f' \(.*real\) was made with weights /w/net.pt"):
        checkpoint_sets("run/best.pt", info, [tmp_path / "real"])


def test_a_feature_set_never_mixes_two_weights_files(tmp_path):
    """Resuming an extraction into a folder made with another weights file is refused, naming both files
    (meta.json could then describe only one of them)."""
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, FeatureStoreError

    def meta(path, digest):
        return FeatureSetMeta(name="f", dim=2, weights={"path": path, "filename": Path(path).name, "sha256": digest})

    FeatureSet.create(tmp_path / "f", meta("/w/shipped.pt", "aa" * 32))
    FeatureSet.create(tmp_path / "f", meta("/elsewhere/shipped.pt", "aa" * 32))  # the same file, moved: fine
    with pytest.raises(FeatureStoreError, match=r"/w/shipped.pt \(sha256 aaaa.*/w/mine.pt \(sha256 bbbb"):
        FeatureSet.create(tmp_path / "f", meta("/w/mine.pt", "bb" * 32))
