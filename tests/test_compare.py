"""ComParE 2016 via openSMILE: 6,373 named functionals per window, equal to openSMILE's own output."""

import wave

import numpy as np

from affectfuse.features import create_extractor

RATE = 16000


def _tone(hz, seconds=1.0, amplitude=0.3):
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 6))).astype(np.float32)


def _write_wav(path, audio):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def test_compare_equals_opensmile_and_measures_what_it_names():
    import opensmile

    ext = create_extractor("compare-2016")
    assert (ext.name, ext.dim, ext.modality, ext.weights, ext.rate) == ("compare-2016", 6373, "audio", None, 0.5)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert ext.describe()["columns"] == list(smile.feature_names)
    low, sine = _tone(200.0), (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(RATE) / RATE)).astype(np.float32)
    feats = ext(np.stack([low, sine]))
    assert feats.shape == (2, 6373) and feats.dtype == np.float32 and np.isfinite(feats).all()
    for row, window in zip(feats, (low, sine)):
        np.testing.assert_array_equal(row, smile.process_signal(window, RATE).to_numpy(np.float32)[0])
    col = ext.columns.index
    np.testing.assert_allclose(feats[:, col("F0final_sma_amean")], [200.0, 440.0], rtol=0.01)  # Hz
    np.testing.assert_allclose(feats[1, col("pcm_RMSenergy_sma_amean")], 0.5 / np.sqrt(2), rtol=0.01)  # RMS of a sine


def test_compare_windows_of_different_lengths_and_silence():
    ext = create_extractor("compare-2016", window_s=0.5, hop_s=0.25)
    assert ext.input.window_s == 0.5 and ext.rate == 4.0
    out = ext([_tone(150.0, 0.5), _tone(150.0, 0.2), np.zeros(RATE // 2, np.float32)])
    assert out.shape == (3, 6373) and np.isfinite(out).all()
    col = ext.columns.index
    assert out[2, col("pcm_RMSenergy_sma_amean")] == 0 and out[2, col("F0final_sma_amean")] == 0  # silence: no F0


def test_extract_default_windows_per_extractor_and_a_corrupt_file_named(tmp_path):
    """``affectfuse extract`` without --window / --hop: each extractor's own windows (ComParE: a 2 s file is
    one row, the whole utterance; eGeMAPS: 1 s every 0.5 s, 4 rows); a corrupt file fails by name."""
    from affectfuse.cli import main
    from affectfuse.data.store import FeatureSet

    root = tmp_path / "in"
    root.mkdir()
    _write_wav(root / "tone.wav", _tone(220.0, 2.0))
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    out = tmp_path / "feats"
    assert main(["extract", str(root), "--extractors", "compare-2016,egemaps", "--out", str(out),
                 "--no-progress"]) == 1  # the corrupt file fails
    assert "broken.wav" in (out / "failures.csv").read_text()
    compare, egemaps = FeatureSet.open(out / "compare-2016"), FeatureSet.open(out / "egemaps")
    assert compare.meta.dim == 6373 and compare.meta.extra["feature_set"] == "ComParE_2016"
    assert compare.meta.extra["input"]["window_s"] == 4.0 and compare.ids() == ["tone"]
    rows = compare.read("tone")
    assert rows.values.shape == (1, 6373) and np.isfinite(rows.values).all()
    np.testing.assert_allclose(egemaps.read("tone").timestamps, [0.0, 0.5, 1.0, 1.5])
