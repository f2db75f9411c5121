#!/usr/bin/env bash
# One-shot check of a machine with a GPU, in about 8 minutes: builds the Vulkan backend
# (wgpu pinned to Vulkan, with Burn's kernel fusion and autotuning), runs the model tests
# on it, times `dit-bench` on tiny, small and the seed's scale (DiT-B/2 on 256×256 clips),
# the first step apart (it includes compiling and autotuning the kernels), and the same
# models in PyTorch on the same GPU (TF32, then bf16 autocast; attention through SDPA) when
# PyTorch with CUDA is installed. Prints one Markdown table; the raw JSON lines are kept in
# $OUT (default target/gpu-check).
#
#   scripts/gpu-check.sh
#   QUICK=1 TARGET_DIR=target/wgpu scripts/gpu-check.sh   # the script itself, on any machine
#                                                        # (tiny only, one repetition)
#
# The cuda feature is not built: its build downloads LLVM from GitHub
# (docs/performance.md#what-the-cuda-build-needs).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
target="${TARGET_DIR:-target/gpu}"
quick="${QUICK:-0}"
repeats=5
[ "$quick" = 1 ] && repeats=1
features=vulkan
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
echo "GPU: ${gpu:-none found by nvidia-smi}; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee "$out/machine.txt"

step() { echo "== $*" >&2; }

step "build (features: $features)"
if ! cargo build --release -q -p dit-model --features "$features" --tests --target-dir "$target" ||
   ! cargo build --release -q -p dit-train --features "$features" --bin dit-bench --target-dir "$target"; then
  echo "the $features build failed" >&2
  exit 1
fi

step "model tests on vulkan"
BURN_DEVICE=vulkan timeout 240 cargo test --release -q -p dit-model --features "$features" \
  --target-dir "$target" >"$out/tests.txt" 2>&1
tests_rc=$?
tests="$(grep -E '^test result' "$out/tests.txt" | awk '{p += $4; f += $6} END {print p " passed, " f " failed"}')"
[ "$tests_rc" -eq 0 ] || tests="$tests (exit $tests_rc; see $out/tests.txt)"

: >"$out/bench.jsonl"
bench() { # config, extra dit-bench arguments
  timeout 150 "$target/release/dit-bench" --config "configs/$1.toml" --backend vulkan --repeats "$repeats" "${@:2}" \
    >>"$out/bench.jsonl" 2>>"$out/bench.err" || echo "dit-bench $1 failed or timed out" >&2
}
torch_bench() { # config, precision, extra arguments
  timeout 150 python3 scripts/reference/bench_torch.py --config "configs/$1.toml" --device cuda \
    --precision "$2" --repeats "$repeats" "${@:3}" >>"$out/bench.jsonl" 2>>"$out/bench.err" ||
    echo "bench_torch.py $1 $2 failed or timed out" >&2
}
has_torch_cuda=0
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && has_torch_cuda=1

if [ "$quick" = 1 ]; then
  runs=("tiny --sample-clips 1")
else
  runs=("tiny" "small" "dit-b-2-256 --batch 4 --sample-clips 1")
fi
for run in "${runs[@]}"; do
  read -r config args <<<"$run"
  step "dit-bench $run"
  # shellcheck disable=SC2086 # the arguments are words
  bench "$config" $args
  if [ "$has_torch_cuda" = 1 ]; then
    step "PyTorch $run"
    # shellcheck disable=SC2086
    torch_bench "$config" tf32 $args
    # shellcheck disable=SC2086
    torch_bench "$config" bf16 $args
  fi
done

echo
echo "${gpu:-no GPU}, $(date -u +%Y-%m-%d); model tests on vulkan: $tests"
echo
python3 - "$out/bench.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| config | backend | what | batch | median s | first s | samples/s | GFLOP/s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["what"] == "sgemm_1024":
        r["what"] = "1024³ matrix product"
    first = r.get("first_s")
    print(f"| {r['config']} | {r['backend']} | {r['what']} | {r['batch']} | {r['median_s']:.4f} | "
          f"{'' if first is None else f'{first:.2f}'} | {r['samples_per_s']:.1f} | {r['gflops']:.0f} |")
EOF
