"""Architecture fields shared by the ERI models and the training config (declared once)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ERIArchitecture:
    """The architecture knobs of :class:`ERIFusion`, shared by the model's arguments and the training
    config (``ModelConfig``), so each is declared once.

    The defaults are affectfuse's variant (:class:`~affectfuse.models.eri.ERIFusion`); each model's
    argument class may override them (the authors' model: 5 TCN levels, feed-forward 512, see
    :mod:`affectfuse.models.eri_authors`). ``ff_dim`` is the feed-forward width of the transformer layers
    (PyTorch's default, 2048, here; the authors use 512); ``proj_dim`` the width of each projection.
    ``burst_pooling`` (``eri_fusion`` with its probe-started path only; the authors' model ignores it): the
    path also pools a burst statistic over time (:class:`~affectfuse.models.blocks.BurstPooling`).
    """

    d_model: int = 256
    modality_heads: int = 2
    modality_dropout: float = 0.5
    interaction_heads: int = 8
    interaction_dropout: float = 0.1
    ff_dim: int = 2048
    proj_dim: int = 256
    proj_dropout: float = 0.0
    tcn_levels: int = 2
    tcn_kernel: int = 3
    tcn_dropout: float = 0.1
    burst_pooling: bool = True

    def to_dict(self) -> dict:
        """Plain fields (as stored in checkpoints)."""
        return asdict(self)
