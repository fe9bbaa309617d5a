"""Third-party front-end files: installed from the npm registry by the set-up command
(`npm ci`), copied here into `static/vendor/` (ignored by git), served by the app.

    python -m lastedocation.web.assets [NODE_MODULES]     # copy; exit 1 if one is missing

No CDN at run time and nothing third-party in git: a missing file is reported at start
with the command that fetches it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
# node_modules path -> name under static/vendor/
FILES = {
    "htmx.org/dist/htmx.min.js": "htmx.min.js",
    "uplot/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css": "uPlot.min.css",
    "uplot/LICENSE": "uPlot.LICENSE.txt",
    "vazirmatn/fonts/webfonts/Vazirmatn[wght].woff2": "Vazirmatn-Variable.woff2",
    "vazirmatn/OFL.txt": "Vazirmatn.OFL.txt",
}


def missing() -> list[str]:
    return [name for name in FILES.values() if not (VENDOR / name).is_file()]


def copy_assets(node_modules: Path) -> list[str]:
    """Copy every vendored file; returns the node_modules paths that were not found."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    absent = []
    for source, name in FILES.items():
        path = node_modules / source
        if path.is_file():
            shutil.copyfile(path, VENDOR / name)
        else:
            absent.append(source)
    return absent


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path.cwd() / "node_modules"
    absent = copy_assets(root)
    for source in absent:
        print(f"error: {root / source} is missing: run `npm ci` first", file=sys.stderr)
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
