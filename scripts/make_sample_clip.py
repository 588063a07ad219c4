"""Make the bundled sample clip ``src/affectfuse/assets/sample/sample_clip.mp4``.

The clip is a montage of three real CREMA-D recordings of one actor (1001) speaking the same
sentence ("Don't forget a jacket", code DFA) neutrally, happily and angrily: a talking face with
emotional speech, re-encoded as H.264 + AAC (mono 44.1 kHz) in one MP4 under 1 MB.

CREMA-D is released under the Open Database License 1.0; its contents (the clips) under the Database
Contents License 1.0, which allows copying and modifying them. The provenance file written beside
the clip names the sources, their sha256 and the licence.

Usage::

    python scripts/make_sample_clip.py [--clips DIR] [--out src/affectfuse/assets/sample]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "crema-d" / "clips"
SOURCES = ("1001_DFA_NEU_XX.flv", "1001_DFA_HAP_XX.flv", "1001_DFA_ANG_XX.flv")
FPS = Fraction(30000, 1001)
SAMPLE_RATE = 44100

LICENCE = """\
CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset), Cao, Cooper, Keutmann, Gur, Nenkova and
Verma, IEEE Transactions on Affective Computing 5(4), 2014. https://github.com/CheyneyComputerScience/CREMA-D

This Crowd-sourced Emotional Mutimodal Actors Dataset (CREMA-D) is made available under the Open
Database License: http://opendatacommons.org/licenses/odbl/1.0/. Any rights in individual contents of
the database are licensed under the Database Contents License:
http://opendatacommons.org/licenses/dbcl/1.0/

sample_clip.mp4 is a modified excerpt of the contents (three clips of actor 1001 joined and
re-encoded, see PROVENANCE.json); it is distributed under the same Database Contents License 1.0.
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (H, W, 3) uint8 RGB and the mono float32 waveform at 44.1 kHz, cut to the video's length."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32)
    want = int(round(len(frames) / float(FPS) * SAMPLE_RATE))  # keep audio and video in step per clip
    audio = np.pad(audio, (0, max(0, want - len(audio))))[:want]
    return frames, audio


def write_clip(out: Path, frames: list[np.ndarray], audio: np.ndarray, crf: int) -> None:
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "slow"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = 64000
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        step = 1024
        for start in range(0, len(audio), step):
            block = audio[start:start + step].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="folder with the CREMA-D clips")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "affectfuse" / "assets" / "sample")
    parser.add_argument("--crf", type=int, default=24, help="x264 quality (lower = larger file)")
    args = parser.parse_args(argv)

    frames: list[np.ndarray] = []
    audio = []
    segments = []
    for name in SOURCES:
        src = args.clips / name
        if not src.is_file():
            raise SystemExit(f"{src}: source clip not found (pass --clips DIR)")
        clip_frames, clip_audio = read_clip(src)
        start = len(frames) / float(FPS)
        frames += clip_frames
        audio.append(clip_audio)
        segments.append({"source": f"crema-d/clips/{name}", "sha256": sha256(src),
                         "label": name.split("_")[2], "start_s": round(start, 3),
                         "end_s": round(len(frames) / float(FPS), 3), "frames": len(clip_frames)})
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "sample_clip.mp4"
    write_clip(target, frames, np.concatenate(audio), args.crf)
    size = target.stat().st_size
    if size >= 1 << 20:
        raise SystemExit(f"{target}: {size} bytes, over 1 MiB; raise --crf")
    provenance = {
        "file": target.name, "sha256": sha256(target), "bytes": size,
        "duration_s": round(len(frames) / float(FPS), 3), "fps": f"{FPS.numerator}/{FPS.denominator}",
        "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "video": f"H.264 yuv420p crf {args.crf}", "audio": f"AAC mono {SAMPLE_RATE} Hz 64 kbit/s",
        "made_by": "scripts/make_sample_clip.py", "dataset": "CREMA-D (actor 1001, sentence DFA)",
        "licence": "Database Contents License 1.0 (CREMA-D contents; database under ODbL 1.0)",
        "segments": segments,
    }
    (args.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (args.out / "LICENSE.txt").write_text(LICENCE)
    print(f"wrote {target} ({size} bytes, {provenance['duration_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
