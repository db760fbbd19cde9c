# KoproGo Grid: `just demo` runs the whole system with simulated solar nodes, `just test` runs
# every test. `just --list` shows the rest.

set shell := ["bash", "-euo", "pipefail", "-c"]

export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
export REDIS_URL := env_var_or_default("REDIS_URL", "redis://127.0.0.1:6379")
# The database the query macros are checked against (see `just sqlx-prepare`).
sqlx_schema_url := replace_regex(DATABASE_URL, "/[^/?]*([?].*)?$", "/koprogo_grid_schema")

# Every test: unit, sqlx (one database per test), integration and end-to-end, then the
# simulator of the grid's core over 300 seeded histories of 3,000 steps (release build).
test: services
    command -v schemathesis >/dev/null || python3 -m pip install --quiet schemathesis
    python3 -c "import selenium" 2>/dev/null || python3 -m pip install --quiet selenium
    [ -f dashboard/node_modules/axe-core/axe.min.js ] || (cd dashboard && npm ci --no-audit --no-fund --silent)
    command -v promtool >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus chromium chromium-driver)
    cargo test --workspace
    just sim 300 3000

# The grid on a Redis Cluster of three masters that the test starts on free ports (part of
# `just test` too): tasks complete, every key of a cell in one slot, no command across slots.
test-cluster: services
    cargo test -p grid-system-tests --test cluster

# Explore seeded random histories of the grid's core in memory (no services needed), checking
# its invariants after every step: `just sim 2000 10000` is a long soak. A failing seed prints
# the command that replays it and the shortest history that still fails.
sim seeds="300" steps="3000" first="1":
    cargo run --quiet --release -p grid-orchestrator --bin orchestrator -- simulate --seeds {{seeds}} --steps {{steps}} --first-seed {{first}}

