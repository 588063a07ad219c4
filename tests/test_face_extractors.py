"""Every registered face extractor: contract, shapes, determinism, batch consistency, weight loading, errors.

Networks are built with ``random_weights=True`` (recorded in ``describe()``), except where a test makes a
weights file in the upstream naming and checks the numbers against the upstream implementation.
"""

import numpy as np
import pytest
import torch
import torchvision

from affectfuse.features.base import FaceInput
from affectfuse.features.registry import EXTRACTORS, create_extractor
from affectfuse.weights import WeightsNotFoundError

FACE = [name for name in EXTRACTORS if EXTRACTORS[name].split(":")[0].rsplit(".", 1)[1] in
        ("vit", "poster_v2", "inception_resnet", "regnet", "faceapi")]
DIMS = {"vit-b16": 768, "posterv2": 768, "posterv2-vit": 1536, "inception-resnet-v1-vggface2": 512,
        "inception-resnet-v1-casia": 512, "regnet-y": 888, "faceexpressionnet": 263}
FILES = {"vit-b16": "vit_b_16-c867db91.pth", "posterv2": "affectnet-7-model_best.pth",
         "posterv2-vit": "posterv2_vit_joint.pth", "inception-resnet-v1-vggface2": "20180402-114759-vggface2.pt",
         "inception-resnet-v1-casia": "20180408-102900-casia-webface.pt", "regnet-y": "regnet_y_1_6gf-0d7bc02a.pth"}
HEAVY = {"vit-b16", "posterv2-vit", "inception-resnet-v1-vggface2"}  # torchvision ViT, ViT + POSTER V2 and the
# VGGFace2 twin of the CASIA network are each covered elsewhere: one image only (this CPU is small)
CHEAP = {"faceexpressionnet", "regnet-y", "inception-resnet-v1-vggface2", "inception-resnet-v1-casia"}


def crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth random images (low-frequency noise, like faces more than white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small), size=(size, size), mode="bilinear")
    return big.permute(0, 2, 3, 1).round().clamp(0, 255).numpy().astype(np.uint8)


def test_registry_lists_every_face_extractor():
    assert sorted(FACE) == sorted(DIMS)


