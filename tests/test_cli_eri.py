"""eri train -> evaluate -> predict -> resume -> ablate -> ensemble, in-process through affectfuse.cli.main; the old
spellings (train, evaluate, ablate, predict --features) still work and print one deprecation line."""

import json

import numpy as np
import pytest
import torch

from affectfuse.cli import main
from affectfuse.data.synthetic import make_eri_dataset
from affectfuse.outputs.eri_csv import read_eri_predictions, validate_eri_predictions

TINY = ["model.d_model=16", "model.ff_dim=32", "model.proj_dim=16", "model.interaction_heads=4",
        "data.seq_len=8", "train.lr=3e-3", "train.batch_size=32", "train.threads=1", "train.progress=false",
        "train.tensorboard=false", "train.max_epochs=3"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eri")
    table = make_eri_dataset(root, n_videos=120, dims={"audio": 16, "visual": 24},
                             steps={"audio": 8, "visual": 12}, seed=0)
    feats = [f"audio={root / 'features' / 'audio'}", f"visual={root / 'features' / 'visual'}"]
    return root, str(table), feats


def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_evaluate_predict(dataset, tmp_path, capsys):
    root, table, feats = dataset
    run = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  beta: 0.02\n")
    assert main(["eri", "train", "--table", table, "--features", *feats, "--out", str(run), "--config", str(recipe),
                 "--set", *TINY, "train.tensorboard=true"]) == 0
    info = _json_line(capsys)
    assert info["epochs"] == 3 and info["finished"]
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "val_predictions.csv", "result.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "beta: 0.02" in (run / "config.yaml").read_text()
    validate_eri_predictions(run / "val_predictions.csv")

    assert main(["eri", "evaluate", "--checkpoint", str(run), "--table", table, "--features", *feats, "--split", "val"]) == 0
    metrics = _json_line(capsys)
    assert abs(metrics["mean_pearson"] - info["best_val_mean_pearson"]) < 1e-5
    assert set(metrics["pearson"]) == {"Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear",
                                       "Surprise"}
    assert (run / "eval_val.csv").read_text().startswith("emotion,pearson,mse")

    out = tmp_path / "test_preds.csv"
    assert main(["eri", "predict", "--checkpoint", str(run / "best.pt"), "--features", *feats, "--table", table,
                 "--split", "test", "--out", str(out)]) == 0
    ids, preds = read_eri_predictions(out)
    assert len(ids) == 24 and ids[0].startswith("[") and preds.shape == (24, 7)
    assert ((preds >= 0) & (preds <= 1)).all()
    # without a table: every video that has features in both sets
    assert main(["eri", "predict", "--checkpoint", str(run), "--features", *feats, "--out", str(tmp_path / "all.csv")]) == 0
    assert _json_line(capsys)["videos"] == 120

    # errors are one clear line, exit code 1
    assert main(["eri", "predict", "--checkpoint", str(run), "--features", feats[0], "--out", str(tmp_path / "x.csv")]) == 1
    assert "missing ['visual']" in capsys.readouterr().err
    assert main(["eri", "train", "--table", table, "--features", *feats, "--out", str(run), "--set", *TINY]) == 1
    assert "add --resume" in capsys.readouterr().err


def test_interrupted_run_resumed_from_the_command_line_matches(dataset, tmp_path, capsys):
    root, table, feats = dataset
    common = ["--table", table, "--features", *feats, "--set", *TINY, "model.modality_set=A+V"]
    assert main(["eri", "train", "--out", str(tmp_path / "full"), *common]) == 0
    full = _json_line(capsys)
    assert main(["eri", "train", "--out", str(tmp_path / "cut"), *common, "train.stop_after=1"]) == 0
    assert _json_line(capsys)["epochs"] == 1
    assert main(["eri", "train", "--out", str(tmp_path / "cut"), "--table", table, "--features", *feats, "--resume",
                 "--set", "train.stop_after=0"]) == 0
    resumed = _json_line(capsys)
    assert resumed["epochs"] == 3 and resumed["best_val_mean_pearson"] == full["best_val_mean_pearson"]
    a = np.loadtxt(tmp_path / "full" / "val_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 8))
    b = np.loadtxt(tmp_path / "cut" / "val_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 8))
    np.testing.assert_array_equal(a, b)


def test_ablate_writes_tables_and_prediction_files_for_ensemble(dataset, tmp_path, capsys):
    root, table, feats = dataset
    out = tmp_path / "abl"
    args = ["eri", "ablate", "--table", table, "--features", *feats, "--out", str(out), "--seeds", "2",
            "--sets", "A", "A+V+AV", "--tricks", "no_ema", "--set", *TINY, "train.max_epochs=2"]
    assert main(args) == 0
    md = (out / "ablation.md").read_text()
    assert "| A | " in md and "| A+V+AV | " in md and "| w/o EMA |" in md and " ± " in md
    assert "| full recipe |" in md and "0.4394" in md
    rows = (out / "ablation.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 3
    # a second call finds every run finished and redoes nothing
    mtime = (out / "runs" / "set-A_seed0" / "best.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "set-A_seed0" / "best.pt").stat().st_mtime_ns == mtime
    capsys.readouterr()
    preds = sorted(str(p) for p in out.glob("runs/set-A_V_AV_seed*/val_predictions.csv"))
    assert len(preds) == 2
    assert main(["ensemble", *preds, "--out", str(tmp_path / "ens.csv")]) == 0
    validate_eri_predictions(tmp_path / "ens.csv")


def _deprecation(err: str, old: str, new: str) -> None:
    lines = [line for line in err.splitlines() if "deprecated" in line]
    assert lines == [f"affectfuse: `affectfuse {old}` is deprecated; use `affectfuse {new}` (same options)"], err


def test_old_eri_spellings_run_the_new_commands_after_one_deprecation_line(dataset, tmp_path, capsys):
    root, table, feats = dataset
    one = ["--set", *TINY, "train.max_epochs=1"]
    assert main(["train", "--table", table, "--features", *feats, "--out", str(tmp_path / "old"), *one]) == 0
    out, err = capsys.readouterr()
    _deprecation(err, "train", "eri train")
    assert main(["eri", "train", "--table", table, "--features", *feats, "--out", str(tmp_path / "new"), *one]) == 0
    new_out, new_err = capsys.readouterr()
    assert "deprecated" not in new_err
    old_line, new_line = json.loads(out.splitlines()[-1]), json.loads(new_out.splitlines()[-1])
    assert old_line["best_val_mean_pearson"] == new_line["best_val_mean_pearson"]  # same command, same seed

    assert main(["evaluate", str(tmp_path / "old"), "--table", table, "--features", *feats]) == 0
    out, err = capsys.readouterr()
    _deprecation(err, "evaluate", "eri evaluate")
    assert json.loads(out.splitlines()[-1])["mean_pearson"] == pytest.approx(old_line["best_val_mean_pearson"], abs=1e-5)

    assert main(["predict", "--checkpoint", str(tmp_path / "old"), "--features", *feats, "--table", table,
                 "--out", str(tmp_path / "p.csv")]) == 0
    out, err = capsys.readouterr()
    assert [line for line in err.splitlines() if "deprecated" in line] == [
        "affectfuse: `affectfuse predict --checkpoint CKPT --features ...` is deprecated; use "
        "`affectfuse eri predict --checkpoint CKPT --features ...` (same options)"]
    assert json.loads(out.splitlines()[-1])["videos"] == 24 and len(read_eri_predictions(tmp_path / "p.csv")[0]) == 24

    ablate = ["--table", table, "--features", *feats, "--seeds", "1", "--sets", "A", "--tricks", "--set", *TINY,
              "train.max_epochs=1"]
    assert main(["ablate", *ablate, "--out", str(tmp_path / "abl")]) == 0
    _deprecation(capsys.readouterr().err, "ablate", "eri ablate")
    assert (tmp_path / "abl" / "ablation.md").is_file()


def test_help_lists_the_groups_and_hides_the_old_spellings(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("predict", "extract", "eri", "expr", "classify", "finetune", "ensemble", "synth"):
        assert f"    {name} " in text, name
    for old in ("train", "evaluate", "ablate"):
        assert f"    {old} " not in text, old
    with pytest.raises(SystemExit):
        main(["expr", "--help"])
    text = capsys.readouterr().out
    assert "    submit " in text and "    cv " not in text and "    probe " not in text
