import numpy as np
import pytest

from affectfuse.data.layouts import (LayoutError, VideoTable, canonical_id, detect_layout, load_abaw5,
                                     load_manifest, load_muse, load_table)
from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
from affectfuse.data.tasks import ERI_TASK, EXPR_TASK, task_for_table
from affectfuse.labels import ERI_EMOTIONS, EXPR_CLASSES

ABAW_HEADER = "File_ID,Split,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise,Age,Country"
ABAW_ROWS = [
    "[00001],Train,1,0.25,0.5,0,0.1,0.2,0.3,24,United States",
    "[00002],Train,0.3,1,0.5,0,0.1,0.2,0.3,31,South Africa",
    "[00003],Val,0.3,0.2,1,0,0.1,0.2,0.3,45,United States",
    "[00004],Test,,,,,,,,52,South Africa",
]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_abaw5_real_format(tmp_path):
    csv = _write(tmp_path / "data_info.csv", [ABAW_HEADER, *ABAW_ROWS])
    media = tmp_path / "mp4"
    media.mkdir()
    for i in range(1, 5):
        (media / f"{i:05d}.mp4").write_bytes(b"")
    table = load_abaw5(csv, media_dir=media)
    assert table.ids == ["00001", "00002", "00003", "00004"]
    assert table.file_ids[0] == "[00001]"
    assert table.splits == ["train", "train", "val", "test"]
    assert table.label_names == ERI_EMOTIONS and table.task == "regression"
    assert table.labels.shape == (4, 7) and table.labels.dtype == np.float32
    assert table.labels[0, ERI_EMOTIONS.index("Empathic-Pain")] == pytest.approx(0.1)
    assert np.isnan(table.labels[3]).all()
    assert table.paths[2] == media / "00003.mp4"
    assert table.extra["Country"][1] == "South Africa" and table.rows == [2, 3, 4, 5]
    val = table.subset("Val")
    assert val.ids == ["00003"] and val.labels.shape == (1, 7) and val.rows == [4]
    assert len(table.subset(["train", "val"])) == 3
    assert load_table(csv).ids == table.ids and detect_layout(tmp_path) == "abaw5"
    assert task_for_table(table) is ERI_TASK


def test_abaw5_every_bad_row_in_one_error(tmp_path):
    rows = list(ABAW_ROWS) + [
        "[00002],Val,0.3,1,0.5,0,0.1,0.2,0.3,31,South Africa",        # duplicate id
        "[00006],Holdout,0.3,1,0.5,0,0.1,0.2,0.3,31,South Africa",    # unknown split
        "[00007],Train,0.3,,0.5,0,nan,0.2,0.3,31,South Africa",       # NaN labels in train
        "[00008],Val,0.3,1,0.5,0,0.1,1.7,0.3,31,South Africa",        # out of range
    ]
    csv = _write(tmp_path / "data_info.csv", [ABAW_HEADER, *rows])
    media = tmp_path / "mp4"
    media.mkdir()
    for vid in ("00001", "00002", "00004", "00006", "00007", "00008"):
        (media / f"{vid}.mp4").write_bytes(b"")
    with pytest.raises(LayoutError) as err:
        load_abaw5(csv, media_dir=media)
    lines = err.value.problems
    assert f"{csv}: row 4 (id [00003]): media file not found: {media / '00003.mp4'}" in lines
    assert f"{csv}: row 6 (id [00002]): duplicate id (first in row 3)" in lines
    assert any(line.startswith(f"{csv}: row 7 (id [00006]): unknown split 'Holdout'") for line in lines)
    assert f"{csv}: row 8 (id [00007]): missing or NaN label (Amusement, Empathic-Pain) in a train row" in lines
    assert f"{csv}: row 9 (id [00008]): Fear = 1.7 outside [0, 1]" in lines
    assert len(lines) == 5
    assert str(err.value).count("\n") == 5  # a summary line + one line per problem


def test_abaw5_missing_columns_named(tmp_path):
    csv = _write(tmp_path / "data_info.csv", ["File_ID,Split,Adoration", "[00001],Train,1"])
    with pytest.raises(LayoutError, match="missing emotion column.*Empathic-Pain"):
        load_abaw5(csv)
    with pytest.raises(LayoutError, match="file not found"):
        load_abaw5(tmp_path / "nope.csv")


