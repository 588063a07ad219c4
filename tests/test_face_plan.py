"""Face-preprocessing plans: declared by every face network, one cutting function, and the same features from
``affectfuse extract`` and ``affectfuse predict`` for the same video (issue 13 item 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectfuse.faces.align import align_face, template
from affectfuse.faces.plan import CropSpec, FacePlan, crop_faces, crop_specs, recorded_plan, resize_aligned
from affectfuse.features.registry import EXTRACTORS, create_extractor

FACE = ("faceexpressionnet", "inception-resnet-v1-vggface2", "regnet-y", "vit-b16", "posterv2")


@pytest.mark.parametrize("name", FACE)
def test_every_face_network_declares_its_plan(name):
    """The registered networks state crop and tensor preparation in one frozen plan (meta.json records it)."""
    import importlib

    module = importlib.import_module(EXTRACTORS[name].split(":")[0])
    declared = [v for v in vars(module).values() if isinstance(v, FacePlan)]
    assert declared, f"{name}: no FacePlan declared in {module.__name__}"
    if name not in ("faceexpressionnet", "inception-resnet-v1-vggface2"):
        return  # the 224 px ImageNet-normalised networks are built in test_face_extractors
    torch.manual_seed(0)
    ex = create_extractor(name, random_weights=True)
    assert ex.input in declared and ex.input.precision == "fp32"
    assert ex.describe()["input"] == ex.input.describe()
    with pytest.raises(Exception):
        ex.input.size = 64  # frozen
    bf16 = create_extractor(name, random_weights=True, precision="bf16")
    assert bf16.input.precision == "bf16" and bf16.input.crop == ex.input.crop  # one crop, another precision


def test_crop_faces_is_align_face_by_the_plan_and_colour_and_margin_apply():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    marks = template(112, "arcface") * 0.9 + np.array([60, 30])
    plan = FacePlan(112, "mtcnn_box")
    cut = crop_faces(frame, np.stack([marks, marks + 5]), plan)
    assert cut.shape == (2, 112, 112, 3) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut[0], align_face(frame, marks, 112, "mtcnn_box"))
    wide = crop_faces(frame, marks, CropSpec(112, "mtcnn_box", margin=0.2))[0]
    np.testing.assert_array_equal(wide, align_face(frame, marks, 112, "mtcnn_box", 0.2))
    assert not np.array_equal(wide, cut[0])
    grey = crop_faces(frame, marks, FacePlan(112, "mtcnn_box", colour="grey"))[0]
    luma = np.round(cut[0].astype(float) @ [0.299, 0.587, 0.114])
    assert (grey[..., 0] == grey[..., 2]).all() and np.abs(grey[..., 1] - luma).max() <= 1
    assert resize_aligned(frame, FacePlan(64, "arcface", colour="grey")).shape == (64, 64, 3)
    assert crop_specs([plan, plan.crop, FacePlan(112, "mtcnn_box", mean=(0, 0, 0))]) == (plan.crop,)


def test_a_checkpoint_gets_the_crop_its_features_were_cut_with():
    """A checkpoint's feature set records the crop it was extracted from; predict cuts that crop again (with the
    network's normalisation), whatever the network declares now; only another input side is refused."""
    plan = FacePlan(112, "mtcnn_box", margin=0.1, mean=(0.4, 0.4, 0.4), precision="bf16")
    old = recorded_plan({"size": 112, "template": "mtcnn_box"}, plan, "old.pt")   # older meta: no margin, colour
    assert old.crop == CropSpec(112, "mtcnn_box") and old.mean == plan.mean and old.precision == "bf16"
    assert recorded_plan({"size": 112}, plan, "older.pt") is plan   # no template recorded: the declaration
    assert recorded_plan(None, plan, "x") is plan
    assert recorded_plan(plan.describe(), plan, "x") == plan
    grey = recorded_plan(FacePlan(112, "arcface", colour="grey").describe(), plan, "x")
    assert grey.crop == CropSpec(112, "arcface", 0.0, "grey")
    with pytest.raises(ValueError, match=r"ckpt.pt: feature set 'visual' was made from 224 px 'arcface'.*112 px"):
        recorded_plan({"size": 224, "template": "arcface"}, plan, "ckpt.pt: feature set 'visual'")


