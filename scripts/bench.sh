#!/usr/bin/env bash
# The collection fan-out benchmark (BENCHMARKS.md): a throwaway cluster with N synthetic companies
# in the design's schema, a local stand-in for /api/dex/collect-bulk with a fixed latency, and
# `SELECT dex_collect_all()` timed against the sequential baseline. Without arguments it runs the
# whole suite (a few minutes); arguments go to dex-bench (`./scripts/bench.sh --help`).
# `./scripts/bench.sh --dex-parse` times dex_parse() over a table of 100,000 stored DEX files instead;
# `./scripts/bench.sh --dex-memory` measures a backend's peak memory for one dex_parse() call, then
# one dex_products() and one dex_sales() call;
# `./scripts/bench.sh --run-memory [--shared-buffers SIZE]` a backend's memory through one run of
# 2,000, 20,000 and 50,000 companies, and what the shared buffers hold after them, by schema;
# `./scripts/bench.sh --fairness` runs 1,000 companies with heavy-tailed endpoint times under the
# run deadline until each has been collected; `./scripts/bench.sh --adaptive` runs fixed and adaptive
# concurrency against an endpoint with a capacity (16 at once, 429 beyond a short queue), and through
# a drop of that capacity in the middle of a run (`--adaptive --repeat N`: the adaptive cases only, N
# times over; `--adaptive --slower K`: fixed 16, fixed 12 through the drop, and adaptive, with
# every company K times as long;
# `--adaptive --slowdown K [--slower S]`: fixed 16 and adaptive, every company K times as long
# from 2 s into the run, S times later with every company S times as long;
# `--adaptive --consecutive N [--slower K] [--workers W]`: N adaptive runs in a row, as a schedule
# makes them, after a run at fixed 16 with --slower; with --workers, of 3,000 companies against an
# endpoint that serves W at once and queues W / 2, after a run at fixed W; `--spread S` with any of
# these: the companies' times drawn with sigma S, 0 to 2, instead of 0.5);
# `./scripts/bench.sh --history` times docs/monitoring.md's
# monitoring queries over a generated 14-day history of 1,000 companies (4 million results);
# `./scripts/bench.sh --history-month [--days D] [--companies N] [--seed S]` records 30 days of
# 1,000 companies every 5 minutes in simulated time with history_detail 'all' and 'changes',
# and reports their size, dead tuples and query times (tens of minutes at the defaults).
#
# On the PostgreSQL major in $DEX_PG_MAJOR (15 unless set): `DEX_PG_MAJOR=17 ./scripts/bench.sh`
# runs in the Debian 13 chroot where this machine's Debian has no PostgreSQL 17 (scripts/test.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
where_packaged "$REPO_ROOT/scripts/bench.sh" "$@"
setup
# wrk measures the stand-in's own ceiling, to show that it is not what limits the figures.
if ! command -v wrk >/dev/null; then
    step "Installing wrk"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# Timings mean something only for the release build.
install_extension --release
step "Running the benchmark"
cd "$REPO_ROOT"
if [ "${1:-}" = "--dex-parse" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-parse-bench
elif [ "${1:-}" = "--fairness" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-fairness-bench
elif [ "${1:-}" = "--adaptive" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-adaptive-bench -- "${@:2}"
elif [ "${1:-}" = "--history" ]; then
    cargo test --quiet --release -p dex_collector_e2e --test history_at_scale -- --nocapture
elif [ "${1:-}" = "--history-month" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-history-bench -- "${@:2}"
elif [ "${1:-}" = "--run-memory" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-run-memory-bench -- "${@:2}"
elif [ "${1:-}" = "--dex-memory" ]; then
    cargo run --quiet --release -p dex-collector-bench --bin dex-parse-bench -- --memory
else
    cargo run --quiet --release -p dex-collector-bench --bin dex-bench -- "$@"
fi