def test_video_without_features_listed(tmp_path):
    csv = _write(tmp_path / "data_info.csv", [ABAW_HEADER, *ABAW_ROWS])
    table = load_abaw5(csv)
    sets = {}
    for name, have in (("audio", ["00001", "00002", "00003", "00004"]), ("visual", ["00001", "00004"])):
        fs = FeatureSet.create(tmp_path / name, FeatureSetMeta(name, 2))
        for vid in have:
            fs.write(VideoFeatures(vid, np.zeros((3, 2)), np.arange(3) / 2))
        sets[name] = fs
    table.subset("test").check_features(sets)  # complete: no error
    with pytest.raises(LayoutError) as err:
        table.check_features(sets)
    assert err.value.problems == [
        f"{csv}: row 3 (id [00002]): no features in 'visual' ({tmp_path / 'visual'})",
        f"{csv}: row 4 (id [00003]): no features in 'visual' ({tmp_path / 'visual'})",
    ]


def test_muse_layout(tmp_path):
    _write(tmp_path / "labels.csv", [
        "File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise",
        "[00010],1,0.2,0.3,0.4,0.5,0.6,0.7",
        "[00011],0.2,1,0.3,0.4,0.5,0.6,0.7",
    ])
    _write(tmp_path / "partition.csv", ["Id,Partition", "00010,train", "00011,devel", "00012,test"])
    table = load_table(tmp_path)
    assert table.ids == ["00010", "00011", "00012"] and table.splits == ["train", "val", "test"]
    assert table.labels[1, 1] == 1.0 and np.isnan(table.labels[2]).all()
    assert load_table(tmp_path / "labels.csv").ids == table.ids


def test_muse_bad_rows(tmp_path):
    labels = _write(tmp_path / "labels.csv", [
        "File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic Pain,Fear,Surprise",
        "[00010],1,0.2,0.3,0.4,0.5,0.6,0.7",
        "[00099],1,0.2,0.3,0.4,0.5,0.6,0.7",
    ])
    part = _write(tmp_path / "partition.csv", ["Id,Partition", "00010,train", "00011,devel", "00012,final"])
    with pytest.raises(LayoutError) as err:
        load_muse(labels, part)
    assert sorted(err.value.problems) == sorted([
        f"{labels}: row 3 (id [00099]): id not listed in partition.csv",
        f"{part}: row 3 (id 00011): val video has no labels in labels.csv",
        f"{part}: row 4 (id 00012): unknown split 'final' (expected train, devel or test)",
    ])


def test_manifest_regression_and_classification(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "clips" / f"{name}.wav").write_bytes(b"")
    reg = _write(tmp_path / "reg.csv", [
        "path,split,group,valence,arousal,note",
        "clips/a.wav,train,s1,0.5,-0.25,good take",
        "clips/b.wav,val,s2,0.1,0.75,",
        "clips/c.wav,test,s2,,,noisy",
    ])
    table = load_manifest(reg)
    assert table.ids == ["a", "b", "c"] and table.groups == ["s1", "s2", "s2"]
    assert table.label_names == ("valence", "arousal") and table.task == "regression"
    assert table.paths[0] == tmp_path / "clips" / "a.wav" and table.extra["note"][2] == "noisy"
    assert np.isnan(table.labels[2]).all()
    assert task_for_table(table).metric == "mean_pearson"

    cls = _write(tmp_path / "cls.csv", ["id,label,split", "x1,Happiness,train", "x2,Anger,val", "x3,,test"])
    table = load_table(cls)
    assert table.task == "classification" and table.label_names == EXPR_CLASSES
    assert table.labels.tolist() == [4, 1, -1] and table.splits == ["train", "val", "test"]
    spec = task_for_table(table)
    assert spec.kind == "classification" and spec.metric == "macro_f1" and spec != EXPR_TASK

    own = _write(tmp_path / "own.csv", ["id,label", "y1,calm", "y2,tense", "y3,calm"])
    table = load_manifest(own)
    assert table.label_names == ("calm", "tense") and table.labels.tolist() == [0, 1, 0]
    assert table.splits == ["train"] * 3 and table.groups is None


