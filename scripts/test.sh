#!/usr/bin/env bash
# The test command of README.md: the whole workspace's tests with cargo-nextest, plus doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real-model tests run when the models are cached here (`.ci/run` pulls them); otherwise they print
# "skipped" and pass.
models="${MYCEL_TEST_MODELS_DIR:-$HOME/.cache/mycel/dev-data/models}"
export MYCEL_TEST_MODELS_DIR="$models"
if [ -d "$models" ]; then export MYCEL_MODEL_CACHE="${MYCEL_MODEL_CACHE:-$models}"; fi
cargo test --workspace --locked --doc --quiet
cargo nextest run --workspace --locked "$@"
