"""Convert face-api.js FaceExpressionNet weights to a PyTorch state dict shipped with affectfuse.

Usage (needs ``npm`` for the download; ``node`` only for ``--golden``)::

    python scripts/convert_faceapi_weights.py                  # npm pack @vladmandic/face-api, convert
    python scripts/convert_faceapi_weights.py --package-dir /tmp/fa/package --golden golden.json

Reads ``model/face_expression_model-weights_manifest.json`` and ``face_expression_model.bin``: tensors lie
back to back in the manifest's order; a tensor with ``quantization: {dtype: uint8, scale, min}`` holds one
byte per value, ``value = q * scale + min``; the others are little-endian float32. TensorFlow layouts are
transposed to PyTorch's (conv HWIO -> OIHW, depthwise HWC1 -> C1HW, dense IO -> OI). Writes
``src/affectfuse/features/weights/face_expression_net.pt`` and face-api's MIT licence beside it, and prints
the sha256 to declare in ``affectfuse.features.faceapi.FACE_EXPRESSION_WEIGHTS``.

``--golden FILE`` runs the original JavaScript model (face-api + @tensorflow/tfjs CPU backend, installed with
npm into the temporary folder) on the deterministic inputs of :func:`golden_inputs` and writes its 256-d
embeddings and 7 probabilities to FILE (the values pinned in ``tests/test_faceapi.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "src" / "affectfuse" / "features" / "weights"
PACKAGE = "@vladmandic/face-api@1.7.15"
MODEL = "face_expression_model"


def golden_inputs() -> np.ndarray:
    """(4, 112, 112, 3) uint8 deterministic test images (a smooth ramp and three modular patterns)."""
    y, x = np.mgrid[0:112, 0:112]
    imgs = [np.stack([x * 2, y * 2, 255 - (x + y)], -1)]
    for b in (1, 2, 3):
        imgs.append(np.stack([(x * (3 + b) + y * (5 + 2 * c) + 40 * c + 17 * b) % 256 for c in range(3)], -1))
    return np.clip(np.stack(imgs), 0, 255).astype(np.uint8)


def torch_key(tf_name: str) -> tuple[str, tuple[int, ...] | None]:
    """face-api tensor name -> (state-dict key, permutation from the TF layout)."""
    parts = tf_name.split("/")
    if parts[0] == "fc":
        return ("fc.weight", (1, 0)) if parts[1] == "weights" else ("fc.bias", None)
    block, conv, kind = parts
    if kind == "filters":  # the first block's plain conv
        return f"{block}.{conv}.conv.weight", (3, 2, 0, 1)
    if kind == "depthwise_filter":
        return f"{block}.{conv}.depthwise.weight", (2, 3, 0, 1)
    if kind == "pointwise_filter":
        return f"{block}.{conv}.pointwise.weight", (3, 2, 0, 1)
    if kind == "bias":
        return (f"{block}.{conv}.conv.bias" if block == "dense0" and conv == "conv0"
                else f"{block}.{conv}.pointwise.bias"), None
    raise KeyError(f"unknown face-api tensor {tf_name!r}")


def read_weights(model_dir: Path, model: str = MODEL) -> dict[str, torch.Tensor]:
    """Decode ``model``'s manifest + bin into a PyTorch state dict of float32 tensors (``model``: another
    face-api network on the same dense blocks, e.g. ``face_landmark_68_model``, whose fc has 136 outputs)."""
    manifest = json.loads((model_dir / f"{model}-weights_manifest.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for group in manifest:
        data = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            quant = spec.get("quantization")
            if quant:
                if quant["dtype"] != "uint8":
                    raise ValueError(f"{spec['name']}: unsupported quantisation {quant['dtype']}")
                q = np.frombuffer(data, np.uint8, count, offset).astype(np.float64)
                values = (q * quant["scale"] + quant["min"]).astype(np.float32)
                offset += count
            else:
                if spec["dtype"] != "float32":
                    raise ValueError(f"{spec['name']}: unsupported dtype {spec['dtype']}")
                values = np.frombuffer(data, "<f4", count, offset).copy()
                offset += 4 * count
            key, perm = torch_key(spec["name"])
            tensor = torch.from_numpy(values.reshape(spec["shape"]))
            state[key] = (tensor.permute(*perm) if perm else tensor).contiguous()
        if offset != len(data):
            raise ValueError(f"{model_dir}: manifest covers {offset} bytes, bin holds {len(data)}")
    return state


def fetch_package(workdir: Path) -> Path:
    """``npm pack`` the face-api package into ``workdir`` and unpack it; returns the package folder."""
    subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, check=True, capture_output=True)
    tgz = next(workdir.glob("vladmandic-face-api-*.tgz"))
    shutil.unpack_archive(str(tgz), str(workdir))
    return workdir / "package"


NODE_SCRIPT = r"""
const faceapi = require(process.argv[2] + '/dist/face-api.node.js');
const fs = require('fs');
const tf = faceapi.tf;
(async () => {
  await tf.setBackend('cpu'); await tf.ready();
  const dir = process.argv[2] + '/model/';
  const manifest = JSON.parse(fs.readFileSync(dir + 'face_expression_model-weights_manifest.json'));
  const bin = fs.readFileSync(dir + 'face_expression_model.bin');
  const wm = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
                                 manifest[0].weights);
  const net = new faceapi.FaceExpressionNet();
  net.loadFromWeightMap(wm);
  const raw = fs.readFileSync(process.argv[3]);
  const n = raw.length / (112 * 112 * 3);
  const x = tf.tensor4d(Float32Array.from(raw), [n, 112, 112, 3]);
  const input = await faceapi.toNetInput(tf.unstack(x));
  const emb = net.faceFeatureExtractor.forwardInput(input).reshape([n, 256]);
  const probs = net.forwardInput(input);
  fs.writeFileSync(process.argv[4], JSON.stringify({tfjs: tf.version.tfjs, backend: tf.getBackend(),
    embedding: emb.arraySync(), probabilities: probs.arraySync()}));
})();
"""


def run_golden(package_dir: Path, workdir: Path, out: Path) -> None:
    """Run the original JS model on :func:`golden_inputs` (tfjs CPU backend) and write its outputs."""
    subprocess.run(["npm", "install", "--no-save", "@tensorflow/tfjs@4"], cwd=workdir, check=True,
                   capture_output=True)
    shim = workdir / "node_modules" / "@tensorflow" / "tfjs-node"  # face-api.node.js requires tfjs-node;
    shim.mkdir(parents=True, exist_ok=True)  # the pure-JS tfjs (CPU backend) gives the same kernels
    (shim / "package.json").write_text('{"name": "@tensorflow/tfjs-node", "version": "4.0.0", "main": "index.js"}')
    (shim / "index.js").write_text("module.exports = require('@tensorflow/tfjs');\n")
    (workdir / "golden.cjs").write_text(NODE_SCRIPT)
    golden_inputs().tofile(workdir / "inputs.u8")
    subprocess.run(["node", "golden.cjs", str(package_dir.resolve()), "inputs.u8", str(out.resolve())],
                   cwd=workdir, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package-dir", type=Path, help="unpacked @vladmandic/face-api (default: npm pack)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--golden", type=Path, help="also run the JS model and write golden outputs here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        package_dir = args.package_dir or fetch_package(workdir)
        state = read_weights(package_dir / "model")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        target = args.out_dir / "face_expression_net.pt"
        torch.save(state, target)
        shutil.copyfile(package_dir / "LICENSE", args.out_dir / "face-api-LICENSE.txt")
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        print(f"wrote {target} ({len(state)} tensors, {sum(v.numel() for v in state.values())} values)")
        print(f"sha256 {digest}")
        if args.golden:
            run_golden(package_dir, workdir, args.golden)
            print(f"wrote {args.golden}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
