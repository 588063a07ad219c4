"""affectfuse: raw video to emotion estimates.

Python API (README "Python"; :mod:`affectfuse.api`)::

    import affectfuse
    p = affectfuse.predict("clip.mp4")          # VideoPrediction: frames, voice windows, top emotion, ERI
    p.save("out/clip"); p.to_pandas()
    affectfuse.extract(inputs, ["egemaps", "faceexpressionnet"], "feats")
    affectfuse.train("eri" | "expr" | "classify", ...)
    affectfuse.load("run/best.pt")               # a predictor for any task

The names are imported on first use (module ``__getattr__``): ``import affectfuse`` loads no torch.

Stages follow the data: ``media`` (decode) -> ``faces`` (detect, align, track) -> ``features``
(registry of extractors) -> ``data`` (feature store, dataset layouts, task specs) -> ``models`` ->
``training`` -> ``metrics`` -> ``outputs`` (writers, reports) -> ``inference`` -> ``cli``.
"""

__version__ = "0.1.0"

# public name -> "module:attribute", imported when first asked for
_LAZY = {
    "predict": "affectfuse.api:predict",
    "extract": "affectfuse.api:extract",
    "train": "affectfuse.api:train",
    "load": "affectfuse.api:load",
    "sample_clip": "affectfuse.api:sample_clip",
    "VideoPrediction": "affectfuse.inference.prediction:VideoPrediction",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'affectfuse' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