def test_bad_plans_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="template"):
        FacePlan(112, "dlib")
    with pytest.raises(ValueError, match="colour"):
        FacePlan(112, "arcface", colour="bgr")
    with pytest.raises(ValueError, match="margin"):
        CropSpec(112, "arcface", margin=-0.1)
    with pytest.raises(ValueError, match="precision"):
        FacePlan(112, "arcface", precision="fp16")
    with pytest.raises(ValueError, match="landmarks"):
        crop_faces(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)), FacePlan(112, "arcface"))


# --------------------------------------------------------------------------- extract == predict


def _video(path):
    """2 s at 5 frames/s of the bundled talking face, 240x180 (no downscaling for either detector pass)."""
    import av

    from affectfuse.inference.video import sample_clip_path
    from affectfuse.media.write import write_video

    frames = []
    with av.open(str(sample_clip_path())) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k % 6 == 0:
                frames.append(np.asarray(frame.to_image().resize((240, 180))))
            if len(frames) == 10:
                break
    return write_video(path, np.stack(frames), fps=5)


def _expr_checkpoint(run_dir, sets):
    """A tiny EXPR checkpoint naming ``sets`` (its weights do not matter: only its feature sets are used)."""
    from affectfuse.data.affwild2 import ExprVideo
    from affectfuse.training.expr import ExprTrainConfig, train_expr

    rng, dim = np.random.default_rng(0), sum(d for _, d in sets)

    def video(i, n=12):
        return ExprVideo(f"v{i}", rng.normal(size=(n, dim)).astype(np.float32), np.ones(n, bool),
                         rng.integers(0, 8, n), np.arange(1, n + 1), np.ones(n, bool))
    cfg = ExprTrainConfig(window=8, stride=4, predict_stride=4, epochs=1, batch_size=4,
                          model={"d_model": 16, "n_heads": 2, "n_layers": 1})
    info = {"feature_sets": [{"name": n, "dim": d, "extractor": n} for n, d in sets], "fill": "ffill"}
    train_expr([video(0), video(1)], [video(2)], cfg, run_dir=run_dir, info=info)
    return run_dir / "best.pt"


def _predict_features(options, video):
    """(times (F,) s, features (F, D)) of the frames with a face, as ``affectfuse predict`` computes them."""
    from affectfuse.inference.video import VideoPredictor

    predictor = VideoPredictor(options)
    batches, outputs = [], []
    faces, features = predictor._faces, predictor.face_model.features

    def record_faces(*args, **kwargs):
        for batch in faces(*args, **kwargs):
            batches.append(batch)
            yield batch

    def record_features(crops):
        outputs.append(features(crops))
        return outputs[-1]
    predictor._faces, predictor.face_model.features = record_faces, record_features
    predictor.analyse(video)  # what `affectfuse predict` runs before writing the report
    times = np.concatenate([b.timestamps[b.found] for b in batches if b.found.any()])
    return times, np.concatenate(outputs), predictor


def _common(t_a, v_a, t_b, v_b):
    """Rows of both at the frame times they share (to 1 ms)."""
    key_a, key_b = np.round(t_a * 1000).astype(int), np.round(t_b * 1000).astype(int)
    shared = np.intersect1d(key_a, key_b)
    ia = np.searchsorted(key_a, shared)
    ib = np.searchsorted(key_b, shared)
    return v_a[ia], v_b[ib], len(shared)


