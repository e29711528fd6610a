#!/usr/bin/env bash
# The pg_regress suite, tests/pg_regress/, against the extension installed into the system
# PostgreSQL of one major ($DEX_PG_MAJOR, 15 unless set): psql runs each sql/*.sql file and its
# output must equal expected/*.out. scripts/test-major.sh runs it after installing the build.
#
#   ./scripts/regress.sh             # every file
#   ./scripts/regress.sh --accept    # and copy the output of a file that differs into expected/
#
# As a user other than root, `cargo pgrx regress pg15` runs the same files against pgrx's own
# instance (it builds and installs first). cargo-pgrx starts that instance as whoever runs it,
# and PostgreSQL refuses root, so as root (CI) this script does what it does, in a throwaway
# cluster of the postgres user, configured as cargo-pgrx configures its instance.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

accept=false
[ "${1:-}" = "--accept" ] && accept=true

suite="$REPO_ROOT/tests/pg_regress"
bindir="$("$PG_CONFIG" --bindir)"
pg_regress="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"
work="$(mktemp -d -t dex_collector_regress.XXXXXX)"
as_server_user=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$work"
    as_server_user=(runuser -u postgres --)
fi
cleanup() {
    "${as_server_user[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"${as_server_user[@]}" "$bindir/initdb" -D "$work/data" -U postgres -A trust --locale=C.UTF-8 >/dev/null
# As cargo-pgrx's instance: only warnings and errors reach the output.
echo "client_min_messages = warning" >>"$work/data/postgresql.conf"
"${as_server_user[@]}" "$bindir/pg_ctl" -D "$work/data" -w -l "$work/server.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$work' -c port=5432" start >/dev/null

"${as_server_user[@]}" "$bindir/createdb" -h "$work" -U postgres dex_collector_regress
# setup.sql first, once, as cargo-pgrx runs it when it creates the database; then the rest.
mapfile -t tests < <(cd "$suite/sql" && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | grep -vx setup)
mkdir -p "$work/out"
chmod 0777 "$work/out"
status=0
# psql runs in the suite's directory: the files read fixtures by paths relative to it.
(cd "$suite" && "$pg_regress" --use-existing --host="$work" --port=5432 --user=postgres \
    --dbname=dex_collector_regress --inputdir="$suite" --outputdir="$work/out" \
    setup "${tests[@]}") || status=$?
if [ "$status" -ne 0 ]; then
    [ -f "$work/out/regression.diffs" ] && cat "$work/out/regression.diffs"
    if $accept; then
        for result in "$work/out/results"/*.out; do
            cp "$result" "$suite/expected/"
        done
        echo "expected/ now has this run's output: review it with git diff"
        status=0
    fi
fi
if grep -E 'PANIC|TRAP:|panicked|RUST_BACKTRACE' "$work/server.log"; then
    echo "the server's log has a panic (above)" >&2
    status=1
fi
exit "$status"
