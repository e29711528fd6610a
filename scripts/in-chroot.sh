#!/usr/bin/env bash
# Runs a command in a Debian chroot of another release, for a PostgreSQL major version this
# machine's Debian does not package (PostgreSQL 17 on Debian 12 comes from Debian 13, "trixie"),
# and for testing the packages in a system with nothing but PostgreSQL. Run as root.
#
#   scripts/in-chroot.sh [--rust] SUITE NAME COMMAND...
#
# SUITE is a Debian release (bookworm, trixie); NAME names the chroot, kept under
# $DEX_CHROOT_DIR (default /var/cache/dex_collector/chroots) and reused by the next call:
# debootstrap runs once. This repository is mounted at /repo. With --rust, the caller's Rust
# toolchain (rustup's $CARGO_HOME/bin and $RUSTUP_HOME, by default $HOME/.cargo/bin and
# $HOME/.rustup) is mounted too, read-only, and first on PATH;
# cargo keeps its downloads in /cargo and builds into /target inside the chroot (never into the
# caller's: files made as root there, and another release's glibc). Without --rust the chroot
# has no compiler of any kind unless someone installs one.
#
# Whatever it mounts is unmounted when it exits, however it exits; processes left running in the
# chroot (a test's postgres) are ended first. A call killed outright (SIGKILL) cannot do that: the
# next call on the chroot ends and unmounts what it left.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

with_rust=false
if [ "${1:-}" = "--rust" ]; then
    with_rust=true
    shift
fi
[ "$#" -ge 3 ] || { echo "usage: $0 [--rust] SUITE NAME COMMAND..." >&2; exit 2; }
SUITE="$1" NAME="$2"
shift 2
CHROOT="${DEX_CHROOT_DIR:-/var/cache/dex_collector/chroots}/$NAME"
DEBOOTSTRAPPED="$CHROOT/.debootstrapped"

[ "$(id -u)" -eq 0 ] || { echo "$0 needs root (chroot, mount)" >&2; exit 1; }
RUST_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
RUST_TOOLCHAINS="${RUSTUP_HOME:-$HOME/.rustup}"
if $with_rust && ! { [ -x "$RUST_BIN/cargo" ] && [ -d "$RUST_TOOLCHAINS" ]; }; then
    echo "--rust needs rustup's toolchain in $RUST_BIN and $RUST_TOOLCHAINS (CARGO_HOME, RUSTUP_HOME)" >&2
    exit 1
fi

mkdir -p "$(dirname "$CHROOT")"
exec 9>"$CHROOT.lock"
flock 9   # one user of a chroot at a time; a second call waits

MOUNTED=()   # in mount order; unmounted in reverse
STEP_PID=

mounted_under_chroot() { awk -v root="$CHROOT/" 'index($2, root) == 1' /proc/mounts; }

mount_in() {   # mount_in PATH-IN-CHROOT MOUNT-ARGS...
    local target="$CHROOT$1"
    shift
    mkdir -p "$target"
    if mountpoint -q "$target"; then
        echo "$target is already mounted" >&2
        exit 1
    fi
    mount "$@" "$target"
    MOUNTED+=("$target")
    mount --make-private "$target"
}

chroot_pids() {
    local pid root
    for pid in /proc/[0-9]*; do
        root="$(readlink "$pid/root" 2>/dev/null)" || continue
        [ "$root" = "$CHROOT" ] && echo "${pid#/proc/}"
    done
    return 0
}

# A test's servers left behind would keep /dev busy: TERM, then KILL after 10 seconds.
end_chroot_processes() {
    local signal pids tries
    [ -n "$STEP_PID" ] && kill -s TERM "$STEP_PID" 2>/dev/null
    for signal in TERM KILL; do
        mapfile -t pids < <(chroot_pids)
        [ "${#pids[@]}" -eq 0 ] && return 0
        echo "ending processes left in $CHROOT ($signal): ${pids[*]}" >&2
        kill -s "$signal" "${pids[@]}" 2>/dev/null || true
        for ((tries = 0; tries < 20; tries++)); do
            [ -z "$(chroot_pids)" ] && return 0
            sleep 0.5
        done
    done
    return 0
}

# Ends the processes left in the chroot, then unmounts MOUNTED last first (/dev/pts before /dev),
# lazily what is still busy, and empties it.
end_and_unmount() {
    local i
    end_chroot_processes
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" ||
            echo "could not unmount ${MOUNTED[$i]}" >&2
    done
    MOUNTED=()
}

# True, and says what, while anything is mounted under the chroot.
still_mounted() {
    [ -n "$(mounted_under_chroot)" ] || return 1
    echo "still mounted under $CHROOT:" >&2
    mounted_under_chroot >&2
}

