#!/usr/bin/env bash
# Every test: the pure-Rust unit tests, the #[pg_test] tests in a pgrx-managed PostgreSQL, and
# the end-to-end suites (real clusters, real pg_cron, the stand-in endpoint on loopback).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
cd "$REPO_ROOT"

step "Unit tests (no PostgreSQL)"
cargo test -p dex-parse -p jsonb-binary

step "#[pg_test] tests and the extension's unit tests in a pgrx-managed PostgreSQL"
pgdata="$(mktemp -d -t dex_collector_pgrx.XXXXXX)"
trap 'as_root rm -rf "$pgdata"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$pgdata"
    cargo pgrx test pg${PG_MAJOR} --runas postgres --pgdata "$pgdata/data"
else
    cargo pgrx test pg${PG_MAJOR}
fi

# `cargo pgrx test` installed a build with the test schema; install the real one.
install_extension

step "End-to-end tests"
cargo test -p dex_collector_e2e
