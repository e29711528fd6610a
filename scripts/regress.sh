#!/usr/bin/env bash
# The pg_regress suite, tests/pg_regress/, run by `cargo pgrx regress` for one major
# ($DEX_PG_MAJOR, 15 unless set): cargo-pgrx builds and installs the extension (the release build
# the test command has just made, so nothing compiles), starts its own PostgreSQL instance, creates
# the database dex_collector_regress, runs setup.sql and then every sql/*.sql file with psql, and
# fails unless each file's output equals expected/*.out. scripts/test-major.sh runs it.
#
#   ./scripts/regress.sh            # every file
#   ./scripts/regress.sh --accept   # and make this run's output the expected one (review: git diff)
#
# The instance lives in a PGRX_HOME of its own, in the build directory (target/regress-pgrx, or
# under $CARGO_TARGET_DIR; as root, in /var/cache/dex_collector/regress-pgrx where the postgres user
# cannot reach the build directory), initialized anew for every run, on a port nothing listens on: a
# developer's ~/.pgrx and its instances are left alone. The directory stays, with a config.toml
# that changes only when the port must: pgrx's build script rebuilds everything that depends on
# it when the config.toml it last read changes.
#
# As root (CI), two things stand in the way, and this script handles both: PostgreSQL refuses to
# run as root, and cargo-pgrx 0.18.1 starts the regress instance as whoever runs it (its --runas
# reaches createdb, not initdb and pg_ctl). The PGRX_HOME's pg_config names a directory of
# PostgreSQL's own programs where initdb and pg_ctl run as the postgres user, the instance's
# superuser named root as cargo-pgrx's clients (createdb, pg_regress's psql) connect. As another
# user, cargo-pgrx runs everything as that user, which must be able to write to pg_config's
# library and extension directories (it installs there).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

accept=false
[ "${1:-}" = "--accept" ] && accept=true

extension_dirs=("$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)/extension")
if [ "$(id -u)" -ne 0 ]; then
    for dir in "${extension_dirs[@]}"; do
        [ -w "$dir" ] && continue
        echo "cargo pgrx regress installs the extension into $dir, which $(id -un) cannot write to:" >&2
        echo "run this as root, or once: sudo chown $(id -un) ${extension_dirs[*]}" >&2
        exit 1
    done
fi

suite="$REPO_ROOT/tests/pg_regress"
pgrx_home="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/regress-pgrx/pg${PG_MAJOR}"
# As root, the instance runs as the postgres user, which must reach its directory: a checkout in
# a home directory of mode 0700 (root's own) keeps it out, and the instance goes to /var/cache.
prepare_pgrx_home() {
    mkdir -p "$pgrx_home"
    [ "$(id -u)" -eq 0 ] || return 0
    chmod 0755 "$(dirname "$pgrx_home")"
    chown postgres "$pgrx_home"
    runuser -u postgres -- test -w "$pgrx_home"
}
if ! prepare_pgrx_home; then
    pgrx_home="/var/cache/dex_collector/regress-pgrx/pg${PG_MAJOR}"
    if ! prepare_pgrx_home; then
        echo "the postgres user cannot reach $pgrx_home: set CARGO_TARGET_DIR to a directory it can" >&2
        exit 1
    fi
fi
datadir="$pgrx_home/data-${PG_MAJOR}"
server_log="$pgrx_home/${PG_MAJOR}.log"
rm -rf "$datadir" "$server_log" "$suite/results"
pg_config="$PG_CONFIG"
if [ "$(id -u)" -eq 0 ]; then
    bindir="$pgrx_home/bin"
    real_bindir="$("$PG_CONFIG" --bindir)"
    rm -rf "$bindir"
    mkdir "$bindir"
    for program in "$real_bindir"/*; do
        ln -s "$program" "$bindir/"
    done
    # From / : the postgres user may not enter the directory this runs from.
    printf '#!/bin/sh\ncd / && exec runuser -u postgres -- %q -U root "$@"\n' "$real_bindir/initdb" \
        >"$bindir/initdb.wrapper"
    printf '#!/bin/sh\ncd / && exec runuser -u postgres -- %q "$@"\n' "$real_bindir/pg_ctl" \
        >"$bindir/pg_ctl.wrapper"
    printf '#!/bin/sh\n[ "$1" = --bindir ] && exec echo %q\nexec %q "$@"\n' "$bindir" "$PG_CONFIG" \
        >"$bindir/pg_config.wrapper"
    for program in initdb pg_ctl pg_config; do
        chmod 0755 "$bindir/$program.wrapper"
        mv -f "$bindir/$program.wrapper" "$bindir/$program"
    done
    pg_config="$bindir/pg_config"
fi

# cargo-pgrx's port is its base port plus the major: a base that makes it a free one.
port=$((28800 + PG_MAJOR))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
config="$(printf 'base_port = %d\n\n[configs]\npg%s = "%s"\n' "$((port - PG_MAJOR))" "$PG_MAJOR" "$pg_config")"
[ "$(cat "$pgrx_home/config.toml" 2>/dev/null)" = "$config" ] || echo "$config" >"$pgrx_home/config.toml"

cleanup() {
    if [ -f "$datadir/postmaster.pid" ]; then
        "$("$pg_config" --bindir)/pg_ctl" stop -D "$datadir" -m immediate >/dev/null 2>&1 || true
    fi
    rm -rf "$datadir" "$suite/results"
}
trap cleanup EXIT

# A result that equals neither expected/NAME.out nor an alternative expected/NAME_N.out becomes
# NAME.out, unless NAME has alternatives: which one this major's output belongs in is for a person
# to say.
accept_results() {
    local result name expected matched
    for result in "$suite/results"/*.out; do
        name="$(basename "$result" .out)"
        matched=false
        for expected in "$suite/expected/$name.out" "$suite/expected/${name}"_[0-9].out; do
            if [ -f "$expected" ] && cmp -s "$result" "$expected"; then matched=true; fi
        done
        $matched && continue
        if compgen -G "$suite/expected/${name}_[0-9].out" >/dev/null; then
            echo "$name has alternatives in expected/: put this output (the diff above) where PostgreSQL ${PG_MAJOR}'s belongs" >&2
            status=1
        else
            cp "$result" "$suite/expected/$name.out"
            echo "expected/$name.out now has this run's output: review it with git diff"
        fi
    done
}

status=0
(cd "$REPO_ROOT" && PGRX_HOME="$pgrx_home" cargo pgrx regress "pg${PG_MAJOR}" --release \
    "${PG_FEATURES[@]}") || status=$?
if [ "$status" -ne 0 ]; then
    [ -f "$suite/regression.diffs" ] && cat "$suite/regression.diffs"
    if $accept; then
        status=0
        accept_results
    fi
fi
if grep -E 'PANIC|TRAP:|panicked|RUST_BACKTRACE' "$server_log"; then
    echo "the server's log has a panic (above)" >&2
    status=1
fi
exit "$status"
