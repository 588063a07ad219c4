"""POSTER V2: official checkpoint names load onto our modules and give the official network's outputs.

The golden numbers were produced by a line-by-line transcription of the official ``pyramid_trans_expr2``
(Talented-Q/POSTER_V2, models/PosterV2_7cls.py, ir50.py, mobilefacenet.py, vit_model.py; module names kept)
loaded with :func:`seeded` weights on :func:`golden_input`; they are not produced by our code.
"""

import re

import numpy as np
import pytest
import torch

from affectfuse.features.ir50 import IR50, map_ir50_keys
from affectfuse.features.mobilefacenet import MobileFaceNet, map_mobilefacenet_keys
from affectfuse.features.poster_v2 import PosterV2, load_posterv2, posterv2

GOLDEN_LOGITS = np.array([[4.505906e-02, -4.397035e-02, -3.964791e-02, 1.263153e-05, 9.631171e-02, 7.311041e-02,
                           -2.630270e-02]])
GOLDEN_EMB_IDX = [0, 1, 100, 767]
GOLDEN_EMB = np.array([[0.050553, 0.002019, -0.042676, -0.007296]])
GOLDEN_SCALES = [  # scale i output (N, H, W, C) at [:, 3, 5, :4]
    np.array([[0.030096, 0.03475, -0.047201, -0.027357]]),
    np.array([[-0.076876, -0.173006, 0.12215, -0.146983]]),
    np.array([[-0.077135, -0.078814, -0.099564, -0.255208]]),
]

# our name -> official name (the reverse direction of affectfuse.features.poster_v2.map_official_keys)
_MFN_TOP = {"stem": "conv1", "stem_dw": "conv2_dw", "down2": "conv_23", "down3": "conv_34", "down4": "conv_45",
            "expand": "conv_6_sep", "head": "output_layer"}
_MFN_IN = {"expand": "conv", "depthwise": "conv_dw", "project": "project", "dw": "conv_6_dw"}
_REVERSE = [
    (r"^image_backbone\.stem_(conv|bn|prelu)\.",
     lambda m: f"ir_back.input_layer.{['conv', 'bn', 'prelu'].index(m[1])}."),
    (r"^image_backbone\.stage(\d)\.(\d+)\.(bn1|conv1|prelu|conv2|bn2)\.",
     lambda m: f"ir_back.body{m[1]}.{m[2]}.res_layer.{['bn1', 'conv1', 'prelu', 'conv2', 'bn2'].index(m[3])}."),
    (r"^image_backbone\.stage(\d)\.(\d+)\.down_(conv|bn)\.",
     lambda m: f"ir_back.body{m[1]}.{m[2]}.shortcut_layer.{0 if m[3] == 'conv' else 1}."),
    (r"^landmark_backbone\.stage(\d)\.(\d+)\.(expand|depthwise|project)\.",
     lambda m: f"face_landback.conv_{m[1]}.model.{m[2]}.{_MFN_IN[m[3]]}."),
    (r"^landmark_backbone\.(down\d|head)\.(expand|depthwise|project|dw)\.",
     lambda m: f"face_landback.{_MFN_TOP[m[1]]}.{_MFN_IN[m[2]]}."),
    (r"^landmark_backbone\.(\w+)\.", lambda m: f"face_landback.{_MFN_TOP[m[1]]}."),
    (r"^landmark_proj\.", lambda m: "last_face_conv."),
    (r"^scales\.(\d)\.down\.", lambda m: f"conv{int(m[1]) + 1}."),
    (r"^scales\.(\d)\.norm\.", lambda m: f"window{int(m[1]) + 1}.norm."),
    (r"^scales\.(\d)\.kv\.", lambda m: f"attn{int(m[1]) + 1}.qkv."),
    (r"^scales\.(\d)\.proj\.", lambda m: f"attn{int(m[1]) + 1}.proj."),
    (r"^scales\.(\d)\.rel_bias$", lambda m: f"attn{int(m[1]) + 1}.relative_position_bias_table"),
    (r"^scales\.(\d)\.(gamma\d)$", lambda m: f"ffn{int(m[1]) + 1}.{m[2]}"),
    (r"^scales\.(\d)\.mlp_norm\.", lambda m: f"ffn{int(m[1]) + 1}.norm."),
    (r"^scales\.(\d)\.mlp\.", lambda m: f"ffn{int(m[1]) + 1}.mlp."),
    (r"^to_tokens\.0\.", lambda m: "embed_q."),
    (r"^to_tokens\.1\.", lambda m: "embed_k."),
    (r"^to_tokens\.2\.0\.", lambda m: "embed_v.proj."),
    (r"^fuser\.blocks\.(\d)\.(qkv|proj)\.", lambda m: f"VIT.blocks.{m[1]}.attn.{m[2]}."),
    (r"^fuser\.blocks\.(\d)\.(fc\d)\.", lambda m: f"VIT.blocks.{m[1]}.mlp.{m[2]}."),
    (r"^fuser\.se_fc(\d)\.", lambda m: f"VIT.se_block.linear{m[1]}."),
    (r"^fuser\.", lambda m: "VIT."),
    (r"^head\.", lambda m: "VIT.head.linear."),
]


