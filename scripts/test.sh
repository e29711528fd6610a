#!/usr/bin/env bash
# Every test, on each PostgreSQL major version it is given (default: 15, 17 and 18):
#
#   ./scripts/test.sh          # PostgreSQL 15, then 17, then 18
#   ./scripts/test.sh 17       # PostgreSQL 17 only (15 and 18 alike)
#
# First what needs no PostgreSQL: formatting, the pure-Rust tests (the stand-in endpoint's among
# them) and a fuzz smoke of the DEX parser. Then, for each major (scripts/test-major.sh): lints,
# the #[pg_test] tests and the end-to-end suites (real clusters, real pg_cron, Supabase's parts,
# the stand-in endpoint on loopback); then its packages are built and installed into a system
# that has nothing but PostgreSQL, where a collection runs from them (scripts/package.sh,
# scripts/test-package.sh).
# A major this machine's Debian does not package runs in a chroot of the release that does.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

majors=("$@")
[ "${#majors[@]}" -gt 0 ] || majors=(15 17 18)
for major in "${majors[@]}"; do
    [[ "$major" =~ ^[0-9]+$ ]] || { echo "usage: $0 [MAJOR...], e.g. $0 15 17 18" >&2; exit 2; }
done

# The checks before the majors need Rust and a C toolchain (ring, libFuzzer), no PostgreSQL.
ensure_apt_packages build-essential pkg-config ca-certificates
ensure_rust 1.95
cd "$REPO_ROOT"
started=$SECONDS
# In CI every run starts from a clean clone: the builds of this machine's own majors go to a
# directory kept between runs, as those of a chroot's majors stay in their chroot, so that a run
# compiles what changed. Elsewhere they go to the checkout's target/, as cargo's do.
if [ -n "${CI:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR=/var/cache/dex_collector/target
    as_root install -d -o "$(id -u)" -g "$(id -g)" "$CARGO_TARGET_DIR"
fi

step "Formatting"
cargo fmt --all --check

step "Layers: unsafe code only in src/pg/, dependencies between modules pointing one way"
./scripts/check-layers.sh

step "Lints of the crates that do not depend on the major (each major lints the extension)"
cargo clippy --workspace --exclude dex_collector --all-targets -- -D warnings

step "Unit tests (no PostgreSQL): the DEX parser, the jsonb writer, the stand-in endpoint, the collector's core against it"
cargo test -p dex-parse -p jsonb-binary -p dex-stand-in -p dex-collector-core

step "Fuzz smoke: the DEX parser under libFuzzer for 30 seconds, from the real files"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
fuzz_corpus="$(mktemp -d -t dex_parse_corpus.XXXXXX)"
# Stable Rust: libFuzzer's coverage without a sanitizer (-s none needs no nightly flag).
(cd crates/dex-parse && cargo fuzz run parse -s none "$fuzz_corpus" tests/fixtures -- -max_total_time=30 -print_final_stats=1)
rm -rf "$fuzz_corpus"
timings=("without PostgreSQL: $((SECONDS - started)) s")

for major in "${majors[@]}"; do
    started=$SECONDS
    DEX_PG_MAJOR="$major" "$REPO_ROOT/scripts/test-major.sh"
    DEX_PG_MAJOR="$major" "$REPO_ROOT/scripts/package.sh"
    "$REPO_ROOT/scripts/test-package.sh" "$major"
    timings+=("PostgreSQL $major: $((SECONDS - started)) s")
done

step "All passed"
printf '    %s\n' "${timings[@]}"
