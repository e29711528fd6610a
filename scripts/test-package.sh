#!/usr/bin/env bash
# Installs the packages scripts/package.sh made for PostgreSQL major $1 into a system that has
# PostgreSQL and nothing else (a Debian chroot with only the server and pg_cron from apt: no
# compiler, no Rust, no headers) and runs the package end-to-end test from each: the .deb with
# apt, the archive with its install.sh, and the archive again into an imitation of the Nix-built
# server of Supabase's images, also with supabase/image/setup.sh. Each is removed again, and must
# leave nothing.
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

run_package_test() {   # run_package_test HOW [PG_CONFIG]
    step "Package test: PostgreSQL ${PG_MAJOR}, installed $1"
    PG_CONFIG="${2:-$PG_CONFIG}" /repo/target/package-test/pg${PG_MAJOR}/package --ignored --test-threads 1
}

fail() {
    echo "$*" >&2
    exit 1
}

# An imitation of the server of Supabase's images (supabase/postgres, nix/postgresql/generic.nix):
# a Nix buildEnv whose bin/postgres is makeWrapper's script, exporting NIX_PGLIBDIR (where that
# server loads libraries from) and running the real server, while its pg_config (a copy in the
# same bin/) names another library directory; /usr/bin/postgres leads to the wrapper through a
# chain of symlinks. Here the wrapper runs Debian's server with NIX_PGLIBDIR Debian's library
# directory, and pg_config answers --pkglibdir with a decoy.
NIX=/opt/nix-imitation

make_nix_imitation() {
    local bindir libdir program
    bindir="$("$PG_CONFIG" --bindir)"
    libdir="$("$PG_CONFIG" --pkglibdir)"
    rm -rf "$NIX"
    mkdir -p "$NIX/bin" "$NIX/lib-of-pg_config" "$NIX/profile/bin" "$NIX/usr/bin"
    # pg_ctl and initdb start the postgres beside them, symlinks resolved: copies (the buildEnv
    # copies pg_ctl too), so that they start the wrapper.
    for program in "$bindir"/*; do
        case "${program##*/}" in
            postgres | postmaster | pg_config) ;;
            *) cp "$program" "$NIX/bin/" ;;
        esac
    done
    cat >"$NIX/bin/postgres" <<WRAPPER
#! /bin/bash -e
export NIX_PGLIBDIR='$libdir'
exec -a "\$0" "$bindir/postgres"  "\$@"
WRAPPER
    cat >"$NIX/bin/pg_config" <<PG_CONFIG
#!/bin/sh
case "\$1" in
    --pkglibdir) echo $NIX/lib-of-pg_config ;;
    --bindir) echo $NIX/bin ;;
    *) exec $bindir/pg_config "\$@" ;;
esac
PG_CONFIG
    # The test program looks for the library where pg_config --pkglibdir says before it starts
    # (tests/e2e/src/deployment.rs), here the decoy: it asks a pg_config that answers that with
    # NIX_PGLIBDIR. Its clusters still start from the imitation's bin/, through the wrapper.
    cat >"$NIX/pg_config-for-the-test-program" <<PG_CONFIG
#!/bin/sh
[ "\$1" = --pkglibdir ] && echo $libdir || exec $NIX/bin/pg_config "\$@"
PG_CONFIG
    chmod 0755 "$NIX/bin/postgres" "$NIX/bin/pg_config" "$NIX/pg_config-for-the-test-program"
    # Debian's server, unlike Nix's, takes $libdir from where it was started (bin/../lib), not
    # from NIX_PGLIBDIR; in the buildEnv that is the NIX_PGLIBDIR directory itself: so here.
    ln -s "$libdir" "$NIX/lib"
    ln -s ../../bin/postgres "$NIX/profile/bin/postgres"
    ln -s "$NIX/profile/bin/postgres" "$NIX/usr/bin/postgres"
}

# The archive's install.sh ($1) into the imitation, the package test through the wrapper, and
# install.sh --uninstall.
test_nix_imitation() {
    local installer="$1" libdir output
    libdir="$("$PG_CONFIG" --pkglibdir)"
    make_nix_imitation
    step "The archive's install.sh in an imitation of a Nix-built server (Supabase's images)"
    "$installer" "$NIX/bin/pg_config"
    [ -f "$libdir/dex_collector.so" ] || fail "install.sh did not put the library into NIX_PGLIBDIR ($libdir)"
    [ -z "$(ls -A "$NIX/lib-of-pg_config")" ] || fail "install.sh put the library where pg_config says: $(ls "$NIX/lib-of-pg_config")"
    # What pg_ctl checks before it starts a server: the version, through the symlinks and the wrapper.
    output="$("$NIX/usr/bin/postgres" -V)"
    echo "$NIX/usr/bin/postgres -V: $output"
    [ "$output" = "$("$(dirname "$PG_CONFIG")/postgres" -V)" ] || fail "postgres -V through the wrapper: $output"
    run_package_test "from the archive into the Nix imitation" "$NIX/pg_config-for-the-test-program"

    # Without a pg_config argument install.sh takes Debian's, whose bindir has the real server: the
    # wrapper is found on PATH, through the symlinks.
    output="$(PATH="$NIX/usr/bin:$PATH" "$installer" --uninstall)"
    echo "$output"
    [[ "$output" == *"Nix-wrapped server $NIX/usr/bin/postgres -> $NIX/bin/postgres"* ]] ||
        fail "install.sh --uninstall did not find the wrapper through PATH"
    [ -z "$(files_left)" ] || fail "install.sh --uninstall left: $(files_left)"

    # For a layout it cannot detect.
    "$installer" --libdir "$NIX/lib-of-pg_config" "$NIX/bin/pg_config" >/dev/null
    [ -f "$NIX/lib-of-pg_config/dex_collector.so" ] || fail "install.sh --libdir DIR did not install into DIR"
    "$installer" --uninstall --libdir "$NIX/lib-of-pg_config" "$NIX/bin/pg_config" >/dev/null
    [ -z "$(ls -A "$NIX/lib-of-pg_config")" ] && [ -z "$(files_left)" ] ||
        fail "install.sh --uninstall --libdir DIR left: $(ls "$NIX/lib-of-pg_config") $(files_left)"
}

