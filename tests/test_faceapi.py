"""FaceExpressionNet (face-api.js) in PyTorch: parity with the original JavaScript model, weights, labels."""

import json

import numpy as np
import pytest
import torch

from affectfuse.features.faceapi import (COLUMNS, FACE_EXPRESSION_WEIGHTS, FACEAPI_CLASSES, FaceExpressionExtractor,
                                        face_expression_net)
from affectfuse.labels import EXPR_CLASSES
from affectfuse.weights import WeightsNotFoundError, resolve
from repo_scripts import load_script

convert = load_script("scripts/convert_faceapi_weights.py")

# Outputs of the original face-api.js 1.7.15 model (tfjs 4.22.0, CPU backend) on convert.golden_inputs(),
# produced by `python scripts/convert_faceapi_weights.py --golden golden.json`.
GOLDEN_PROBS = np.array([
    [4.4788250e-01, 3.3725854e-02, 3.4281623e-01, 9.4993869e-03, 1.4047945e-03, 9.1067003e-03, 1.5556456e-01],
    [4.7796156e-02, 8.9331204e-01, 5.6993172e-02, 1.8427416e-03, 4.8651946e-06, 1.7817130e-05, 3.3222914e-05],
    [5.3822660e-01, 3.1983656e-01, 1.3993067e-01, 1.9333498e-03, 1.1624400e-05, 5.4096108e-05, 7.1591412e-06],
    [3.3709344e-01, 1.0307697e-01, 5.5923682e-01, 4.6524199e-04, 9.8083321e-05, 1.7549182e-05, 1.1883571e-05]])
GOLDEN_EMB_IDX = [0, 3, 17, 64, 100, 128, 200, 255]
GOLDEN_EMB = np.array([
    [0.000000e+00, 9.378777e-01, 0.000000e+00, 1.110640e-01, 5.259702e-01, 9.214690e-01, 2.077351e-01, 4.870331e-02],
    [3.296114e+00, 5.956598e-01, 0.000000e+00, 8.293833e-02, 1.852685e-03, 2.817701e+00, 5.989623e-02, 2.561589e-01],
    [1.429531e+00, 7.491678e-02, 0.000000e+00, 1.085131e-01, 1.010174e+00, 1.824682e+00, 0.000000e+00, 0.000000e+00],
    [1.313035e+00, 0.000000e+00, 0.000000e+00, 1.124946e-01, 8.961260e-01, 2.676090e-03, 0.000000e+00, 1.235567e-01]])
GOLDEN_EMB_NORM = np.array([6.96056, 14.29808, 15.24653, 13.91727])


@pytest.fixture(scope="module")
def net():
    return face_expression_net()


def test_matches_original_javascript_model(net):
    out = net(convert.golden_inputs())
    assert out.shape == (4, 263) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 256:], GOLDEN_PROBS, atol=2e-6)
    np.testing.assert_allclose(out[:, GOLDEN_EMB_IDX], GOLDEN_EMB, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(out[:, :256], axis=1), GOLDEN_EMB_NORM, rtol=1e-5)


def test_shipped_weights_are_declared_and_checked():
    path = resolve(FACE_EXPRESSION_WEIGHTS)  # sha256-checked
    assert path.name == "face_expression_net.pt"
    assert (path.parent / "face-api-LICENSE.txt").read_text().startswith("MIT License")


def test_converter_dequantises_and_transposes(tmp_path):
    # a 2-tensor manifest: a uint8-quantised depthwise filter and a float32 bias, back to back in one bin
    q = np.arange(3 * 3 * 2, dtype=np.uint8)
    bias = np.array([1.5, -2.25], "<f4")
    manifest = [{"paths": ["face_expression_model.bin"], "weights": [
        {"name": "dense1/conv1/depthwise_filter", "shape": [3, 3, 2, 1], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "dense1/conv1/bias", "shape": [2], "dtype": "float32"}]}]
    (tmp_path / "face_expression_model-weights_manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "face_expression_model.bin").write_bytes(q.tobytes() + bias.tobytes())
    state = convert.read_weights(tmp_path)
    hwc = q.reshape(3, 3, 2).astype(np.float32) * 0.5 - 1.0  # TF layout (H, W, C, 1)
    assert state["dense1.conv1.depthwise.weight"].shape == (2, 1, 3, 3)
    np.testing.assert_allclose(state["dense1.conv1.depthwise.weight"][1, 0].numpy(), hwc[:, :, 1])
    np.testing.assert_allclose(state["dense1.conv1.pointwise.bias"].numpy(), bias)
    (tmp_path / "face_expression_model.bin").write_bytes(q.tobytes())  # truncated bin -> clear error
    with pytest.raises(ValueError):
        convert.read_weights(tmp_path)


def test_expressions_and_abaw_mapping(net):
    probs, names = net.expressions(convert.golden_inputs()[:2])
    assert names == FACEAPI_CLASSES and probs.shape == (2, 7)
    abaw = FaceExpressionExtractor.to_abaw(probs)
    assert abaw.shape == (2, len(EXPR_CLASSES))
    np.testing.assert_allclose(abaw.sum(1), 1.0, atol=1e-5)
    assert np.all(abaw[:, EXPR_CLASSES.index("Other")] == 0)
    np.testing.assert_array_equal(abaw[:, EXPR_CLASSES.index("Happiness")], probs[:, FACEAPI_CLASSES.index("happy")])
    np.testing.assert_array_equal(abaw[:, EXPR_CLASSES.index("Anger")], probs[:, FACEAPI_CLASSES.index("angry")])
    assert COLUMNS[256:] == [f"p_{c}" for c in FACEAPI_CLASSES] and len(COLUMNS) == net.dim


def test_bad_input_and_bad_weights_are_named(net, tmp_path):
    with pytest.raises(ValueError, match="faceexpressionnet.*uint8"):
        net(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        net(np.zeros((1, 112, 100, 3), np.uint8))
    with pytest.raises(WeightsNotFoundError, match="face_expression_net.pt"):
        face_expression_net(weights=tmp_path / "absent.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ValueError, match="wrong.pt"):
        face_expression_net(weights=wrong)


@pytest.mark.slow
def test_real_faces_are_recognised(net, shared_data):
    """Real labelled photographs (whole 350x350 frame -> 112): far above chance, happy faces read as happy."""
    import pandas as pd
    from PIL import Image

    to_faceapi = {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "happiness": "happy",
                  "neutral": "neutral", "sadness": "sad", "surprise": "surprised"}
    labels = pd.read_csv(shared_data / "faces" / "labels.csv")
    labels = labels[labels.emotion.isin(to_faceapi)].groupby("emotion").head(12)
    crops = np.stack([np.asarray(Image.open(shared_data / "faces" / "images" / f).convert("RGB")
                                 .resize((112, 112), Image.BILINEAR)) for f in labels.image])
    probs, names = net.expressions(crops)
    pred = np.array(names)[probs.argmax(1)]
    truth = labels.emotion.map(to_faceapi).to_numpy()
    assert (pred == truth).mean() > 0.35  # chance 1/7
    assert (pred[truth == "happy"] == "happy").mean() >= 0.6
