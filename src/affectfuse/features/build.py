"""Build extractors from their registry names and options (what ``affectfuse extract``, the Python API and the
Ray workers of :mod:`affectfuse.cluster.ray_extract` share).

Each option goes only to the factories whose signature takes it (audio: ``sample_rate``, ``window_s``,
``hop_s``; face networks: ``precision``), so one set of options serves a mixed list of extractors.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from affectfuse.features.registry import EXTRACTORS, accepted_options, create_extractor
from affectfuse.weights import WeightsNotFoundError


def build_extractors(names: Sequence[str], weights: Mapping[str, str] | None = None, random_weights: bool = False,
                     device: str = "cpu", per_name: Mapping[str, dict] | None = None, **options) -> list:
    """The named extractors, in order.

    Args:
        names: registry names (``affectfuse.features.list_extractors()``).
        weights: extractor name -> weights file to load instead of the usual lookup.
        random_weights: random network weights (tests only; recorded in every feature set's meta).
        device: torch device of the networks.
        per_name: extractor name -> factory options of that one only (e.g. the photo default's views,
            :func:`affectfuse.features.registry.extractor_plan`); ``options`` given here override them.
        options: passed to the factories that take them; ``None`` values are left out.
    Raises:
        ValueError for an unknown name; WeightsNotFoundError naming the missing file and how to give it.
    """
    out = []
    for name in names:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
        given = {**(per_name or {}).get(name, {}), **options}
        kwargs = accepted_options(name, **{k: v for k, v in given.items() if v is not None})
        try:
            out.append(create_extractor(name, weights=(weights or {}).get(name), random_weights=random_weights,
                                        device=device, **kwargs))
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(f"{exc}\nName the file per extractor: --weights {name}=/path/to/the/file "
                                       f"(affectfuse extract) or weights={{{name!r}: path}} (Python)") from None
    return out
