"""Write small videos with PyAV: used by the tests and benchmarks to make media of known content."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(path, frames, fps=10, codec="libx264", pts=None, rotation=None, audio=None, audio_rate=44100,
                time_base=None, options=None) -> Path:
    """Write (N, H, W, 3) uint8 RGB frames (+ an optional mono track) to ``path``; returns ``path``.

    pts: optional per-frame presentation times in ``time_base`` units (variable frame rate).
    rotation: display rotation, counter-clockwise degrees. audio: optional (S,) float32 mono signal in
    [-1, 1] at ``audio_rate`` Hz, encoded as AAC.
    """
    n = len(frames)
    first = frames[0]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=fps, options=options or {})
        vs.width, vs.height = first.shape[1], first.shape[0]
        vs.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if time_base is not None:
            vs.time_base = vs.codec_context.time_base = time_base
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = c.add_stream("aac", rate=audio_rate, layout="mono") if audio is not None else None
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[k]), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[k])
                frame.time_base = time_base
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            step = 1024
            for i in range(0, len(audio), step):
                chunk = np.asarray(audio[i:i + step], np.float32)[None]
                af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                af.sample_rate = audio_rate
                af.pts = i
                for p in aus.encode(af):
                    c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return Path(path)


def noise_clip(path, seconds=1.2, fps=10, size=48, seed=0, audio=True, tone_hz=None, audio_noise=0.0) -> Path:
    """A clip of random-noise frames (size x size) and, when ``audio``, a 16 kHz sine tone.

    ``tone_hz`` defaults to ``150 + 100 * seed`` so clips of different seeds sound different;
    ``audio_noise`` adds Gaussian noise of that standard deviation to the tone.
    """
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (int(seconds * fps), size, size, 3), dtype=np.uint8)
    wave = None
    if audio:
        t = np.arange(int(16000 * seconds)) / 16000
        hz = 150 + 100 * seed if tone_hz is None else tone_hz
        wave = 0.2 * np.sin(2 * np.pi * hz * t)
        if audio_noise:
            wave = wave + audio_noise * rng.standard_normal(t.size)
        wave = wave.astype(np.float32)
    return write_video(path, frames, fps=fps, audio=wave, audio_rate=16000)
