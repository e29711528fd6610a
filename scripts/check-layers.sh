#!/usr/bin/env bash
# Two rules of the extension's source that the compiler does not fully keep:
# 1. Raw calls into PostgreSQL live in src/pg/ only: no `unsafe` code (blocks, functions, impls,
#    extern blocks, attributes) and no `no_mangle` anywhere else in src/, and the crate's
#    `#![deny(unsafe_code)]` is lifted for `mod pg` alone.
# 2. Modules depend one way: each may use only modules of a lower layer (below), so src/ has no
#    import circle. A new module gets its layer here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=0
fail() { echo "check-layers: $*" >&2; failed=1; }

unsafe_code='\bunsafe[[:space:]]*(\{|fn\b|impl\b|extern\b|trait\b|\()|no_mangle'
if matches="$(grep -rnE "$unsafe_code" src --include='*.rs' | grep -v '^src/pg/')"; then
    fail "unsafe code outside src/pg/:"$'\n'"$matches"
fi
allowed="$(grep -rn 'allow(unsafe_code)' src --include='*.rs' || true)"
if [ "$(grep -c . <<<"$allowed")" -ne 1 ] || ! grep -q '^src/lib.rs:' <<<"$allowed"; then
    fail "allow(unsafe_code) must appear once, on \`mod pg\` in src/lib.rs:"$'\n'"$allowed"
fi
if ! grep -q '^#!\[deny(unsafe_code)\]' src/lib.rs; then
    fail "src/lib.rs must deny unsafe_code"
fi

# The layers, lowest first: the PostgreSQL layer; what reads or writes the database; the error
# boundary; a run; its entry points (SQL functions, the worker); the crate root.
declare -A layer=(
    [pg]=0
    [readonly]=1 [service_key]=1 [version]=1 [history]=1 [lock]=1 [outbox]=1 [staleness]=1
    [settings]=2 [targets]=2
    [error]=3
    [run]=4
    [lifecycle]=5 [delivery]=5
    [api]=6 [dex_sql]=6 [worker]=6
    [lib]=7
)
if matches="$(grep -rn 'crate::{' src --include='*.rs')"; then
    fail "name each module in its own \`use crate::module\` (the layer check reads them):"$'\n'"$matches"
fi
for file in src/*.rs src/pg/*.rs; do
    case "$file" in
        src/pg/*) module=pg ;;
        *) module="$(basename "$file" .rs)" ;;
    esac
    if [ -z "${layer[$module]+set}" ]; then
        fail "$file: module $module has no layer in scripts/check-layers.sh"
        continue
    fi
    for used in $(grep -oE '\bcrate::[a-z_]+' "$file" | sed 's/crate:://' | sort -u); do
        [ "$used" = "$module" ] && continue
        if [ -z "${layer[$used]+set}" ]; then
            fail "$file uses crate::$used, which has no layer"
        elif [ "${layer[$used]}" -ge "${layer[$module]}" ]; then
            fail "$file ($module, layer ${layer[$module]}) uses crate::$used (layer ${layer[$used]}): dependencies point down"
        fi
    done
done
exit "$failed"
