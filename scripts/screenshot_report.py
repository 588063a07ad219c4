"""Screenshot a ``report.html`` with headless Chromium (for docs/img/report.png).

Needs a Chromium binary (Debian: ``apt-get install -y chromium``). The page is self-contained, so
Chromium runs with networking features off. The PNG is re-saved as an optimised palette image to
stay small (docs images are kept under 300 KB).

Usage::

    affectfuse predict --out runs/predict
    python scripts/screenshot_report.py runs/predict/sample_clip/report.html docs/img/report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def find_browser(explicit: str | None = None) -> str:
    for name in ([explicit] if explicit else CANDIDATES):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit("no Chromium found (install it, e.g. `apt-get install -y chromium`, or pass --browser)")


def screenshot(html: Path, out: Path, width: int = 1200, height: int = 1500, browser: str | None = None,
               max_kb: int = 300) -> Path:
    """Render ``html`` to ``out`` (PNG, width x height CSS pixels), shrinking colours until < max_kb."""
    from PIL import Image

    html = html.resolve()
    if not html.is_file():
        raise SystemExit(f"{html}: no such report")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        cmd = [find_browser(browser), *FLAGS, f"--user-data-dir={tmp}/profile",
               f"--window-size={width},{height}", f"--screenshot={raw}", html.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if not raw.is_file():
            raise SystemExit(f"chromium made no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        image = Image.open(raw).convert("RGB")
        out.parent.mkdir(parents=True, exist_ok=True)
        for colours in (256, 128, 64):
            image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
            if out.stat().st_size < max_kb * 1024:
                break
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the report.html to render")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img/report.png"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--browser", help="Chromium executable (default: first found on PATH)")
    args = parser.parse_args(argv)
    out = screenshot(args.html, args.out, args.width, args.height, args.browser)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
