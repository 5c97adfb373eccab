#!/usr/bin/env bash
# Builds FlashMQ (a multi-threaded C++ MQTT broker, github.com/halfgaar/FlashMQ, OSL-3.0; see
# README.md here) from the source tarball beside this script, for side-by-side benchmarks.
# Needs cmake, g++ >= 12 and libssl-dev (installed with apt-get if cmake or g++ is missing).
# Reuses OUT_DIR/flashmq when it is already built. Prints the path of the binary; exits non-zero
# (with the reason on stderr) when it cannot build it.
#   benches/flashmq/build.sh [OUT_DIR]      default OUT_DIR: /tmp/flashmq-build
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/flashmq-build}
tarball=$(ls "$here"/flashmq-*.tar.gz | head -1)
src=$out/src
if [ ! -x "$out/flashmq" ]; then
  if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || ! [ -e /usr/include/openssl/ssl.h ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ libssl-dev; } >&2
  fi
  rm -rf "$src"; mkdir -p "$src"
  tar -xzf "$tarball" -C "$src" --strip-components=1
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$src/build" --target flashmq -j "$(nproc)" >&2
  cp "$src/build/flashmq" "$out/flashmq"
fi
echo "$out/flashmq"
