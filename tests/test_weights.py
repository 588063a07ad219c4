import hashlib

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
