#!/usr/bin/env bash
# Builds the installable files of the extension for one PostgreSQL major ($DEX_PG_MAJOR, 15
# unless set) with `cargo pgrx package` (release), and packs them twice into dist/:
#
#   dex_collector-VERSION-pgN-debianR-ARCH.tar.gz   the files and an install.sh that puts them
#                                                  where the server's pg_config says (no Rust)
#   postgresql-N-dex-collector_VERSION-1_ARCH.deb  the same files for Debian's PostgreSQL N
#
# Where this machine's Debian does not package that major, it runs in a chroot of the release
# that does. scripts/test.sh runs it for each major it tests; scripts/test-package.sh then
# installs both into a system that has nothing but PostgreSQL and runs a collection from them.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
where_packaged "$REPO_ROOT/scripts/package.sh"
setup
cd "$REPO_ROOT"

# The newest glibc a build may need, by the Debian release it is built on: README.md's Install
# section states these.
glibc_floor_for() {
    case "$1" in
        debian12) echo 2.34 ;;
        debian13) echo 2.38 ;;
        debian-forky) echo 2.38 ;;
        *) echo "no glibc floor stated for a $1 build: add it here and to README.md" >&2; return 1 ;;
    esac
}

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
architecture="$(dpkg --print-architecture)"
# A stable release by its number (debian12), the testing release, which has none yet, by its name
# (debian-forky).
debian_release="$(. /etc/os-release && if [ -n "${VERSION_ID:-}" ]; then echo "debian${VERSION_ID%%.*}"; else echo "debian-${VERSION_CODENAME}"; fi)"
glibc_floor="$(glibc_floor_for "$debian_release")"
name="dex_collector-${version}-pg${PG_MAJOR}-${debian_release}-${architecture}"
deb_name="postgresql-${PG_MAJOR}-dex-collector"
deb_file="${deb_name}_${version}-1_${architecture}.deb"
dist="$REPO_ROOT/dist"
work="$(mktemp -d -t dex_collector_package.XXXXXX)"
trap 'rm -rf "$work"' EXIT

step "Building the release package for PostgreSQL ${PG_MAJOR}"
cargo pgrx package --pg-config "$PG_CONFIG" "${PG_FEATURES[@]}" --out-dir "$work/pgrx"

library_dir="$("$PG_CONFIG" --pkglibdir)"
extension_dir="$("$PG_CONFIG" --sharedir)/extension"
built_library="$work/pgrx$library_dir/dex_collector.so"
built_extension="$work/pgrx$extension_dir"
[ -f "$built_library" ] && [ -f "$built_extension/dex_collector.control" ] || {
    echo "cargo pgrx package left no $built_library or control file" >&2
    exit 1
}

# The released install scripts too (cargo pgrx packages the current one and the upgrade
# scripts), so that a DBA can create an older version and update it, as the upgrade test does.
mapfile -t released < <(released_install_scripts)
stage_extension_files() {   # stage_extension_files DIR
    mkdir -p "$1"
    install -m 0644 "$built_extension"/dex_collector* "${released[@]}" "$1/"
}

# What the library needs from the system that loads it, checked where it is built (the clean
# system scripts/test-package.sh installs into has no binutils, and must not get them). Supabase's
# images run a Nix-built server whose loader searches only the Nix glibc's directory, never the
# base image's /usr/lib: nothing beyond glibc (libc, libm, the loader) and libgcc_s, which the Nix
# glibc carries too.
step "What the library needs"
needed="$(readelf -d "$built_library" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')"
echo "NEEDED: ${needed//$'\n'/ }"
unexpected="$(grep -Evx 'libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-[^/]*\.so\.[0-9]+' <<<"$needed" || true)"
if [ -z "$needed" ] || [ -n "$unexpected" ]; then
    echo "the library must need only libc, libm, libgcc_s and the loader; it needs: ${unexpected//$'\n'/ }" >&2
    exit 1
fi
# The newest glibc symbol version it needs: the oldest glibc it runs with. At most the floor of the
# release it is built on, which README.md's Install section states.
glibc_needed="$(objdump -T "$built_library" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
echo "highest GLIBC_ symbol version: ${glibc_needed} (at most ${glibc_floor} for a ${debian_release} build)"
if [ "$(printf '%s\n' "$glibc_needed" "$glibc_floor" | sort -V | tail -n 1)" != "$glibc_floor" ]; then
    echo "the library needs glibc ${glibc_needed}, newer than ${glibc_floor}, what README.md promises for ${debian_release}" >&2
    exit 1
fi

step "dist/${name}.tar.gz"
tree="$work/tar/$name"
install -D -m 0755 "$built_library" "$tree/dex_collector.so"
stage_extension_files "$tree/extension"
sed -e "s/@PG_MAJOR@/${PG_MAJOR}/g" -e "s/@VERSION@/${version}/g" -e "s/@GLIBC@/${glibc_needed}/g" \
    scripts/package-install.sh.in >"$tree/install.sh"
chmod 0755 "$tree/install.sh"
mkdir -p "$dist"
rm -f "$dist"/dex_collector-*-pg"${PG_MAJOR}"-*.tar.gz "$dist"/"${deb_name}"_*.deb   # one build per major
tar -C "$work/tar" --owner=0 --group=0 -czf "$dist/${name}.tar.gz" "$name"

step "dist/${deb_file}"
root="$work/deb"
install -D -m 0644 "$built_library" "$root$library_dir/dex_collector.so"
stage_extension_files "$root$extension_dir"
install -D -m 0644 README.md "$root/usr/share/doc/$deb_name/README.md"
for page in docs/*.md; do
    install -D -m 0644 "$page" "$root/usr/share/doc/$deb_name/$page"
done
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: ${deb_name}
Version: ${version}-1
Architecture: ${architecture}
Maintainer: dex_collector developers <dex_collector@packages.invalid>
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: postgresql-${PG_MAJOR}, libc6 (>= ${glibc_needed}), libgcc-s1, ca-certificates
Suggests: postgresql-${PG_MAJOR}-cron
Description: DEX audit data collection for PostgreSQL ${PG_MAJOR}
 dex_collector collects DEX audit data for every company a vending operator
 serves, from inside the database: SELECT dex_collect_all() calls the web
 app's collect-bulk endpoint for every company, concurrently, and records the
 run; a background worker and pg_cron schedule it; dex_parse() reads DEX in SQL.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$root" "$dist/${deb_file}" >/dev/null

step "Packages for PostgreSQL ${PG_MAJOR} (needs glibc ${glibc_needed} or newer)"
ls -l "$dist/${name}.tar.gz" "$dist/${deb_file}"
