"""One line per run of the reduced system bench (`just bench-cluster`, `just bench-cells`): its
end-to-end tasks/s, sequential round trip, CPU per task, the same in batches of 100 and, with
cells, each cell's share.

Usage: summarise.py <mode> <run> <the bench's stderr>
"""
import json
import sys

mode, run, path = sys.argv[1:]
lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in open(path) if ": {" in line}
if "throughput" not in lines:
    sys.exit(f"{path} has no throughput line: the run failed (its stderr is there)")
t, s = json.loads(lines["throughput"]), json.loads(lines["sequential"])["round_trip"]
p = t["per_task"]
cpu = p["redis_cpu_us"] + p["gateway_cpu_us"] + p["orchestrator_cpu_us"] + p["postgresql_cpu_us"]
line = (f"{mode:7} run {run}: {t['tasks_per_second']:,.0f} tasks/s, sequential p50 {s['p50_ms']:.1f} ms"
        f" p99 {s['p99_ms']:.1f} ms; CPU per task {cpu:.0f} µs: redis {p['redis_cpu_us']:.0f},"
        f" gateway {p['gateway_cpu_us']:.0f}, orchestrator {p['orchestrator_cpu_us']:.0f},"
        f" postgresql {p['postgresql_cpu_us']:.0f}; {p['tasks_per_batch']:.1f} tasks per batch,"
        f" {p['sql_statements']:.2f} statements and {p['wal_bytes']:,.0f} B of WAL per task")
if "throughput in batches of 100" in lines:
    b = json.loads(lines["throughput in batches of 100"])
    q = b["per_task"]
    line += (f"; in batches of 100: {b['tasks_per_second']:,.0f} tasks/s, CPU per task"
             f" {q['redis_cpu_us'] + q['gateway_cpu_us'] + q['orchestrator_cpu_us'] + q['postgresql_cpu_us']:.0f} µs"
             f" (gateway {q['gateway_cpu_us']:.0f})")
if "cells" in lines:
    cells = json.loads(lines["cells"])
    total = sum(cells.values()) or 1
    line += "; cells " + ", ".join(f"{cell} {count / total:.0%}" for cell, count in sorted(cells.items()))
print(line)
