"""scripts/faces_cv.py: the manifest it writes for the faces photos (ids, labels, person groups)."""

from __future__ import annotations


import pandas as pd
from repo_scripts import load_script


def _script():
    return load_script("scripts/faces_cv.py")


def test_manifest_ids_labels_and_person_groups(tmp_path):
    faces_cv = _script()
    pd.DataFrame({"image": ["John_Ashcroft_0030.jpg", "Dwarakish_106.jpg", "facial-expressions_2868585k.jpg",
                            "Serena_Williams_0001.png"],
                  "emotion": ["anger", "Contempt", "happiness", "sadness"]}).to_csv(tmp_path / "labels.csv",
                                                                                   index=False)
    faces_cv.write_manifest(tmp_path, tmp_path / "m" / "person.csv", person_groups=True)
    faces_cv.write_manifest(tmp_path, tmp_path / "m" / "strat.csv", person_groups=False)
    person, strat = pd.read_csv(tmp_path / "m" / "person.csv"), pd.read_csv(tmp_path / "m" / "strat.csv")
    assert list(person["id"]) == ["John_Ashcroft_0030", "Dwarakish_106", "facial-expressions_2868585k",
                                  "Serena_Williams_0001"]
    assert list(person["group"]) == ["John_Ashcroft", "Dwarakish", "facial-expressions_2868585k", "Serena_Williams"]
    assert list(person["label"]) == ["anger", "contempt", "happiness", "sadness"]
    assert "group" not in strat.columns and list(strat["id"]) == list(person["id"])
