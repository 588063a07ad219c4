"""One optimisation step shared by the training loops (ERI, EXPR)."""

from __future__ import annotations

import torch


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   clip_norm: float = 0.0, ema: torch.optim.swa_utils.AveragedModel | None = None,
                   ema_before_step: bool = False) -> None:
    """Backward ``loss``, clip the gradient norm (when ``clip_norm > 0``), step, and update the EMA copy.

    The EMA is updated after the step (of the new weights) or, with ``ema_before_step``, before it (of the
    weights the step started from, as the authors' code: the copy starts from the initial weights, since
    the first update of an ``AveragedModel`` copies them, and lags one step).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    apply_gradients(model, optimizer, clip_norm, ema, ema_before_step)


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float = 0.0,
                    ema: torch.optim.swa_utils.AveragedModel | None = None, ema_before_step: bool = False) -> None:
    """Clip the accumulated gradients (when ``clip_norm > 0``), step, and update the EMA copy (see
    :func:`optimizer_step`); for callers that backward a batch in parts."""
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if ema is not None and ema_before_step:
        ema.update_parameters(model)
    optimizer.step()
    if ema is not None and not ema_before_step:
        ema.update_parameters(model)
