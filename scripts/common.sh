# Shared by demo.sh, test.sh and bench.sh: installs what is missing on a Debian 12 machine and
# builds and installs the extension into the system PostgreSQL 15. Idempotent: a second run
# reuses what the first one installed and built. Works as root or as a user with sudo.
set -euo pipefail

PG_MAJOR=15
PGRX_VERSION=0.18.1
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
    local wanted=(postgresql-${PG_MAJOR} postgresql-server-dev-${PG_MAJOR} postgresql-${PG_MAJOR}-cron
                  libclang-dev clang pkg-config libssl-dev build-essential sudo)
    local missing=()
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        step "Installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's package starts a cluster of its own; this project starts throwaway ones instead.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
        as_root pg_ctlcluster "${PG_MAJOR}" main stop 2>/dev/null || true
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || {
        echo "cargo not found: install Rust 1.85 or newer (https://rustup.rs) and run this again" >&2
        exit 1
    }
}

ensure_cargo_pgrx() {
    if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
        step "Installing cargo-pgrx ${PGRX_VERSION} (about 5 minutes, once)"
        cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked
    fi
    local pgrx_home="${PGRX_HOME:-$HOME/.pgrx}"
    if ! grep -qs "pg${PG_MAJOR} = \"${PG_CONFIG}\"" "${pgrx_home}/config.toml"; then
        step "Pointing cargo-pgrx at PostgreSQL ${PG_MAJOR}"
        cargo pgrx init --pg${PG_MAJOR} "${PG_CONFIG}"
    fi
}

# Builds supautils and Supabase Vault (third_party/, as released upstream) into the PostgreSQL
# under test, for the Supabase end-to-end tests; a few seconds, once.
ensure_supabase_parts() {
    local libdir
    libdir="$("${PG_CONFIG}" --pkglibdir)"
    if [ -f "$libdir/supautils.so" ] && [ -f "$libdir/supabase_vault.so" ]; then
        return
    fi
    step "Building supautils and Supabase Vault for PostgreSQL ${PG_MAJOR} (third_party/)"
    if ! dpkg-query -W -f='${Status}' libsodium-dev 2>/dev/null | grep -q "install ok installed"; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsodium-dev >/dev/null
    fi
    local build
    build="$(mktemp -d -t dex_collector_supabase.XXXXXX)"
    for archive in "$REPO_ROOT"/third_party/supautils-*.tar.gz "$REPO_ROOT"/third_party/supabase_vault-*.tar.gz; do
        tar xzf "$archive" -C "$build"
    done
    for source in "$build"/*/; do
        make -s -C "$source" PG_CONFIG="${PG_CONFIG}" >/dev/null
        as_root make -s -C "$source" PG_CONFIG="${PG_CONFIG}" install >/dev/null
    done
    rm -rf "$build"
}

# Builds the extension and installs it into the system PostgreSQL (needs root: sudo otherwise).
install_extension() {
    local profile_flag=()
    [ "${1:-}" = "--release" ] && profile_flag=(--release)
    step "Building and installing the extension ${profile_flag[*]}"
    local sudo_flag=()
    [ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
    (cd "$REPO_ROOT" && cargo pgrx install --pg-config "${PG_CONFIG}" "${sudo_flag[@]}" "${profile_flag[@]}")
    # cargo pgrx installs the current version's script and the upgrade scripts; the released
    # install scripts too, so that an old version can be created and upgraded (the upgrade test).
    local extension_dir
    extension_dir="$("${PG_CONFIG}" --sharedir)/extension"
    for released in "$REPO_ROOT"/sql/dex_collector--[0-9]*.[0-9]*.[0-9]*.sql; do
        case "$(basename "$released")" in
            *--*--*) ;;
            *) as_root install -m 0644 "$released" "$extension_dir/" ;;
        esac
    done
}

setup() {
    ensure_packages
    ensure_rust
    ensure_cargo_pgrx
}
