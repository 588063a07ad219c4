import json

import numpy as np
import pytest

from affectfuse.labels import ERI_EMOTIONS, ERI_SCALE
from affectfuse.outputs.eri_csv import read_eri_predictions, validate_eri_predictions, write_eri_predictions

HEADER = "File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise"


def test_roundtrip_with_sidecar(tmp_path):
    ids = ["[00001]", "[00002]", "[00003]"]
    preds = np.random.default_rng(0).random((3, 7))
    preds[0, 0], preds[1, 1] = 1.0 + 1e-9, -1e-9  # float noise at the edges is clipped
    path = write_eri_predictions(tmp_path / "pred.csv", ids, preds, provenance={"run": "runs/a"})
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and lines[1].startswith("[00001],1.000000,") and len(lines) == 4
    got_ids, got = read_eri_predictions(path)
    assert got_ids == ids and got.shape == (3, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.clip(preds, 0, 1), atol=1e-6)
    side = json.loads((tmp_path / "pred.csv.json").read_text())
    assert side["label_names"] == list(ERI_EMOTIONS) and side["scale"] == ERI_SCALE
    assert side["provenance"] == {"run": "runs/a"}
    validate_eri_predictions(path, expected_ids=["00001", "00002", "00003"])  # brackets optional


def test_writer_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="outside \\[0, 1\\] for ids b"):
        write_eri_predictions(tmp_path / "p.csv", ["a", "b"], [[0.5] * 7, [1.2] + [0.5] * 6])
    with pytest.raises(ValueError, match="NaN"):
        write_eri_predictions(tmp_path / "p.csv", ["a", "b"], [[0.5] * 7, [np.nan] * 7])
    with pytest.raises(ValueError, match="duplicate ids: a"):
        write_eri_predictions(tmp_path / "p.csv", ["a", "a"], np.zeros((2, 7)))
    with pytest.raises(ValueError, match="shape"):
        write_eri_predictions(tmp_path / "p.csv", ["a"], np.zeros((1, 6)))
    assert not (tmp_path / "p.csv").exists()


def test_validator_lists_every_problem(tmp_path):
    path = tmp_path / "pred.csv"
    write_eri_predictions(path, ["[00001]", "[00002]"], np.full((2, 7), 0.5))
    with pytest.raises(ValueError, match="1 missing ids: \\[00003\\]"):
        validate_eri_predictions(path, expected_ids=["[00001]", "[00002]", "[00003]"])
    bad = tmp_path / "bad.csv"
    bad.write_text("File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic Pain,Fear,Surprise\n"
                   "[00001],0.1,0.2,0.3,0.4,0.5,0.6,0.7\n"
                   "[00001],0.1,0.2,0.3,0.4,0.5,0.6,0.7\n"
                   "[00002],0.1,nan,0.3,0.4,1.5,0.6,0.7\n"
                   "[00009],0.1,0.2,0.3,0.4,0.5,0.6,0.7\n")
    with pytest.raises(ValueError) as err:
        validate_eri_predictions(bad, expected_ids=["[00001]", "[00002]", "[00003]"])
    msg = str(err.value).splitlines()
    assert any("wrong header" in m for m in msg)
    assert any("row 3 (id [00001]): duplicate id (first in row 2)" in m for m in msg)
    assert any("row 4 (id [00002]): NaN or out of [0, 1]: Amusement='nan', Empathic-Pain='1.5'" in m for m in msg)
    assert any("1 missing ids: [00003]" in m for m in msg)
    assert any("1 unexpected ids: [00009]" in m for m in msg)
    with pytest.raises(ValueError, match="wrong header"):
        read_eri_predictions(bad)
