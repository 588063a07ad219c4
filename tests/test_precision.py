"""Precision policy of the face networks: float32 by default on every CPU, bf16 only when asked for or proven.

Each test runs with the CPU-capability detection forced both ways (``AFFECTFUSE_CPU_BF16=0`` and ``=1``), so
both paths are exercised on any machine; bf16 on a CPU without bf16 units is emulated (slow), hence tiny batches.
"""

import numpy as np
import pytest
import torch

from affectfuse.features import face_common
from affectfuse.features.face_common import CPU_BF16_ENV, bf16_supported, cpu_has_bf16, row_cosine
from affectfuse.features.registry import create_extractor

BF16_MIN_COSINE = 0.999  # the bf16 path's stated bound on these crops (0.99987 on real photographs, docs)


def crops(n: int = 4, size: int = 112, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth random images."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.integers(0, 256, (n, 3, 8, 8)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    return big.permute(0, 2, 3, 1).round().clamp(0, 255).numpy().astype(np.uint8)


def reference(ex, batch: np.ndarray) -> np.ndarray:
    """The network in plain float32 (contiguous memory, no autocast): what every default must reproduce."""
    with torch.inference_mode():
        return ex.model(ex.preprocess(batch).contiguous()).float().numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return row_cosine(torch.from_numpy(a), torch.from_numpy(b)).numpy()


@pytest.fixture(params=["0", "1"], ids=["cpu-bf16-off", "cpu-bf16-on"])
def cpu_bf16(request, monkeypatch) -> bool:
    monkeypatch.setenv(CPU_BF16_ENV, request.param)
    return request.param == "1"


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return crops()


def test_env_var_forces_the_cpu_detection_either_way(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_has_bf16() and bf16_supported("cpu")
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not cpu_has_bf16() and not bf16_supported("cpu")
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="AFFECTFUSE_CPU_BF16"):
        cpu_has_bf16()
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        create_extractor("faceexpressionnet", precision="fp16")


def test_default_is_fp32_on_every_cpu(cpu_bf16, batch):
    ex = create_extractor("faceexpressionnet")
    out = ex(batch)
    assert ex.describe()["precision"] == "fp32" and ex.describe()["bf16"] is False
    np.testing.assert_allclose(out, reference(ex, batch), atol=2e-5)  # channels-last only reorders the sums
    assert cosines(out, reference(ex, batch)).min() >= 0.9999
    np.testing.assert_allclose(out[:, 256:].sum(1), 1.0, atol=1e-6)


def test_bf16_path_stays_within_its_bound_and_probabilities_sum_to_one(cpu_bf16, batch):
    ex = create_extractor("faceexpressionnet", precision="bf16")  # asked for: runs whatever the detection says
    out = ex(batch)
    ref = reference(ex, batch)
    assert ex.describe()["bf16"] is True and not np.array_equal(out, ref)  # bf16 really ran
    assert cosines(out, ref).min() >= BF16_MIN_COSINE
    np.testing.assert_allclose(out[:, 256:].sum(1), 1.0, atol=1e-6)  # head + softmax in float32
    assert out.dtype == np.float32


def test_auto_takes_bf16_only_where_detected_and_proven(cpu_bf16, batch, monkeypatch):
    fp32_out = create_extractor("faceexpressionnet")(batch)
    bf16_out = create_extractor("faceexpressionnet", precision="bf16")(batch)
    if not cpu_bf16:  # no bf16 units: fp32 from the start, no check run
        ex = create_extractor("faceexpressionnet", precision="auto")
        assert ex.bf16 is False
        np.testing.assert_array_equal(ex(batch), fp32_out)
        assert "auto_bf16_cosine" not in ex.describe()
        return
    for bound, expect_bf16 in ((2.0, False), (-1.0, True)):  # a bound no batch can meet, one every batch meets
        monkeypatch.setattr(face_common, "AUTO_MIN_COSINE", bound)
        ex = create_extractor("faceexpressionnet", precision="auto")
        assert ex.bf16 is None  # undecided until the first batch
        first = ex(batch)
        meta = ex.describe()
        assert meta["bf16"] is expect_bf16 and meta["precision"] == "auto"
        assert meta["auto_bf16_cosine"] == pytest.approx(cosines(fp32_out, bf16_out).min(), abs=1e-6)
        np.testing.assert_array_equal(first, bf16_out if expect_bf16 else fp32_out)
        np.testing.assert_array_equal(ex(batch), first)  # later batches keep the decision


def test_heads_and_softmax_are_float32_under_autocast():
    from affectfuse.features.faceapi import FaceExpressionNet
    from affectfuse.training.finetune import build_classifier

    torch.manual_seed(0)
    net = FaceExpressionNet().eval()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        logits = build_classifier(create_extractor("faceexpressionnet", random_weights=True),
                                  ["Neutral", "Happiness"])(torch.zeros(2, 3, 112, 112, dtype=torch.uint8))
    assert out.dtype == torch.float32 and logits.dtype == torch.float32
    torch.testing.assert_close(out[:, 256:].sum(1), torch.ones(3), atol=1e-6, rtol=0)


def test_cli_and_predict_record_the_precision(tmp_path):
    import json

    from PIL import Image

    from affectfuse.cli import main
    from affectfuse.inference.models import load_face_model

    photo = tmp_path / "noise.png"
    Image.fromarray(crops(1, 64)[0]).save(photo)
    for flags, precision, bf16 in (([], "fp32", False), (["--precision", "bf16"], "bf16", True)):
        out = tmp_path / precision
        main(["extract", str(photo), "--extractors", "faceexpressionnet", "--out", str(out), "--no-progress", *flags])
        # meta.json is written before any row, whatever the detector makes of the noise image
        extra = json.loads((out / "faceexpressionnet" / "meta.json").read_text())["extra"]
        assert (extra["precision"], extra["bf16"]) == (precision, bf16)
    model = load_face_model(precision="bf16")
    assert (model.describe()["precision"], model.describe()["bf16"]) == ("bf16", True)  # summary.json's entry
