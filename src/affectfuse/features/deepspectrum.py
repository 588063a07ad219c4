"""DeepSpectrum (Amiriparian et al. 2017) in PyTorch, image for image the original tool's mel mode.

Per audio window (S,) float32 mono at ``sample_rate`` Hz:

1. mel spectrogram: STFT with a periodic Hann window, ``n_fft`` = next power of two >= 25 ms of samples
   (512 at 16 kHz, 1024 at 22.05/44.1 kHz), hop ``n_fft / 2``, no centring; power |X|^2 through librosa's
   128-band Slaney mel filterbank (0 Hz .. sr/2)                                       # (128, F)
2. ``power_to_db(ref=max, top_db=None)``: 0 dB at the window's maximum                 # (128, F) dB
3. the original plot: a 1x1-inch figure saved at 227 dpi, ``librosa.display.specshow(y_axis='mel',
   x_axis='time')`` as in librosa 0.7 (the version DeepSpectrum pins): quad edges at the mel band centres
   shifted down by half a band, a symlog(base 2, linthresh 1000 Hz) frequency axis with 0 Hz at the bottom,
   colours = viridis of ``(dB - min) / (max - min)``. We render it with array operations: one row map (pixel
   row -> mel band through matplotlib's own symlog transform) and one column map (pixel column -> frame),
   then a 256-entry viridis look-up table                                               # (227, 227, 3) uint8
4. resized to 224x224 by PIL itself, as the original tool does (``Image.fromarray(img, "RGB").resize((224,
   224))``, whose default filter is bicubic since Pillow 7.0; the tool pins Pillow >= 6 with matplotlib >= 3.3,
   which came after Pillow 7), scaled to 0-1 and ImageNet-normalised                    # (3, 224, 224)
5. DenseNet121 (ImageNet) global average pool -> 1024-d; or MobileNetV2 (ImageNet) -> 1280-d.

Deviation: where a window has more STFT frames than the image has columns (>= 227 frames, e.g. windows longer
than 3.6 s at 16 kHz), matplotlib's rasteriser chooses among sub-pixel-wide frames by fixed-point coverage;
we take the frame under the pixel centre, so a few columns can differ there. For fewer frames (every
default) the images are equal to matplotlib's (tests/test_deepspectrum.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from affectfuse.features.base import AudioInput, Extractor
from affectfuse.features.imagenet import (DENSENET121_IMAGENET, IMAGENET_MEAN, IMAGENET_STD,
                                          MOBILENETV2_IMAGENET, densenet121_pooled, mobilenetv2_pooled)
from affectfuse.features.onnx_runtime import onnx_forward, runtime_name
from affectfuse.features.windows import group_by_length

N_MELS = 128
PLOT_SIZE = 227   # pixels; the original figure: 1 inch at 227 dpi
CNN_SIZE = 224
_SYMLOG = dict(base=2, linthresh=1000.0, linscale=1.0)


def next_power_of_two(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


def stft_params(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop) in samples: n_fft = next power of two >= 25 ms, hop = n_fft // 2 (no centring)."""
    n_fft = next_power_of_two(int(sample_rate * 0.025))
    return n_fft, n_fft // 2


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)  # (n_mels, 1 + n_fft/2) float32


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", n_fft, fftbins=True)  # periodic, float64 (librosa's default window)


