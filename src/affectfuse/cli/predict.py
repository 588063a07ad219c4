"""``affectfuse predict VIDEO...``: the report (per-frame expressions, voice emotion, fused top emotion, ERI,
HTML report per video; no argument: the bundled clip). The video mode itself lives in :mod:`.predict_video`.

The old feature-set mode (``predict --checkpoint CKPT --features NAME=DIR ...``) is ``affectfuse eri predict``;
the old spelling still runs it after a deprecation line.
"""

from __future__ import annotations

import argparse

HELP = "videos -> expressions, voice emotion, fused top emotion, ERI, HTML report (no argument: the bundled clip)"


def add_arguments(p) -> None:
    from affectfuse.cli import predict_video

    predict_video.add_arguments(p)
    # the old feature-set mode (now `eri predict`), hidden
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--features", nargs="+", metavar="NAME=DIR", help=argparse.SUPPRESS)
    p.add_argument("--table", help=argparse.SUPPRESS)
    p.add_argument("--split", default="test", help=argparse.SUPPRESS)


def limit_kernel_cache() -> None:
    """Keep oneDNN from caching a compiled kernel per input shape (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``
    unless set): MTCNN's R-Net and O-Net see a new batch size at almost every frame batch, and the cache
    (1024 kernels by default) made predict's peak memory grow with video length (+258 MB from 0.5 to
    3 min of video, docs/benchmarks.md); without it memory is flat at about 8 % more CPU time. Takes
    effect when set before the first convolution of the process."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


def run(args) -> int:
    if args.features:  # the old feature-set mode
        from affectfuse.cli.common import deprecated
        from affectfuse.cli.eri import run_predict

        deprecated("predict --checkpoint CKPT --features ...", "eri predict --checkpoint CKPT --features ...")
        if not (args.checkpoint and args.out):
            raise ValueError("eri predict needs --checkpoint, --features and --out")
        return run_predict(args)
    from affectfuse.cli import predict_video

    if args.checkpoint:  # the old spelling of --eri-checkpoint in the video mode
        from affectfuse.cli.common import deprecated

        deprecated("predict VIDEO --checkpoint CKPT", "predict VIDEO --eri-checkpoint CKPT")
    limit_kernel_cache()
    return predict_video.run(args)