def official_shapes() -> dict:
    """Every key of the official model's state dict with its shape (unused parts included)."""
    shapes = {}
    with torch.device("meta"):
        ours = PosterV2().state_dict()
    for key, value in ours.items():
        for pattern, repl in _REVERSE:
            m = re.match(pattern, key)
            if m:
                key = repl(m) + key[m.end():]
                break
        shapes[key] = (tuple(value.shape), value.dtype)
    f = torch.float32
    bn = lambda p, n: {f"{p}.{s}": ((n,), f) for s in ("weight", "bias", "running_mean", "running_var")} | {
        f"{p}.num_batches_tracked": ((), torch.int64)}
    extra = {"VIT.patch_embed.proj.weight": ((768, 256, 1, 1), f), "VIT.patch_embed.proj.bias": ((768,), f),
             "VIT.CON1.weight": ((768, 256, 1, 1), f), "VIT.IRLinear1.weight": ((768, 1024), f),
             "VIT.IRLinear1.bias": ((768,), f), "VIT.IRLinear2.weight": ((512, 768), f),
             "VIT.IRLinear2.bias": ((512,), f), "VIT.eca_block.conv.weight": ((1, 1, 5), f),
             "ir_back.output_layer.3.weight": ((512, 25088), f), "ir_back.output_layer.3.bias": ((512,), f),
             **bn("ir_back.output_layer.0", 512), **bn("ir_back.output_layer.4", 512)}
    for i in range(2):
        extra |= {f"VIT.blocks.{i}.conv.weight": ((148, 148, 1), f), f"VIT.blocks.{i}.conv.bias": ((148,), f)}
    for i, w in enumerate((28, 14, 7), start=1):
        extra[f"attn{i}.relative_position_index"] = ((w * w, w * w), torch.int64)
    return shapes | extra


UNUSED = re.compile(r"^(VIT\.(patch_embed|CON1|IRLinear\d|eca_block)|VIT\.blocks\.\d\.conv|ir_back\.output_layer)\.")


