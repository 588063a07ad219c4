"""EXPR files: probability CSV round trip and ensembles, submissions and their validator, txt files, PNG."""

import numpy as np
import pytest

from affectfuse.labels import EXPR_CLASSES
from affectfuse.outputs.expr_files import (SUBMISSION_HEADER, SubmissionError, average_probabilities,
                                           ensemble_probability_files, is_probability_file, labels_at,
                                           read_probabilities, validate_submission, validate_txt_folder,
                                           write_probabilities, write_submission, write_txt_folder)
from affectfuse.outputs.plots import plot_confusion


def _probs(seed, n):
    return np.random.default_rng(seed).dirichlet(np.ones(8), size=n)


def test_probability_csv_round_trip_and_ensemble(tmp_path):
    p1 = {"v1": _probs(0, 5), "v2_left": _probs(1, 3)}
    p2 = {"v1": _probs(2, 5), "v2_left": _probs(3, 3)}
    face = {"v1": np.array([1, 1, 0, 1, 1], bool), "v2_left": np.ones(3, bool)}
    a = write_probabilities(tmp_path / "a.csv", p1, face=face)
    b = write_probabilities(tmp_path / "b.csv", p2, face=face)
    header = a.read_text().splitlines()[0]
    assert header == "video,frame,image_location,face," + ",".join(EXPR_CLASSES) + ",predicted"
    assert "v1/00003.jpg" in a.read_text() and is_probability_file(a)
    back = read_probabilities(a)
    assert back["v1"][0].tolist() == [1, 2, 3, 4, 5] and np.allclose(back["v1"][1], p1["v1"], atol=1e-6)
    assert back["v1"][2].tolist() == face["v1"].tolist()
    avg = average_probabilities([a, b])
    assert np.allclose(avg["v2_left"][1], (p1["v2_left"] + p2["v2_left"]) / 2, atol=1e-6)
    out = ensemble_probability_files([a, b], tmp_path / "ens.csv")
    assert np.allclose(read_probabilities(out)["v1"][1], avg["v1"][1], atol=1e-6)
    write_probabilities(tmp_path / "c.csv", {"v1": p1["v1"][:4], "v2_left": p1["v2_left"]})
    with pytest.raises(SubmissionError, match="c.csv: frames of video 'v1'"):
        average_probabilities([a, tmp_path / "c.csv"])


def test_labels_fill_from_nearest_frame():
    assert labels_at([2, 3, 7], [5, 6, 1], [1, 2, 4, 5, 6, 9]).tolist() == [5, 5, 6, 6, 1, 1]


def test_submission_written_for_every_listed_frame_and_validated(tmp_path):
    frame_list = {"v1": np.arange(1, 7), "v2": np.array([1, 2, 3])}
    # v1 has predictions only on face frames 1, 2, 5: frames 3, 4, 6 are filled from neighbours
    preds = {"v1": (np.array([1, 2, 5]), np.array([4, 4, 6])), "v2": (np.arange(1, 4), np.array([0, 7, 3]))}
    sub = write_submission(tmp_path / "sub.txt", preds, frame_list)
    lines = sub.read_text().splitlines()
    assert lines[0] == SUBMISSION_HEADER == "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    assert lines[1:7] == ["v1/00001.jpg,4", "v1/00002.jpg,4", "v1/00003.jpg,4", "v1/00004.jpg,6",
                          "v1/00005.jpg,6", "v1/00006.jpg,6"]
    assert validate_submission(sub, frame_list) == {"rows": 9, "videos": 2}
    with pytest.raises(SubmissionError, match=r"no predictions for 1 listed video\(s\): \['v3'\]"):
        write_submission(tmp_path / "x.txt", preds, {**frame_list, "v3": np.array([1])})


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:3] + ls[4:], r"1 listed frame\(s\) missing, e.g. v1/00003.jpg"),
    (lambda ls: ["image_location,Neutral,Anger"] + ls[1:], "header"),
    (lambda ls: ls[:2] + ["v1/00002.jpg,9"] + ls[3:], "not an integer 0-7"),
    (lambda ls: ls + ["v1/00002.jpg,1"], "duplicate"),
    (lambda ls: ls + ["v9/00001.jpg,1"], "not in the frame list"),
    (lambda ls: ls[:2] + ["v1/00002.jpg 1"] + ls[3:], "malformed"),
])
def test_validator_rejects(tmp_path, edit, message):
    frame_list = {"v1": np.arange(1, 5)}
    sub = write_submission(tmp_path / "sub.txt", {"v1": (np.arange(1, 5), np.array([0, 1, 2, 3]))}, frame_list)
    sub.write_text("\n".join(edit(sub.read_text().splitlines())) + "\n")
    with pytest.raises(SubmissionError, match=message):
        validate_submission(sub, frame_list)


def test_txt_folder(tmp_path):
    preds = {"v1": (np.array([1, 3]), np.array([2, 5]))}
    (path,) = write_txt_folder(tmp_path / "pred", preds, {"v1": 4})
    assert path.read_text().splitlines() == [",".join(EXPR_CLASSES), "2", "2", "5", "5"]
    assert validate_txt_folder(tmp_path / "pred", {"v1": 4}) == {"videos": 1}
    with pytest.raises(SubmissionError, match="3 frame rows, expected 4|v1.txt: 4 frame rows, expected 5"):
        validate_txt_folder(tmp_path / "pred", {"v1": 5})


def test_confusion_png(tmp_path):
    cm = np.diag(np.arange(1, 9)) + 1
    path = plot_confusion(cm, EXPR_CLASSES, tmp_path / "cm.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="class names"):
        plot_confusion(cm, EXPR_CLASSES[:3], tmp_path / "x.png")
