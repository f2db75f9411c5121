#!/usr/bin/env bash
# Fuzzes the parsers of user input (prompts, config files, a checkpoint's vocab.json, GIF,
# PNG and MP4 clips, IDX images) for a fixed time each, with libFuzzer through cargo-fuzz, each under a
# 2 GiB memory limit: a reader that allocates more than that for any input is a failure.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#   scripts/fuzz.sh 600 mp4    # 10 min of the MP4 reader alone
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). Not run in CI, which uses stable. Seeds come from the
# shipped configs and captions; new inputs collect in fuzz/corpus/<target>, and any crash
# is written to fuzz/artifacts/<target> and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
targets="${2:-tokenize config vocabulary gif png mp4 idx}"

# Seed corpora: real inputs, so the fuzzer starts from valid files.
mkdir -p corpus/config corpus/tokenize corpus/vocabulary corpus/gif corpus/png corpus/mp4 corpus/idx
for config in ../configs/*.toml ../tests/fixtures/micro.toml; do
    cp "$config" "corpus/config/$(basename "$config")"
done
printf 'a red circle moving left' > corpus/tokenize/canonical
printf 'the triangle is green and drifts upward' > corpus/tokenize/paraphrase
cp ../checkpoints/tiny/vocab.json corpus/vocabulary/tiny.json
cp seeds/clip.gif corpus/gif/clip.gif
cp seeds/frames.png corpus/png/frames.png
# x264's output at each profile (tests/fixtures/mp4) and the regression corpus of earlier runs.
cp ../tests/fixtures/mp4/*.mp4 corpus/mp4/
find ../tests/fixtures/mp4/fuzz -type f -exec cp {} corpus/mp4/ \; 2>/dev/null || true
# A small IDX file of images, raw and gzipped (the real ones are large: the fuzzer cuts them).
printf '\0\0\10\3\0\0\0\2\0\0\0\3\0\0\0\3abcdefghijklmnopqr' > corpus/idx/two-3x3
gzip -c corpus/idx/two-3x3 > corpus/idx/two-3x3.gz

for target in $targets; do
    echo "== fuzzing $target for ${seconds} s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048
done
echo "no crashes"