def mel_db(windows: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """(N, S) float32 equal-length windows -> (N, n_mels, F) float32 mel power in dB re. each window's max.

    F = 1 + (S - n_fft) // hop. Equals ``librosa.power_to_db(librosa.feature.melspectrogram(
    S=abs(librosa.stft(y, n_fft, hop, center=False))**2, sr, n_mels), ref=np.max, top_db=None)``.
    """
    windows = np.atleast_2d(np.asarray(windows, dtype=np.float32))
    n_fft, hop = stft_params(sample_rate)
    if windows.shape[1] < n_fft:
        raise ValueError(f"window of {windows.shape[1]} samples is shorter than n_fft={n_fft} at {sample_rate} Hz")
    frames = np.lib.stride_tricks.sliding_window_view(windows, n_fft, axis=1)[:, ::hop]  # (N, F, n_fft)
    spec = np.fft.rfft(frames * _hann(n_fft), axis=-1).astype(np.complex64)  # (N, F, K)
    power = (np.abs(spec) ** 2).astype(np.float32)
    mel = np.einsum("mk,nfk->nmf", _mel_basis(sample_rate, n_fft, n_mels), power)  # (N, n_mels, F)
    amin = np.float32(1e-10)
    db = 10.0 * np.log10(np.maximum(amin, mel))
    ref = np.maximum(amin, mel.max(axis=(1, 2), keepdims=True))
    return (db - 10.0 * np.log10(ref)).astype(np.float32)


def mel_band_edges(n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_mels + 1,) quad edges in Hz of librosa 0.7's ``specshow(y_axis='mel', fmax=sr/2)``."""
    import librosa

    fmax = sample_rate / 2
    centres = librosa.mel_frequencies(n_mels, fmin=0.0, fmax=fmax, htk=False)
    centres[1:] -= 0.5 * np.diff(centres)
    return np.append(np.maximum(0.0, centres), [fmax])


@functools.lru_cache(maxsize=64)
def pixel_maps(n_frames: int, n_mels: int, sample_rate: int, size: int = PLOT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(rows (size,), cols (size,)): the mel band and frame shown at each pixel row (top first) and column.

    A pixel shows the quad under its centre; a centre exactly on an edge goes to the lower quad (as
    matplotlib's Agg rasteriser does for these axis-aligned meshes).
    """
    from matplotlib.scale import SymmetricalLogTransform

    edges = mel_band_edges(n_mels, sample_rate)
    symlog = SymmetricalLogTransform(**_SYMLOG)
    lo, hi = symlog.transform(np.array([[edges[0]], [edges[-1]]]))[:, 0]
    centre = (np.arange(size) + 0.5) / size
    hz = symlog.inverted().transform((lo + (1.0 - centre) * (hi - lo))[:, None])[:, 0]  # top row = highest
    rows = np.clip(np.searchsorted(edges, hz, side="left") - 1, 0, n_mels - 1)
    cols = np.clip(np.ceil(centre * n_frames).astype(np.int64) - 1, 0, n_frames - 1)
    return rows, cols


@functools.lru_cache(maxsize=4)
def colour_lut(cmap: str = "viridis") -> np.ndarray:
    """(256, 3) uint8: matplotlib's colour map as 8-bit RGB (Agg rounds to the nearest level)."""
    from matplotlib import colormaps

    return np.round(colormaps[cmap](np.arange(256))[:, :3] * 255).astype(np.uint8)


def render(db: np.ndarray, sample_rate: int, size: int = PLOT_SIZE, cmap: str = "viridis") -> np.ndarray:
    """(N, n_mels, F) dB -> (N, size, size, 3) uint8 images, low frequencies at the bottom.

    Colour index = floor(256 * (v - min) / (max - min)) per window, in float32 as matplotlib's Normalize.
    """
    db = np.asarray(db, dtype=np.float32)
    n, n_mels, n_frames = db.shape
    rows, cols = pixel_maps(n_frames, n_mels, sample_rate, size)
    vmin = db.min(axis=(1, 2), keepdims=True)
    span = db.max(axis=(1, 2), keepdims=True) - vmin
    norm = (db - vmin) / np.where(span > 0, span, np.float32(1.0))
    index = np.clip((norm * 256).astype(np.int64), 0, 255)  # (N, n_mels, F)
    return colour_lut(cmap)[index[:, rows][:, :, cols]]  # (N, size, size, 3)


def render_matplotlib(db: np.ndarray, sample_rate: int, size: int = PLOT_SIZE, cmap: str = "viridis") -> np.ndarray:
    """Reference: one (n_mels, F) dB matrix drawn as the original tool draws it -> (size, size, 3) uint8.

    Slow (one figure); used by the tests to check :func:`render`.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_mels, n_frames = db.shape
    _, hop = stft_params(sample_rate)
    y = mel_band_edges(n_mels, sample_rate)
    x = np.arange(n_frames + 1) * hop / sample_rate  # librosa 0.7 __coord_time
    fig = plt.figure(frameon=False)
    fig.set_size_inches(1, 1)
    ax = plt.Axes(fig, [0.0, 0.0, 1.0, 1.0])
    ax.set_axis_off()
    fig.add_axes(ax)
    ax.pcolormesh(x, y, db, cmap=cmap, rasterized=True, edgecolors="None", shading="flat")
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_yscale("symlog", **{k: v for k, v in _SYMLOG.items() if k != "linscale"})
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=size)
    plt.close(fig)
    buf.seek(0)
    rgba = plt.imread(buf)
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def resize_like_deepspectrum(images: np.ndarray, size: int = CNN_SIZE) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 by PIL's bicubic ``Image.resize``, as the original tool."""
    from PIL import Image

    images = np.asarray(images, dtype=np.uint8)
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img, "RGB").resize((size, size), Image.Resampling.BICUBIC))
    return out


def to_cnn_input(images: np.ndarray, size: int = CNN_SIZE) -> torch.Tensor:
    """(N, 227, 227, 3) uint8 -> (N, 3, size, size) float32, resized by PIL (bicubic), ImageNet-normalised."""
    x = torch.from_numpy(resize_like_deepspectrum(images, size)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


class DeepSpectrum(Extractor):
    """Audio windows -> mel-spectrogram images -> an ImageNet CNN's pooled features, (N, dim) float32.

    Input: (N, S) float32 windows, or a list of 1-D windows of different lengths (the trailing windows
    of a recording are shorter, as in the original tool); each needs at least ``n_fft`` samples.
    """

    modality = "audio"

    def __init__(self, name: str, backbone: Callable, weights_spec, dim: int, weights=None,
                 random_weights: bool = False, device: str = "cpu", sample_rate: int = 16000,
                 window_s: float = 1.0, hop_s: float = 0.5, n_mels: int = N_MELS, runtime: str = "torch"):
        self.name = name
        self.dim = dim
        self.weights = weights_spec
        self.random_weights = bool(random_weights)
        self.input = AudioInput(sample_rate=int(sample_rate), window_s=float(window_s), hop_s=float(hop_s))
        self.rate = 1.0 / float(hop_s)
        self.n_mels = n_mels
        self.n_fft, self.hop = stft_params(self.input.sample_rate)
        self.min_window_samples = self.n_fft
        self.device = torch.device(device)
        self.model = backbone(weights=weights, random_weights=random_weights).to(self.device)
        self._onnx = onnx_forward(self.model, name, runtime, self.device)  # None: PyTorch runs the CNN

    def images(self, batch: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Windows -> (N, 227, 227, 3) uint8 spectrogram images (windows of equal length rendered together)."""
        chunks = [np.asarray(w, dtype=np.float32).reshape(-1) for w in batch]
        out = np.empty((len(chunks), PLOT_SIZE, PLOT_SIZE, 3), dtype=np.uint8)
        for _, idx in group_by_length(chunks).items():
            db = mel_db(np.stack([chunks[i] for i in idx]), self.input.sample_rate, self.n_mels)
            out[idx] = render(db, self.input.sample_rate)
        return out

    @torch.inference_mode()
    def extract(self, batch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = to_cnn_input(self.images(batch)).to(self.device)  # (N, 3, 224, 224)
        out = self._onnx.maybe(x) if self._onnx is not None else None
        return (self.model(x) if out is None else out).float().cpu().numpy()  # (N, dim)

    def describe(self) -> dict:
        meta = super().describe()
        meta.update(n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels, image_size=PLOT_SIZE,
                    cnn_input=CNN_SIZE, colour_map="viridis", timestamps="window start (s)",
                    parameters=sum(p.numel() for p in self.model.parameters()), runtime=runtime_name(self._onnx))
        return meta


def deepspectrum_densenet121(weights: str | Path | None = None, random_weights: bool = False, device: str = "cpu",
                             sample_rate: int = 16000, window_s: float = 1.0, hop_s: float = 0.5) -> DeepSpectrum:
    """The paper's DeepSpectrum: mel images -> ImageNet DenseNet121 pool, 1024-d per window."""
    return DeepSpectrum("deepspectrum", densenet121_pooled, DENSENET121_IMAGENET, 1024, weights,
                        random_weights, device, sample_rate, window_s, hop_s)


def deepspectrum_mobilenetv2(weights: str | Path | None = None, random_weights: bool = False, device: str = "cpu",
                             sample_rate: int = 16000, window_s: float = 1.0, hop_s: float = 0.5,
                             runtime: str = "auto") -> DeepSpectrum:
    """DeepSpectrum images -> ImageNet MobileNetV2 pool, 1280-d per window (weights available offline);
    ``runtime="auto"``: the CNN in ONNX Runtime where installed (the network mobilenetv2-face measures at 3.4x
    less CPU than PyTorch; benchmarks/bench_runtimes.py), ``"torch"`` forces PyTorch."""
    return DeepSpectrum("deepspectrum-mobilenetv2", mobilenetv2_pooled, MOBILENETV2_IMAGENET, 1280, weights,
                        random_weights, device, sample_rate, window_s, hop_s, runtime=runtime)
