"""Shared benchmark helpers: the machine a figure was taken on, CPU time of a child process, matmul peaks.

Every benchmark that reports a fraction of a peak takes the peak from :func:`matmul_peak` (large square
matmuls, several repetitions, **CPU time** of this process, one dtype at a time), so that the fraction
means the same thing everywhere and load from other jobs on a shared machine cancels out as far as it
can: a job that waits for a core is not charged for the wait. GFLOP/s here are GFLOP per CPU-second
(2 FLOPs per multiply-add); with 1 intra-op thread that is the throughput of one core.

    from machine import machine_info, matmul_peak, run_cpu
    info = machine_info()                    # model, flags (bf16/AMX), load average, date, torch
    peak = matmul_peak("bf16", threads=1)    # {"gflops": best, "median": ..., "runs": [...], ...}
    r = run_cpu(["affectfuse", "predict", video])   # {"cpu": user+sys, "user", "sys", "wall", "maxrss_mb"}
    env = user_bytecode_env(tmp / "pycache")  # children with bytecode, as a user's
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time

FLAG_NAMES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> list[str]:
    """The CPU's feature flags as the kernel lists them (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """Model name, core count, the flags that decide bf16 speed, load averages (1/5/15 min), UTC date, torch."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    flags = set(cpu_flags())
    info = {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in FLAG_NAMES if f in flags],
            "bf16_units": bool(flags & {"avx512_bf16", "amx_bf16"}), "amx": "amx_bf16" in flags,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def describe(info: dict) -> str:
    """One line for a benchmark's header: CPU, cores, flags, load, date."""
    return (f"{info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags']) or '-'} "
            f"(bf16 units: {'yes' if info['bf16_units'] else 'no'}, AMX: {'yes' if info['amx'] else 'no'}), "
            f"load average {'/'.join(f'{x:.2f}' for x in info['load_average'])}, {info['date_utc']}, "
            f"torch {info.get('torch', '-')}")


def user_bytecode_env(cache, env: dict | None = None) -> dict:
    """``env`` (default: this process's) as a user's Python runs: bytecode written and read, in ``cache``.

    ``pip install`` compiles ``.pyc`` files (and Python writes them on first import when the install skipped
    it), but this project's environment sets ``PYTHONDONTWRITEBYTECODE=1`` and its venv has none, so every
    process would compile its imports from source (``import torch`` alone 3.7 CPU-s instead of 2.4). A private
    ``PYTHONPYCACHEPREFIX`` is filled by the first process instead; later ones read it.
    """
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def run_cpu(cmd: list[str], env: dict | None = None, cwd=None, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE) -> dict:
    """Run ``cmd`` to completion -> its CPU seconds (user + sys of the child and its children, from
    ``wait4``), wall seconds, peak RSS (MB), return code and the tail of stderr.

    Raises:
        RuntimeError: the command failed (its stderr tail in the message).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
    err = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = err.decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime, "sys": usage.ru_stime,
            "wall": wall, "maxrss_mb": usage.ru_maxrss / 1024, "stderr_tail": tail}


def matmul_peak(dtype: str = "fp32", sizes=(2048, 4096), reps: int = 5, threads: int | None = 1) -> dict:
    """Matmul peak of this CPU in GFLOP per CPU-second for ``dtype`` (``fp32`` / ``bf16``).

    Square ``torch.mm`` of each size, one warm-up then ``reps`` timed calls each; CPU time of the process
    (all its threads), so with ``threads=1`` the figure is one core's. The peak is the best call over all
    sizes (what the machine can do when a GEMM runs undisturbed); the median is kept to show the spread.
    ``threads=None`` leaves torch's thread count as it is.
    """
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    runs = []
    try:
        gen = torch.Generator().manual_seed(0)
        for n in sizes:
            a = torch.randn(n, n, generator=gen).to(torch_dtype)
            b = torch.randn(n, n, generator=gen).to(torch_dtype)
            torch.mm(a, b)  # warm-up: kernel selection, page faults
            for _ in range(reps):
                c0 = time.process_time()
                torch.mm(a, b)
                runs.append({"n": n, "gflops": 2 * n ** 3 / max(time.process_time() - c0, 1e-9) / 1e9})
    finally:
        torch.set_num_threads(old)
    values = sorted(r["gflops"] for r in runs)
    return {"dtype": dtype, "gflops": values[-1], "median": values[len(values) // 2], "sizes": list(sizes),
            "reps": reps, "threads": threads or old, "runs": runs, "unit": "GFLOP per CPU-second"}


def peaks(threads: int | None = 1, reps: int = 5, sizes=(2048, 4096)) -> dict:
    """fp32 and bf16 peaks measured separately (bf16 only where it can run)."""
    return {d: matmul_peak(d, sizes=sizes, reps=reps, threads=threads) for d in ("fp32", "bf16")}


if __name__ == "__main__":  # python benchmarks/machine.py: the machine and its peaks, 1 thread
    import json

    info = machine_info()
    print(describe(info))
    for d, p in peaks().items():
        print(f"{d} matmul peak: {p['gflops']:.1f} GFLOP per CPU-s (median {p['median']:.1f}; sizes {p['sizes']}, "
              f"{p['reps']} reps each, {p['threads']} thread)")
    print(json.dumps(info))
