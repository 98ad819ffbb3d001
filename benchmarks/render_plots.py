"""Render the pipeline's DVC plots to an HTML page that works offline, optionally screenshot it.

`dvc plots show` writes a page that loads vega, vega-lite and vega-embed from a CDN. This script
runs it with the page template .dvc/plots/offline.html instead, which loads them from vendor/
next to the written index.html, and puts the three files there: taken from the npm registry once
(`npm pack`, or a plain HTTPS download of the same tarballs when npm is missing), checked against
the SHA-256 below, and cached. The versions are the ones DVC 3's own page uses.

    python benchmarks/render_plots.py [-o dvc_plots] [--screenshot plots.png] [-- DVC ARGS...]

e.g. `-- "UDR grid per pair set"` (plot ids or files to show) or other `dvc plots show` options.
--screenshot renders the page in headless Chromium (`chromium-headless-shell` or `chromium`,
e.g. `apt-get install chromium-headless-shell`) and saves a PNG of --window-size.
--js-dir DIR uses vega@5.20.2.min.js, vega-lite@5.2.0.min.js and vega-embed@6.18.2.min.js from
DIR instead of fetching them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
# (package, version, file inside the tarball, SHA-256 of the npm tarball)
LIBRARIES = [
    (
        "vega",
        "5.20.2",
        "package/build/vega.min.js",
        "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d",
    ),
    (
        "vega-lite",
        "5.2.0",
        "package/build/vega-lite.min.js",
        "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
    ),
    (
        "vega-embed",
        "6.18.2",
        "package/build/vega-embed.min.js",
        "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
    ),
]
BROWSERS = ["chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"]


def js_name(package: str, version: str) -> str:
    return f"{package}@{version}.min.js"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssae" / "vega-js"


def fetch_tarball(package: str, version: str, folder: Path) -> Path:
    """The npm tarball of package@version in ``folder``: `npm pack`, else an HTTPS download."""
    npm = shutil.which("npm")
    if npm:
        done = subprocess.run(
            [npm, "pack", f"{package}@{version}", "--silent"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        tarball = folder / f"{package}-{version}.tgz"
        if done.returncode == 0 and tarball.exists():
            return tarball
        print(f"npm pack {package}@{version} failed ({done.stderr.strip()}); trying HTTPS")
    url = f"https://registry.npmjs.org/{package}/-/{package}-{version}.tgz"
    tarball = folder / f"{package}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response, tarball.open("wb") as fh:
        shutil.copyfileobj(response, fh)
    return tarball


def vega_js(cache: Path) -> list[Path]:
    """Paths of the three JS files, fetched into ``cache`` when not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for package, version, member, sha256 in LIBRARIES:
        target = cache / js_name(package, version)
        if not target.exists():
            with tempfile.TemporaryDirectory() as tmp:
                tarball = fetch_tarball(package, version, Path(tmp))
                digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
                if digest != sha256:
                    sys.exit(f"{tarball.name}: SHA-256 {digest}, expected {sha256}")
                with tarfile.open(tarball) as tar:
                    source = tar.extractfile(member)
                    if source is None:
                        sys.exit(f"{tarball.name} has no {member}")
                    partial = target.with_suffix(".part")
                    partial.write_bytes(source.read())
                    partial.replace(target)
            print(f"cached {target}")
        paths.append(target)
    return paths


def screenshot(page: Path, png: Path, window: str, browser: str | None) -> None:
    exe = browser or next((b for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        sys.exit("no headless Chromium found (apt-get install chromium-headless-shell)")
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={window}",
        "--virtual-time-budget=20000",
        f"--screenshot={png.resolve()}",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "dvc_plots")
    parser.add_argument("--js-dir", type=Path, help="folder that already has the three JS files")
    parser.add_argument("--js-cache", type=Path, default=default_cache())
    parser.add_argument("--screenshot", type=Path, help="PNG of the rendered page")
    parser.add_argument("--window-size", default="1400,7000", help="WIDTH,HEIGHT in pixels")
    parser.add_argument("--browser", help="Chromium executable (default: first one on PATH)")
    parser.add_argument("dvc_args", nargs="*", help="more `dvc plots show` arguments (after --)")
    args = parser.parse_args()

    if args.js_dir:
        sources = [args.js_dir / js_name(p, v) for p, v, _, _ in LIBRARIES]
        missing = [str(s) for s in sources if not s.exists()]
        if missing:
            sys.exit(f"missing: {', '.join(missing)}")
    else:
        sources = vega_js(args.js_cache)

    out = args.out.resolve()
    command = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(TEMPLATE)]
    subprocess.run([*command, "-o", str(out), *args.dvc_args], cwd=ROOT, check=True)
    vendor = out / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copyfile(source, vendor / source.name)
    page = out / "index.html"
    print(f"offline page: {page} (with {vendor})")
    if args.screenshot:
        screenshot(page, args.screenshot, args.window_size, args.browser)


if __name__ == "__main__":
    main()
