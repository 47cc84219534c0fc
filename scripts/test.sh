#!/usr/bin/env bash
# The test command of README.md: the whole workspace's tests with cargo-nextest, plus doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --locked "$@"
cargo test --workspace --locked --doc
