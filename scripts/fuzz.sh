#!/usr/bin/env bash
# Fuzzes the parsers of user input (prompts, config files, a checkpoint's vocab.json)
# for a fixed time each, with libFuzzer through cargo-fuzz.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). Not run in CI, which uses stable. Seeds come from the
# shipped configs and captions; new inputs collect in fuzz/corpus/<target>, and any crash
# is written to fuzz/artifacts/<target> and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"

# Seed corpora: real inputs, so the fuzzer starts from valid files.
mkdir -p corpus/config corpus/tokenize corpus/vocabulary
for config in ../configs/*.toml ../tests/fixtures/micro.toml; do
    cp "$config" "corpus/config/$(basename "$config")"
done
printf 'a red circle moving left' > corpus/tokenize/canonical
printf 'the triangle is green and drifts upward' > corpus/tokenize/paraphrase
cp ../checkpoints/tiny/vocab.json corpus/vocabulary/tiny.json

for target in tokenize config vocabulary; do
    echo "== fuzzing $target for ${seconds} s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=4096
done
echo "no crashes"