# Holding the lock, whatever is still mounted in the chroot was left by a call that was killed
# outright (SIGKILL, a machine's session ending) before its trap could run, together with any
# server it had started there. Left, it would fail this call's mounts. /proc/mounts lists them in
# the order they were mounted, as MOUNTED does.
clear_what_a_killed_call_left() {
    [ -n "$(mounted_under_chroot)" ] || return 0
    echo "left mounted under $CHROOT by a call that was killed; ending its processes, unmounting:" >&2
    mounted_under_chroot >&2
    mapfile -t MOUNTED < <(mounted_under_chroot | awk '{ print $2 }')
    end_and_unmount
    if still_mounted; then exit 1; fi
}

# In a trap a bare `return` returns the status the trap came with: every return here says 0.
unmount_all() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [ "${#MOUNTED[@]}" -gt 0 ]; then end_and_unmount; fi
    if still_mounted; then status=1; fi
    exit "$status"
}
trap unmount_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_chroot() {
    [ -f "$DEBOOTSTRAPPED" ] && return 0
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ -e "$CHROOT" ]; then
        # A debootstrap that did not finish. Never delete a tree something is mounted into.
        if [ -n "$(mounted_under_chroot)" ]; then
            echo "$CHROOT is incomplete and has mounts inside; unmount them first:" >&2
            mounted_under_chroot >&2
            exit 1
        fi
        rm -rf --one-file-system "$CHROOT"
    fi
    echo "==> Debian $SUITE chroot at $CHROOT (once, about a minute)"
    # A release newer than this machine's debootstrap knows (forky on Debian 12) is bootstrapped
    # with the script of the rolling release, sid, which every debootstrap has.
    local script=()
    [ -e "/usr/share/debootstrap/scripts/$SUITE" ] || script=(/usr/share/debootstrap/scripts/sid)
    debootstrap --variant=minbase "$SUITE" "$CHROOT" "$MIRROR" "${script[@]}" >/dev/null
    # Debian's testing release is signed with a Release file that expires within days, and a
    # mirror can lag behind it; apt would then refuse every update.
    if [ "${#script[@]}" -gt 0 ]; then
        echo 'Acquire::Check-Valid-Until "false";' >"$CHROOT/etc/apt/apt.conf.d/99dex-collector-testing"
    fi
    # Debian's postgresql package would start a cluster of its own; the tests start throwaway ones.
    printf '#!/bin/sh\nexit 101\n' >"$CHROOT/usr/sbin/policy-rc.d"
    chmod 0755 "$CHROOT/usr/sbin/policy-rc.d"
    touch "$DEBOOTSTRAPPED"
}

configure_chroot() {
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
    # debootstrap writes no /etc/hosts; sudo (cargo pgrx test --runas) wants the host name in it.
    grep -qsw localhost "$CHROOT/etc/hosts" ||
        printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >>"$CHROOT/etc/hosts"
    grep -qsw "$(hostname)" "$CHROOT/etc/hosts" || echo "127.0.1.1 $(hostname)" >>"$CHROOT/etc/hosts"
}

mount_all() {
    mount_in /proc -t proc proc
    mount_in /dev --bind /dev
    mount_in /dev/pts -t devpts -o newinstance,ptmxmode=0666 devpts
    mount_in /dev/shm -t tmpfs -o mode=1777 shm   # PostgreSQL's dynamic shared memory
    mount_in /repo --bind "$REPO_ROOT"
    if $with_rust; then
        mount_in "$RUST_BIN" --bind "$RUST_BIN"
        mount -o remount,bind,ro "$CHROOT$RUST_BIN"
        mount_in "$RUST_TOOLCHAINS" --bind "$RUST_TOOLCHAINS"
        mount -o remount,bind,ro "$CHROOT$RUST_TOOLCHAINS"
    fi
}

clear_what_a_killed_call_left
ensure_chroot
configure_chroot
mount_all

path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
environment=(HOME="$HOME" TERM="${TERM:-dumb}" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEX_IN_CHROOT="$SUITE")
[ -n "${CI:-}" ] && environment+=(CI="$CI")
for passed in DEX_PG_MAJOR DEX_STARTED_AT DEX_E2E_JOBS; do
    if [ -n "${!passed:-}" ]; then environment+=("$passed=${!passed}"); fi
done
if $with_rust; then
    path="$RUST_BIN:/cargo/bin:$path"
    environment+=(RUSTUP_HOME="$RUST_TOOLCHAINS" CARGO_HOME=/cargo CARGO_TARGET_DIR=/target)
    # cargo downloads crates as the caller's does: trusting what this machine trusts (a proxy's
    # own CA, say), which the chroot's ca-certificates does not know.
    if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$CHROOT/etc/ssl/host-ca-certificates.crt"
        environment+=(CARGO_HTTP_CAINFO=/etc/ssl/host-ca-certificates.crt)
    fi
fi
# In the background and waited for, so that a signal reaches the trap at once (bash runs traps
# only between foreground commands); stdin passed on, which a background job would not get.
# The lock's descriptor is closed for it: a server it leaves running must not hold the lock.
chroot "$CHROOT" env -i "${environment[@]}" PATH="$path" "$@" <&0 9>&- &
STEP_PID=$!
status=0
wait "$STEP_PID" || status=$?
STEP_PID=
exit "$status"
