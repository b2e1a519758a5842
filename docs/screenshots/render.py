"""Render pages of the built site with headless Chromium into PNG screenshots (a manual check).

    make docs && .venv/bin/python docs/screenshots/render.py            # writes docs/screenshots/*.png
    .venv/bin/python docs/screenshots/render.py --browser chromium --out /tmp/shots

The site in ``site/`` is served on a free local port (as ``make docs-serve`` would serve it, with no
network beyond localhost) and each page is loaded with a time budget that lets MathJax typeset the
math.  Needs a Chromium binary (Debian: ``apt-get install chromium``); not part of ``make test``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

# (page of the site, PNG name, window height): home, Concepts, one API page, the CLI reference.
PAGES = (
    ("index.html", "home.png", 1400),
    ("concepts.html", "concepts.png", 2400),
    ("api/layers.html", "api_layers.png", 1600),
    ("cli.html", "cli_reference.png", 1800),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=REPO / "site", help="the built site (default site/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where the PNGs go")
    parser.add_argument("--browser", default=None, help="Chromium binary (default: chromium or chromium-browser)")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels (default 1280)")
    args = parser.parse_args()

    browser = args.browser or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("render.py: no Chromium found; install it (apt-get install chromium) or pass --browser", file=sys.stderr)
        return 2
    if not (args.site / "index.html").is_file():
        print(f"render.py: {args.site} holds no built site; run make docs first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    served: list[tuple[str, int]] = []
    broken = 0

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet: the summary tells
            pass

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            served.append((self.path, int(code) if str(code).isdigit() else 0))

    handler = functools.partial(Handler, directory=str(args.site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for page, name, height in PAGES:
            url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
            png = args.out / name
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.width},{height}", "--virtual-time-budget=8000",
                            f"--screenshot={png}", url],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            _shrink(png)
            print(f"{url} -> {png} ({png.stat().st_size // 1024} KB)")
        # Navigation: follow every link of the rendered pages (the nav, the tables of contents, the
        # links between pages) to the server and check that the page and its anchor exist.
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        links = broken = 0
        for page, _, _ in PAGES:
            html = urllib.request.urlopen(base + page, timeout=30).read().decode("utf-8")
            for href in set(re.findall(r'<a [^>]*href="([^"#:?]*)(?:#([^"]*))?"', html)):
                target, anchor = href
                url = urllib.parse.urljoin(base + page, target) if target else base + page
                links += 1
                try:
                    body = urllib.request.urlopen(url, timeout=30).read().decode("utf-8", "replace")
                except urllib.error.URLError:
                    broken += 1
                    print(f"broken link on {page}: {target}#{anchor}")
                    continue
                if anchor and f'id="{anchor}"' not in body:
                    broken += 1
                    print(f"missing anchor on {page}: {target}#{anchor}")
        print(f"{links} links followed from {len(PAGES)} pages, {broken} broken")
    finally:
        server.shutdown()
    # What the browser asked the local server for: every page, script, style sheet, font and picture.
    # Anything missing (a broken picture, MathJax not found) shows here as a 404.
    failed = sorted({f"{path} ({code})" for path, code in served if code >= 400})
    print(f"{len(served)} requests served locally, {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed or broken else 0


def _shrink(png: Path) -> None:
    """Re-save the screenshot with a 256-colour palette (a page is mostly flat colour), if Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(png, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
