"""openSMILE functionals per audio window: eGeMAPS v02 (Eyben et al. 2016) here, ComParE 2016 in ``compare``.

Input: (N, S) float32 mono windows at ``sample_rate`` Hz (or a list of 1-D windows of different lengths).
Output: (N, dim) float32, one row per window, columns named as openSMILE names them
(``describe()['columns']``). openSMILE fills a window too short for its analysis (< ~60 ms) with NaN; the
windowing drops windows shorter than ``MIN_WINDOW_S`` (``min_window_samples``), and any NaN left becomes 0.
"""

from __future__ import annotations

import warnings

import numpy as np

from affectfuse.features.base import AudioInput, Extractor

MIN_WINDOW_S = 0.1  # openSMILE's functionals need a few 60 ms frames; shorter windows give NaN
COLUMNS_FILE = "assets/egemaps/egemaps_v02_functionals.txt"


class OpenSmileFunctionals(Extractor):
    """One openSMILE feature set's functionals per window (no weights). Subclasses set ``name``, ``dim``,
    ``feature_set`` (the ``opensmile.FeatureSet`` member's name) and ``columns_file`` (the names, shipped)."""

    modality = "audio"
    feature_set = ""
    columns_file = ""

    def __init__(self, sample_rate: int = 16000, window_s: float = 1.0, hop_s: float = 0.5):
        self.input = AudioInput(sample_rate=int(sample_rate), window_s=float(window_s), hop_s=float(hop_s))
        self.rate = 1.0 / float(hop_s)
        self.min_window_samples = int(MIN_WINDOW_S * self.input.sample_rate)
        self._smile_obj = None

    @property
    def _smile(self):
        """The openSMILE extractor, built at first use: importing opensmile (and pandas) and building it
        costs ~0.7 CPU-s, which ``affectfuse predict`` need not pay on a video without voiced audio."""
        if self._smile_obj is None:
            import opensmile

            smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                                    feature_level=opensmile.FeatureLevel.Functionals)
            if list(smile.feature_names) != self.columns:  # pragma: no cover - a different openSMILE release
                raise RuntimeError(f"openSMILE {opensmile.__version__}'s {self.feature_set} functionals differ from "
                                   f"the {self.dim} names in {self.columns_file} (written from openSMILE 2.6.0)")
            self._smile_obj = smile
        return self._smile_obj

    @property
    def columns(self) -> list[str]:
        """The feature names, as openSMILE names them (read from the package, checked against openSMILE's
        own when it is built, so describing the extractor does not build it)."""
        from importlib import resources

        text = resources.files("affectfuse").joinpath(self.columns_file).read_text()
        return [line for line in text.splitlines() if line]

    def extract_nan(self, batch) -> np.ndarray:
        """(N, dim) float32 with NaN rows where openSMILE could not analyse the window."""
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for i, window in enumerate(batch):
            window = np.asarray(window, dtype=np.float32).reshape(-1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN."
                frame = self._smile.process_signal(window, self.input.sample_rate)
            out[i] = frame.to_numpy(dtype=np.float32)[0]
        return out

    def extract(self, batch) -> np.ndarray:
        return np.nan_to_num(self.extract_nan(batch), nan=0.0, posinf=0.0, neginf=0.0)

    def describe(self) -> dict:
        from importlib.metadata import version

        meta = super().describe()
        meta.update(feature_set=self.feature_set, level="functionals", opensmile_version=version("opensmile"),
                    timestamps="window start (s)", columns=self.columns, parameters=0)
        return meta


class EGeMAPS(OpenSmileFunctionals):
    """openSMILE eGeMAPSv02 functionals: 88 acoustic parameters per window (no weights needed)."""

    name = "egemaps"
    dim = 88
    feature_set = "eGeMAPSv02"
    columns_file = COLUMNS_FILE


def egemaps(weights=None, random_weights: bool = False, device: str = "cpu", sample_rate: int = 16000,
            window_s: float = 1.0, hop_s: float = 0.5) -> EGeMAPS:
    """Registry factory; eGeMAPS has no weights (``weights`` / ``random_weights`` are ignored)."""
    return EGeMAPS(sample_rate, window_s, hop_s)
