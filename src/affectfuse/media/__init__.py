"""Decoding: video frames (1-based frame numbers, timestamps in s) and mono audio, streamed with PyAV."""

from affectfuse.media.decode import (
    FrameBatch,
    MediaError,
    MediaInfo,
    apply_rotation,
    iter_audio,
    iter_frames,
    probe,
    read_audio,
)

__all__ = ["FrameBatch", "MediaError", "MediaInfo", "apply_rotation", "iter_audio", "iter_frames", "probe",
           "read_audio"]
