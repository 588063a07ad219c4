"""Landmark and asymmetry features tried on the faces photos (docs/faces.md), on the folds of faces_levers.py.

Usage (after ``scripts/faces_cv.py`` filled the face-crop cache; needs ``npm`` once for the face-api package)::

    python scripts/faces_landmarks.py --out /tmp/faces_levers [--package-dir /tmp/fa/package] [--data ...]

Features added, one configuration each, to the photo default's three sets (``fex flip+scales + fer
flip+scales + mnv2 flip``, the row the photo default scores in faces_levers.py):

- face-api.js's **68-point landmark network** (``face_landmark_68_model``, MIT: the same dense blocks as
  FaceExpressionNet, a 136-output head; converted here by ``convert_faceapi_weights.read_weights``) on
  faceexpressionnet's cached 112 px crop: its 256-d embedding (plain, and averaged with the mirrored crop's),
  the 68 (x, y) points as fractions of the crop, and every pairwise distance over the inter-ocular distance;
- **asymmetry**, contempt's cue (a one-sided lip corner): ``|f(crop) - f(mirrored crop)|`` of each network's
  views, and 10 landmark pairs mirrored about the eyes' axis (horizontal sum and vertical difference).

Each is scored as faces_levers.py scores a configuration (the default classifier's probe, the same 5
stratified and 5 person-disjoint folds). Landmark outputs are cached in ``OUT/views_faceapi-landmarks.npz``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from convert_faceapi_weights import fetch_package, read_weights  # noqa: E402
from faces_cv import DEFAULT_DATA, PERSON  # noqa: E402
from faces_levers import FS, LABELS, cached_crops, score, table_row, view_outputs  # noqa: E402

# landmark pairs mirrored about the face's midline (68-point scheme): mouth corners, upper / lower lip,
# brows (outer, middle, inner), eye corners, nostrils, lip midpoints
MIRRORED = [(48, 54), (49, 53), (59, 55), (17, 26), (19, 24), (21, 22), (36, 45), (31, 35), (50, 52), (58, 56)]


def landmark_net(package_dir: Path):
    from affectfuse.features.faceapi import FaceExpressionNet

    net = FaceExpressionNet()
    net.fc = torch.nn.Linear(256, 136)
    net.load_state_dict(read_weights(package_dir / "model", "face_landmark_68_model"))
    return net.eval()


def landmark_outputs(package_dir: Path, crops: np.ndarray, out: Path) -> dict[str, np.ndarray]:
    """{"emb|f", "points|f"}: (N, 256) embeddings and (N, 68, 2) points (fractions of the crop, mapped back
    to the unmirrored crop for f = 1) of the plain (f = 0) and mirrored (f = 1) crops."""
    path = out / "views_faceapi-landmarks.npz"
    if path.is_file():
        return dict(np.load(path))
    from affectfuse.features.faceapi import FACEAPI_MEAN_RGB

    net, res = landmark_net(package_dir), {}
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(FACEAPI_MEAN_RGB).view(1, 3, 1, 1)) / 255
    for flip in (0, 1):
        with torch.inference_mode():
            emb = net.embed(x.flip(-1) if flip else x)
            points = net.fc(emb).view(-1, 68, 2).numpy().copy()
        if flip:
            points[..., 0] = 1 - points[..., 0]
        res[f"emb|{flip}"], res[f"points|{flip}"] = emb.numpy(), points
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, **res)
    return res


def geometry(points: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 68, 2) points -> {"distances": (N, 2278) pairwise / inter-ocular, "asymmetry": (N, 20)}."""
    left, right = points[:, 36:42].mean(1), points[:, 42:48].mean(1)
    iod = np.linalg.norm(right - left, axis=1)
    iu = np.triu_indices(68, 1)
    dist = np.linalg.norm(points[:, :, None] - points[:, None], axis=-1)[:, iu[0], iu[1]] / iod[:, None]
    along = (right - left) / iod[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], -1)
    rel = points - ((left + right) / 2)[:, None]
    local = np.stack([(rel * along[:, None]).sum(-1), (rel * across[:, None]).sum(-1)], -1) / iod[:, None, None]
    asym = np.concatenate([np.stack([local[:, a, 0] + local[:, b, 0], local[:, a, 1] - local[:, b, 1]], -1)
                           for a, b in MIRRORED], 1)
    return {"distances": dist.astype(np.float32), "asymmetry": np.abs(asym).astype(np.float32)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--package-dir", type=Path, help="unpacked @vladmandic/face-api (default: npm pack)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data, out = Path(args.data), Path(args.out)
    table = pd.read_csv(data / "labels.csv")
    images = list(table["image"])
    y = table["emotion"].str.lower().map(LABELS).to_numpy()
    groups = [PERSON.sub("", Path(n).stem) for n in table["image"]]
    views = {net: view_outputs(net, data, images, out)[0] for net in ("fex", "fer", "mnv2")}
    found = view_outputs("fex", data, images, out)[1]
    base = {"fex": np.mean([views["fex"][f"{s}|{f}"] for s in FS for f in (0, 1)], 0),
            "fer": np.mean([views["fer"][f"{s}|{f}"] for s in FS for f in (0, 1)], 0),
            "mnv2": np.mean([views["mnv2"][f"1.0|{f}"] for f in (0, 1)], 0)}
    from affectfuse.features.registry import create_extractor

    crops, _ = cached_crops(data, images, create_extractor("faceexpressionnet", tta="none").input.crop)
    with tempfile.TemporaryDirectory() as tmp:
        marks = landmark_outputs(args.package_dir or fetch_package(Path(tmp)), crops, out)
    geo = geometry(marks["points|0"])
    asym = {net: np.mean([np.abs(views[net][f"{s}|0"] - views[net][f"{s}|1"]) for s in scales], 0)
            for net, scales in (("fex", FS), ("fer", FS), ("mnv2", (1.0,)))}
    configs = {
        "photo default (fex flip+scales + fer flip+scales + mnv2 flip)": {},
        "+ landmark net embedding": {"lm_emb": marks["emb|0"]},
        "+ landmark net embedding, flip": {"lm_emb": (marks["emb|0"] + marks["emb|1"]) / 2},
        "+ 68 points": {"points": marks["points|0"].reshape(len(y), -1)},
        "+ pairwise distances / inter-ocular": {"distances": geo["distances"]},
        "+ landmark net embedding + 68 points": {"lm_emb": marks["emb|0"],
                                                 "points": marks["points|0"].reshape(len(y), -1)},
        "+ |fex - mirrored fex|": {"asym_fex": asym["fex"]},
        "+ |fex - mirrored|, |fer - mirrored|": {"asym_fex": asym["fex"], "asym_fer": asym["fer"]},
        "+ the three networks' |f - mirrored f|": {f"asym_{n}": a for n, a in asym.items()},
        "+ landmark asymmetry (10 mirrored pairs)": {"asym_points": geo["asymmetry"]},
    }
    print("| features | split | pooled macro F1 | per-fold macro F1 | UAR | accuracy | Fear F1 | Other F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, extra in configs.items():
        for grouped in (False, True):
            print(table_row(name, grouped, score({**base, **extra}, found, y, groups, grouped)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
