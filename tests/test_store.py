import numpy as np
import pytest

from affectfuse.data.store import (FeatureSet, FeatureSetMeta, FeatureStoreError, VideoFeatures,
                                   read_muse_csv)


def _vf(vid, steps=5, dim=3):
    values = np.arange(steps * dim, dtype=np.float32).reshape(steps, dim)
    return VideoFeatures(vid, values, np.arange(steps) * 0.5, np.arange(steps) % 2 == 0)


def test_roundtrip_and_index(tmp_path):
    fs = FeatureSet.create(tmp_path / "fs", FeatureSetMeta("toy", 3, rate=2.0, extractor="toy"))
    fs.write(_vf("[00001]"))
    fs.write(_vf("video10_1_left", steps=7))
    again = FeatureSet.open(tmp_path / "fs")
    assert again.meta.dim == 3 and again.meta.rate == 2.0
    assert again.ids() == ["[00001]", "video10_1_left"]
    vf = again["[00001]"]
    np.testing.assert_array_equal(vf.values, _vf("x").values)
    np.testing.assert_array_equal(vf.mask, [True, False, True, False, True])
    index = (again.write_index()).read_text().splitlines()
    assert index[0] == "id,file,steps,start_s,end_s,valid_fraction"
    assert index[2].startswith("video10_1_left,video10_1_left.npz,7,0.000,3.000")


def test_dim_mismatch_and_missing_are_clear(tmp_path):
    fs = FeatureSet.create(tmp_path / "fs", FeatureSetMeta("toy", 4))
    with pytest.raises(FeatureStoreError, match="dim 3"):
        fs.write(_vf("a"))
    with pytest.raises(FeatureStoreError, match="no features for video 'zzz'"):
        fs.read("zzz")
    (tmp_path / "fs" / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureStoreError, match="broken.npz"):
        fs.ids()
    with pytest.raises(FeatureStoreError, match="refusing to mix"):
        FeatureSet.create(tmp_path / "fs", FeatureSetMeta("toy", 5))


def test_features_of_another_face_crop_are_not_mixed_in(tmp_path):
    """A face feature set records its crop; more features of the same network cut another way (a declared
    margin that changed) are refused, the same crop (an older file without margin: 0) is accepted."""
    def meta(**crop):
        return FeatureSetMeta("fex", 3, extractor="faceexpressionnet", modality="face", extra={"input": crop})

    FeatureSet.create(tmp_path / "fs", meta(size=112, template="mtcnn_box"))
    FeatureSet.create(tmp_path / "fs", meta(size=112, template="mtcnn_box", margin=0.0, colour="rgb"))
    with pytest.raises(FeatureStoreError, match=r"112 px 'mtcnn_box' face crops; refusing to mix.*mtcnn_box\+m0\.1"):
        FeatureSet.create(tmp_path / "fs", meta(size=112, template="mtcnn_box", margin=0.1, colour="rgb"))
    FeatureSet.create(tmp_path / "audio", FeatureSetMeta("egemaps", 3, extra={"input": {"sample_rate": 16000}}))
    FeatureSet.create(tmp_path / "audio", FeatureSetMeta("egemaps", 3, extra={"input": {"sample_rate": 16000}}))


def test_muse_csv_folder(tmp_path):
    folder = tmp_path / "feats" / "egemaps"
    folder.mkdir(parents=True)
    for vid in ("00001", "00002"):
        rows = ["File_ID,timestamp,f1,f2"] + [f"{vid},{t * 500},{t},{t * 2}" for t in range(4)]
        (folder / f"{vid}.csv").write_text("\n".join(rows) + "\n")
    fs = FeatureSet.open(folder)
    assert fs.ids() == ["00001", "00002"]
    assert fs.meta.dim == 2 and fs.meta.rate == pytest.approx(2.0)
    vf = fs["00002"]
    np.testing.assert_allclose(vf.timestamps, [0.0, 0.5, 1.0, 1.5])
    (folder / "00003.csv").write_text("File_ID,timestamp,f1,f2\n00003,0,1,nan\n")
    with pytest.raises(FeatureStoreError, match="00003.csv: 1 rows contain NaN"):
        read_muse_csv(folder / "00003.csv")


def test_atomic_files_get_the_usual_mode_and_values_parse(tmp_path):
    import os

    from affectfuse.utils import parse_value, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert parse_value("1e-3") == 0.001 and parse_value("3") == 3 and parse_value("A+V") == "A+V"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("true") is True
