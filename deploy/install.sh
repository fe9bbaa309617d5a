#!/usr/bin/env bash
# The studio's install steps, in one place: deploy/Dockerfile runs them to build the image
# and tests/deploy/test_image.py runs the Python ones on a fresh copy of the source tree,
# so the image and the test cannot drift apart. Run from the root of the source tree:
#
#   deploy/install.sh system                      # Debian/Ubuntu packages the studio calls (root)
#   deploy/install.sh frontend                    # npm ci: htmx, uPlot and the Vazirmatn font
#   deploy/install.sh python VENV                 # the studio and its Python packages into VENV
#   deploy/install.sh assets VENV [NODE_MODULES]  # copy the front-end files into the package
#
# TORCH_INDEX_URL (optional): an extra package index for torch, e.g. PyTorch's CPU wheel
# index, so a CPU image does not carry the CUDA libraries that the default torch wheel
# pulls in. On the CUDA base image the preinstalled torch satisfies the pin instead.
set -euo pipefail

step="${1:?usage: deploy/install.sh system|frontend|python VENV|assets VENV [NODE_MODULES]}"

case "$step" in
  system)
    # espeak-ng: the offline Persian voice; restic: the backup engine; tini: a PID 1 that
    # passes SIGTERM on to the server and reaps the processes it leaves behind.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ca-certificates espeak-ng restic tini >/dev/null
    rm -rf /var/lib/apt/lists/*
    ;;
  frontend)
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
    ;;
  python)
    venv="${2:?usage: deploy/install.sh python VENV}"  # made here unless it exists
    # --system-site-packages: on the PyTorch CUDA base image its torch (the pinned version,
    # CUDA build) is used as it is; on a plain Python image there is nothing to see.
    [[ -x "$venv/bin/python" ]] || python3 -m venv --system-site-packages "$venv"
    extra=()
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
      extra=(--extra-index-url "$TORCH_INDEX_URL")
    fi
    "$venv/bin/python" -m pip install --quiet --no-cache-dir "${extra[@]}" .
    ;;
  assets)
    venv="${2:?usage: deploy/install.sh assets VENV [NODE_MODULES]}"
    "$venv/bin/python" -m lastedocation.web.assets "${3:-node_modules}"
    ;;
  *)
    echo "deploy/install.sh: unknown step '$step' (system, frontend, python, assets)" >&2
    exit 2
    ;;
esac
