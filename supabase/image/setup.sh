#!/bin/sh
# Adds dex_collector to an image built FROM supabase/postgres:<tag>; run as root at build time:
#
#   sh setup.sh dex_collector-VERSION-pgN-debianR-ARCH.tar.gz after-create.sql
#
# 1. installs the archive with its install.sh (which finds the library directory of Supabase's
#    Nix-built server: NIX_PGLIBDIR, not pg_config's);
# 2. puts after-create.sql where supautils runs it, and a copy in /usr/local/share/dex_collector
#    (the first place is a volume at run time: an existing volume never sees the image's file);
# 3. writes dex_collector.conf: shared_preload_libraries and supautils.privileged_extensions
#    restated in full with dex_collector added (lists cannot be appended to), as the image's own
#    configuration has them, and dex_collector.database;
# 4. includes that file at the end of postgresql.conf, after supautils.conf and conf.d.
#
# Running it again changes nothing. The places, for an image that differs: DEX_CONFIG_FILE,
# DEX_CONFIG_DIR, DEX_CUSTOM_SCRIPTS_DIR, PG_CONFIG, DEX_LIBDIR (install.sh --libdir).
set -eu

[ "$#" -eq 2 ] || { echo "usage: sh $0 dex_collector-...tar.gz after-create.sql" >&2; exit 2; }
archive="$1" after_create="$2"
config_file="${DEX_CONFIG_FILE:-/etc/postgresql/postgresql.conf}"
config_dir="${DEX_CONFIG_DIR:-/etc/postgresql}"
scripts_dir="${DEX_CUSTOM_SCRIPTS_DIR:-/etc/postgresql-custom/extension-custom-scripts}"
pg_config="${PG_CONFIG:-$(command -v pg_config)}" || { echo "no pg_config on PATH: set PG_CONFIG" >&2; exit 1; }
our_config="$config_dir/dex_collector.conf"
kept_copy=/usr/local/share/dex_collector/after-create.sql

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1.
tar -xzf "$archive" -C "$work"
sh "$work"/dex_collector-*/install.sh ${DEX_LIBDIR:+--libdir "$DEX_LIBDIR"} "$pg_config"

# 2.
for target in "$scripts_dir/dex_collector/after-create.sql" "$kept_copy"; do
    mkdir -p "$(dirname "$target")"
    cp "$after_create" "$target"
    chmod 0644 "$target"
    echo "after-create.sql: $target"
done

# 3. The server itself says what its configuration sets (postgres -C reads every include, and
# gives a custom parameter of a library not loaded, like supautils.*, as written). The server
# refuses to run as root. At build time the image has no data directory yet (its PGDATA is made
# by the entrypoint at start), and may lack a directory its configuration includes (the 17
# line's conf.d, made at start too): postgres -C needs an existing directory for -D, and every
# include_dir, or it reads nothing.
postgres="$("$pg_config" --bindir)/postgres"
[ -x "$postgres" ] || postgres="$(command -v postgres)"
as_postgres() {
    if command -v gosu >/dev/null 2>&1; then
        gosu postgres "$@"
    elif command -v su-exec >/dev/null 2>&1; then
        su-exec postgres "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        # util-linux's su takes -c and -C after the user name for its own: one quoted command.
        line='exec'
        for word in "$@"; do
            line="$line '$(printf '%s' "$word" | sed "s/'/'\\\\''/g")'"
        done
        su -s /bin/sh -c "$line" postgres
    fi
}
probe_dir="$work/probe"
mkdir "$probe_dir"
chmod 0755 "$work"
chown postgres "$probe_dir"
# The configuration file's own include_dir lines (the image's conf.d is named there), quoted or
# not; a last line without its newline is read too.
sed -n -e "s/^[[:space:]]*include_dir[[:space:]=]*'\([^']*\)'.*/\1/p" -e t \
    -e "s/^[[:space:]]*include_dir[[:space:]=]*\([^'[:space:]#][^[:space:]#]*\).*/\1/p" "$config_file" |
while IFS= read -r dir || [ -n "$dir" ]; do
    case "$dir" in /*) ;; *) dir="$(dirname "$config_file")/$dir" ;; esac
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        chown postgres "$dir"
        echo "include_dir $dir: made (empty)"
    fi
done
setting() {   # setting NAME: its value, empty where nothing sets it
    if as_postgres "$postgres" -C "$1" -D "$probe_dir" -c config_file="$config_file" >"$work/value" 2>"$work/error"; then
        cat "$work/value"
    elif ! grep -q 'unrecognized configuration parameter' "$work/error"; then
        cat "$work/error" >&2
        exit 1
    fi
}
with_dex_collector() {   # with_dex_collector LIST: LIST, dex_collector added unless in it
    if printf '%s\n' "$1" | tr ',' '\n' | sed 's/^[[:space:]"]*//; s/[[:space:]"]*$//' | grep -qx dex_collector; then
        printf '%s\n' "$1"
    elif [ -z "$(printf '%s' "$1" | tr -d ' \t')" ]; then
        echo dex_collector
    else
        printf '%s, dex_collector\n' "$1"
    fi
}
quoted() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }
preload="$(setting shared_preload_libraries)"
preload="$(with_dex_collector "$preload")"
privileged="$(setting supautils.privileged_extensions)"
privileged="$(with_dex_collector "$privileged")"
cat >"$work/dex_collector.conf" <<CONF
# Written by dex_collector's setup.sh: the lists restated in full, as the image had them, with
# dex_collector added. Included at the end of $config_file.
shared_preload_libraries = $(quoted "$preload")
supautils.privileged_extensions = $(quoted "$privileged")
dex_collector.database = 'postgres'
CONF
mkdir -p "$config_dir"
if cmp -s "$work/dex_collector.conf" "$our_config"; then
    echo "$our_config: unchanged"
else
    cp "$work/dex_collector.conf" "$our_config"
    chmod 0644 "$our_config"
    echo "$our_config:"
    sed -n 's/^[a-z]/  &/p' "$our_config"
fi

# 4.
include="include = '$our_config'"
if grep -qxF "$include" "$config_file"; then
    echo "$config_file: includes it already"
else
    # A last line without its newline would swallow ours.
    [ -z "$(tail -c 1 "$config_file")" ] || echo >>"$config_file"
    echo "$include" >>"$config_file"
    echo "$config_file: $include (at the end)"
fi
