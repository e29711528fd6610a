#!/usr/bin/env bash
# The tests that need PostgreSQL, against the system PostgreSQL of one major version
# ($DEX_PG_MAJOR, 15 unless set); in a chroot of the Debian release that packages it where this
# machine's apt sources do not. scripts/test.sh runs it for each major.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
where_packaged "$REPO_ROOT/scripts/test-major.sh"
setup
cd "$REPO_ROOT"

step "Lints, built for PostgreSQL ${PG_MAJOR}"
cargo clippy --workspace --all-targets "${PG_FEATURES[@]}" -- -D warnings

step "#[pg_test] tests and the extension's unit tests in a pgrx-managed PostgreSQL ${PG_MAJOR}"
pgdata="$(mktemp -d -t dex_collector_pgrx.XXXXXX)"
trap 'as_root rm -rf "$pgdata"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$pgdata"
    cargo pgrx test "pg${PG_MAJOR}" --runas postgres --pgdata "$pgdata/data"
else
    cargo pgrx test "pg${PG_MAJOR}"
fi

# `cargo pgrx test` installed a build with the test schema; install the real one.
install_extension

ensure_supabase_parts

step "End-to-end tests on PostgreSQL ${PG_MAJOR}"
cargo test -p dex_collector_e2e
