"""Convert the MTCNN weights shipped in the facenet-pytorch 2.6.0 wheel to affectfuse's module names.

    python scripts/convert_mtcnn_weights.py [--wheel-dir DIR] [--out src/affectfuse/faces/weights]

Steps: ``pip download facenet-pytorch==2.6.0 --no-deps`` into a temporary folder (or use a wheel
already in ``--wheel-dir``); read ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` from the wheel (a zip)
with ``torch.load(weights_only=True)``; rename every tensor to our ``affectfuse.faces.MTCNN`` names;
check the result loads strictly; save one state dict (loadable with ``weights_only=True``) and the
wheel's MIT licence next to it; print the sha256 to record in ``MTCNN_WEIGHTS`` (faces/mtcnn.py).
We do not depend on facenet-pytorch itself (it pins torch < 2.3); only its weight files are used.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from affectfuse.faces.mtcnn import MTCNN, MTCNN_WEIGHTS
from affectfuse.faces.nets import rename_facenet_pytorch
from affectfuse.weights import sha256_file

WHEEL = "facenet-pytorch==2.6.0"


def find_or_download_wheel(wheel_dir: Path | None, tmp: Path) -> Path:
    if wheel_dir is not None:
        found = sorted(Path(wheel_dir).glob("facenet_pytorch-2.6.0-*.whl"))
        if found:
            return found[0]
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(tmp), "-q"], check=True)
    return sorted(tmp.glob("facenet_pytorch-2.6.0-*.whl"))[0]


def convert(wheel: Path) -> tuple[dict, str]:
    """Return (our state dict, licence text) read from the wheel."""
    state: dict = {}
    with zipfile.ZipFile(wheel) as zf:
        for net in ("pnet", "rnet", "onet"):
            raw = torch.load(io.BytesIO(zf.read(f"facenet_pytorch/data/{net}.pt")), map_location="cpu",
                             weights_only=True)
            state.update(rename_facenet_pytorch(net, raw))
        licence = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("dist-info/LICENSE.md"))
    MTCNN().load_state_dict(state, strict=True)  # every tensor mapped, none missing
    return {k: v.contiguous().clone() for k, v in state.items()}, licence


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, default=None, help="folder with the facenet-pytorch 2.6.0 wheel")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/affectfuse/faces/weights")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = find_or_download_wheel(args.wheel_dir, Path(tmp))
        state, licence = convert(wheel)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / MTCNN_WEIGHTS.filename
    torch.save(state, target)
    header = ("The MTCNN weights in this folder (mtcnn_facenet_pytorch_2.6.0.pt) were converted from the\n"
              "facenet-pytorch 2.6.0 wheel (https://github.com/timesler/facenet-pytorch) by\n"
              "scripts/convert_mtcnn_weights.py and are distributed under its licence:\n\n")
    (args.out / "LICENSE.txt").write_text(header + licence, encoding="utf-8")
    digest = sha256_file(target)
    print(f"wrote {target} ({target.stat().st_size} bytes)\nsha256 {digest}")
    if digest != MTCNN_WEIGHTS.sha256:
        print(f"note: MTCNN_WEIGHTS.sha256 in faces/mtcnn.py is {MTCNN_WEIGHTS.sha256}; update it to the value above")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
