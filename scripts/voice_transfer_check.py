"""Does a voice head trained on EmoDB (German) transfer to CREMA-D (English)? Variants side by side.

For each input variant (raw 2.0 s windows; each window scaled to -26 dBFS RMS; leading/trailing silence
trimmed at 30 dB; both) and each linear head (class-balanced logistic regression on z-scored eGeMAPS,
inverse regularisation C; optionally z-scores clipped to +-4), prints:

- leave-one-speaker-out unweighted average recall on EmoDB (8 speakers, 7 classes, chance 0.143);
- the top emotion over the six shared classes on the six audio-only clips of CREMA-D actor 1002
  (``1002_DFA_*_XX.mp3``), a development speaker: the audio-visual clips of actor 1001 that
  ``scripts/check_crema_d.py`` scores are not read here.

It also prints the eGeMAPS features whose CREMA-D mean lies furthest from EmoDB's (in EmoDB standard
deviations): the size of the domain shift. Windows are cut as ``affectfuse predict`` cuts them.

Usage::

    python scripts/voice_transfer_check.py [--data ../shared/data] [--extractor egemaps]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMODB = {"W": "Anger", "L": "Other", "E": "Disgust", "A": "Fear", "F": "Happiness", "T": "Sadness", "N": "Neutral"}
CREMA = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happiness", "NEU": "Neutral", "SAD": "Sadness"}
SHARED = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness"]


def prepare(windows: np.ndarray, level_dbfs: float | None, trim_db: float | None) -> list[np.ndarray]:
    """(W, S) windows -> list of 1-D signals, trimmed and/or level-normalised."""
    import librosa

    out = []
    for x in windows:
        if trim_db:
            x, _ = librosa.effects.trim(x, top_db=trim_db)
        if level_dbfs is not None:
            x = x * (10 ** (level_dbfs / 20) / max(float(np.sqrt(np.mean(x ** 2))), 1e-8))
        out.append(x.astype(np.float32))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--extractor", default="egemaps")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
    from sklearn.preprocessing import StandardScaler

    from affectfuse.features.registry import create_extractor
    from affectfuse.inference.voice import SILENCE_DBFS, cut_audio_windows, rms_dbfs
    from affectfuse.media import read_audio

    ex = create_extractor(args.extractor)

    def windows_of(path: Path) -> np.ndarray:
        w, _ = cut_audio_windows(read_audio(path, 16000), 2.0, 1.0)
        return w[rms_dbfs(w) > SILENCE_DBFS]

    emodb = sorted((args.data / "emodb" / "wav").glob("*.wav"))
    dev = sorted((args.data / "crema-d" / "clips").glob("1002_DFA_*_XX.mp3"))
    if len(emodb) != 408 or len(dev) != 6:
        raise SystemExit(f"{args.data}: expected 408 EmoDB files and six 1002 clips, found {len(emodb)}, {len(dev)}")
    train_w = np.stack([windows_of(p)[0] for p in emodb])
    labels = np.array([EMODB[p.name[5]] for p in emodb])
    groups = np.array([p.name[:2] for p in emodb])
    dev_w = [windows_of(p) for p in dev]
    dev_labels = [CREMA[p.stem.split("_")[2]] for p in dev]

    def features(signals: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([ex(s[None]) for s in signals])

    print(f"| input | C | clip | EmoDB LOSO UAR | CREMA-D 1002 top-1 | predictions ({', '.join(dev_labels)}) |")
    print("|---|---|---|---|---|---|")
    shift = None
    for name, level, trim in [("raw", None, None), ("-26 dBFS", -26.0, None), ("trim 30 dB", None, 30.0),
                              ("-26 dBFS + trim", -26.0, 30.0)]:
        x = features(prepare(train_w, level, trim))
        xd = [features(prepare(w, level, trim)) for w in dev_w]
        scaler = StandardScaler().fit(x)
        if shift is None:
            shift = (np.concatenate(xd).mean(0) - scaler.mean_) / scaler.scale_
        for c in (0.01, 0.1):
            for clip in (None, 4.0):
                def z(a):
                    a = scaler.transform(a)
                    return np.clip(a, -clip, clip) if clip else a

                def head():
                    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000)

                pred = cross_val_predict(head(), z(x), labels, groups=groups, cv=LeaveOneGroupOut())
                model = head().fit(z(x), labels)
                cols = [list(model.classes_).index(k) for k in SHARED]
                tops = [SHARED[int(np.argmax(model.predict_proba(z(f)).mean(0)[cols]))] for f in xd]
                hits = sum(t == y for t, y in zip(tops, dev_labels))
                print(f"| {name} | {c} | {clip or '-'} | {balanced_accuracy_score(labels, pred):.3f} | {hits}/6 | "
                      f"{', '.join(tops)} |", flush=True)
    names = getattr(ex, "columns", None) or [f"f{i}" for i in range(len(shift))]
    print("\nlargest shifts, CREMA-D 1002 mean - EmoDB mean, in EmoDB standard deviations (raw input):")
    for i in np.argsort(-np.abs(shift))[:8]:
        print(f"  {names[i]:42s} {shift[i]:+8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
