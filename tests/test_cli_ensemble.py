import json

import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.cli.ensemble import parse_weights
from affectfuse.inference.ensemble import detect_kind
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.metrics.regression import eri_metrics
from affectfuse.outputs.eri_csv import read_eri_predictions, write_eri_predictions


def _table(tmp_path, labels, splits):
    lines = ["File_ID,Split," + ",".join(ERI_EMOTIONS) + ",Age,Country"]
    for i, (row, split) in enumerate(zip(labels, splits)):
        cells = [""] * 7 if split == "Test" else [f"{v:.6f}" for v in row]
        lines.append(",".join([f"[{i + 1:05d}]", split, *cells, "30", "United States"]))
    path = tmp_path / "data_info.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_files_average_to_their_mean(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = [f"[{i + 1:05d}]" for i in range(12)]
    labels = rng.random((12, 7))
    a = np.clip(labels + rng.normal(0, 0.2, labels.shape), 0, 1)
    b = np.clip(labels + rng.normal(0, 0.2, labels.shape), 0, 1)
    fa = write_eri_predictions(tmp_path / "a.csv", ids, a)
    order = rng.permutation(12)  # the second run wrote its rows in another order, without brackets
    fb = write_eri_predictions(tmp_path / "b.csv", [ids[i].strip("[]") for i in order], b[order])
    assert detect_kind(fa) == "eri"
    splits = ["Train"] * 2 + ["Val"] * 8 + ["Test"] * 2
    table = _table(tmp_path, labels, splits)

    out = tmp_path / "ens.csv"
    assert main(["ensemble", str(fa), str(fb), "--out", str(out), "--table", str(table), "--split", "val"]) == 0
    got_ids, got = read_eri_predictions(out)
    assert got_ids == ids
    np.testing.assert_allclose(got, (np.round(a, 6) + np.round(b, 6)) / 2, atol=2e-6)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    val = slice(2, 10)
    expected = eri_metrics(labels[val], got[val])
    assert line["mean_pearson"] == pytest.approx(expected["mean_pearson"], abs=1e-5)
    assert line["videos"] == 8 and line["split"] == "val"
    assert [m["file"] for m in line["members"]] == [str(fa), str(fb)]
    member_a = eri_metrics(labels[val], a[val])["mean_pearson"]
    assert line["members"][0]["mean_pearson"] == pytest.approx(member_a, abs=1e-5)
    sidecar = json.loads((tmp_path / "ens.csv.json").read_text())
    assert sidecar["provenance"]["weights"] == [0.5, 0.5]

    capsys.readouterr()
    assert main(["ensemble", str(fa), str(fb), "--out", str(out), "--ensemble-weights", "3,1"]) == 0
    np.testing.assert_allclose(read_eri_predictions(out)[1], 0.75 * np.round(a, 6) + 0.25 * np.round(b, 6), atol=2e-6)
    assert "deprecated" not in capsys.readouterr().err
    # the old spelling --weights (now only extractor weights files) still works, after one deprecation line
    old = tmp_path / "old.csv"
    assert main(["ensemble", str(fa), str(fb), "--out", str(old), "--weights", "3,1"]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line] == [
        "affectfuse: `affectfuse ensemble --weights` is deprecated; use `affectfuse ensemble --ensemble-weights` "
        "(same options)"]
    np.testing.assert_array_equal(read_eri_predictions(old)[1], read_eri_predictions(out)[1])


def test_mismatched_ids_and_bad_arguments_are_clear(tmp_path, capsys):
    fa = write_eri_predictions(tmp_path / "a.csv", ["[00001]", "[00002]"], np.full((2, 7), 0.5))
    fb = write_eri_predictions(tmp_path / "b.csv", ["[00001]", "[00003]"], np.full((2, 7), 0.5))
    assert main(["ensemble", str(fa), str(fb), "--out", str(tmp_path / "e.csv")]) == 1
    err = capsys.readouterr().err
    assert f"{fb}: ids differ from {fa}: 1 missing ([00002]), 1 extra (00003)" in err
    assert not (tmp_path / "e.csv").exists()
    with pytest.raises(ValueError, match="gives 2 weights for 3 files"):
        parse_weights("1,2", 3)
    with pytest.raises(ValueError, match="non-negative"):
        parse_weights("1,-1", 2)
    other = tmp_path / "other.csv"
    other.write_text("id,score\nx,1\n")
    with pytest.raises(ValueError, match="unknown prediction file kind"):
        detect_kind(other)
