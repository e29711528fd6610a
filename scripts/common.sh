# Shared by the scripts: installs what is missing on a Debian machine and builds and installs the
# extension into the system PostgreSQL of one major version, $DEX_PG_MAJOR (15 unless set).
# Idempotent: a second run reuses what the first one installed and built. Works as root or as a
# user with sudo.
set -euo pipefail

PG_MAJOR="${DEX_PG_MAJOR:-15}"
PGRX_VERSION=0.18.1
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
# The crate's default feature is pg15; every other major is chosen explicitly.
PG_FEATURES=(--no-default-features --features "pg${PG_MAJOR}")

# Each step is printed with the time since the command began (scripts called by scripts, chroots
# included, count from the first one's start): where a run's time goes, part by part.
export DEX_STARTED_AT="${DEX_STARTED_AT:-$(date +%s)}"
step() {
    local elapsed=$(($(date +%s) - DEX_STARTED_AT))
    printf '\n==> [%d:%02d] %s\n' "$((elapsed / 60))" "$((elapsed % 60))" "$*"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Whether this machine's apt sources have PostgreSQL $1 (Debian 12 has 15, Debian 13 has 17, the
# testing release "forky" has 18; the PostgreSQL project's apt repository, where configured, has
# them all).
packaged_here() {
    local policy
    policy="$(apt-cache policy "postgresql-$1" 2>/dev/null)"
    # Package lists removed (as container images do) know no package: fetch them first.
    if [[ "$policy" != *"Candidate: "[0-9]* ]] && ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        as_root apt-get update -qq
        policy="$(apt-cache policy "postgresql-$1" 2>/dev/null)"
    fi
    [[ "$policy" == *"Candidate: "[0-9]* ]]
}

# The Debian release that packages PostgreSQL $1, for a chroot where this machine's has none.
debian_suite_for() {
    case "$1" in
        15) echo bookworm ;;
        17) echo trixie ;;
        18) echo forky ;;
        *)
            echo "no Debian release packages PostgreSQL $1: add the PostgreSQL apt repository" \
                "(https://wiki.postgresql.org/wiki/Apt) to this machine and run this again" >&2
            return 1
            ;;
    esac
}

# For a script that works on $PG_MAJOR: where this machine's apt sources do not have that major,
# runs the script ($1, with its arguments) again in a chroot of the Debian release that does,
# with this machine's Rust toolchain mounted (scripts/in-chroot.sh; as root there), and exits
# with its status. Otherwise returns, and the script goes on here; so it does inside that chroot
# (never a chroot in a chroot).
where_packaged() {
    if [ -n "${DEX_IN_CHROOT:-}" ] || packaged_here "$PG_MAJOR"; then
        return 0
    fi
    local suite status=0
    suite="$(debian_suite_for "$PG_MAJOR")"
    step "PostgreSQL $PG_MAJOR is not packaged here: in a Debian $suite chroot"
    DEX_PG_MAJOR="$PG_MAJOR" in_chroot --rust "$suite" "build-$suite" "${@/#"$REPO_ROOT"//repo}" ||
        status=$?
    exit "$status"
}

# scripts/in-chroot.sh as root, with what it reads from the environment (sudo would drop it).
# What it leaves in the repository (dist/, target/) is handed back to the caller.
in_chroot() {
    local status=0
    as_root env HOME="$HOME" ${CI:+CI="$CI"} ${DEX_PG_MAJOR:+DEX_PG_MAJOR="$DEX_PG_MAJOR"} \
        ${DEX_STARTED_AT:+DEX_STARTED_AT="$DEX_STARTED_AT"} ${DEX_E2E_JOBS:+DEX_E2E_JOBS="$DEX_E2E_JOBS"} \
        ${DEX_CHROOT_DIR:+DEX_CHROOT_DIR="$DEX_CHROOT_DIR"} ${DEBIAN_MIRROR:+DEBIAN_MIRROR="$DEBIAN_MIRROR"} \
        ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
        "$REPO_ROOT/scripts/in-chroot.sh" "$@" || status=$?
    if [ "$(id -u)" -ne 0 ]; then
        as_root chown -R "$(id -u):$(id -g)" "$REPO_ROOT/dist" "$REPO_ROOT/target" 2>/dev/null || true
    fi
    return "$status"
}

# The packages of those named that are not installed.
missing_packages() {
    local package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || echo "$package"
    done
    return 0
}

# Installs those of the named packages that are missing (apt options may come first).
ensure_apt_packages() {
    local options=() missing
    while [ "${1:-}" != "${1#--}" ]; do
        options+=("$1")
        shift
    done
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    step "Installing Debian packages: ${missing[*]}"
    # An install killed part way (a session ending) leaves dpkg "interrupted", and apt refuses
    # every install until its packages are configured; with nothing pending this does nothing.
    as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
}

ensure_packages() {
    ensure_apt_packages postgresql-${PG_MAJOR} postgresql-server-dev-${PG_MAJOR} postgresql-${PG_MAJOR}-cron \
        libclang-dev clang pkg-config libssl-dev build-essential sudo ca-certificates
    # Debian's package starts a cluster of its own; this project starts throwaway ones instead.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
        as_root pg_ctlcluster "${PG_MAJOR}" main stop 2>/dev/null || true
    fi
}

# Rust $1 or newer (1.89 unless given: what the extension's locked dependencies need; the tests'
# pgrx-tests need 1.95). Debian's own cargo is older than either.
ensure_rust() {
    local needed="${1:-1.89}" found
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || {
        echo "cargo not found: install Rust $needed or newer (https://rustup.rs) and run this again" >&2
        exit 1
    }
    found="$(rustc --version | awk '{print $2}')"
    if [ "$(printf '%s\n%s\n' "$needed" "$found" | sort -V | head -n 1)" != "$needed" ]; then
        echo "Rust $found is too old: $needed or newer is needed (rustup update stable)" >&2
        exit 1
    fi
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
    ensure_apt_packages libsodium-dev libicu-dev
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

# The install scripts of the released versions, kept in sql/ as released (not the upgrade
# scripts, which cargo pgrx installs and packages itself).
released_install_scripts() {
    local script
    for script in "$REPO_ROOT"/sql/dex_collector--[0-9]*.[0-9]*.[0-9]*.sql; do
        case "$(basename "$script")" in
            *--*--*) ;;
            *) echo "$script" ;;
        esac
    done
}

# Builds the extension and installs it into the system PostgreSQL (needs root: sudo otherwise).
install_extension() {
    local profile_flag=()
    [ "${1:-}" = "--release" ] && profile_flag=(--release)
    step "Building and installing the extension ${profile_flag[*]}"
    local sudo_flag=()
    [ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
    (cd "$REPO_ROOT" && cargo pgrx install --pg-config "${PG_CONFIG}" "${PG_FEATURES[@]}" "${sudo_flag[@]}" "${profile_flag[@]}")
    # cargo pgrx installs the current version's script and the upgrade scripts; the released
    # install scripts too, so that an old version can be created and upgraded (the upgrade test).
    local released
    mapfile -t released < <(released_install_scripts)
    as_root install -m 0644 "${released[@]}" "$("${PG_CONFIG}" --sharedir)/extension/"
}

# $1: the Rust version needed, if more than building the extension needs.
setup() {
    ensure_packages
    ensure_rust "${1:-}"
    ensure_cargo_pgrx
}
