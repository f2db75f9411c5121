#!/usr/bin/env bash
# Makes checkpoints/<name> from the one training command: runs the config's whole
# recipe into runs/<name> (continuing it if that folder holds an unfinished run),
# evaluates it with `dit-infer eval`, and, if it passes the evaluation bar, copies what dit-infer needs and the training
# record: model.json, vocab.json, the autoencoder, the EMA DiT, the config, recipe.json,
# the loss logs and charts, the fidelity curve, the last preview sheet and the
# evaluation report. Training state (train/) stays in the run folder.
#
#   scripts/ship-checkpoint.sh [CONFIG] [NAME]     # default: configs/tiny.toml tiny
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
config="${1:-configs/tiny.toml}"
name="${2:-$(basename "$config" .toml)}"
run="runs/$name"
dest="$root/checkpoints/$name"
cd "$root"
if [ -f "$run/config.toml" ]; then
  cargo run --release -p dit-train -- --resume "$run"
else
  cargo run --release -p dit-train -- --config "$config" --out "$run"
fi
cargo run --release -p dit-infer -- eval --checkpoint "$run" --seeds 2
if ! grep -q '"bar_misses": \[\]' "$run/eval/eval.json"; then
  echo "$run misses the evaluation bar (eval.json: bar_misses); $dest is left as it was" >&2
  exit 1
fi
mkdir -p "$dest"
for f in config.toml recipe.json model.json vocab.json autoencoder.bpk autoencoder.json \
         dit_ema.bpk loss.csv loss.png autoencoder_loss.csv autoencoder_loss.png; do
  cp "$run/$f" "$dest/$f"
done
for f in decoder_loss.csv decoder_loss.png fidelity.csv fidelity.png; do  # when the recipe has them
  if [ -f "$run/$f" ]; then cp "$run/$f" "$dest/$f"; fi
done
last="$(ls "$run/previews"/*.png 2>/dev/null | sort | tail -n 1 || true)"
if [ -n "$last" ]; then cp "$last" "$dest/preview.png"; fi
rm -rf "$dest/eval" && cp -r "$run/eval" "$dest/eval"
du -sh "$dest"
