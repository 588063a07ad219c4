"""One checkpoint schema (issue 12 item 4): every kind written by one writer, read by one reader with
``weights_only=True``; files of the formats written before it still load (one upgrade per old format)."""

from pathlib import Path

import pytest
import torch

from affectfuse.data.tasks import ERI_TASK, EXPR_TASK
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.models.eri import ERIFusionArgs, create_eri_model
from affectfuse.models.item_head import ItemHead, ItemHeadArgs
from affectfuse.training.checkpoint import (SCHEMA, VERSION, checkpoint_payload, model_from_checkpoint,
                                            read_any_checkpoint, read_checkpoint, write_checkpoint)

VOICE_HEAD = Path(__file__).resolve().parents[1] / "src" / "affectfuse" / "assets" / "voice" / "voice_head.pt"


def _eri_model():
    args = ERIFusionArgs(d_model=8, ff_dim=16, proj_dim=8, input_dims={"audio": 4, "visual": 6})
    return args, create_eri_model("eri_fusion", args)


def test_every_kind_has_the_schema_fields_and_round_trips(tmp_path):
    args, model = _eri_model()
    payload = checkpoint_payload("eri", model_name="eri_fusion", model_args=args.to_dict(),
                                 state_dict=model.state_dict(), task=ERI_TASK.to_dict(),
                                 train_config={"train": {"lr": 1e-4}}, feature_sets={"audio": {"name": "a", "dim": 4}},
                                 data={"seq_len": 5, "sequence_mode": "truncate"})
    write_checkpoint(payload, tmp_path / "best.pt")
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # plain types and tensors only
    assert (raw["format"], raw["version"], raw["kind"], raw["role"]) == (SCHEMA, VERSION, "eri", "best")
    kind, ckpt = read_any_checkpoint(tmp_path / "best.pt")
    assert kind == "eri" and ckpt["label_names"] == list(ERI_EMOTIONS) and ckpt["scale"] == ERI_TASK.scale
    assert set(ckpt["versions"]) == {"affectfuse", "torch", "numpy", "python"}
    rebuilt = model_from_checkpoint(ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    with pytest.raises(ValueError, match=r"best\.pt: not an affectfuse EXPR checkpoint \(kind 'expr'"):
        read_checkpoint(tmp_path / "best.pt", "expr", "EXPR checkpoint")
    with pytest.raises(ValueError, match="role 'last'"):
        read_checkpoint(tmp_path / "best.pt", "eri", "ERI resume checkpoint", role="last")


def test_foreign_newer_and_missing_files_are_named(tmp_path):
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt: not an affectfuse checkpoint .*found 'other'"):
        read_any_checkpoint(tmp_path / "x.pt")
    torch.save({"format": SCHEMA, "version": VERSION + 1, "kind": "eri"}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match=r"new\.pt: checkpoint schema version 3 is newer"):
        read_any_checkpoint(tmp_path / "new.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"cut\.pt: unreadable checkpoint"):
        read_any_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"none\.pt: checkpoint does not exist"):
        read_any_checkpoint(tmp_path / "none.pt")


def test_old_eri_checkpoint_loads(tmp_path):
    args, model = _eri_model()
    old = {"format": "affectfuse-eri-checkpoint", "model": {"name": "eri_fusion", "args": args.to_dict()},
           "task": ERI_TASK.to_dict(), "label_names": list(ERI_EMOTIONS), "feature_sets": {},
           "data": {"seq_len": 5, "sequence_mode": "truncate"}, "config": {"train": {"lr": 1e-4}},
           "state_dict": model.state_dict(), "epoch": 3, "metrics": {"val_mean_pearson": 0.5}}
    torch.save(old, tmp_path / "old.pt")
    kind, ckpt = read_any_checkpoint(tmp_path / "old.pt")
    assert kind == "eri" and ckpt["role"] == "best" and ckpt["legacy_format"] == "affectfuse-eri-checkpoint"
    assert ckpt["train_config"] == {"train": {"lr": 1e-4}} and ckpt["scale"] == ERI_TASK.scale
    assert isinstance(model_from_checkpoint(ckpt), torch.nn.Module)
    torch.save({**old, "training": {"epoch": 3}}, tmp_path / "last.pt")
    assert read_checkpoint(tmp_path / "last.pt", "eri", "ERI resume checkpoint", role="last")["training"]["epoch"] == 3


def test_shipped_voice_head_in_the_old_expr_format_loads():
    from affectfuse.training.expr import load_checkpoint

    raw = torch.load(VOICE_HEAD, weights_only=True)
    model, ckpt = load_checkpoint(VOICE_HEAD)
    assert ckpt["kind"] == "expr" and ckpt["legacy_format"] == raw["format"]
    assert ckpt["label_names"] == list(raw["info"]["class_names"]) and ckpt["task"]["level"] == "frame"
    assert ckpt["model"] == {"name": "expr_transformer", "args": raw["model_config"]}
    for k, v in raw["state_dict"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_old_item_and_finetune_checkpoints_load(tmp_path):
    from affectfuse.training.items import classifier_from_payload

    head = ItemHead(ItemHeadArgs(6, 3, hidden=0))
    norm = {"s": {"mean": torch.zeros(3), "std": torch.ones(3)}}
    torch.save({"format": "affectfuse-expr-items/1", "model": {"name": "item_head", "args": head.args.to_dict()},
                "train_config": {}, "group_norm": False, "info": {"class_names": ["a", "b", "c"], "task": "items"},
                "input_norm": norm, "probe": {}, "best_epoch": 0, "val": None,
                "state_dict": head.state_dict()}, tmp_path / "items.pt")
    kind, ckpt = read_any_checkpoint(tmp_path / "items.pt")
    assert kind == "items" and ckpt["label_names"] == ["a", "b", "c"] and ckpt["task"]["level"] == "item"
    assert classifier_from_payload(ckpt).class_names == ["a", "b", "c"]
    # fine-tuning: best.pt held the weights under "model", checkpoint.pt the resume state
    sd = {"w": torch.ones(2)}
    torch.save({"format": "affectfuse.finetune/1", "epoch": 2, "model": sd}, tmp_path / "best.pt")
    kind, ckpt = read_any_checkpoint(tmp_path / "best.pt")
    assert kind == "finetune" and ckpt["role"] == "best" and torch.equal(ckpt["state_dict"]["w"], sd["w"])
    torch.save({"format": "affectfuse.finetune/1", "epoch": 2, "model": sd, "optimizer": {}, "scheduler": {},
                "history": [{"epoch": 1}, {"epoch": 2}], "best_f1": 0.5, "best_epoch": 1,
                "config": {"epochs": 2}}, tmp_path / "checkpoint.pt")
    _, ckpt = read_any_checkpoint(tmp_path / "checkpoint.pt")
    training = ckpt["training"]
    assert ckpt["role"] == "last" and training["finished"] and (training["best"], training["best_epoch"]) == (0.5, 1)


def test_expr_task_spec_is_stored_and_decides_the_direction():
    assert EXPR_TASK.mode == "max" and EXPR_TASK.head == "logits" and ERI_TASK.loss == "mse"
