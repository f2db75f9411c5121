#!/usr/bin/env bash
# Burn (flex backend) vs PyTorch CPU on the DiT of a config: training step and
# sampling (50 DDIM steps with guidance) times, side by side.
#
#   scripts/bench-vs-torch.sh [CONFIG] [--repeats N] [--batch B]
#
# CONFIG defaults to configs/tiny.toml; the other options go to both benches.
# PyTorch runs with TORCH_THREADS threads (default: nproc, as Burn's flex
# backend uses every core). Prints both benches' JSON lines, then a table with
# the ratio PyTorch/Burn of the median times (> 1: Burn is faster).
# Uses the system's PyTorch when it has one, else creates scripts/reference/.venv (torch,
# safetensors, numpy from PyPI) on first use. Run it on an idle machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config="configs/tiny.toml"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  config="$1"
  shift
fi

ref="$root/scripts/reference"
if python3 -c 'import torch, safetensors, numpy' 2>/dev/null; then
  py=python3
else
  if [ ! -x "$ref/.venv/bin/python" ]; then
    python3 -m venv "$ref/.venv"
    "$ref/.venv/bin/pip" install -q -r "$ref/requirements.txt"
  fi
  py="$ref/.venv/bin/python"
fi

cargo build --release -p dit-train --bin dit-bench

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
echo "== Burn (flex): target/release/dit-bench --config $config --backend flex $*" >&2
target/release/dit-bench --config "$config" --backend flex "$@" | tee -a "$out"
echo "== PyTorch: bench_torch.py --config $config --threads ${TORCH_THREADS:-$(nproc)} $*" >&2
"$py" "$ref/bench_torch.py" --config "$config" --threads "${TORCH_THREADS:-$(nproc)}" "$@" | tee -a "$out"

"$py" - "$out" <<'EOF'
import json, sys

rows = {}
for text in open(sys.argv[1]):
    text = text.strip()
    if not text.startswith("{"):
        continue
    m = json.loads(text)
    side = "torch" if m["backend"].startswith("pytorch") else "burn"
    row = rows.setdefault((m["what"], m["batch"]), {})
    row[side] = m["median_s"]
    if side == "burn":
        row["cores"] = m.get("cores_busy")

print()
print(f"{'what':<12} {'batch':>5} {'burn s':>10} {'burn cores':>10} {'torch s':>10} {'torch/burn':>11}")
for (what, batch), r in rows.items():
    burn, torch, cores = r.get("burn"), r.get("torch"), r.get("cores")
    fmt = lambda v, w=10: f"{v:{w}.4f}" if v is not None else f"{'-':>{w}}"
    ratio = f"{torch / burn:11.2f}" if burn and torch else f"{'-':>11}"
    print(f"{what:<12} {batch:>5} {fmt(burn)} {fmt(cores)} {fmt(torch)} {ratio}")
EOF