def test_manifest_eri_columns_reordered(tmp_path):
    names = list(reversed(ERI_EMOTIONS))
    csv = _write(tmp_path / "m.csv", ["id,split," + ",".join(names), "v1,train," + ",".join(str(i) for i in range(7))])
    table = load_manifest(csv)
    assert table.label_names == ERI_EMOTIONS
    assert table.labels[0].tolist() == list(range(6, -1, -1))


def test_manifest_bad_rows(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    csv = _write(tmp_path / "m.csv", [
        "path,split,label",
        "a.wav,train,calm",
        "missing.wav,train,calm",
        "a.wav,val,tense",
        "a.wav,eval,",
    ])
    with pytest.raises(LayoutError) as err:
        load_manifest(csv)
    assert err.value.problems == [
        f"{csv}: row 3 (id missing): media file not found: {tmp_path / 'missing.wav'}",
        f"{csv}: row 4 (id a): duplicate id (first in row 2)",
        f"{csv}: row 5 (id a): duplicate id (first in row 2)",
        f"{csv}: row 5 (id a): unknown split 'eval' (expected train, val or test)",
    ]
    with pytest.raises(LayoutError, match="needs a 'path' or an 'id' column"):
        load_manifest(_write(tmp_path / "n.csv", ["file,label", "a,calm"]))


def test_table_helpers():
    assert canonical_id(" [00001] ") == "00001" and canonical_id("video_1") == "video_1"
    table = VideoTable(["a", "b"], ["a", "b"], ["train", "test"], ("x",), "regression", [[1.0], [np.nan]])
    assert table.labels.shape == (2, 1)
    with pytest.raises(ValueError, match="unknown split 'dev2'"):
        table.subset("dev2")
    with pytest.raises(ValueError, match="unknown split"):
        VideoTable(["a"], ["a"], ["holdout"], ("x",), "regression", None)
    with pytest.raises(ValueError, match="unknown dataset layout 'hdf5'"):
        load_table("x.csv", kind="hdf5")


def test_manifest_of_real_crema_d_tables(shared_data, tmp_path):
    """A user's manifest built from the real CREMA-D vote tables: 6 per-clip intensities, actor groups."""
    import pandas as pd

    votes = pd.read_csv(shared_data / "crema-d" / "tabulatedVotes.csv", dtype={"Unnamed: 0": str})
    voice = votes[votes.iloc[:, 0].str.startswith("1")]  # query modality 1 = voice only
    codes = {"A": "Anger", "D": "Disgust", "F": "Fear", "H": "Happy", "N": "Neutral", "S": "Sad"}
    manifest = pd.DataFrame({"id": voice["fileName"], "group": voice["fileName"].str[:4]})
    actor = voice["fileName"].str[:4].astype(int)
    manifest["split"] = np.where(actor <= 1070, "train", np.where(actor <= 1080, "val", "test"))
    for code, name in codes.items():
        share = voice[code] / voice["numResponses"]
        manifest[name] = (share * voice[f"mean{name}Resp"].clip(lower=0) / 100).round(6)
    path = tmp_path / "crema_voice.csv"
    manifest.to_csv(path, index=False)
    table = load_table(path)
    assert len(table) == len(voice) > 7000 and len(set(table.groups)) == 91
    assert table.task == "regression" and table.label_names == tuple(codes.values())
    assert np.isfinite(table.labels).all() and 0 <= table.labels.min() and table.labels.max() <= 1
    assert set(table.subset("val").groups) == {str(a) for a in range(1071, 1081)}

    # the real clips as a classification manifest (path column, emotion code in the file name)
    clips = sorted((shared_data / "crema-d" / "clips").glob("1001_*.flv"))
    lines = ["path,label"] + [f"{c},{codes[c.stem.split('_')[2][0]]}" for c in clips]
    clip_table = load_manifest(_write(tmp_path / "clips.csv", lines))
    assert clip_table.ids == [c.stem for c in clips] and clip_table.paths == clips
    assert clip_table.label_names == tuple(sorted(codes.values()))
