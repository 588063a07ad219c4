"""How much of a file decoding actually read, against the duration its container declares.

A file cut short after its header was written (a faststart mp4 copied in part, an interrupted download)
still opens and decodes without an error: its header announces the full duration, the frames simply
stop. :class:`Coverage` compares what was read with what was announced, so such a file is reported
instead of being analysed in part in silence.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOLERANCE_S = 0.5  # codec padding, audio priming and a last frame's length stay well under this


@dataclass
class Coverage:
    """Decoded extent of one file (all times in seconds).

    Attributes:
        duration_s: the container's duration (0.0 when it declares none: nothing can be checked).
        video_s: end of the last decoded video frame (its time + one frame step), None when not decoded.
        frames: video frames decoded (the last 1-based frame number), None when not decoded.
        expected_frames: frame count from the header, None when the header has none.
        audio_s: decoded audio (samples / sample rate), None when not decoded.
    """

    duration_s: float
    video_s: float | None = None
    frames: int | None = None
    expected_frames: int | None = None
    audio_s: float | None = None

    def warnings(self, tolerance_s: float = DEFAULT_TOLERANCE_S) -> list[str]:
        """One sentence per stream read more than ``tolerance_s`` short of ``duration_s``."""
        out = []
        if self.duration_s <= 0:
            return out
        if self.video_s is not None and self.duration_s - self.video_s > tolerance_s:
            frames = f" ({self.frames} of {self.expected_frames} frames)" if self.expected_frames else ""
            out.append(f"partial media: video decoded to {self.video_s:.2f} s of the {self.duration_s:.2f} s the "
                       f"container declares{frames}; the file is probably truncated")
        if self.audio_s is not None and self.duration_s - self.audio_s > tolerance_s:
            out.append(f"partial media: audio decoded to {self.audio_s:.2f} s of the {self.duration_s:.2f} s the "
                       "container declares; the file is probably truncated")
        return out

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {"container_duration_s": r(self.duration_s), "decoded_video_s": r(self.video_s),
                "decoded_frames": self.frames, "header_frames": self.expected_frames,
                "decoded_audio_s": r(self.audio_s)}
