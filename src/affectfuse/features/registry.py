"""One registry of feature extractors: ``create_extractor(name)``, ``list_extractors()``.

Entries are ``"module:factory"`` strings so that importing the registry stays cheap; the module is
imported when the extractor is created. Each factory takes keyword arguments
``weights=None`` (explicit weights path), ``random_weights=False`` (tests only), ``device="cpu"``
plus its own options, and returns an :class:`~affectfuse.features.base.Extractor`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect

from affectfuse.features.base import Extractor

EXTRACTORS: dict[str, str] = {
    # audio
    "deepspectrum": "affectfuse.features.deepspectrum:deepspectrum_densenet121",
    "deepspectrum-mobilenetv2": "affectfuse.features.deepspectrum:deepspectrum_mobilenetv2",
    "egemaps": "affectfuse.features.egemaps:egemaps",
    "compare-2016": "affectfuse.features.compare:compare_2016",
    # face
    "vit-b16": "affectfuse.features.vit:vit_b16",
    "posterv2": "affectfuse.features.poster_v2:posterv2",
    "posterv2-vit": "affectfuse.features.poster_v2:posterv2_vit",
    "inception-resnet-v1-vggface2": "affectfuse.features.inception_resnet:inception_resnet_v1_vggface2",
    "inception-resnet-v1-casia": "affectfuse.features.inception_resnet:inception_resnet_v1_casia",
    "regnet-y": "affectfuse.features.regnet:regnet_y",
    "faceexpressionnet": "affectfuse.features.faceapi:face_expression_net",
    "fer-mini-xception": "affectfuse.features.fer_xception:fer_mini_xception",
    "mobilenetv2-face": "affectfuse.features.mobilenet_face:mobilenetv2_face",
}

# The default extractors of `affectfuse extract` per kind of input (cli/extract.py: DEFAULT_EXTRACTORS is the
# videos' default). Photos (image files): faceexpressionnet with fer-mini-xception and mobilenetv2-face lifts the
# default commands' 5-fold macro F1 on the faces photos from 0.504 to 0.533 (stratified) and 0.485 to 0.487
# (person-disjoint) (docs/faces.md, scripts/faces_cv.py); a photo is one crop, so the extra networks cost little.
# Audio files (speech): chosen by EmoDB leave-one-speaker-out (docs/speech.md, scripts/emodb_loso.py).
PHOTO_EXTRACTORS: tuple[str, ...] = ("faceexpressionnet", "fer-mini-xception", "mobilenetv2-face")
AUDIO_EXTRACTORS: tuple[str, ...] = ("compare-2016",)
# Test-time views of the photo default when every input is a photo (a photo is one crop, so 6 views cost
# little; videos keep each network's own default): faceexpressionnet and fer-mini-xception averaged over
# flip+scales lift the default commands' macro F1 on the faces photos from 0.487 to 0.509 person-disjoint and
# 0.533 to 0.535 stratified (docs/faces.md, scripts/faces_levers.py / faces_cv.py). mobilenetv2-face keeps its
# flip views (adding zooms there: no gain).
PHOTO_TTA: dict[str, str] = {"faceexpressionnet": "flip+scales", "fer-mini-xception": "flip+scales"}
INPUT_KINDS = ("video", "audio", "photo")
# Videos and frame folders (`affectfuse extract`'s default before kinds of input had their own).
VIDEO_EXTRACTORS: tuple[str, ...] = ("deepspectrum-mobilenetv2", "egemaps", "faceexpressionnet")


def default_extractors(kinds) -> list[str]:
    """The default extractor names for inputs of the given ``kinds`` (a subset of :data:`INPUT_KINDS`):
    :data:`VIDEO_EXTRACTORS` for videos and frame folders, :data:`AUDIO_EXTRACTORS` for audio files,
    :data:`PHOTO_EXTRACTORS` for photos; each name once, in that order (no kind: the videos')."""
    unknown = set(kinds) - set(INPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown input kind(s) {sorted(unknown)}; valid: {', '.join(INPUT_KINDS)}")
    per_kind = {"video": VIDEO_EXTRACTORS, "audio": AUDIO_EXTRACTORS, "photo": PHOTO_EXTRACTORS}
    names = [n for kind in INPUT_KINDS if kind in kinds for n in per_kind[kind]]
    return list(dict.fromkeys(names or VIDEO_EXTRACTORS))


def input_kind(path) -> str:
    """``"photo"`` (an image file), ``"audio"`` (an audio file) or ``"video"`` (a video file or a frame folder)."""
    from affectfuse.features.inputs import AUDIO_EXTS, IMAGE_EXTS

    if path.is_dir():
        return "video"
    suffix = path.suffix.lower()
    return "photo" if suffix in IMAGE_EXTS else "audio" if suffix in AUDIO_EXTS else "video"


def defaults_for_inputs(items) -> tuple[list[str], dict[str, dict]]:
    """What `affectfuse extract` and :func:`affectfuse.extract` run when no extractor is named: the default
    names of each kind of input among ``items`` (MediaItem-like: ``.path``; :func:`default_extractors`) and
    per-name factory options: ``{"tta": PHOTO_TTA[name]}`` when every item is a photo, else none."""
    kinds = {input_kind(i.path) for i in items}
    names = default_extractors(kinds)
    photos_only = kinds == {"photo"}
    return names, {n: ({"tta": PHOTO_TTA[n]} if photos_only and n in PHOTO_TTA else {}) for n in names}


def extractor_plan(given, items) -> tuple[list[str], dict[str, dict]]:
    """The extractor names to run on ``items`` and each one's extra factory options. ``given``: ``None``
    (the defaults of each kind of input, :func:`defaults_for_inputs`, photo views included), a
    comma-separated string or a list of registry names (no extra options). Raises ValueError when ``given``
    names none."""
    if given is None:
        return defaults_for_inputs(items)
    names = [n.strip() for n in (given.split(",") if isinstance(given, str) else given) if n.strip()]
    if not names:
        raise ValueError("no extractor named (the extractor list is empty)")
    return names, {n: {} for n in names}


@contextlib.contextmanager
def _seeded(active: bool):
    """Torch's random state forked and seeded with 0 inside the block when ``active`` (torch imported only then)."""
    if not active:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def list_extractors() -> list[str]:
    return list(EXTRACTORS)


def _factory(name: str):
    if name not in EXTRACTORS:
        raise KeyError(f"unknown extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
    module_name, factory = EXTRACTORS[name].split(":")
    return getattr(importlib.import_module(module_name), factory)


def accepted_options(name: str, **options) -> dict:
    """The ``options`` that extractor ``name``'s factory takes (e.g. ``precision``: face networks only)."""
    params = inspect.signature(_factory(name)).parameters
    return {k: v for k, v in options.items() if k in params}


def create_extractor(name: str, **kwargs) -> Extractor:
    """Build the extractor registered as ``name``; unknown names raise with the valid list.

    The weights file the factory actually loads is recorded on the extractor (``loaded_weights``: the
    files :func:`affectfuse.weights.resolve` returned), so its :meth:`~Extractor.describe` names that file.
    ``random_weights=True`` (tests only) draws the same weights in every process (torch seed 0, the caller's
    random state untouched), so runs on Ray workers or in worker processes give the same features."""
    from affectfuse.weights import recording

    factory = _factory(name)
    with recording() as files, _seeded(bool(kwargs.get("random_weights"))):
        extractor = factory(**kwargs)
    extractor.loaded_weights = list(files)
    return extractor