@pytest.mark.slow
def test_extract_and_predict_give_the_same_face_features(tmp_path, monkeypatch):
    """The same video through `extract` and through predict's own path (default face model, and an EXPR
    checkpoint running faceexpressionnet + an InceptionResnetV1 with weights made here): same crops, so the
    same features at every frame time both analysed."""
    from affectfuse.data.store import FeatureSet
    from affectfuse.features.inception_resnet import InceptionResnetV1
    from affectfuse.features.pipeline import extract
    from affectfuse.inference.video import PredictOptions

    torch.manual_seed(0)
    weights = tmp_path / "irv1_made_here.pt"  # another name than the release's: loaded as the user's own file
    torch.save(InceptionResnetV1().state_dict(), weights)
    monkeypatch.setenv("AFFECTFUSE_IRV1_VGGFACE2", str(weights))
    video = _video(tmp_path / "talk.mp4")
    names = ("faceexpressionnet", "inception-resnet-v1-vggface2")
    report = extract(str(video), [create_extractor(n) for n in names], tmp_path / "feats", progress=False)
    assert report.ok
    got = {n: FeatureSet.open(tmp_path / "feats" / n)[video.stem] for n in names}
    t_ex = got[names[0]].timestamps[got[names[0]].mask]
    ex_rows = {n: got[n].values[got[n].mask] for n in names}
    assert len(t_ex) >= 8

    t_pr, probs, predictor = _predict_features(PredictOptions(voice_head=None), video)
    fan = predictor.face_model.extractor
    assert predictor.face_plans == (fan.input,) and fan.input.template == "mtcnn_box"
    a, b, n = _common(t_ex, fan.to_abaw(ex_rows[names[0]][:, -7:]), t_pr, probs)
    assert n >= 8
    np.testing.assert_allclose(a, b, atol=1e-5)

    ckpt = _expr_checkpoint(tmp_path / "expr", [(names[0], 263), (names[1], 512)])
    t_pr, feats, _ = _predict_features(PredictOptions(voice_head=None, expr_checkpoint=str(ckpt)), video)
    a, b, n = _common(t_ex, np.concatenate([ex_rows[m] for m in names], axis=1), t_pr, feats)
    assert n >= 8 and a.shape[1] == 263 + 512
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_finetune_cuts_and_caches_the_plan_extract_cuts(shared_data, tmp_path):
    """A network declaring a margin and grey crops: `extract` caches that crop for a photo, `finetune`'s
    prepare_crops finds it (no detection) and would cut the same; a plain crop is another cache entry."""
    from PIL import Image

    from affectfuse.features.face_common import TorchFaceExtractor
    from affectfuse.features.pipeline import extract
    from affectfuse.training.finetune_data import FaceAligner, prepare_crops, read_rgb

    photo = tmp_path / "photos" / "face.png"
    photo.parent.mkdir()
    with Image.open(shared_data / "media" / "single_face.jpg") as im:
        im.resize((im.width * 320 // max(im.size), im.height * 320 // max(im.size))).save(photo)
    plan = FacePlan(96, "mtcnn_box", margin=0.2, colour="grey")
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # (N, 3, 96, 96) -> (N, 12)
    ex = TorchFaceExtractor(net, name="tiny-grey", dim=12, input=plan, weights=None, random_weights=True)
    cache = tmp_path / "cache"
    assert extract(str(photo.parent), [ex], tmp_path / "feats", progress=False, crop_cache=cache).ok
    rep = prepare_crops([photo], 96, "mtcnn", cache, plan=ex.input)
    assert rep.cached == 1 and rep.no_face == 0
    cached = np.asarray(Image.open(rep.files[0]).convert("RGB"))
    np.testing.assert_array_equal(cached, FaceAligner(plan)(read_rgb(photo)))
    assert (cached[..., 0] == cached[..., 1]).all()  # grey in every channel
    plain = prepare_crops([photo], 96, "mtcnn", cache, template="mtcnn_box")
    assert plain.cached == 0 and plain.files[0] != rep.files[0]
