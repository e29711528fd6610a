#!/usr/bin/env bash
# The demo: a throwaway cluster with the design's schema (row level security on, a dozen
# companies), a local stand-in for /api/dex/collect-bulk, one real `SELECT dex_collect_all()`,
# and the recorded run. Everything is torn down at the end.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
install_extension
step "Running the demo"
cd "$REPO_ROOT"
cargo run --quiet -p dex_collector_e2e --bin dex-demo
