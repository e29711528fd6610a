#!/usr/bin/env bash
# The tests that need PostgreSQL, against the system PostgreSQL of one major version
# ($DEX_PG_MAJOR, 15 unless set); in a chroot of the Debian release that packages it where this
# machine's apt sources do not. scripts/test.sh runs it for each major.
#
# One release build serves the end-to-end suites here and the packages after (scripts/package.sh
# reuses it), and the #[pg_test] build shares its dependencies: each major compiles its
# dependencies once, besides the lints' check.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
where_packaged "$REPO_ROOT/scripts/test-major.sh"
setup 1.95   # pgrx-tests, for the #[pg_test]s
cd "$REPO_ROOT"

# The end-to-end suites, one test program each, a few at a time: most of their time is spent
# waiting (a worker's next cycle, a retry's backoff, a standby's replay, a webhook's schedule),
# not computing. The longest start first, so that the short ones fill the gaps. A program's
# output is printed whole when it ends.
E2E_JOBS="${DEX_E2E_JOBS:-4}"
E2E_LONGEST_FIRST=(alerts operations history_at_scale worker supabase hosted configuration faults)

run_e2e_suites() {
    local built programs=() name ordered=() logs pid status failed=()
    built="$(cargo test -p dex_collector_e2e --tests --no-run --message-format=json)"
    # Test programs are the executables under deps/ (a binary target's own program is not).
    mapfile -t programs < <(sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p' <<<"$built")
    [ "${#programs[@]}" -gt 0 ] || { echo "no end-to-end test program was built" >&2; exit 1; }
    suite_of() { basename "${1%-*}"; }
    for name in "${E2E_LONGEST_FIRST[@]}"; do
        for program in "${programs[@]}"; do
            [ "$(suite_of "$program")" = "$name" ] && ordered+=("$program")
        done
    done
    for program in "${programs[@]}"; do
        [[ " ${E2E_LONGEST_FIRST[*]} " == *" $(suite_of "$program") "* ]] || ordered+=("$program")
    done

    logs="$(mktemp -d -t dex_collector_e2e.XXXXXX)"
    local -A suite_of_pid=() started_at=()
    # Interrupted, the suites stop too: each tears down its clusters on SIGTERM (tests/e2e's
    # cluster.rs), and their failures end this script.
    trap 'kill -TERM "${!suite_of_pid[@]}" 2>/dev/null || true' INT TERM
    finish_one() {
        status=0 pid=
        wait -n -p pid || status=$?
        # A wait a signal interrupted names no program: the next one waits for it.
        [ -n "${pid:-}" ] || return 0
        name="${suite_of_pid[$pid]}"
        printf '\n--- %s (%s s, exit %s)\n' "$name" "$((SECONDS - started_at[$name]))" "$status"
        cat "$logs/$name.log"
        [ "$status" -eq 0 ] || failed+=("$name")
        unset "suite_of_pid[$pid]"
    }
    for program in "${ordered[@]}"; do
        while [ "${#suite_of_pid[@]}" -ge "$E2E_JOBS" ]; do finish_one; done
        name="$(suite_of "$program")"
        started_at[$name]=$SECONDS
        # From the crate's directory, as `cargo test` runs them (paths to fixtures are relative).
        (cd tests/e2e && exec "$program") >"$logs/$name.log" 2>&1 &
        suite_of_pid[$!]="$name"
    done
    while [ "${#suite_of_pid[@]}" -gt 0 ]; do finish_one; done
    trap - INT TERM
    rm -rf "$logs"
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "end-to-end suites failed on PostgreSQL ${PG_MAJOR}: ${failed[*]}" >&2
        exit 1
    fi
}

# The other crates do not depend on the major: scripts/test.sh lints them once.
step "Lints, built for PostgreSQL ${PG_MAJOR}"
cargo clippy -p dex_collector --all-targets "${PG_FEATURES[@]}" -- -D warnings

step "#[pg_test] tests and the extension's unit tests in a pgrx-managed PostgreSQL ${PG_MAJOR}"
pgdata="$(mktemp -d -t dex_collector_pgrx.XXXXXX)"
# cargo-pgrx stops its instance when it exits normally; interrupted (Ctrl-C), it leaves it running.
stop_pgrx_instance() {
    [ -f "$pgdata/data/postmaster.pid" ] || return 0
    as_root runuser -u postgres -- "$("$PG_CONFIG" --bindir)/pg_ctl" -D "$pgdata/data" -m immediate \
        stop >/dev/null 2>&1 || true
}
trap 'stop_pgrx_instance; as_root rm -rf "$pgdata"' EXIT
runas=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$pgdata"
    runas=(--runas postgres --pgdata "$pgdata/data")
fi
cargo pgrx test "pg${PG_MAJOR}" --release "${runas[@]}"

install_extension --release

step "The pg_regress suite (tests/pg_regress/), run by cargo pgrx regress, on PostgreSQL ${PG_MAJOR}"
"$REPO_ROOT/scripts/regress.sh"

ensure_supabase_parts

step "End-to-end tests on PostgreSQL ${PG_MAJOR}, ${E2E_JOBS} suites at a time"
run_e2e_suites