BIG = {"vit-b16", "posterv2", "posterv2-vit"}  # 17-26 GFLOP per image: marked slow (still run in CI)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in FACE])
def test_contract_shape_determinism_batch_consistency(name):
    torch.manual_seed(0)
    ex = create_extractor(name, random_weights=True)
    assert ex.modality == "face" and ex.dim == DIMS[name] and ex.rate is None
    assert isinstance(ex.input, FaceInput) and ex.input.size in (112, 160, 224)
    meta = ex.describe()
    assert meta["random_weights"] is True and meta["dim"] == ex.dim and meta["parameters"] > 0
    batch = crops(1 if name in HEAVY else 2, ex.input.size)
    out = ex(batch)
    assert out.shape == (len(batch), ex.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.std() > 0
    if name in HEAVY:
        return
    assert not np.allclose(out[0], out[1])  # different faces, different features
    one = ex(batch[1:])
    np.testing.assert_allclose(one[0], out[1], rtol=1e-4, atol=1e-4 * np.abs(out).max())  # batch-independent
    if name in CHEAP:
        np.testing.assert_array_equal(one, ex(batch[1:]))  # deterministic


def test_other_crop_sizes_are_resized_and_bad_crops_rejected():
    ex = create_extractor("inception-resnet-v1-casia", random_weights=True)
    assert ex(crops(1, 200)).shape == (1, 512)
    with pytest.raises(ValueError, match="inception-resnet-v1-casia"):
        ex(np.zeros((1, 160, 160), np.uint8))


@pytest.mark.parametrize("name", [n for n in FACE if n != "faceexpressionnet"])
def test_missing_weights_name_the_file(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("AFFECTFUSE_OFFLINE", "1")
    monkeypatch.delenv("AFFECTFUSE_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        create_extractor(name)
    message = str(err.value)
    assert f"need file {FILES[name]!r}" in message
    assert str(tmp_path / "torch") in message  # says where it looked


def _seeded_like(state: dict, extra: dict | None = None) -> dict:
    """Deterministic weights for every key of ``state`` (+ ``extra`` shapes), generated in sorted key order."""
    shapes = {k: tuple(v.shape) for k, v in state.items()} | (extra or {})
    g = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(shapes):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
            continue
        r = torch.randn(shapes[key], generator=g)
        out[key] = (r.abs() * 0.5 + 0.5 if "running_var" in key else
                    r * 0.1 + 1 if key.endswith("bn.weight") else r * 0.05)
    return out


@pytest.mark.slow
def test_inception_resnet_loads_facenet_pytorch_file(tmp_path):
    """A file with facenet-pytorch's key names (identity head included) loads and reproduces facenet-pytorch."""
    from affectfuse.features.inception_resnet import InceptionResnetV1

    with torch.device("meta"):
        names = InceptionResnetV1().state_dict()
    for key in ("conv2d_1a.conv.weight", "repeat_1.4.branch2.2.bn.running_var", "mixed_6a.branch1.2.conv.weight",
                "mixed_7a.branch2.2.conv.weight",
                "repeat_3.0.conv2d.bias", "block8.branch1.2.bn.bias", "last_linear.weight", "last_bn.running_mean"):
        assert key in names
    assert len(names) == 714  # facenet-pytorch InceptionResnetV1 without ``logits``
    state = _seeded_like(names, {"logits.weight": (8631, 512), "logits.bias": (8631,)})
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    ex = create_extractor("inception-resnet-v1-vggface2", weights=path, fast=False)
    y, x = np.mgrid[0:160, 0:160]
    img = np.stack([(x * 3 + y) % 256, (y * 5 + 60) % 256, (x + y * 2 + 100) % 256], -1).astype(np.uint8)[None]
    out = ex(img)
    # facenet_pytorch.InceptionResnetV1 (2.6.0) with these weights on this image, fixed_image_standardization input
    np.testing.assert_allclose(out[0, [0, 1, 100, 511]], [-0.023141, -0.037347, -0.024294, -0.08657], atol=2e-5)
    np.testing.assert_allclose(out[0].sum(), -0.52824, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert ex.random_weights is False and ex.describe()["weights"]["filename"] == "20180402-114759-vggface2.pt"


def test_torchvision_backbones_load_their_files_and_match_torchvision(tmp_path):
    """RegNetY: torchvision's file format -> same features as torchvision's own model; ViT: timm names map."""
    reference = torchvision.models.regnet_y_1_6gf().eval()
    state = reference.state_dict()
    path = tmp_path / "regnet_y_1_6gf-0d7bc02a.pth"
    torch.save(state, path)
    ex = create_extractor("regnet-y", weights=path, fast=False)
    batch = crops(1, 224)
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(
        1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    reference.fc = torch.nn.Identity()
    with torch.inference_mode():
        np.testing.assert_allclose(ex(batch), reference(x).numpy(), rtol=1e-4, atol=1e-5)

    from affectfuse.features.vit import ViTB16, timm_to_torchvision

    with torch.device("meta"):
        tv = ViTB16().vit.state_dict()
    timm_names = {"cls_token": tv["class_token"], "pos_embed": tv["encoder.pos_embedding"],
                  "patch_embed.proj.weight": tv["conv_proj.weight"], "norm.bias": tv["encoder.ln.bias"],
                  "blocks.11.attn.qkv.weight": tv["encoder.layers.encoder_layer_11.self_attention.in_proj_weight"],
                  "blocks.3.mlp.fc2.bias": tv["encoder.layers.encoder_layer_3.mlp.3.bias"],
                  "head.weight": torch.zeros(7, 768)}
    mapped = timm_to_torchvision(timm_names)
    assert set(mapped) == {"class_token", "encoder.pos_embedding", "conv_proj.weight", "encoder.ln.bias",
                           "encoder.layers.encoder_layer_11.self_attention.in_proj_weight",
                           "encoder.layers.encoder_layer_3.mlp.3.bias", "heads.head.weight"}
    with torch.device("meta"):
        vit = ViTB16()
    with pytest.raises(ValueError, match="vit.pth.*missing"):  # an incomplete fine-tuned file names itself
        vit.load_checkpoint({**timm_names, "head.bias": torch.zeros(7)}, "vit.pth")
    assert vit.head.out_features == 7  # the AffectNet head was picked up


def test_fast_path_is_channels_last_in_float32():
    """``fast`` changes the memory format only: float32 results equal the plain path (bf16: tests/test_precision.py)."""
    ex = create_extractor("faceexpressionnet", fast=False)
    batch = crops(4, 112)
    reference = ex(batch)
    fast = create_extractor("faceexpressionnet")
    assert fast.fast and fast.precision == "fp32" and fast.bf16 is False
    np.testing.assert_allclose(fast(batch), reference, atol=2e-5)
