"""Feature extractors: one registry, each extractor a small class with name, dim, rate and a batched call."""

from affectfuse.features.base import AudioInput, Extractor, FaceInput
from affectfuse.features.registry import EXTRACTORS, create_extractor, list_extractors

__all__ = ["AudioInput", "Extractor", "FaceInput", "EXTRACTORS", "create_extractor", "list_extractors"]
