#!/usr/bin/env bash
# Regenerates tests/fixtures/reference_*.safetensors with the PyTorch reference.
# Creates scripts/reference/.venv (torch, safetensors, numpy from PyPI) on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
fi
"$here/.venv/bin/python" "$here/dit_reference.py" "$@"
