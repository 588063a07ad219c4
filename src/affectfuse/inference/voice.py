"""Per-window voice emotion: audio -> windows -> window features -> a trained classification head.

The default head (``assets/voice/voice_head.pt``, see its model card ``assets/voice/MODEL_CARD.md``)
was trained on EmoDB by ``scripts/train_voice_head.py`` with the project's own classifier training.
A head names the extractors of its input columns (concatenated in that order), the window it was
trained on, its class names and their mapping to the ABAW expression names.

Windows: ``window_s`` long, every ``hop_s``; the last window is moved back to end on the last sample;
audio shorter than one window gives one zero-padded window (EmoDB's utterances were padded the same
way). A window is *voiced* when its RMS level is above ``silence_dbfs`` (dB re full scale); silent
windows are not classified (their probabilities are NaN) and do not count in the video mean.

Domain check: a head may carry ``domain_check.threshold`` in its description, the 99th percentile of
:func:`typicality` (median |z| of a window's features under the head's z-scoring) over its own training
windows. A voiced window above it is unlike anything the head was trained on (another language, microphone
or codec: EmoDB-trained heads flag most CREMA-D windows); ``predict`` reports how many, so a reader knows
when the voice vote is a guess. It is reported only: the fusion rule does not use it.

Letters: S samples, W windows, D feature dim, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectfuse.data.windows import window_starts
from affectfuse.labels import EXPR_CLASSES

SAMPLE_RATE = 16000
SILENCE_DBFS = -50.0


def cut_audio_windows(audio: np.ndarray, window_s: float, hop_s: float, sample_rate: int = SAMPLE_RATE
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(S,) waveform -> (windows (W, window samples) float32, times (W, 2) start/end seconds)."""
    size = int(round(window_s * sample_rate))
    hop = max(1, int(round(hop_s * sample_rate)))
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) == 0:
        return np.zeros((0, size), np.float32), np.zeros((0, 2))
    starts = window_starts(len(audio), size, hop)
    padded = np.pad(audio, (0, max(0, size - len(audio))))
    windows = np.stack([padded[s:s + size] for s in starts])
    times = np.stack([starts, np.minimum(starts + size, len(audio))], axis=1) / float(sample_rate)
    return windows, times


def stream_windows(chunks, window_s: float, hop_s: float, sample_rate: int = SAMPLE_RATE, block: int = 64):
    """:func:`cut_audio_windows` over a stream of (n,) float32 chunks, ``block`` windows at a time.

    Yields ``(windows (w, window samples) float32, times (w, 2) s)`` with w <= ``block``; together they are
    exactly the windows and times :func:`cut_audio_windows` cuts from the whole waveform, while at most
    one window plus one chunk of samples is held (:class:`WindowStream` also counts the samples).
    """
    yield from WindowStream(window_s, hop_s, sample_rate, block).run(chunks)


class WindowStream:
    """State of :func:`stream_windows`; ``samples`` counts the samples seen (the audio actually decoded)."""

    def __init__(self, window_s: float, hop_s: float, sample_rate: int = SAMPLE_RATE, block: int = 64):
        self.size = int(round(window_s * sample_rate))
        self.hop = max(1, int(round(hop_s * sample_rate)))
        self.rate, self.block = sample_rate, max(1, int(block))
        self.samples = 0

    def run(self, chunks):
        buf, buf_start, next_start = np.zeros(0, np.float32), 0, 0  # buf holds samples from buf_start on
        wins, starts = [], []
        for chunk in chunks:
            buf = np.concatenate([buf, np.asarray(chunk, np.float32).reshape(-1)])
            self.samples += len(chunk)
            while next_start + self.size <= self.samples:  # every full window starting on the hop grid
                a = next_start - buf_start
                wins.append(buf[a:a + self.size].copy())
                starts.append(next_start)
                next_start += self.hop
                if len(wins) == self.block:
                    yield self._pack(wins, starts)
                    wins, starts = [], []
            keep = min(next_start, max(0, self.samples - self.size)) - buf_start  # the last window may
            buf, buf_start = buf[keep:], buf_start + keep  # end on the last sample: keep ``size`` samples
        n = self.samples
        if 0 < n < self.size:  # shorter than one window: one zero-padded window
            wins.append(np.pad(buf[:n], (0, self.size - n)))
            starts.append(0)
        elif n > self.size and (next_start - self.hop) + self.size < n:  # window_starts' moved-back last one
            a = n - self.size - buf_start
            wins.append(buf[a:a + self.size].copy())
            starts.append(n - self.size)
        if wins:
            yield self._pack(wins, starts)

    def _pack(self, wins, starts):
        s = np.asarray(starts, np.int64)
        times = np.stack([s, np.minimum(s + self.size, self.samples)], axis=1) / float(self.rate)
        return np.stack(wins), times


