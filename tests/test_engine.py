"""The shared training engine on a task of its own (least squares): a killed run resumed from last.pt ends
bit-identical to an uninterrupted one (EMA, per-step schedule, clipping, shuffling generator, torch's RNG),
a finished run trains nothing, and early stopping follows the task's direction."""

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from affectfuse.training.engine import Engine, EngineConfig, Validation, early_stopping_update, new_state

META = {"format": "affectfuse-checkpoint", "version": 2, "kind": "eri"}


class LeastSquares:
    """y = x @ w + noise; the score is the validation MSE (smaller is better: mode 'min')."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.xv = torch.randn(64, 5, generator=g), torch.randn(32, 5, generator=g)
        w = torch.randn(5, 1, generator=g)
        self.y, self.yv = self.x @ w, self.xv @ w
        self.validated = 0

    def train_epoch(self, engine, epoch):
        losses = []
        for b in torch.randperm(64, generator=engine.generator).split(16):
            noise = 0.01 * torch.randn(len(b), 1)  # draws from torch's global RNG, restored on resume
            loss = (engine.model(self.x[b]) - self.y[b] - noise).pow(2).mean()
            engine.backward_step(loss)
            losses.append(loss.item())
        return {"train_loss": float(np.mean(losses))}

    def validate(self, model):
        self.validated += 1
        with torch.no_grad():
            mse = float((model(self.xv) - self.yv).pow(2).mean())
        return Validation(mse, {"val_mse": mse}, mse)

    def best_payload(self, model, epoch, row):
        return {**META, "role": "best", "state_dict": dict(model.state_dict()), "epoch": epoch}


def _engine(run_dir, stop_after=0):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    cfg = EngineConfig(max_epochs=6, patience=50, mode="min", clip_norm=0.5, scheduler_per="step",
                       stop_after=stop_after, meta=META)
    return Engine(model, opt, cfg, scheduler=sched, ema=ema, generator=torch.Generator().manual_seed(1),
                  run_dir=run_dir)


def test_killed_run_resumes_bit_identically_and_a_finished_run_trains_nothing(tmp_path):
    (tmp_path / "whole").mkdir(), (tmp_path / "cut").mkdir()
    whole = _engine(tmp_path / "whole")
    state = whole.run(LeastSquares())
    assert state["finished"] and state["epoch"] == 6 and (tmp_path / "whole" / "best.pt").is_file()
    assert state["history"][-1]["val_mse"] < state["history"][0]["val_mse"]  # it learns
    cut = _engine(tmp_path / "cut", stop_after=2)
    cut.run(LeastSquares())
    assert cut.state["epoch"] == 2 and not cut.state["finished"]
    torch.manual_seed(123)  # a new process: whatever the RNG holds now is replaced by last.pt's
    resumed = _engine(tmp_path / "cut")
    assert resumed.resume("eri") and resumed.state["epoch"] == 2
    state2 = resumed.run(LeastSquares())
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(state2["history"]) == strip(state["history"])
    for a, b in ((whole.model, resumed.model), (whole.eval_model, resumed.eval_model)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    assert (state2["best"], state2["best_epoch"]) == (state["best"], state["best_epoch"])
    again, task = _engine(tmp_path / "cut"), LeastSquares()
    again.resume("eri")
    again.run(task)
    assert task.validated == 0


def test_early_stopping_follows_the_direction_and_patience():
    state = new_state("min")
    for score in (1.0, 0.5, 0.6, 0.7):
        state["epoch"] += 1
        early_stopping_update(state, score, patience=2, min_delta=0.0, mode="min")
    assert (state["best"], state["best_epoch"], state["finished"]) == (0.5, 2, True)
    state = new_state("max")
    state["epoch"] = 1
    assert not early_stopping_update(state, float("nan"), 0, 0.0) and state["best"] == -float("inf")
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        early_stopping_update(new_state(), 1.0, 0, 0.0, mode="up")
