"""Sequences read from the on-disk cache (issue 16) equal the in-RAM ones bit for bit, the cache is written once
and follows its source files, a broken set leaves none, and ERI training gives the same model either way."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from affectfuse.data import sequence_cache
from affectfuse.data.sequences import input_norm_stats, load_sequences, pooled_statistics
from affectfuse.data.store import FeatureSet, FeatureSetMeta, FeatureStoreError, VideoFeatures
from affectfuse.labels import ERI_EMOTIONS


def _store(root, n=40, dims=None, seed=0):
    """Feature sets of ``n`` videos of 5-40 rows, some masked; a table-like object with labels."""
    rng = np.random.default_rng(seed)
    dims = dims or {"audio": 6, "visual": 9}
    ids = [f"v{i:03d}" for i in range(n)]
    sets = {}
    for name, dim in dims.items():
        fs = FeatureSet.create(root / name, FeatureSetMeta(name, dim, rate=2.0))
        for vid in ids:
            t = int(rng.integers(5, 41))
            fs.write(VideoFeatures(vid, rng.normal(size=(t, dim)), np.arange(t) / 2.0, rng.random(t) > 0.2))
        sets[name] = fs
    table = SimpleNamespace(ids=ids, file_ids=[f"[{v}]" for v in ids], label_names=list(ERI_EMOTIONS),
                            labels=rng.random((n, len(ERI_EMOTIONS))).astype(np.float32))
    return sets, table


def _load(monkeypatch, sets, table, in_ram_mb, **kw):
    monkeypatch.setenv(sequence_cache.IN_RAM_ENV, str(in_ram_mb))
    return load_sequences(table, sets, **kw)


@pytest.mark.parametrize("mode", ["truncate", "resample"])
def test_disk_rows_equal_ram_rows_bit_for_bit(tmp_path, monkeypatch, mode):
    sets, table = _store(tmp_path)
    ram = _load(monkeypatch, sets, table, 1e6, steps=12, mode=mode)
    disk = _load(monkeypatch, sets, table, 0, steps=12, mode=mode)
    assert all(isinstance(v, torch.Tensor) for v in ram.features.values())
    assert all(isinstance(v, sequence_cache.DiskRows) for v in disk.features.values())
    assert disk.dims() == ram.dims() and disk.ids == ram.ids
    index = torch.tensor([5, 6, 7, 0, 39, 5, 12, 13])  # runs, unsorted, a repeat
    for a, b in zip(ram.batch(index), disk.batch(index)):
        if isinstance(a, dict):
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)
    for name in ram.masks:
        assert torch.equal(ram.masks[name], disk.masks[name])
    norm_r, norm_d = input_norm_stats(ram, chunk=7), input_norm_stats(disk, chunk=7)
    assert all(torch.equal(norm_r[k][s], norm_d[k][s]) for k in norm_r for s in ("mean", "std"))
    np.testing.assert_array_equal(pooled_statistics(ram, ["audio", "visual"], norm_r, chunk=7),
                                  pooled_statistics(disk, ["audio", "visual"], norm_d, chunk=7))


def test_cache_is_written_once_and_follows_its_source_files(tmp_path, monkeypatch):
    sets, table = _store(tmp_path, n=12)
    first = _load(monkeypatch, sets, table, 0, steps=8)
    cache_file = first.features["audio"].path
    stamp = cache_file.stat().st_mtime_ns
    again = _load(monkeypatch, sets, table, 0, steps=8)
    assert again.features["audio"].path == cache_file and cache_file.stat().st_mtime_ns == stamp
    # a rewritten feature file: a new cache with the new rows; the store's scan never sees the cache
    sets["audio"].write(VideoFeatures("v003", np.full((8, 6), 7.0), np.arange(8) / 2.0))
    changed = _load(monkeypatch, sets, table, 0, steps=8)
    assert changed.features["audio"].path != cache_file
    assert torch.equal(changed.batch(torch.tensor([3]))[0]["audio"], torch.full((1, 8, 6), 7.0))
    assert len(sets["audio"]) == 12 and sorted(sets["audio"].ids()) == sorted(table.ids)


def test_broken_set_raises_naming_the_file_and_leaves_no_cache(tmp_path, monkeypatch):
    sets, table = _store(tmp_path, n=6)
    sets["visual"].write(VideoFeatures("v002", np.full((4, 9), np.nan), np.arange(4) / 2.0))
    with pytest.raises(FeatureStoreError, match="v002.npz: NaN"):
        _load(monkeypatch, sets, table, 0, steps=8)
    assert not list((tmp_path / "visual" / sequence_cache.CACHE_DIR).glob("*/ids.json"))


def test_bad_limit_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(sequence_cache.IN_RAM_ENV, "lots")
    with pytest.raises(ValueError, match=sequence_cache.IN_RAM_ENV):
        sequence_cache.in_ram_limit_bytes()


def test_eri_training_from_disk_equals_training_in_ram(tmp_path, monkeypatch):
    """Same seed, same config: the model trained from the on-disk rows predicts exactly what the model trained
    from RAM predicts (the data layer hands the loop identical tensors)."""
    from affectfuse.training.config import resolve_config
    from affectfuse.training.eri import fit

    torch.set_num_threads(1)
    sets, table = _store(tmp_path, n=48, dims={"audio": 8, "visual": 12})
    val_table = SimpleNamespace(**{**vars(table), "ids": table.ids[36:], "file_ids": table.file_ids[36:],
                                   "labels": table.labels[36:]})
    train_table = SimpleNamespace(**{**vars(table), "ids": table.ids[:36], "file_ids": table.file_ids[:36],
                                     "labels": table.labels[:36]})
    cfg = ["model.d_model=16", "model.ff_dim=32", "model.proj_dim=16", "data.seq_len=8", "train.batch_size=16",
           "train.max_epochs=2", "train.threads=1", "train.progress=false", "train.tensorboard=false"]
    results = []
    for limit in (1e6, 0):
        train = _load(monkeypatch, sets, train_table, limit, steps=8)
        val = _load(monkeypatch, sets, val_table, limit, steps=8)
        results.append(fit(resolve_config(None, cfg), train, val))
    ram, disk = results
    np.testing.assert_array_equal(ram.val_predictions, disk.val_predictions)
    assert [h["val_mean_pearson"] for h in ram.history] == [h["val_mean_pearson"] for h in disk.history]
