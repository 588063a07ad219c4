"""Which runtime runs each face network's forward pass: PyTorch eager (fp32, channels-last), PyTorch bf16
autocast, ONNX Runtime (fp32), in one run.

    python benchmarks/bench_runtimes.py [--nets faceexpressionnet fer-mini-xception mobilenetv2-face posterv2
        deepspectrum-mobilenetv2 mtcnn]
        [--crops 64] [--repeats 5] [--json OUT.json]

Per network (its registry factory, random weights where no pretrained file is offline: the speed is the
same), on ``--crops`` random uint8 crops of its input size in its own batch size (DeepSpectrum: the spectrogram
images of as many random 1-s windows, batches of 16; the CNN alone is timed), 1 intra-op thread: CPU ms per
crop (``time.process_time``, best of ``--repeats`` passes after a warm-up pass; the runtimes alternate) and the
largest absolute output difference against PyTorch fp32. ONNX Runtime's export (``torch.onnx.export``, cached
afterwards) is timed apart. ``mtcnn``: the detector's P-, R- and O-Net on the batch shapes of
:data:`MTCNN_INPUTS`, CPU ms per call. Machine, CPU flags, load and date are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info  # noqa: E402

NETS = ("faceexpressionnet", "fer-mini-xception", "mobilenetv2-face", "posterv2", "deepspectrum-mobilenetv2", "mtcnn")
# MTCNN's three networks on the batches the detector gives them on the 19.7 s talking-face clip at extract's
# defaults (320-px copies): P-Net on a batch of 3 frames' pyramid levels, R-Net on ~45 candidates, O-Net on ~11
MTCNN_INPUTS = {"pnet": [(3, 3, 40, 70), (3, 3, 100, 178)], "rnet": [(45, 3, 24, 24)], "onet": [(11, 3, 48, 48)]}


def _extractor(name: str, **kwargs):
    from affectfuse.features.registry import create_extractor

    try:
        return create_extractor(name, **kwargs), False
    except (FileNotFoundError, RuntimeError):
        return create_extractor(name, random_weights=True, **kwargs), True


def _forward_cpu(forward, xs: list, repeats: int) -> tuple[float, list]:
    """Best CPU seconds of one pass of ``forward`` over the batches ``xs`` (after a warm-up pass), outputs."""
    import torch

    with torch.inference_mode():
        out = [forward(x) for x in xs]
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            out = [forward(x) for x in xs]
            best = min(best, time.process_time() - start)
    return best, out


def measure(name: str, n_crops: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from affectfuse.features.face_common import bf16_supported
    from affectfuse.features.onnx_runtime import OnnxForward, onnxruntime_available

    ext, random_weights = _extractor(name)
    rng = np.random.default_rng(0)
    if ext.modality == "audio":  # DeepSpectrum: the CNN on spectrogram images of 1-s windows, batches of 16
        from affectfuse.features.deepspectrum import to_cnn_input

        size, batch = 224, 16
        windows = 0.1 * rng.standard_normal((n_crops, ext.input.sample_rate)).astype(np.float32)
        xs = [to_cnn_input(ext.images(windows[k:k + batch])) for k in range(0, n_crops, batch)]

        def run(x, bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return ext.model(x).float()
    else:  # a face network: its own preprocessing, batch size and fp32 / bf16 path (PyTorch, whatever runtime)
        size, batch = ext.input.size, ext.batch_size
        crops = rng.integers(0, 256, (n_crops, size, size, 3), dtype=np.uint8)
        xs = [ext.preprocess(crops[k:k + batch]).contiguous(memory_format=torch.channels_last)
              for k in range(0, n_crops, batch)]
        run = ext._run
    row = {"network": name, "random_weights": random_weights, "input": size, "batch": batch, "crops": n_crops}
    ways = {"torch fp32": lambda x: run(x, False)}
    if bf16_supported(torch.device("cpu")):
        ways["torch bf16"] = lambda x: run(x, True)
    if onnxruntime_available():
        onnx = OnnxForward(ext.model, f"bench-{name}", threads=1)
        start = time.process_time()
        try:
            onnx(xs[0])
            row["onnx_export_cpu_s"] = time.process_time() - start
            ways["onnxruntime fp32"] = onnx
        except Exception as exc:  # an export the exporter cannot do is a result too
            row["onnx_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    reference = None
    for label, forward in ways.items():
        cpu, out = _forward_cpu(forward, xs, repeats)
        out = torch.cat([o.float() for o in out]).numpy()
        reference = out if reference is None else reference
        row[label] = {"ms_per_crop": 1000 * cpu / n_crops, "max_abs_diff": float(np.abs(out - reference).max())}
    return row


def measure_mtcnn(repeats: int) -> list[dict]:
    """MTCNN's networks in PyTorch fp32 (channels-last input, as the detector's resampler makes it), bf16
    autocast and ONNX Runtime fp32 (every output compared); one row per input shape; ms CPU per call."""
    import io

    import numpy as np
    import onnxruntime as ort
    import torch

    from affectfuse.faces.pipeline import default_detector

    detector, rows = default_detector(), []
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    for net_name, shapes in MTCNN_INPUTS.items():
        net = getattr(detector, net_name).eval()
        for shape in shapes:
            x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
            buffer = io.BytesIO()
            torch.onnx.export(net, (x.contiguous(),), buffer, dynamo=False, opset_version=17, input_names=["x"])
            session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

            def bf16(x, net=net):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(x)

            ways = {"torch fp32": net, "torch bf16": bf16,
                    "onnxruntime fp32": lambda x, s=session: [torch.from_numpy(o) for o in s.run(None, {"x": x.contiguous().numpy()})]}
            row, reference = {"network": f"mtcnn-{net_name}", "random_weights": False, "input": list(shape)}, None
            for label, forward in ways.items():
                cpu, out = _forward_cpu(forward, [x], repeats)
                flat = np.concatenate([o.float().numpy().ravel() for o in out[0]])
                reference = flat if reference is None else reference
                row[label] = {"ms_per_call": 1000 * cpu, "max_abs_diff": float(np.abs(flat - reference).max())}
            rows.append(row)
    return rows


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--crops", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    machine = machine_info()
    rows = []
    for name in args.nets:
        crops = args.crops if name != "posterv2" else min(args.crops, 16)  # 190 ms a crop: fewer
        rows += measure_mtcnn(args.repeats) if name == "mtcnn" else [measure(name, crops, args.repeats)]
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nmachine: {describe(machine)}; 1 intra-op thread; CPU ms per crop (best of {args.repeats})")
    print("network | input | runtime | ms CPU per crop | speed-up vs torch fp32 | max abs diff vs torch fp32")
    for r in rows:
        unit = "ms_per_crop" if "ms_per_crop" in r["torch fp32"] else "ms_per_call"   # MTCNN: per call
        base = r["torch fp32"][unit]
        for label in ("torch fp32", "torch bf16", "onnxruntime fp32"):
            if label in r:
                m = r[label]
                print(f"{r['network']}{' (random weights)' if r['random_weights'] else ''} | {r['input']} | {label} | "
                      f"{m[unit]:.2f}{'' if unit == 'ms_per_crop' else ' per call'} | {base / m[unit]:.2f}x | "
                      f"{m['max_abs_diff']:.1e}")
        if "onnx_error" in r:
            print(f"{r['network']} | | onnxruntime fp32 | export failed: {r['onnx_error']} | |")
        elif "onnx_export_cpu_s" in r:
            print(f"{r['network']} | | (export, once per weight set) | {r['onnx_export_cpu_s']:.2f} CPU s | |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
