"""Export a fine-tuned network as weights that the extractor registry loads, and load it back.

``RUN/export/<extractor>.pt`` is the extractor network's state dict in its own naming and shapes, so
``create_extractor(name, weights=PATH)`` and ``affectfuse extract --weights <name>=PATH`` load it with
the extractor's usual (strict) loader. Where the extractor has its own classification head (face-api's
7-class ``fc``), the rows of its classes that were fine-tuned are replaced by the fine-tuned rows (matched
by name: ``happy`` = ``Happiness`` ...); rows of classes the data did not have keep their pretrained values.
The extractor's output columns therefore keep their meaning; its probabilities are the fine-tuned head's
softmax restricted to the extractor's classes (e.g. without ``Other``).

Beside it: ``<extractor>.head.pt`` (the full fine-tuned head: ``weight`` (C, D), ``bias`` (C,)) and
``<extractor>.json`` (extractor, classes in head order, which extractor head rows were replaced, data,
split, validation metrics, base weights, sha256 of the .pt). :func:`load_finetuned` rebuilds the
fine-tuned classifier from these files through the registry.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import torch
from torch import nn

from affectfuse.training.checkpoint import save_checkpoint
from affectfuse.training.finetune import ExpressionClassifier, extractor_classes, find_head
from affectfuse.training.finetune_data import canonical
from affectfuse.utils import write_json_atomic
from affectfuse.weights import sha256_file

log = logging.getLogger(__name__)


def _vit_b16_names(state: dict, head: nn.Linear) -> dict:
    """ViTB16 module names -> the torchvision names its loader reads; the fine-tuned head as ``heads.head``."""
    out = {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}
    out["heads.head.weight"] = head.weight.detach().cpu().clone()
    out["heads.head.bias"] = head.bias.detach().cpu().clone()
    return out


# extractor name -> (module state, fine-tuned head) -> the state its factory loads; others load their own naming
EXPORT_NAMES = {"vit-b16": _vit_b16_names}


def export_state(model: ExpressionClassifier, extractor) -> tuple[dict, dict]:
    """(state dict in the extractor's naming, {own class -> fine-tuned class} for the head rows replaced)."""
    state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
    replaced: dict[str, str] = {}
    if extractor.name in EXPORT_NAMES:
        return EXPORT_NAMES[extractor.name](state, model.head), replaced
    dim = model.head.in_features
    own = find_head(model.net, dim)
    own_classes = extractor_classes(extractor)
    if own is not None and own_classes and len(own_classes) == getattr(model.net, own).out_features:
        tuned = {canonical(c).lower(): j for j, c in enumerate(model.classes)}
        for i, name in enumerate(own_classes):
            j = tuned.get(canonical(name).lower())
            if j is not None:
                state[f"{own}.weight"][i] = model.head.weight[j].detach().cpu()
                state[f"{own}.bias"][i] = model.head.bias[j].detach().cpu()
                replaced[name] = model.classes[j]
    return state, replaced


def export_finetuned(model: ExpressionClassifier, extractor, out_dir: str | Path, info: dict) -> Path:
    """Write ``<out_dir>/<name>.pt``, ``.head.pt`` and ``.json``; returns the ``.pt`` path."""
    out_dir = Path(out_dir)
    name = extractor.name
    state, replaced = export_state(model, extractor)
    pt = out_dir / f"{name}.pt"
    save_checkpoint(state, pt)
    save_checkpoint({"weight": model.head.weight.detach().cpu().clone(),
                       "bias": model.head.bias.detach().cpu().clone()}, out_dir / f"{name}.head.pt")
    base = extractor.describe().get("weights")  # the file actually loaded (path, sha256), not the declared one
    meta = {
        "extractor": name,
        "weights_file": pt.name,
        "sha256": sha256_file(pt),
        "classes": list(model.classes),
        "head_file": f"{name}.head.pt",
        "extractor_head_rows_replaced": replaced,
        "extractor_classes": list(extractor_classes(extractor) or []),
        "embedding_dim": model.head.in_features,
        "base_weights": None if extractor.random_weights else base,
        "base_random_weights": bool(extractor.random_weights),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "usage": f"affectfuse extract --weights {name}={pt.name}  |  create_extractor({name!r}, weights=PATH)",
        **info,
    }
    write_json_atomic(out_dir / f"{name}.json", meta)
    meta["verified_max_abs_diff"] = verify_export(model, pt)
    write_json_atomic(out_dir / f"{name}.json", meta)
    return pt


@torch.no_grad()
def verify_export(model: ExpressionClassifier, pt: Path, n: int = 2, seed: int = 0) -> float:
    """Load ``pt`` back (:func:`load_finetuned`) and return the largest |difference| of the logits on ``n``
    random crops; raises ValueError when the reloaded network does not reproduce the fine-tuned one."""
    loaded, extractor = load_finetuned(pt)
    size = extractor.input.size
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    was_training = model.training
    model.eval()
    want, got = model.cpu()(x), loaded(x)
    model.train(was_training)
    diff = float((want - got).abs().max())
    if not diff <= 1e-3 * max(1.0, float(want.abs().max())):
        raise ValueError(f"{pt}: the exported weights do not reproduce the fine-tuned model (max |diff| {diff:.3g})")
    return diff


def load_finetuned(path: str | Path, device: str = "cpu") -> tuple[ExpressionClassifier, object]:
    """(fine-tuned classifier, extractor) from an exported ``<name>.pt`` and its ``.json`` / ``.head.pt``.

    The extractor is created through the registry with ``weights=path``; the classifier wraps its
    network with the full fine-tuned head (all fine-tuned classes).
    """
    from affectfuse.features.registry import create_extractor

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing export description next to {path}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    extractor = create_extractor(meta["extractor"], weights=str(path), device=device)
    head_state = torch.load(path.parent / meta["head_file"], map_location="cpu", weights_only=True)
    head = nn.Linear(head_state["weight"].shape[1], head_state["weight"].shape[0])
    head.load_state_dict(head_state)
    model = ExpressionClassifier(extractor.model, head, meta["classes"], extractor.mean, extractor.std,
                                 getattr(extractor, "scale", 255.0)).to(device).eval()
    return model, extractor