# supabase/image/setup.sh ($1 the archive) in the imitation (made by test_nix_imitation), with a
# configuration shaped like the image's: it lists the libraries, includes supautils.conf and a
# conf.d that is not there yet, and PGDATA names a directory the image makes only at start.
test_image_setup() {
    local archive="$1" etc="$NIX/etc" data="$NIX/data" run="$NIX/run" name value before tries=0
    step "supabase/image/setup.sh in the Nix imitation"
    mkdir -p "$etc/postgresql" "$etc/postgresql-custom"
    install -d -o postgres -g postgres "$data" "$run"
    echo "supautils.privileged_extensions = 'pg_cron, pgcrypto'" >"$etc/postgresql-custom/supautils.conf"
    cat >"$etc/postgresql/postgresql.conf" <<CONF
data_directory = '$data'
hba_file = '$etc/postgresql/pg_hba.conf'
ident_file = '$etc/postgresql/pg_ident.conf'
listen_addresses = ''
unix_socket_directories = '$run'
shared_preload_libraries = 'pg_stat_statements, pg_cron'
include = '$etc/postgresql-custom/supautils.conf'
include_dir = '$etc/postgresql-custom/conf.d'
CONF
    echo "local all all trust" >"$etc/postgresql/pg_hba.conf"
    : >"$etc/postgresql/pg_ident.conf"
    run_setup_sh() {
        PGDATA="$NIX/made-at-start" PG_CONFIG="$NIX/bin/pg_config" DEX_CONFIG_FILE="$etc/postgresql/postgresql.conf" \
            DEX_CONFIG_DIR="$etc/postgresql" DEX_CUSTOM_SCRIPTS_DIR="$etc/postgresql-custom/extension-custom-scripts" \
            sh /repo/supabase/image/setup.sh "$archive" /repo/supabase/extension-custom-scripts/dex_collector/after-create.sql
    }
    run_setup_sh
    [ -d "$etc/postgresql-custom/conf.d" ] || fail "setup.sh did not make the missing include_dir"
    for name in shared_preload_libraries supautils.privileged_extensions dex_collector.database; do
        value="$(runuser -u postgres -- "$NIX/usr/bin/postgres" -C "$name" -c config_file="$etc/postgresql/postgresql.conf" 2>/dev/null)"
        echo "postgres -C $name: $value"
        case "$name" in
            shared_preload_libraries) [ "$value" = "pg_stat_statements, pg_cron, dex_collector" ] ;;
            supautils.*) [ "$value" = "pg_cron, pgcrypto, dex_collector" ] ;;
            *) [ "$value" = postgres ] ;;
        esac || fail "setup.sh left $name = '$value'"
    done
    for value in "$etc/postgresql-custom/extension-custom-scripts/dex_collector/after-create.sql" \
        /usr/local/share/dex_collector/after-create.sql; do
        cmp /repo/supabase/extension-custom-scripts/dex_collector/after-create.sql "$value" ||
            fail "setup.sh did not put after-create.sql at $value"
    done
    before="$(cat "$etc"/postgresql/*)"
    run_setup_sh >/dev/null
    [ "$(cat "$etc"/postgresql/*)" = "$before" ] || fail "setup.sh run again changed the configuration"

    # A server with that configuration, the way the image starts it (-c config_file=...).
    runuser -u postgres -- "$NIX/bin/initdb" -A trust -D "$data" >/dev/null
    runuser -u postgres -- "$NIX/bin/pg_ctl" -D "$data" -o "-c config_file=$etc/postgresql/postgresql.conf" \
        -l "$run/server.log" -w start >/dev/null
    until value="$(runuser -u postgres -- "$NIX/bin/psql" -h "$run" -d postgres -Atc \
        "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE '%dex_collector%'")" && [ -n "$value" ]; do
        if ((++tries > 30)); then
            runuser -u postgres -- "$NIX/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
            cat "$run/server.log" >&2
            fail "no dex_collector worker in pg_stat_activity after 30 s"
        fi
        sleep 1
    done
    echo "the server booted with dex_collector preloaded: backend_type $value"
    runuser -u postgres -- "$NIX/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    rm -rf /usr/local/share/dex_collector
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
    # What an interrupted earlier test may have left (dpkg itself interrupted, first).
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    dpkg-query -W "postgresql-${PG_MAJOR}-dex-collector" >/dev/null 2>&1 &&
        apt-get purge -y -qq "postgresql-${PG_MAJOR}-dex-collector" >/dev/null
    rm -f $(files_left)
    rm -rf "$NIX" /usr/local/share/dex_collector

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
    [ -z "$(files_left)" ] || { echo "install.sh --uninstall left: $(files_left)" >&2; exit 1; }

    test_nix_imitation "$(echo "$unpacked"/*/install.sh)"
    test_image_setup "$archive"
    "$unpacked"/*/install.sh --uninstall "$NIX/bin/pg_config" >/dev/null
    [ -z "$(files_left)" ] && [ -z "$(ls -A "$NIX/lib-of-pg_config")" ] ||
        fail "install.sh --uninstall after setup.sh left: $(files_left) $(ls "$NIX/lib-of-pg_config")"
    rm -rf "$unpacked" "$NIX"
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
