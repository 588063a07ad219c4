"""eGeMAPS v02 via openSMILE: 88 named functionals per window that measure what they say."""

import numpy as np

from affectfuse.features import create_extractor


def _tone(hz, seconds=1.0, rate=16000):
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 6))).astype(np.float32)


def test_egemaps_shape_names_and_pitch():
    ext = create_extractor("egemaps")
    assert ext.dim == 88 and ext.modality == "audio" and ext.weights is None and ext.rate == 2.0
    meta = ext.describe()
    assert len(meta["columns"]) == 88 and meta["columns"][0].startswith("F0semitoneFrom27.5Hz")
    low, high = _tone(110.0), _tone(220.0)
    feats = ext(np.stack([low, high]))
    assert feats.shape == (2, 88) and feats.dtype == np.float32 and np.isfinite(feats).all()
    f0 = feats[:, meta["columns"].index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    # 110 Hz is 24 semitones above 27.5 Hz, 220 Hz is 36
    np.testing.assert_allclose(f0, [24.0, 36.0], atol=1.0)
    np.testing.assert_array_equal(ext(np.stack([low, high])), feats)  # deterministic


def test_egemaps_accepts_windows_of_different_lengths():
    ext = create_extractor("egemaps", window_s=0.5, hop_s=0.25)
    assert ext.input.window_s == 0.5 and ext.rate == 4.0
    out = ext([_tone(150.0, 0.5), _tone(150.0, 0.2)])
    assert out.shape == (2, 88) and np.isfinite(out).all()