def seeded(shapes: dict) -> dict:
    """Deterministic weights in sorted key order (BN near identity, fan-in scaled convs/linears); the parts
    the official forward never uses are zeros."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(shapes):
        shape, dtype = shapes[key]
        if not dtype.is_floating_point or UNUSED.match(key):
            out[key] = torch.zeros(shape, dtype=dtype)
            continue
        r = torch.randn(shape, generator=g)
        if "running_var" in key:
            r = r.abs() * 0.1 + 1
        elif "running_mean" in key:
            r = r * 0.05
        elif key.endswith("bn.weight") or "gamma" in key:
            r = r * 0.1 + 1
        elif len(shape) > 1:
            r = r / np.sqrt(np.prod(shape[1:]))
        else:
            r = r * 0.05
        out[key] = r
    for i, w in enumerate((28, 14, 7), start=1):  # the official buffer holds the real index
        idx = torch.arange(w)
        yy, xx = torch.meshgrid(idx, idx, indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()
        out[f"attn{i}.relative_position_index"] = (yy[:, None] - yy[None] + w - 1) * (2 * w - 1) + (
            xx[:, None] - xx[None] + w - 1)
    return out


def golden_input() -> torch.Tensor:
    """(1, 3, 224, 224) ImageNet-normalised test pattern."""
    y, x = np.mgrid[0:224, 0:224]
    img = np.stack([(x + 2 * y) % 256, (3 * x + y + 50) % 256, (x * y // 7) % 256], -1).astype(np.float32) / 255
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    t = (t - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return t


@pytest.mark.slow
def test_official_checkpoint_maps_and_matches_official_outputs():
    shapes = official_shapes()
    assert len(shapes) == 747  # keys of the official pyramid_trans_expr2 state dict
    model = PosterV2().eval()
    load_posterv2(model, seeded(shapes), "official.pth")
    scale_out = {}
    for i, scale in enumerate(model.scales):
        scale.register_forward_hook(lambda m, a, o, i=i: scale_out.__setitem__(i, o))
    with torch.inference_mode():
        emb = model(golden_input())
        logits = model.head(emb)
    assert emb.shape == (1, 768)
    np.testing.assert_allclose(logits.numpy(), GOLDEN_LOGITS, atol=3e-6)
    np.testing.assert_allclose(emb[:, GOLDEN_EMB_IDX].numpy(), GOLDEN_EMB, atol=3e-6)
    for i, expected in enumerate(GOLDEN_SCALES):
        np.testing.assert_allclose(scale_out[i][:, 3, 5, :4].numpy(), expected, atol=3e-6)


def test_pretrained_backbone_files_map():
    """ir50.pth (face.evoLVe single ``body.<j>``) and mobilefacenet_model_best.pth.tar namings load strictly."""
    ir = IR50()
    evolve = {}
    for key, value in ir.state_dict().items():  # our names -> face.evoLVe names, plus stage 4 / head to drop
        m = re.match(r"stage(\d)\.(\d+)\.(.+)", key)
        if m:
            j = (0, 3, 7)[int(m[1]) - 1] + int(m[2])
            part = {"bn1": "res_layer.0", "conv1": "res_layer.1", "prelu": "res_layer.2", "conv2": "res_layer.3",
                    "bn2": "res_layer.4", "down_conv": "shortcut_layer.0", "down_bn": "shortcut_layer.1"}
            head, _, tail = m[3].partition(".")
            key = f"body.{j}.{part[head]}.{tail}"
        else:
            key = re.sub(r"^stem_(conv|bn|prelu)", lambda n: f"input_layer.{['conv', 'bn', 'prelu'].index(n[1])}", key)
        evolve[key] = value + 1.0 if value.dtype.is_floating_point else value
    evolve["body.22.res_layer.1.weight"] = torch.zeros(512, 512, 3, 3)
    evolve["output_layer.3.weight"] = torch.zeros(512, 25088)
    fresh = IR50()
    fresh.load_state_dict(map_ir50_keys(evolve), strict=True)
    assert torch.equal(fresh.stage3[13].conv2.weight, ir.stage3[13].conv2.weight + 1)

    mfn = MobileFaceNet()
    official = {re.sub(r"^stage(\d)\.(\d+)\.(expand|depthwise|project)",
                       lambda m: f"conv_{m[1]}.model.{m[2]}.{_MFN_IN[m[3]]}", k): v
                for k, v in mfn.state_dict().items()}
    official = {re.sub(r"^(down\d|head)\.(expand|depthwise|project|dw)",
                       lambda m: f"{_MFN_TOP[m[1]]}.{_MFN_IN[m[2]]}", k): v for k, v in official.items()}
    official = {re.sub(r"^(stem_dw|stem|expand|head)\.", lambda m: f"{_MFN_TOP[m[1]]}.", k): v
                for k, v in official.items()}
    assert "conv_4.model.5.conv_dw.prelu.weight" in official and "output_layer.conv_6_dw.bn.weight" in official
    MobileFaceNet().load_state_dict(map_mobilefacenet_keys(official), strict=True)


def test_wrapped_checkpoint_file_and_wrong_file_errors(tmp_path):
    """A training checkpoint {'state_dict': {'module.' + key}} is unwrapped; an incomplete one names the file."""
    partial = {"module.VIT.cls_token": torch.zeros(1, 1, 768), "module.VIT.head.linear.weight": torch.zeros(7, 768)}
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": partial, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"model_best\.pth.*missing"):
        posterv2(weights=path)


class _FixedKeep(torch.nn.Module):
    """Stands in for DropPath: multiplies the i-th residual branch by ``keeps[i]`` (0 = dropped, 1/(1-p) = kept)."""

    def __init__(self, keeps):
        super().__init__()
        self.keeps, self.i = list(keeps), 0

    def forward(self, x):
        k = self.keeps[self.i]
        self.i += 1
        return x * k


def test_droppath_rates_follow_the_reference_and_keep_checkpoint_keys():
    model = PosterV2()
    assert [s.drop_path.p for s in model.scales] == [0.0, 0.125, 0.25]  # linspace(0, 0.5, 5)[:3]
    assert not any("drop_path" in k for k in model.state_dict())  # no parameters: official keys unchanged


def test_droppath_is_identity_in_eval_and_drops_whole_samples_in_training():
    from affectfuse.features.poster_v2 import WindowCrossAttention

    torch.manual_seed(0)
    p = 0.5
    block = WindowCrossAttention(8, 2, 2, layer_scale=1.0, drop_path=p)
    plain = WindowCrossAttention(8, 2, 2, layer_scale=1.0, drop_path=0.0)
    plain.load_state_dict(block.state_dict())
    x, q = torch.randn(64, 8, 8, 8), torch.randn(64, 8, 2, 2)  # (N, C, H, W) image, (N, C, w, w) landmark queries
    block.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(block(x, q), plain(x, q))  # eval: no stochastic depth at all
        combos = {}
        for k1 in (0.0, 1 / (1 - p)):
            for k2 in (0.0, 1 / (1 - p)):
                plain.drop_path = _FixedKeep([k1, k2])
                combos[(k1 > 0, k2 > 0)] = plain(x, q)
        block.train()
        torch.manual_seed(1)
        out = block(x, q)
        torch.manual_seed(1)
        assert torch.equal(block(x, q), out)  # seeded: reproducible
        torch.manual_seed(2)
        assert not torch.equal(block(x, q), out)  # another draw, another set of dropped samples
    seen = set()
    for i in range(len(x)):  # each sample keeps or drops each residual branch whole, kept ones scaled by 1/(1-p)
        match = [c for c, y in combos.items() if torch.allclose(out[i], y[i], atol=1e-5)]
        assert len(match) == 1, i
        seen.add(match[0])
    assert len(seen) == 4  # all four keep/drop combinations occur among 64 samples at p = 0.5

