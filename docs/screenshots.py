"""Look at the built site as a reader would: screenshots of a few pages with headless Chromium.

Builds the site (``mkdocs build --strict``) into a temporary folder, serves it on
localhost with ``http.server`` and has Chromium (Debian's ``chromium`` package;
``apt-get install -y chromium fonts-lmodern``: without a maths font such as Latin Modern
Math, Chromium draws MathML with the text font, cramped) take one screenshot per page and
width. Nothing is written into the repository; the PNGs go to ``--out`` (default
``/tmp/deepfeat-screenshots``)::

    python docs/screenshots.py                                  # the default pages
    python docs/screenshots.py --pages callbacks/ api/data/ --height 6000
    python docs/screenshots.py --site /tmp/site --no-build      # an already built site

Open the PNGs and look for what a reader would notice: code running off the page or
cut off without a scroll bar, maths shown as raw TeX, images that do not load, tables
wider than the page. At 1280 px, 120-column code fits; at 412 px (a phone) wide code and
tables scroll sideways, which is expected.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["quickstart/", "callbacks/", "api/callbacks/", "experiments/"]
WIDTHS = [1280, 412]


def build(site: Path) -> None:
    """``mkdocs build --strict`` of this checkout into ``site``."""
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)], cwd=ROOT, check=True
    )


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` on a free localhost port, in a daemon thread; returns the server and its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def screenshot(chromium: str, url: str, png: Path, width: int, height: int, profile: Path) -> None:
    """One screenshot of ``url`` at ``width`` × ``height`` CSS pixels into ``png``."""
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",  # let fonts and images load before the picture is taken
            f"--screenshot={png}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", nargs="+", default=PAGES, help="page paths relative to the site root")
    parser.add_argument("--widths", nargs="+", type=int, default=WIDTHS, help="viewport widths in CSS pixels")
    parser.add_argument("--height", type=int, default=3000, help="viewport height: how much of each page is shot")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "deepfeat-screenshots")
    parser.add_argument("--site", type=Path, default=None, help="a built site (default: build one in a temp folder)")
    parser.add_argument("--no-build", action="store_true", help="use --site as it is")
    args = parser.parse_args(argv)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("no chromium on PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="deepfeat-shots-") as tmp:
        site = args.site or Path(tmp) / "site"
        if not args.no_build:
            build(site)
        server, base = serve(site)
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            for page in args.pages:
                for width in args.widths:
                    name = page.strip("/").replace("/", "_") or "index"
                    png = args.out / f"{name}-{width}.png"
                    screenshot(chromium, base + page, png, width, args.height, Path(tmp) / "profile")
                    print(png)
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
