#!/usr/bin/env bash
# Builds supabase/Dockerfile on one supabase/postgres tag with one package, starts the image as
# Supabase's docker-compose.yml starts its `db` service, and runs the self-hosted scenario in it
# as `postgres` (tests/supabase/scenario.sql: create, Vault secrets, a collection against the
# stand-in endpoint, a pg_cron run, the history, nothing for the API roles). Needs docker, psql
# and the stand-in (cargo build --release -p dex-stand-in). The GitHub
# workflow runs it for one tag of each line; the parts it is made of (install.sh, setup.sh, the
# scenario) are run by the package test and the e2e suite on every machine.
#
#   supabase/image/test-image.sh 17.6.1.136 dist/dex_collector-0.3.0-pg17-debian12-amd64.tar.gz
set -euo pipefail

tag="${1:?usage: $0 SUPABASE_POSTGRES_TAG PACKAGE.tar.gz}"
package="${2:?usage: $0 SUPABASE_POSTGRES_TAG PACKAGE.tar.gz}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
stand_in="${DEX_STAND_IN:-$repo/target/release/dex-stand-in}"
image="supabase-postgres-dex:$tag"
container="dex-supabase-$$"
password="dex-test-$$"
db_port=54329
service_key="sk-image-test-$$"
work="$(mktemp -d)"

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "== the database's log (last 200 lines)" >&2
        docker logs --tail 200 "$container" >&2 2>&1 || true
    fi
    docker rm -f "$container" >/dev/null 2>&1 || true
    if [ -n "${stand_in_pid:-}" ]; then kill "$stand_in_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

docker build -f "$repo/supabase/Dockerfile" \
    --build-arg SUPABASE_POSTGRES_TAG="$tag" \
    --build-arg DEX_COLLECTOR_PACKAGE="${package#"$repo"/}" \
    -t "$image" "$repo"

# The compose file's db service: supabase_admin bootstraps, the init scripts make postgres with
# POSTGRES_PASSWORD; host networking so the server reaches the stand-in on loopback.
docker run -d --name "$container" --network host \
    -e POSTGRES_PASSWORD="$password" -e PGPASSWORD="$password" -e PGPORT="$db_port" \
    -e POSTGRES_PORT="$db_port" -e POSTGRES_DB=postgres -e POSTGRES_HOST=/var/run/postgresql \
    -e JWT_SECRET=super-secret-jwt-token-with-at-least-32-characters-long -e JWT_EXP=3600 \
    "$image" postgres -c config_file=/etc/postgresql/postgresql.conf -c port="$db_port" >/dev/null

export PGHOST=127.0.0.1 PGPORT="$db_port" PGUSER=postgres PGDATABASE=postgres PGPASSWORD="$password"
ready=false
for _ in $(seq 1 120); do
    # The init scripts restart the server once: ready means postgres can log in and it stays so.
    if pg_isready -q && psql -X -qAt -c 'SELECT 1' >/dev/null 2>&1; then
        sleep 3
        psql -X -qAt -c 'SELECT 1' >/dev/null 2>&1 && ready=true && break
    fi
    sleep 2
done
$ready || { docker logs "$container" >&2; echo "the database did not come up" >&2; exit 1; }

"$stand_in" --service-key "$service_key" >"$work/stand-in.out" &
stand_in_pid=$!
for _ in $(seq 1 50); do
    grep -q '^listening on ' "$work/stand-in.out" && break
    sleep 0.1
done
site_url="$(sed -n 's/^listening on //p' "$work/stand-in.out")"
[ -n "$site_url" ] || { echo "the stand-in did not start" >&2; exit 1; }

echo "== dex_collector in $image: library, settings, worker"
docker exec "$container" sh -c 'ls -l "$(dirname "$(readlink -f "$(command -v postgres)")")"/../lib/dex_collector.so 2>/dev/null || true'
psql -X -c "SHOW shared_preload_libraries" -c "SHOW supautils.privileged_extensions" \
    -c "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'dex_collector%'"

echo "== The self-hosted scenario, as postgres"
psql -X -v ON_ERROR_STOP=1 -f "$repo/tests/fixtures/sample_schema.sql" >/dev/null
psql -X -v ON_ERROR_STOP=1 -v site_url="$site_url" -v service_key="$service_key" \
    -f "$repo/tests/supabase/scenario.sql"

docker logs "$container" >"$work/db.log" 2>&1
if grep -E 'PANIC|panicked|stack backtrace|server process .* was terminated' "$work/db.log"; then
    echo "the server log has a panic or a crash" >&2
    exit 1
fi
echo "== $image passed"
