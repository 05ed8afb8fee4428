#!/usr/bin/env bash
# Set up (or update) ./.venv for smoothclap on a fresh Debian/Ubuntu machine.
#   scripts/setup.sh        runtime: bundled encoders + openSMILE (non-commercial licence) + the web page (gradio)
#   scripts/setup.sh dev    the same plus the test tools (and Debian chromium + chromium-driver for tests/test_serve.py)
# torch==2.13.0 (CPU) goes in first so nothing later pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="bundled,egemaps,serve"
if [ "${1:-}" = "dev" ]; then EXTRAS="bundled,egemaps,serve,dev"; fi

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
if [ "${1:-}" = "dev" ]; then  # the headless browser of tests/test_serve.py (not needed at runtime)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
have_torch=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ "$have_torch" != "2.13.0" ]; then
  echo "installing torch==2.13.0"
  .venv/bin/pip install -q torch==2.13.0
fi
echo "installing smoothclap[$EXTRAS]"
.venv/bin/pip install -q -e ".[$EXTRAS]"
.venv/bin/python -c "import torch, smoothclap; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "ready: .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