# Replay one seed of `just sim`, as a failure prints it.
sim-seed seed steps="3000":
    cargo run --quiet --release -p grid-orchestrator --bin orchestrator -- simulate --seed {{seed}} --steps {{steps}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Every figure: builds the release binaries and the edge worker, runs the scheduler, audit and
# consent benches, then BullMQ on the same machine and Redis (bench/bullmq, the baseline of the
# end-to-end ratio) and the real binaries end to end (1,000 simulated nodes, 50,000 tasks);
# writes bench/results/<time>-<commit>.md and .json (and latest.*). See system-tests/benches/system/.
bench: services
    cargo build --release --bins
    cargo build --profile edge -p grid-worker
    [ -d bench/bullmq/node_modules/bullmq ] || npm ci --prefix bench/bullmq --no-audit --no-fund --silent
    cargo bench -p grid-system-tests --bench deferral --bench scheduler --bench audit --bench consent --bench system
    just bench-cluster 1

# Heap allocations per task of the writer and the gateway over the reduced bench's end-to-end
# phase, counted by uprobes on glibc's allocator and on the gateway's mimalloc (perf, root): a
# count, not a time.
bench-allocations: services
    cargo build --release --bins
    bench/allocations.sh

# Redis Cluster against one server, same run: the reduced end-to-end bench (300 nodes, 20,000
# tasks, stopped after the half-load phase) alternated on the shared Redis server and on three
# cluster masters started here on free ports (`REDIS_CLUSTER_NODES`), `runs` times each; prints
# tasks/s, the sequential round trip and the CPU per task of each run.
bench-cluster runs="2": services
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bins
    dir=$(mktemp -d)
    cleanup() { deploy/local-redis-cluster.sh stop "$dir/cluster"; rm -rf "$dir"; }
    trap cleanup EXIT
    nodes=$(deploy/local-redis-cluster.sh start "$dir/cluster")
    for run in $(seq {{runs}}); do
        for mode in server cluster; do
            if [ "$mode" = cluster ]; then export REDIS_CLUSTER_NODES="$nodes"; else unset REDIS_CLUSTER_NODES; fi
            BENCH_NODES=300 BENCH_TASKS=20000 BENCH_SEQUENTIAL=50 BENCH_OPEN_LOOP_SECONDS=1 BENCH_STOP_AFTER_HALF=1 \
                cargo bench --quiet -p grid-system-tests --bench system 2> "$dir/$mode-$run.log" >/dev/null
            python3 bench/summarise.py "$mode" "$run" "$dir/$mode-$run.log"
        done
    done
    for node in ${nodes//,/ }; do echo "cluster master ${node#*:} holds $(redis-cli -p "${node#*:}" dbsize) keys"; done

# One cell against three on this machine, same run: the reduced end-to-end bench (300 nodes,
# 20,000 tasks, stopped after the half-load phase) alternated on a grid of one cell and on one of
# three (`BENCH_CELLS=a:BE,b:BE,c:BE`: one orchestrator writes the three, the fleet split over
# them, the gateway choosing each task's cell), `runs` times each; prints tasks/s, the
# sequential round trip, the CPU per task and each cell's share of the tasks. Then one cell of
# three taken over under load (`kill -9` of the process writing it): the takeover time and the
# other cells' completions meanwhile (also in `just bench`).
bench-cells runs="2": services
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bins
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    for run in $(seq {{runs}}); do
        for mode in one three; do
            if [ "$mode" = three ]; then export BENCH_CELLS=a:BE,b:BE,c:BE; else unset BENCH_CELLS; fi
            BENCH_NODES=300 BENCH_TASKS=20000 BENCH_SEQUENTIAL=50 BENCH_OPEN_LOOP_SECONDS=1 BENCH_STOP_AFTER_HALF=1 \
                cargo bench --quiet -p grid-system-tests --bench system 2> "$dir/$mode-$run.log" >/dev/null
            python3 bench/summarise.py "$mode" "$run" "$dir/$mode-$run.log"
        done
    done
    unset BENCH_CELLS
    BENCH_CELL_TAKEOVER_ONLY=1 cargo bench --quiet -p grid-system-tests --bench system 2> "$dir/takeover.log"

# Scheduler figures: decisions per second over 10,000 nodes and 100,000 tasks; node death to requeue.
bench-scheduler: services
    cargo bench -p grid-system-tests --bench scheduler

# Forecast-aware deferral over a year of hourly intensity (DE, FR, BE from the bundled file):
# emissions against running at once and against the solar-first rule alone. No services needed.
bench-deferral:
    cargo bench -p grid-system-tests --bench deferral

# Latency from a consent revocation to the node running the owner's task being told.
bench-consent: services
    cargo bench -p grid-system-tests --bench consent

# Replay and proof-chain verification speed over a synthetic archive of 200,000 events.
bench-audit: services
    cargo bench -p grid-system-tests --bench audit

# Rebuild the dashboard (gateway/assets/dashboard.js) from dashboard/: the client types are
# generated from openapi/openapi.json (openapi-typescript), type-checked (tsc) and bundled
# (esbuild). `just dashboard-check` fails when the committed files are not what this builds.
dashboard:
    cd dashboard && npm ci --no-audit --no-fund --silent && npm run build --silent

dashboard-check: dashboard
    git diff --exit-code -- dashboard/src/api.d.ts gateway/assets/dashboard.js

# The queries are checked against the schema when they compile (`sqlx::query!`): from `.sqlx/`
# (committed; `.cargo/config.toml` sets SQLX_OFFLINE), which `just sqlx-prepare` rewrites after a
# query or a migration changed, against a database of its own built from migrations/
# (koprogo_grid_schema, dropped and rebuilt each time). `just sqlx-check` fails when `.sqlx/` is
# not what the code and the migrations give. Both need sqlx-cli 0.9 (`.ci/run` installs it).
sqlx-prepare: sqlx-schema
    cargo sqlx prepare --workspace --database-url "{{sqlx_schema_url}}"

sqlx-check: sqlx-schema
    cargo sqlx prepare --workspace --check --database-url "{{sqlx_schema_url}}"

sqlx-schema: services
    sqlx database reset -y --source migrations --database-url "{{sqlx_schema_url}}" >/dev/null

# Regenerate the committed OpenAPI document from the gateway's code.
openapi:
    cargo run --quiet -p grid-gateway --bin gateway -- openapi > openapi/openapi.json

# Make sure PostgreSQL and Redis answer on 127.0.0.1; start local ones if they do not.
services:
    #!/usr/bin/env bash
    set -euo pipefail
    pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
    redis_up() ( exec 3<>/dev/tcp/127.0.0.1/6379 || exit 1; printf 'PING\r\n' >&3; read -t 2 -r reply <&3 || exit 1; [[ "$reply" == +PONG* ]] ) 2>/dev/null
    if ! pg_up; then
        if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql)" ]; then
            echo "starting the local PostgreSQL cluster"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
        elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
            echo "starting PostgreSQL with Docker Compose"
            docker compose up -d postgres
        else
            echo "PostgreSQL does not answer on 127.0.0.1:5432 and cannot be started here:" >&2
            echo "install it (apt-get install postgresql) or set DATABASE_URL to a running server." >&2
            exit 1
        fi
        for _ in $(seq 50); do pg_up && break; sleep 0.2; done
    fi
    if ! redis_up; then
        if command -v redis-server >/dev/null; then
            echo "starting a throwaway local Redis (nothing kept on disk)"
            mkdir -p target/redis
            redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$PWD/target/redis" --logfile "$PWD/target/redis/redis.log"
        elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
            echo "starting Redis with Docker Compose"
            docker compose up -d redis
        else
            echo "Redis does not answer on 127.0.0.1:6379 and cannot be started here:" >&2
            echo "install it (apt-get install redis-server) or set REDIS_URL to a running server." >&2
            exit 1
        fi
        for _ in $(seq 50); do redis_up && break; sleep 0.2; done
    fi
    pg_up || { echo "PostgreSQL still does not answer" >&2; exit 1; }
    redis_up || { echo "Redis still does not answer" >&2; exit 1; }

# The demo on a grid of three cells (`be:BE,de:DE,fr:FR`, or DEMO_CELLS) over a local Redis
# Cluster of three masters started for it: a fleet per cell in the cell's zone, each sample task
# in the cell the gateway chooses. Fails unless every task completes and every chain verifies.
demo-cells seconds="120" nodes="6" tasks="300":
    DEMO_CELLS="${DEMO_CELLS:-be:BE,de:DE,fr:FR}" DEMO_CLUSTER=1 just demo {{seconds}} {{nodes}} {{tasks}}

# Forget the demo's state: its database (koprogo_grid_demo, which the demo creates) and its
# Redis keys (the `demo` namespace only: `{demo:<cell>}:*`, and `demo:*` written before cells).
# `just demo` does it first unless DEMO_KEEP=1.
demo-reset: services
    #!/usr/bin/env bash
    set -euo pipefail
    database="${DEMO_DATABASE:-koprogo_grid_demo}"
    namespace="${GRID_NAMESPACE:-demo}"
    PGOPTIONS='--client-min-messages=warning' psql -q -h 127.0.0.1 -U postgres -d postgres \
        -c "drop database if exists \"$database\" with (force)"
    for pattern in "{$namespace:*" "$namespace:*"; do
        redis-cli -h 127.0.0.1 --scan --pattern "$pattern" | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
    done
    echo "demo state reset (database $database, Redis keys {$namespace:*} and $namespace:*)"

# Run everything (services, 2 orchestrators, gateway, simulated solar fleet, sample tasks), then
# keep it running `seconds` (0: stop once the tasks are done). Exits non-zero when a sample task
# does not complete. Starts from a clean state each run (DEMO_KEEP=1 keeps the last one's).
# DEMO_BATCH=100 submits the sample tasks in batches of 100 (`POST /v1/tasks/batch`).
demo seconds="120" nodes="6" tasks="300": services
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bins
    bin="${CARGO_TARGET_DIR:-target}/release"
    logs=target/demo
    mkdir -p "$logs"
    export DEMO_DATABASE="${DEMO_DATABASE:-koprogo_grid_demo}"
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DEMO_DATABASE"
    export GRID_NAMESPACE="${GRID_NAMESPACE:-demo}"
    export GRID_OPERATOR_KEY="${GRID_OPERATOR_KEY:-demo-operator-key-change-me-0123456789}"
    export GATEWAY_LISTEN="${GATEWAY_LISTEN:-127.0.0.1:8081}"
    [ "${DEMO_KEEP:-0}" = 1 ] || just demo-reset
    gateway_url="http://$GATEWAY_LISTEN"
    pids=()
    cluster_dir=""
    stop() {
        kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
        [ -z "$cluster_dir" ] || deploy/local-redis-cluster.sh stop "$cluster_dir"
    }
    trap stop EXIT
    # `just demo-cells`: several cells (DEMO_CELLS, as GRID_CELLS), on a local Redis Cluster
    # (DEMO_CLUSTER=1) of three masters started here and stopped at the end.
    [ -z "${DEMO_CELLS:-}" ] || export GRID_CELLS="$DEMO_CELLS"
    if [ "${DEMO_CLUSTER:-0}" = 1 ]; then
        cluster_dir="$logs/redis-cluster"
        rm -rf "$cluster_dir"
        REDIS_CLUSTER_NODES=$(deploy/local-redis-cluster.sh start "$cluster_dir")
        export REDIS_CLUSTER_NODES
        echo "a Redis Cluster of three masters: $REDIS_CLUSTER_NODES"
    fi
    "$bin/orchestrator" migrate
    # Two orchestrators: the first to take the writer's lease writes, the other stands by and
    # takes over within about a second if it dies. Each says which it is on its /readyz.
    GRID_CONSUMER_NAME=orchestrator-1 GRID_ADMIN_LISTEN=127.0.0.1:8091 "$bin/orchestrator" run > "$logs/orchestrator-1.log" 2>&1 & pids+=($!); first=$!
    GRID_CONSUMER_NAME=orchestrator-2 GRID_ADMIN_LISTEN=127.0.0.1:8092 "$bin/orchestrator" run > "$logs/orchestrator-2.log" 2>&1 & pids+=($!); second=$!
    "$bin/gateway" > "$logs/gateway.log" 2>&1 & pids+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/${GATEWAY_LISTEN%:*}/${GATEWAY_LISTEN##*:}) 2>/dev/null && break; sleep 0.1; done
    role() { curl -s "http://$1/readyz" | sed -n 's/.*"role":"\([a-z_]*\)".*/\1/p'; }
    for _ in $(seq 100); do [ "$(role 127.0.0.1:8091)" = writer ] || [ "$(role 127.0.0.1:8092)" = writer ] && break; sleep 0.1; done
    organization=$("$bin/worker" --gateway "$gateway_url" organization --name "Demo copropriété")
    api_key=$(printf '%s' "$organization" | sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p')
    day=240
    if [ -n "${GRID_CELLS:-}" ]; then
        # A fleet per cell, in the cell's zone, the nodes shared out (at least one each).
        IFS=',' read -r -a cells <<< "$GRID_CELLS"
        each=$(( ({{nodes}} + ${#cells[@]} - 1) / ${#cells[@]} ))
        for cell in "${cells[@]}"; do
            "$bin/worker" --gateway "$gateway_url" simulate --api-key "$api_key" --nodes "$each" --day-seconds $day \
                --cell "${cell%%:*}" --zone "${cell##*:}" > "$logs/fleet-${cell%%:*}.log" 2>&1 & pids+=($!)
        done
        echo "the grid's cells: $GRID_CELLS ($each simulated nodes in each)"
    else
        "$bin/worker" --gateway "$gateway_url" simulate --api-key "$api_key" --nodes {{nodes}} --day-seconds $day \
            > "$logs/fleet.log" 2>&1 & pids+=($!)
    fi
    started=$(date +%s)
    at() { date -d "@$((started + $1))" +%H:%M:%S; }
    if [ "$(role 127.0.0.1:8091)" = writer ]; then writer=$first; standby=$second; else writer=$second; standby=$first; fi
    echo "KoproGo Grid is running (logs in $logs/):"
    echo "  orchestrator-1  $(role 127.0.0.1:8091)   (curl http://127.0.0.1:8091/readyz)"
    echo "  orchestrator-2  $(role 127.0.0.1:8092)   (curl http://127.0.0.1:8092/readyz)"
    echo "  dashboard    $gateway_url/dashboard   (sign in with the organisation's key: $api_key;"
    echo "               or the operator key, to see every organisation)"
    echo "  metrics      curl $gateway_url/metrics   (and http://127.0.0.1:8091/metrics for the orchestrator)"
    echo "  Swagger UI   $gateway_url/swagger-ui"
    echo "  stats        curl -H 'Authorization: Bearer $api_key' $gateway_url/v1/stats"
    echo "  proofs       curl -H 'Authorization: Bearer $api_key' $gateway_url/v1/proofs/verify"
    echo "  tasks        curl -H 'Authorization: Bearer $api_key' '$gateway_url/v1/tasks?limit=5'"
    echo "  takeover     kill -9 $writer   (the writer; the standby, pid $standby, takes over within a second)"
    echo "the {{nodes}} simulated Pis live a ${day} s day: sun until $(at 90), night until $(at 210), next sunrise at $(at 210)"
    echo "(a task submitted at night waits for the sun, or for the hour its zone's grid is expected to be cleanest,"
    echo "each at most until three expected runtimes before its deadline; each credit uses its zone's intensity of the hour)"
    echo "submitting {{tasks}} sample tasks to {{nodes}} simulated nodes..."
    RUST_LOG=warn "$bin/worker" --gateway "$gateway_url" submit --api-key "$api_key" --tasks {{tasks}} --batch "${DEMO_BATCH:-1}" --require-all
    curl -s -H "Authorization: Bearer $api_key" "$gateway_url/v1/stats"; echo
    verdict=$(curl -s -H "Authorization: Bearer $api_key" "$gateway_url/v1/proofs/verify")
    echo "$verdict"
    [[ "$verdict" == *'"valid":true'* ]] || { echo "the green-proof chain does not verify" >&2; exit 1; }
    if [ -n "${GRID_CELLS:-}" ]; then
        # Where the sample tasks went (the gateway's choice, from each cell's summary).
        PGOPTIONS='--client-min-messages=warning' psql -q -At -F ' ' -h 127.0.0.1 -U postgres -d "$DEMO_DATABASE" \
            -c "select 'cell ' || cell_id || ': ' || count(*) || ' tasks completed' from task where status = 'completed' group by cell_id order by cell_id"
    fi
    if [ {{seconds}} -gt 0 ]; then
        echo "the grid keeps running for {{seconds}} s (Ctrl-C stops it); kill -9 $writer to see the standby take over"
        sleep {{seconds}}
    fi
