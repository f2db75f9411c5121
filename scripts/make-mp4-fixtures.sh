#!/usr/bin/env bash
# Writes the MP4 test clips of tests/fixtures/mp4: what x264 makes with each common H.264
# profile, with and without B-frames, as `ffmpeg -i clip.mov clip.mp4` and downloaded videos
# do, plus each decodable clip's frames as ffmpeg decodes them (one PNG, frames stacked
# top to bottom), which the reader's tests compare with their own decoding.
#
#   scripts/make-mp4-fixtures.sh
#
# Needs Debian's ffmpeg (with libx264). Run once; the outputs are checked in, so the tests
# need no ffmpeg. The source is ffmpeg's own moving test pattern (testsrc2), 64×64, 8 frames a
# second, 16 frames.
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures"
mkdir -p mp4
cd mp4

source=(-f lavfi -i testsrc2=size=64x64:rate=8 -frames:v 16 -c:v libx264)
encode() { # name, options…
    local name=$1
    shift
    ffmpeg -v error -y "${source[@]}" "$@" "$name.mp4"
}
# Decodable by OpenH264: 8-bit 4:2:0, Baseline, Main and High, B-frames or not.
encode baseline -pix_fmt yuv420p -profile:v baseline
encode main -pix_fmt yuv420p -profile:v main -bf 0
encode main-bframes -pix_fmt yuv420p -profile:v main
encode high -pix_fmt yuv420p -profile:v high -bf 0
encode high-bframes -pix_fmt yuv420p                      # x264's default: High, 3 B-frames
# The same stream with its index (moov) before the data: its frames are high-bframes'.
encode high-bframes-faststart -pix_fmt yuv420p -movflags +faststart
for name in baseline main main-bframes high high-bframes; do
    ffmpeg -v error -y -i "$name.mp4" -vf tile=1x16 -pix_fmt rgb24 "$name.frames.png"
done
# A fragmented file (its frames indexed in `moof` boxes, as streaming writes them): refused
# with the command that remuxes it.
encode fragmented -pix_fmt yuv420p -movflags frag_keyframe+empty_moov
# Not decodable by OpenH264 (it reads 8-bit 4:2:0 only): the reader names the profile.
encode high444 -pix_fmt yuv444p
encode high10 -pix_fmt yuv420p10le
ls -l
