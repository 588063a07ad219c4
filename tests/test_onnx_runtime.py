"""ONNX Runtime for FaceExpressionNet (affectfuse.features.onnx_runtime): the same outputs as PyTorch, an
export reused across processes, a weight change noticed, a broken session never stops extraction."""

import numpy as np
import pytest
import torch

from affectfuse.features.onnx_runtime import onnxruntime_available

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime / onnx not installed")


def _crops(n=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@needs_ort
def test_auto_runtime_gives_pytorchs_outputs(tmp_path, monkeypatch):
    """faceexpressionnet's default runtime is ONNX Runtime; embeddings and probabilities equal PyTorch's to 1e-4,
    with and without test-time views; the export lands in the cache once and a new extractor reuses it."""
    from affectfuse.features.registry import create_extractor

    monkeypatch.setenv("AFFECTFUSE_CACHE_DIR", str(tmp_path))
    for tta in ("none", "flip+scales"):
        ort_ext = create_extractor("faceexpressionnet", tta=tta)
        torch_ext = create_extractor("faceexpressionnet", tta=tta, runtime="torch")
        np.testing.assert_allclose(ort_ext(_crops()), torch_ext(_crops()), atol=1e-4)
        assert ort_ext.runtime_used == ort_ext.describe()["runtime"] == "onnxruntime"
        assert torch_ext.describe()["runtime"] == "torch"
    files = list((tmp_path / "onnx").glob("faceexpressionnet-*.onnx"))
    assert len(files) == 1  # one weight set, one crop size: one export
    stamp = files[0].stat().st_mtime_ns
    create_extractor("faceexpressionnet")(_crops(3))
    assert files[0].stat().st_mtime_ns == stamp


@needs_ort
def test_mobilenetv2_face_runs_onnxruntime_with_the_same_outputs(tmp_path, monkeypatch):
    """mobilenetv2-face (random weights: the same graph) also defaults to ONNX Runtime, equal to PyTorch."""
    from affectfuse.features.registry import create_extractor

    monkeypatch.setenv("AFFECTFUSE_CACHE_DIR", str(tmp_path))
    crops = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    ort_ext = create_extractor("mobilenetv2-face", random_weights=True, tta="none")
    torch_ext = create_extractor("mobilenetv2-face", random_weights=True, tta="none", runtime="torch")
    torch_ext.model.load_state_dict(ort_ext.model.state_dict())
    np.testing.assert_allclose(ort_ext(crops), torch_ext(crops), atol=1e-4)
    assert ort_ext.runtime_used == "onnxruntime"


@needs_ort
def test_deepspectrum_mobilenetv2_runs_onnxruntime_with_the_same_outputs(tmp_path, monkeypatch):
    """deepspectrum-mobilenetv2's CNN (random weights: the same graph) defaults to ONNX Runtime too."""
    from affectfuse.features.registry import create_extractor

    monkeypatch.setenv("AFFECTFUSE_CACHE_DIR", str(tmp_path))
    windows = 0.1 * np.random.default_rng(2).standard_normal((3, 16000)).astype(np.float32)
    ort_ext = create_extractor("deepspectrum-mobilenetv2", random_weights=True)
    torch_ext = create_extractor("deepspectrum-mobilenetv2", random_weights=True, runtime="torch")
    torch_ext.model.load_state_dict(ort_ext.model.state_dict())
    np.testing.assert_allclose(ort_ext(windows), torch_ext(windows), atol=1e-4)
    assert ort_ext.describe()["runtime"] == "onnxruntime" and torch_ext.describe()["runtime"] == "torch"


@needs_ort
def test_changed_weights_are_exported_again(tmp_path, monkeypatch):
    """New weights loaded into the extractor's model (as fine-tuning does) are what ONNX Runtime runs next."""
    from affectfuse.features.registry import create_extractor

    monkeypatch.setenv("AFFECTFUSE_CACHE_DIR", str(tmp_path))
    ext = create_extractor("faceexpressionnet")
    before = ext(_crops(4))
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in ext.model.state_dict().items()}
    ext.model.load_state_dict(state)
    after = ext(_crops(4))
    reference = create_extractor("faceexpressionnet", runtime="torch")
    reference.model.load_state_dict(state)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, reference(_crops(4)), atol=1e-4)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2


@needs_ort
def test_a_failing_session_falls_back_to_pytorch(tmp_path, monkeypatch):
    """An export or session that fails warns once and the extractor carries on in PyTorch."""
    from affectfuse.features import onnx_runtime
    from affectfuse.features.registry import create_extractor

    monkeypatch.setenv("AFFECTFUSE_CACHE_DIR", str(tmp_path))

    def broken(self, x):
        raise RuntimeError("no session")

    monkeypatch.setattr(onnx_runtime.OnnxForward, "__call__", broken)
    ext = create_extractor("faceexpressionnet")
    with pytest.warns(UserWarning, match="ONNX Runtime not used"):
        out = ext(_crops(4))
    assert ext.runtime_used == "torch"
    np.testing.assert_allclose(out, create_extractor("faceexpressionnet", runtime="torch")(_crops(4)), atol=1e-6)


def test_runtime_names_are_checked():
    from affectfuse.features.registry import create_extractor

    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        create_extractor("faceexpressionnet", runtime="tensorrt")


def test_a_mismatching_export_is_refused():
    from affectfuse.features.onnx_runtime import check_outputs

    check_outputs(np.zeros((2, 3)), np.full((2, 3), 5e-5), "net")
    with pytest.raises(RuntimeError, match="net: ONNX Runtime output differs"):
        check_outputs(np.zeros((2, 3)), np.full((2, 3), 1e-3), "net")
