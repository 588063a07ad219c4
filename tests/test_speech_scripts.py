"""scripts/emodb_loso.py: the manifest it derives from EmoDB file names and the table row it prints."""

from __future__ import annotations


import pytest
from repo_scripts import load_script


def _script():
    return load_script("scripts/emodb_loso.py")


def test_manifest_from_emodb_file_names(tmp_path):
    mod = _script()
    wav = tmp_path / "wav"
    wav.mkdir()
    for name in ("03a01Fa.wav", "16b10Tb.wav", "08a02Wc.wav"):
        (wav / name).write_bytes(b"")
    (wav / "notes.txt").write_text("not audio")
    assert mod.write_manifest(wav, tmp_path / "m.csv") == 3
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "path,label,group"
    assert lines[1:] == [f"{wav.resolve() / '03a01Fa.wav'},happiness,03", f"{wav.resolve() / '08a02Wc.wav'},anger,08",
                         f"{wav.resolve() / '16b10Tb.wav'},sadness,16"]
    with pytest.raises(FileNotFoundError, match="no .wav files"):
        mod.write_manifest(tmp_path / "empty", tmp_path / "x.csv")


def test_table_row_names_both_models_each_speaker_and_the_cost():
    mod = _script()
    cv = {"model": {"uar": 0.81, "macro_f1": 0.8123}, "probe": {"uar": 0.81, "macro_f1": 0.8123},
          "folds": [{"held_out": ["03"], "model_uar": 0.6812}, {"held_out": ["08"], "model_uar": 0.94}]}
    row = mod.table_row("compare-2016+egemaps", cv, {"compare-2016": 0.1, "egemaps": 0.05})
    assert row == "| compare-2016+egemaps | 0.810 | 0.812 | 0.810 | 0.812 | 03 0.681 08 0.940 | 0.150 |"
    assert mod.table_row("egemaps", cv, {"egemaps": None}).endswith("| 03 0.681 08 0.940 |  |")