def typicality(z: np.ndarray) -> np.ndarray:
    """(W, D) z-scored window features -> (W,) median |z| over the features (small = typical of training)."""
    return np.median(np.abs(np.asarray(z, dtype=np.float64)), axis=1)


def rms_dbfs(windows: np.ndarray) -> np.ndarray:
    """(W, S) -> (W,) RMS level in dB re full scale (a digital-silence window gives -inf)."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1)))


@dataclass
class VoiceResult:
    """Voice emotion of one video.

    Attributes:
        times: (W, 2) window start/end in seconds.
        probs: (W, C) probabilities over ``class_names`` (ABAW names); NaN rows for silent windows.
        voiced: (W,) bool.
        level_dbfs: (W,) RMS level of each window.
        class_names: ABAW names of the C columns (in the head's order).
        typicality: (W,) median |z| of each voiced window's features (NaN when silent), see :func:`typicality`.
        domain_threshold: the head's ``domain_check.threshold``, or None when it has none.
    """

    times: np.ndarray
    probs: np.ndarray
    voiced: np.ndarray
    level_dbfs: np.ndarray
    class_names: tuple[str, ...]
    typicality: np.ndarray | None = None
    domain_threshold: float | None = None

    def outside_domain(self) -> np.ndarray:
        """(W,) bool: voiced windows less typical than the head's training threshold (none without one)."""
        if self.typicality is None or self.domain_threshold is None:
            return np.zeros(len(self.voiced), bool)
        return self.voiced & (np.nan_to_num(self.typicality, nan=0.0) > self.domain_threshold)


class VoiceModel:
    """A voice head with its extractors: ``model(audio)`` -> :class:`VoiceResult`."""

    def __init__(self, head, extractors: list, silence_dbfs: float = SILENCE_DBFS):
        self.head = head
        self.extractors = extractors
        self.silence_dbfs = float(silence_dbfs)
        # head classes -> ABAW names (several head classes may share one name: their probabilities add up)
        names = list(dict.fromkeys(head.abaw_names))
        order = [c for c in EXPR_CLASSES if c in names] + [c for c in names if c not in EXPR_CLASSES]
        self.class_names = tuple(order)
        self.mapping = np.zeros((len(head.abaw_names), len(order)), np.float32)  # (C_head, C)
        for i, name in enumerate(head.abaw_names):
            self.mapping[i, order.index(name)] = 1.0

    def features(self, windows: np.ndarray) -> np.ndarray:
        """(W, S) windows -> (W, D) concatenated features of every extractor, in the head's order."""
        return np.concatenate([ex(windows) for ex in self.extractors], axis=1)

    def __call__(self, audio: np.ndarray, timer=None) -> VoiceResult:
        """(S,) waveform at 16 kHz -> :class:`VoiceResult` (see :meth:`stream` for long recordings)."""
        return self.stream([np.asarray(audio, np.float32).reshape(-1)], timer)

    def stream(self, chunks, timer=None, windows: WindowStream | None = None) -> VoiceResult:
        """Chunks (n,) of a 16 kHz waveform -> :class:`VoiceResult`, one block of windows at a time, so
        memory does not grow with the recording (only the (W, C) results do). ``windows`` (optional) is
        the :class:`WindowStream` to use; its ``samples`` tells afterwards how much audio there was."""
        windows = windows or WindowStream(self.head.window_s, self.head.hop_s)
        parts = [self._block(w, t, timer) for w, t in windows.run(chunks)]
        if not parts:
            parts = [self._block(np.zeros((0, windows.size), np.float32), np.zeros((0, 2)), timer)]
        times, probs, voiced, level, typical = (np.concatenate(x) for x in zip(*parts))
        return VoiceResult(times, probs, voiced, level, self.class_names, typical, self.head.domain_threshold)

    def _block(self, windows: np.ndarray, times: np.ndarray, timer=None) -> tuple:
        """(w, S) windows -> times (w, 2), probs (w, C), voiced (w,), level (w,) dBFS, typicality (w,)."""
        level = rms_dbfs(windows)
        voiced = level > self.silence_dbfs
        probs = np.full((len(windows), len(self.class_names)), np.nan, np.float32)
        typical = np.full(len(windows), np.nan)
        if voiced.any():
            with timer("voice_features") if timer else _null():
                x = self.features(windows[voiced])
            with timer("voice_model") if timer else _null():
                probs[voiced] = self.head.predict_proba(x) @ self.mapping
                typical[voiced] = typicality(self.head.standardise(x))
        return times, probs, voiced, level, typical

    def describe(self) -> dict:
        return {"role": "voice", "name": self.head.name, "weights": self.head.describe(),
                "extractors": [ex.describe() for ex in self.extractors],
                "random_weights": bool(getattr(self.head, "random_weights", False)),
                "window_s": self.head.window_s, "hop_s": self.head.hop_s,
                "silence_dbfs": self.silence_dbfs, "classes": list(self.head.class_names),
                "class_mapping": dict(zip(self.head.class_names, self.head.abaw_names))}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class VoiceHead:
    """A trained voice classifier: an affectfuse EXPR checkpoint over window features + ``voice_head.json``.

    ``voice_head.json`` (format ``affectfuse-voice-head/1``) names the checkpoint file (beside it), the
    extractors whose concatenated columns are the input, the window, the class names and their ABAW names.
    """

    def __init__(self, meta: dict, model, meta_path: str):
        self.meta, self.model, self.path = meta, model, meta_path
        self.name = meta.get("name", "voice-head:" + "+".join(meta["extractors"]))
        self.extractors = list(meta["extractors"])
        self.window_s, self.hop_s = float(meta["window_s"]), float(meta["hop_s"])
        self.class_names = tuple(meta["classes"])
        self.abaw_names = tuple(meta["class_mapping"][c] for c in self.class_names)
        self.random_weights = bool(meta.get("random_weights", False))
        z = meta.get("standardise") or {}
        self.mean = np.asarray(z.get("mean", 0.0), np.float32)
        self.std = np.asarray(z.get("std", 1.0), np.float32)
        check = meta.get("domain_check") or {}
        self.domain_threshold = float(check["threshold"]) if "threshold" in check else None

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """(W, D) window features -> the z-scores the head was trained on."""
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.std

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(W, D) window features -> (W, C) probabilities over ``class_names`` (each window on its own)."""
        import torch

        with torch.inference_mode():
            x = self.standardise(x)
            t = torch.from_numpy(np.ascontiguousarray(x))[:, None, :]  # (W, 1, D)
            logits = self.model(t, torch.ones(t.shape[:2], dtype=torch.bool))[:, 0]  # (W, C)
            return torch.softmax(logits.float(), dim=-1).numpy()

    def describe(self) -> dict:
        from affectfuse.weights import sha256_file

        ckpt = Path(self.path).with_name(self.meta["checkpoint"])
        return {"path": str(self.path), "filename": ckpt.name, "sha256": sha256_file(ckpt),
                "data": self.meta.get("data"), "licence": self.meta.get("licence"),
                "loso": self.meta.get("loso")}


def load_voice_head(path: str | Path) -> VoiceHead:
    """Load ``voice_head.json`` (or a folder holding it); errors name the file and the cause."""
    import json

    from affectfuse.training.expr import load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "voice_head.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: voice head not found (give voice_head.json, its folder, or 'none')")
    try:
        meta = json.loads(path.read_text())
        missing = [k for k in ("checkpoint", "extractors", "window_s", "hop_s", "classes", "class_mapping")
                   if k not in meta]
    except ValueError as exc:
        raise ValueError(f"{path}: not a voice head description ({exc})") from exc
    if missing:
        raise ValueError(f"{path}: voice head description lacks {', '.join(missing)}")
    model, ckpt = load_checkpoint(path.with_name(meta["checkpoint"]))
    names = list((ckpt.get("info") or {}).get("class_names") or meta["classes"])
    if names != list(meta["classes"]):
        raise ValueError(f"{path}: classes {meta['classes']} differ from the checkpoint's {names}")
    return VoiceHead(meta, model, str(path))
