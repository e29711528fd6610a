#!/usr/bin/env bash
# Installs the packages scripts/package.sh made for PostgreSQL major $1 into a system that has
# PostgreSQL and nothing else (a Debian chroot with only the server and pg_cron from apt: no
# compiler, no Rust, no headers) and runs the package end-to-end test from each: the .deb with
# apt, then the archive with its install.sh. Each is removed again, and must leave nothing.
#
#   ./scripts/test-package.sh 15
#
# The test program (tests/e2e/tests/package.rs) is built beforehand where the packages were
# built and copied in: it drives throwaway clusters of the installed server, which needs no
# toolchain. Run as root, or as a user with sudo.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The package test program, built for PostgreSQL $DEX_PG_MAJOR's system (here or in its chroot),
# copied to target/package-test/pgN/package.
build_test_program() {
    where_packaged "$REPO_ROOT/scripts/test-package.sh" --build-test-program
    setup
    cd "$REPO_ROOT"
    local program
    program="$(cargo test -p dex_collector_e2e --test package --no-run --message-format=json |
        grep -F '/tests/package.rs"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)"
    [ -x "$program" ] || { echo "the package test program was not built" >&2; exit 1; }
    install -D -m 0755 "$program" "target/package-test/pg${PG_MAJOR}/package"
}

# Inside the package chroot, as root.
files_left() {
    ls "$("$PG_CONFIG" --pkglibdir)"/dex_collector* "$("$PG_CONFIG" --sharedir)"/extension/dex_collector* 2>/dev/null || true
}

run_package_test() {   # run_package_test HOW
    step "Package test: PostgreSQL ${PG_MAJOR}, installed $1"
    PG_CONFIG="$PG_CONFIG" /repo/target/package-test/pg${PG_MAJOR}/package --ignored --test-threads 1
}

test_in_clean_system() {
    if ! packaged_here "$PG_MAJOR"; then
        # A major no Debian release has (16): from the PostgreSQL apt repository, with the
        # script and key Debian's postgresql-common ships.
        ensure_apt_packages --no-install-recommends postgresql-common ca-certificates
        /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y >/dev/null
    fi
    ensure_apt_packages --no-install-recommends postgresql-${PG_MAJOR} postgresql-${PG_MAJOR}-cron
    for tool in cargo rustc cc gcc clang; do
        if command -v "$tool" >/dev/null; then
            echo "the clean system has $tool: it must not" >&2
            exit 1
        fi
    done
    # What an interrupted earlier test may have left.
    dpkg-query -W "postgresql-${PG_MAJOR}-dex-collector" >/dev/null 2>&1 &&
        apt-get purge -y -qq "postgresql-${PG_MAJOR}-dex-collector" >/dev/null
    rm -f $(files_left)

    local deb archive unpacked
    deb="$(ls /repo/dist/postgresql-${PG_MAJOR}-dex-collector_*.deb)"
    archive="$(ls /repo/dist/dex_collector-*-pg${PG_MAJOR}-*.tar.gz)"

    apt-get install -y -qq "$deb" >/dev/null
    # https endpoints need the system's CA certificates (rustls reads them): a dependency.
    [ -s /etc/ssl/certs/ca-certificates.crt ] || { echo "the .deb did not bring CA certificates" >&2; exit 1; }
    run_package_test "from $(basename "$deb") with apt"
    apt-get purge -y -qq "postgresql-${PG_MAJOR}-dex-collector" >/dev/null
    [ -z "$(files_left)" ] || { echo "purging the .deb left: $(files_left)" >&2; exit 1; }

    unpacked="$(mktemp -d)"
    tar -xzf "$archive" -C "$unpacked"
    "$unpacked"/*/install.sh
    run_package_test "from $(basename "$archive") with its install.sh"
    "$unpacked"/*/install.sh --uninstall
    rm -rf "$unpacked"
    [ -z "$(files_left)" ] || { echo "install.sh --uninstall left: $(files_left)" >&2; exit 1; }
}

case "${1:-}" in
    --build-test-program) build_test_program ;;
    --in-clean-system) test_in_clean_system ;;
    [0-9]*)
        major="$1"
        DEX_PG_MAJOR="$major" "$REPO_ROOT/scripts/test-package.sh" --build-test-program
        suite="$(debian_suite_for "$major" 2>/dev/null || echo bookworm)"
        DEX_PG_MAJOR="$major" in_chroot "$suite" "package-test-pg$major" \
            /repo/scripts/test-package.sh --in-clean-system
        ;;
    *)
        echo "usage: $0 MAJOR" >&2
        exit 2
        ;;
esac
