#!/usr/bin/env bash
# `just bench-allocations`: heap allocations per task of the writer (both orchestrator processes:
# the standby's share is nothing) and of the gateway, counted by uprobes (perf; root) on glibc's
# malloc, realloc and calloc, and on the gateway's own allocator (mimalloc, linked into it: the
# entry points Rust's allocator calls) over the end-to-end phase of the reduced system bench
# (300 nodes, 20,000 tasks, one per request). A count, not a time: uprobes slow each call, so
# the run's other figures are not reported. Prints one line per process.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is required (Debian: linux-perf)" >&2; exit 1; }
libc=$(ldd target/release/orchestrator | awk '/libc\.so/ {print $3}')
for function in malloc realloc calloc; do
    perf probe -q -x "$libc" --add "$function" 2>/dev/null || true
done
events=probe_libc:malloc,probe_libc:realloc,probe_libc:calloc
mimalloc=(mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned)
for function in "${mimalloc[@]}"; do
    perf probe -q -x target/release/gateway --add "$function" 2>/dev/null || true
done
gateway_events=$events$(printf ',probe_gateway:%s' "${mimalloc[@]}")
dir=$(mktemp -d)
# The probes go with the run (registered, they cost nothing until enabled, but they are ours).
trap 'perf probe -q -d "probe_libc:*" -d "probe_gateway:*" >/dev/null 2>&1; rm -rf "$dir"' EXIT
BENCH_NODES=300 BENCH_TASKS=20000 BENCH_SEQUENTIAL=50 BENCH_OPEN_LOOP_SECONDS=1 BENCH_STOP_AFTER_HALF=1 \
    cargo bench --quiet -p grid-system-tests --bench system 2> "$dir/bench.log" > /dev/null &
bench=$!
# The end-to-end phase starts after the open loop at 1,000 req/s and ends with its `throughput:` line.
await_line() {
    until grep -q "^$1:" "$dir/bench.log"; do
        kill -0 "$bench" 2>/dev/null || { cat "$dir/bench.log" >&2; exit 1; }
        sleep 0.2
    done
}
await_line "open loop"
pids() { pgrep -d, -f "target/release/$1" ; }
perf stat -x, -e "$events" -p "$(pids orchestrator)" -o "$dir/orchestrator.perf" &
orchestrator=$!
perf stat -x, -e "$gateway_events" -p "$(pids gateway)" -o "$dir/gateway.perf" &
gateway=$!
await_line "throughput"
kill -INT "$orchestrator" "$gateway"
wait "$orchestrator" "$gateway" || true
wait "$bench"
python3 - "$dir" <<'PY'
import json, sys
directory = sys.argv[1]
line = next(l for l in open(f"{directory}/bench.log") if l.startswith("throughput: "))
tasks = json.loads(line.split(": ", 1)[1])["tasks_completed"]
for process in ["orchestrator", "gateway"]:
    counts = {}
    for row in open(f"{directory}/{process}.perf"):
        fields = row.split(",")
        if len(fields) > 3 and fields[0].isdigit():
            counts[fields[2].split(":")[1]] = int(fields[0])
    each = ", ".join("%s %.0f" % (name, count / tasks) for name, count in counts.items())
    print(f"{process}: {sum(counts.values()) / tasks:.0f} allocations per task ({each}) over {tasks} tasks")
PY
