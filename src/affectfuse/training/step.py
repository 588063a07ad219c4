"""One optimisation step shared by the training loops (ERI, EXPR)."""

from __future__ import annotations

import torch


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   clip_norm: float = 0.0, ema: torch.optim.swa_utils.AveragedModel | None = None) -> None:
    """Backward ``loss``, clip the gradient norm (when ``clip_norm > 0``), step, then update the EMA copy."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
