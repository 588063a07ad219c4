"""ERI intensities of a raw video from an ERI checkpoint, with features extracted on the fly.

The checkpoint (``affectfuse train``) names, per modality, the feature set it was trained on: the
extractor, its input (audio window / hop / sample rate) and its rate (face rows per second). Here the
same extractors run on this video: face extractors on the crops their plans declare (those ``extract`` cuts,
:mod:`affectfuse.faces.plan`) of the main face, sampled at
the feature set's rate (every analysed frame when it has none), audio extractors on windows cut as
``affectfuse extract`` cuts them. The rows are brought to the checkpoint's sequence length the way
training did, and the model gives 7 intensities in [0, 1] (``labels.ERI_EMOTIONS``).

Letters: T rows of one modality, D feature dim, B frames in a face batch.
"""

from __future__ import annotations

import numpy as np


def _build(meta: dict, device: str, random_weights: bool, precision: str = "fp32"):
    """The extractor of a feature-set meta, with the audio options it was extracted with (face: ``precision``)."""
    import importlib
    import inspect

    from affectfuse.features.registry import EXTRACTORS, create_extractor

    name = meta.get("extractor") or meta.get("name")
    if name not in EXTRACTORS:
        raise ValueError(f"the ERI checkpoint's feature set {meta.get('name')!r} was made by {name!r}, which is "
                         f"not a registered extractor ({', '.join(EXTRACTORS)}); extract features and use "
                         "`affectfuse predict --checkpoint CKPT --features ...`")
    module, factory = EXTRACTORS[name].split(":")
    params = inspect.signature(getattr(importlib.import_module(module), factory)).parameters
    options = {k: v for k, v in ((meta.get("extra") or {}).get("input") or {}).items() if k in params}
    if "precision" in params:
        options["precision"] = precision
    return create_extractor(name, device=device, random_weights=random_weights, **options)


class _Run:
    """Collects one video's face features, then predicts (see :class:`EriOnTheFly`)."""

    def __init__(self, owner: "EriOnTheFly"):
        self.owner = owner
        self.rows = {m: [] for m in owner.face}  # modality -> list of (t, values (D,), found)
        self.next_t = {m: 0.0 for m in owner.face}

    def add_faces(self, batch) -> None:
        for m, ex in self.owner.face.items():
            rate = self.owner.metas[m].get("rate")
            keep = []
            for i, t in enumerate(batch.timestamps):  # sample at the feature set's rate, as extraction did
                if not rate or t + 1e-6 >= self.next_t[m]:
                    keep.append(i)
                    if rate:
                        self.next_t[m] = (np.floor(t * rate + 1e-6) + 1) / rate
            keep = np.asarray(keep, dtype=int)
            found = np.asarray(batch.found, bool)[keep]
            values = np.zeros((len(keep), ex.dim), np.float32)
            if found.any():
                values[found] = ex(batch.crops[ex.input.crop][keep[found]])
            self.rows[m] += list(zip(np.asarray(batch.timestamps)[keep], values, found))

    def finish(self, audio: np.ndarray | None) -> dict:
        from affectfuse.data.sequences import fix_length, from_arrays
        from affectfuse.features.windows import audio_windows
        from affectfuse.training.eri import predict

        o = self.owner
        feats, masks, used = {}, {}, {}
        for m in o.metas:
            ex = o.extractors[m]
            if m in o.face:
                rows = self.rows[m]
                values = np.stack([r[1] for r in rows]) if rows else np.zeros((0, ex.dim), np.float32)
                mask = np.array([r[2] for r in rows], bool)
            elif audio is None or len(audio) == 0:
                values, mask = np.zeros((0, ex.dim), np.float32), np.zeros(0, bool)
            else:
                inp = ex.input
                _, chunks = audio_windows(audio, inp.sample_rate, inp.window_s, inp.hop_s,
                                          getattr(ex, "min_window_samples", 1))
                values = ex(chunks if len({len(c) for c in chunks}) > 1 else np.stack(chunks)) if chunks \
                    else np.zeros((0, ex.dim), np.float32)
                mask = np.ones(len(values), bool)
            used[m] = int(mask.sum())
            v, k = fix_length(np.asarray(values, np.float32), mask, o.steps, o.mode)
            feats[m], masks[m] = v[None], k[None]
        pred = predict(o.model, from_arrays(feats, None, o.label_names, masks))[0]
        return {"intensities": {n: round(float(x), 4) for n, x in zip(o.label_names, pred)},
                "emotions": list(o.label_names), "scale": o.scale, "checkpoint": o.path,
                "valid_rows": used, "sequence": {"steps": o.steps, "mode": o.mode}}


class EriOnTheFly:
    """Loads an ERI checkpoint and the extractors it names; ``start()`` -> per-video collector."""

    def __init__(self, path: str, device: str = "cpu", random_weights: bool = False, precision: str = "fp32"):
        from affectfuse.labels import ERI_SCALE
        from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint
        from affectfuse.weights import check_same_weights

        ckpt = load_checkpoint(path)
        self.path, self.ckpt = str(path), ckpt
        self.model = model_from_checkpoint(ckpt)
        self.metas = dict(ckpt["feature_sets"])
        self.extractors = {m: _build(meta, device, random_weights, precision) for m, meta in self.metas.items()}
        from affectfuse.faces.plan import recorded_plan

        for m, ex in self.extractors.items():
            if ex.dim != int(self.metas[m]["dim"]):
                raise ValueError(f"{path}: feature set {m!r} has dim {self.metas[m]['dim']}, extractor "
                                 f"{ex.name} gives {ex.dim}")
            if ex.modality == "face":  # the crop the training features were cut with, whatever is declared now
                ex.input = recorded_plan((self.metas[m].get("extra") or {}).get("input"), ex.input,
                                         f"{path}: feature set {m!r}")
            check_same_weights(self.metas[m], ex.describe(), f"{path} (feature set {m!r})",
                               f"extractor {ex.name!r} of this predict")
        self.face = {m: ex for m, ex in self.extractors.items() if ex.modality == "face"}
        self.face_plans = tuple(ex.input for ex in self.face.values())
        self.steps, self.mode = int(ckpt["data"]["seq_len"]), ckpt["data"]["sequence_mode"]
        self.label_names = tuple(ckpt["label_names"])
        self.scale = (ckpt.get("task") or {}).get("scale") or ERI_SCALE
        self.random_weights = random_weights or any(bool(m.get("random_weights")) for m in self.metas.values())

    def start(self) -> _Run:
        return _Run(self)

    def describe(self) -> dict:
        from affectfuse.weights import sha256_file

        file = self.ckpt.get("path") or self.path
        return {"role": "ERI intensities", "name": self.ckpt["model"]["name"], "checkpoint": self.path,
                "weights": {"path": str(file), "filename": str(file).rsplit("/", 1)[-1],
                            "sha256": sha256_file(file) if not str(file).endswith("/") else None},
                "extractors": {m: ex.describe() for m, ex in self.extractors.items()},
                "random_weights": bool(self.random_weights)}
