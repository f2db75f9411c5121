#!/usr/bin/env bash
# Copies what dit-infer needs (and the training record) from a run folder into
# checkpoints/<name>: model.json, vocab.json, the autoencoder, the EMA DiT,
# the config, loss logs and plots, and the last preview sheet. Training state
# (train/: weights, EMA and optimiser per checkpoint) stays in the run folder.
set -euo pipefail
run="${1:?usage: scripts/ship-checkpoint.sh RUN_DIR [NAME]}"
name="${2:-$(basename "$run")}"
dest="$(cd "$(dirname "$0")/.." && pwd)/checkpoints/$name"
mkdir -p "$dest"
for f in config.toml model.json vocab.json autoencoder.bpk autoencoder.json dit_ema.bpk \
         loss.csv loss.png autoencoder_loss.csv autoencoder_loss.png; do
  cp "$run/$f" "$dest/$f"
done
for f in decoder_loss.csv decoder_loss.png; do   # present after decoder fine-tuning
  if [ -f "$run/$f" ]; then cp "$run/$f" "$dest/$f"; fi
done
last="$(ls "$run/previews"/*.png 2>/dev/null | sort | tail -n 1 || true)"
if [ -n "$last" ]; then cp "$last" "$dest/preview.png"; fi
du -sh "$dest"
