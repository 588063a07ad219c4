"""affectfuse: raw video to emotion estimates.

Stages follow the data: ``media`` (decode) -> ``faces`` (detect, align, track) -> ``features``
(registry of extractors) -> ``data`` (feature store, dataset layouts, task specs) -> ``models`` ->
``training`` -> ``metrics`` -> ``outputs`` (writers, reports) -> ``cli``.
"""

__version__ = "0.1.0"
