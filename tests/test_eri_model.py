import numpy as np
import pytest
import torch

from affectfuse.data.sequences import fix_length
from affectfuse.models.eri import ERIFusion, ERIFusionArgs, count_parameters, create_eri_model, parse_modality_set

TINY = dict(d_model=16, ff_dim=32, proj_dim=8, modality_heads=2, interaction_heads=4)
DIMS = {"audio": 12, "visual": 20}
SETS = {"A": (["audio"], False), "V": (["visual"], False), "A+V": (["audio", "visual"], False),
        "A+V+AV": (["audio", "visual"], True)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the shared 2-core machine: more threads only spin


def _inputs(b=5, t=30, dims=DIMS, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {k: torch.randn(b, t, d, generator=g) for k, d in dims.items()}
    masks = {k: torch.ones(b, t, dtype=torch.bool) for k in dims}
    return feats, masks


def _model(spec: str, dims=DIMS, **kw):
    mods, inter = parse_modality_set(spec, list(dims))
    torch.manual_seed(0)
    return ERIFusion(input_dims={k: dims[k] for k in mods}, interaction=inter, **{**TINY, **kw})


@pytest.mark.parametrize("spec", list(SETS))
def test_output_shapes_for_the_four_modality_sets(spec):
    assert parse_modality_set(spec, list(DIMS)) == SETS[spec]
    model = _model(spec).eval()
    feats, masks = _inputs()
    out = model(feats, masks)
    assert out["intensity"].shape == (5, 7) and out["logits"].shape == (5, 7)
    assert torch.isfinite(out["logits"]).all()
    assert ((out["intensity"] > 0) & (out["intensity"] < 1)).all()
    assert (model.interaction is not None) == SETS[spec][1]


def test_paper_configuration_parameter_count():
    # d=256, audio 1024 (DeepSpectrum), visual 1536 (PosterV2+ViT), A+V+AV; the figure is in docs/eri.md
    model = ERIFusion(ERIFusionArgs())
    assert count_parameters(model) == 11_957_262
    parts = {name: count_parameters(m) for name, m in model.named_children()}
    assert parts["embed"] == 3_803_648 and parts["encoders"] == 3_156_480 and parts["interaction"] == 4_203_008


def test_padded_steps_and_masked_rows_do_not_change_the_output():
    model = _model("A+V+AV").eval()
    feats, masks = _inputs(b=3)
    masks["audio"][:, 20:] = False
    masks["visual"][0, 5:9] = False
    ref = model(feats, masks)["intensity"]
    noisy = {k: v.clone() for k, v in feats.items()}
    noisy["audio"][:, 20:] = 1e3 * torch.randn(3, 10, DIMS["audio"])
    noisy["visual"][0, 5:9] = -50.0
    torch.testing.assert_close(model(noisy, masks)["intensity"], ref)
    # a valid step does change it
    noisy["audio"][:, 0] += 5.0
    assert not torch.allclose(model(noisy, masks)["intensity"], ref)


def test_video_with_no_valid_step_gives_finite_output():
    model = _model("A+V+AV").eval()
    feats, masks = _inputs(b=2)
    masks["visual"][1] = False            # no face anywhere in video 1
    out = model(feats, masks)
    assert torch.isfinite(out["intensity"]).all()


def test_gradient_reaches_every_parameter_and_is_deterministic():
    model = _model("A+V+AV")
    feats, masks = _inputs(b=4)
    torch.manual_seed(1)
    out = model(feats, masks)
    (out["intensity"].sum() + out["logits"].sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing
    model.eval()
    a, b = model(feats, masks)["intensity"], model(feats, masks)["intensity"]
    assert torch.equal(a, b)


def test_any_number_of_modalities_and_dims():
    dims = {"audio": 7, "face": 9, "text": 5}
    mods, inter = parse_modality_set("audio+face+text+X", list(dims))
    assert mods == ["audio", "face", "text"] and inter
    model = create_eri_model("eri_fusion", {"input_dims": dims, "num_outputs": 3, "d_model": 12, "ff_dim": 16,
                                            "proj_dim": 4, "interaction_heads": 4})
    feats, masks = _inputs(b=2, t=11, dims=dims)
    assert model(feats, masks)["intensity"].shape == (2, 3)
    assert parse_modality_set("all", ["audio"]) == (["audio"], False)


def test_bad_modality_sets_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="no feature set named 'visual'"):
        parse_modality_set("A+V", ["audio"])
    with pytest.raises(ValueError, match="needs >= 2 modalities"):
        parse_modality_set("A+AV", ["audio", "visual"])
    with pytest.raises(KeyError, match="unknown ERI model 'nope'; valid: eri_authors, eri_fusion"):
        create_eri_model("nope", {})
    model = _model("A+V")
    feats, masks = _inputs()
    del feats["visual"]
    with pytest.raises(KeyError, match="missing \\['visual'\\]"):
        model(feats, masks)


def test_fix_length_truncate_pad_and_resample():
    values = np.arange(12, dtype=np.float32).reshape(6, 2)         # rows [0,1], [2,3], ...
    mask = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    out, m = fix_length(values, mask, 4, "truncate")
    np.testing.assert_array_equal(out, [[0, 1], [2, 3], [0, 0], [6, 7]])
    np.testing.assert_array_equal(m, [1, 1, 0, 1])
    out, m = fix_length(values, mask, 8, "truncate")                 # zero padding, masked
    assert out.shape == (8, 2) and not m[6:].any() and (out[6:] == 0).all()
    out, m = fix_length(values, mask, 3, "resample")                 # segments {0,1} {2,3} {4,5}
    np.testing.assert_allclose(out, [[1, 2], [6, 7], [9, 10]])       # masked row 2 left out of segment 2
    assert m.all()
    out, m = fix_length(values, np.array([1, 1, 0, 0, 1, 1], bool), 3, "resample")
    assert not m[1] and (out[1] == 0).all()                          # a segment with no valid row is masked
    np.testing.assert_array_equal(fix_length(values, mask, 8, "resample")[0], fix_length(values, mask, 8)[0])
    with pytest.raises(ValueError, match="unknown sequence mode"):
        fix_length(values, mask, 3, "stretch")


def test_burst_pooling_reads_the_sign_and_size_of_a_short_burst_and_ignores_invalid_steps():
    from affectfuse.models.blocks import BurstPooling

    pool = BurstPooling(2, tau=0.1)
    scores = 0.05 * torch.randn(3, 30, 2, generator=torch.Generator().manual_seed(0))
    scores[0, 7, 0], scores[0, 20, 1] = 4.0, -4.0                     # one burst up, one down
    scores[2] = 1.5                                                   # constant: nothing stands out
    mask = torch.ones(3, 30, dtype=torch.bool)
    mask[1, 10:] = False
    scores[1, 12] = 100.0                                             # an invalid step must not count
    out = pool(scores, mask)
    assert out[0, 0] > 3.5 and out[0, 1] < -3.5
    assert out[1].abs().max() < 0.2 and out[2].abs().max() < 1e-6
    wide = BurstPooling(2, tau=1e4)(scores, mask)                     # high temperature: the mean, burst 0
    assert wide.abs().max() < 0.01
    assert torch.isfinite(pool(scores, torch.zeros(3, 30, dtype=torch.bool))).all()


def test_burst_path_starts_at_zero_and_old_checkpoints_rebuild_without_it():
    model = _model("A+V+AV", pooled_skip=True).eval()
    feats, masks = _inputs(b=4)
    assert model.burst is not None and torch.equal(model.burst_gain, torch.zeros(2, 7))
    args = model.args.to_dict()
    del args["burst_pooling"]                                         # a checkpoint written before the field
    old = create_eri_model("eri_fusion", args)
    assert old.burst is None
    missing, unexpected = old.load_state_dict(model.state_dict(), strict=False)
    assert not missing and set(unexpected) == {k for k in model.state_dict() if k.startswith("burst")}
    old.eval()
    torch.testing.assert_close(old(feats, masks)["intensity"], model(feats, masks)["intensity"])
    assert _model("A+V+AV", pooled_skip=False).burst is None          # the burst reads the probe's path
