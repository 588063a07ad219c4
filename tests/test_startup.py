"""Start-up stays light (issue 16): the CLI's parser imports no heavy library, and ``affectfuse predict``'s
models load without torch._dynamo (via torchvision), matplotlib, scipy.optimize or openSMILE; what
replaced their imports gives the same results."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch._dynamo", "torchvision", "matplotlib", "scipy.optimize", "opensmile", "pandas")


def _modules_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter -> {module: imported?} for torch and ``HEAVY``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {('torch',) + HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_parser_and_help_import_nothing_heavy():
    code = ("from affectfuse.cli import build_parser, main\nbuild_parser()\n"
            "try:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert not any(loaded.values()), {m for m, v in loaded.items() if v}


def test_the_command_collects_garbage_less_often_and_a_caller_keeps_its_setting():
    """Run as the command (argv from sys.argv), the CLI raises the youngest GC generation's threshold before the
    sub-commands' imports (importing torch & co. traverses fewer times: docs/benchmarks.md); called from Python
    with arguments (tests, a notebook) it leaves the caller's process as it was."""
    from affectfuse.utils import GC_FIRST_GENERATION

    code = ("import gc, sys\nfrom affectfuse.cli import main\nbefore = gc.get_threshold()\nmain([])\n"
            "as_call = gc.get_threshold()\nsys.argv = ['affectfuse']\nmain()\n"
            "print(before[0], as_call[0], gc.get_threshold()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, as_call, as_command = map(int, out.stdout.split()[-3:])
    assert as_call == before != GC_FIRST_GENERATION and as_command == GC_FIRST_GENERATION


def test_predict_models_and_detection_load_no_heavy_module():
    """Every model of ``affectfuse predict``'s defaults, then MTCNN on a frame of the bundled clip (its NMS
    included): torch, but none of ``HEAVY`` (the report imports matplotlib later, when it plots)."""
    code = ("from affectfuse.inference.video import PredictOptions, VideoPredictor, sample_clip_path\n"
            "from affectfuse.faces import load_mtcnn\nfrom affectfuse.media import iter_frames\n"
            "VideoPredictor(PredictOptions()).voice_model.describe()\n"
            "frames = next(iter_frames(sample_clip_path(), batch_size=2, max_side=320)).images\n"
            "found = load_mtcnn(min_face_size=20.0).detect(frames)\n"
            "assert all(len(d) for d in found), 'no face found in the bundled clip'")
    loaded = _modules_after(code)
    assert loaded["torch"]
    assert not any(loaded[m] for m in HEAVY), {m for m in HEAVY if loaded[m]}


@pytest.mark.parametrize("n", [0, 1, 7, 300, 1500])
def test_nms_kernel_equals_torchvision_batched_nms(n):
    """The NMS MTCNN loads without the torchvision package keeps the same boxes in the same order as
    ``torchvision.ops.batched_nms`` with one class, ties and its large-input path (> 1000 boxes) included."""
    import torch
    from torchvision.ops import batched_nms

    from affectfuse.faces.mtcnn import _nms_one_class

    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=gen) * 40], 1)
    scores = torch.round(torch.rand(n, generator=gen) * 20) / 20  # many equal scores
    if n > 3:
        boxes[1], scores[1] = boxes[0], scores[0]  # an exact duplicate
    for thresh in (0.5, 0.7):
        expected = batched_nms(boxes, scores, torch.zeros(n, dtype=torch.long), thresh)
        assert torch.equal(_nms_one_class(boxes, scores, thresh), expected)


def test_tracker_single_match_equals_the_assignment_solver():
    from scipy.optimize import linear_sum_assignment

    from affectfuse.faces.track import _assign

    for iou in (np.array([[0.7]]), np.array([[0.0]]), np.array([[0.2, 0.9], [0.8, 0.1]]), np.array([[0.3, 0.4, 0.1]])):
        rows, cols = _assign(iou)
        r2, c2 = linear_sum_assignment(-iou)
        assert np.array_equal(rows, r2) and np.array_equal(cols, c2)


def test_egemaps_names_without_building_opensmile_equal_opensmile_names():
    """The shipped eGeMAPS column names (what describe() reports without loading openSMILE) are openSMILE's."""
    loaded = _modules_after("from affectfuse.features.egemaps import EGeMAPS\nEGeMAPS().describe()")
    assert not loaded["opensmile"] and not loaded["pandas"]
    from affectfuse.features.egemaps import EGeMAPS

    ex = EGeMAPS()
    assert ex.columns == list(ex._smile.feature_names) and len(ex.columns) == ex.dim
