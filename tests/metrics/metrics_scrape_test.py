#!/usr/bin/env python3
"""Scrapes a running kvcache tool's /metrics with a real HTTP client and
parses it with prometheus_client's parser (python3-prometheus-client).

usage: metrics_scrape_test.py replay|demo TOOL [TOOL ARGS...]

The tool is started with --metrics-port (a free loopback port) and
--metrics-linger. While it runs, /metrics is scraped again and again: every
scrape must parse and no counter may go back. After the run (the tool says so
on stderr) the final /metrics is checked value by value against /metrics.json
of the same snapshot, and the replay's counters against the figures it prints.
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        if r.status != 200:
            fail(f"{path}: status {r.status}")
        return r.read().decode(), r.headers.get("Content-Type", "")


def parse(text):
    """{(sample name, frozenset(labels)): value}, and the families' types."""
    values, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return values, types


def value(values, name, **labels):
    key = (name, frozenset(labels.items()))
    if key not in values:
        fail(f"no sample {name} {labels}")
    return values[key]


def main():
    kind, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    port = free_port()
    command = [tool, *args, "--metrics-port", str(port), "--metrics-linger", "4"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    over = threading.Event()
    stderr_lines = []

    def read_stderr():
        for line in proc.stderr:
            stderr_lines.append(line)
            if "the run is over" in line:
                over.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout_box = []
    threading.Thread(target=lambda: stdout_box.append(proc.stdout.read()), daemon=True).start()

    during, last_lookups, deadline = 0, -1.0, time.time() + 600
    while not over.is_set():
        if proc.poll() is not None:
            fail(f"the tool ended before saying the run was over: {''.join(stderr_lines)}")
        if time.time() > deadline:
            proc.kill()
            fail("the run took over 600 s")
        try:
            text, content_type = get(port, "/metrics")
        except OSError:
            time.sleep(0.02)  # not listening yet
            continue
        if over.is_set():
            break  # this scrape may be of the final figures: counted as after the run
        if "text/plain" not in content_type or "version=0.0.4" not in content_type:
            fail(f"content type {content_type}")
        values, _ = parse(text)
        lookups = value(values, "kvcache_prefix_lookups_total")
        if lookups < last_lookups:
            fail(f"kvcache_prefix_lookups_total went from {last_lookups} to {lookups}")
        last_lookups = lookups
        during += 1
        time.sleep(0.02)
    if during == 0:
        fail("no scrape answered while the run was going")

    text, _ = get(port, "/metrics")
    snapshot = json.loads(get(port, "/metrics.json")[0])
    values, types = parse(text)
    checks = [
        ("kvcache_prefix_lookups_total", {}, snapshot["prefix"]["lookups"]),
        ("kvcache_prefix_requested_blocks_total", {}, snapshot["prefix"]["requested_blocks"]),
        ("kvcache_prefix_hit_blocks_total", {}, snapshot["prefix"]["hit_blocks"]),
        ("kvcache_prefix_requested_tokens_total", {}, snapshot["prefix"]["requested_tokens"]),
        ("kvcache_prefix_hit_tokens_total", {}, snapshot["prefix"]["hit_tokens"]),
        ("kvcache_prefix_refetched_blocks_total", {}, snapshot["prefix"]["refetched_blocks"]),
        ("kvcache_memory_blocks", {"state": "used"}, snapshot["memory"]["used_blocks"]),
        ("kvcache_memory_blocks", {"state": "cached"}, snapshot["memory"]["cached_blocks"]),
        ("kvcache_memory_blocks", {"state": "free"}, snapshot["memory"]["free_blocks"]),
        ("kvcache_memory_bytes", {"state": "cached"}, snapshot["memory"]["cached_bytes"]),
        ("kvcache_fragmented_slots", {}, snapshot["memory"]["fragmented_slots"]),
        ("kvcache_evictions_total", {"kind": "block"}, snapshot["evictions"]["blocks"]),
        ("kvcache_evictions_total", {"kind": "sequence"}, snapshot["evictions"]["sequences"]),
        ("kvcache_evicted_bytes_total", {}, snapshot["evictions"]["bytes"]),
        ("kvcache_tier_hit_blocks_total", {}, snapshot["tier"]["hit_blocks"]),
    ]
    for name, labels, expected in checks:
        got = value(values, name, **labels)
        if got != expected:
            fail(f"{name}{labels} is {got} in /metrics, {expected} in /metrics.json")
    for ratio, path in [("blocks", ("prefix", "hit_rate_blocks")),
                        ("tokens", ("prefix", "hit_rate_tokens"))]:
        got = value(values, "kvcache_prefix_hit_ratio", unit=ratio, window="cumulative")
        expected = snapshot[path[0]][path[1]]
        if expected is not None and abs(got - expected) > 1e-9:
            fail(f"hit ratio ({ratio}) {got} against {expected}")
    if types.get("kvcache_operation_duration_seconds") != "histogram":
        fail("kvcache_operation_duration_seconds is not a histogram")
    if types.get("kvcache_evictions") != "counter":
        fail("kvcache_evictions_total is not a counter")
    for op, figures in snapshot["operations"].items():
        buckets = sorted(
            (float(dict(labels)["le"]), v) for (name, labels), v in values.items()
            if name == "kvcache_operation_duration_seconds_bucket" and dict(labels)["op"] == op)
        counts = [v for _, v in buckets]
        if counts != sorted(counts):
            fail(f"{op}: buckets are not cumulative: {counts}")
        if counts[-1] != figures["count"] or buckets[-1][0] != float("inf"):
            fail(f"{op}: +Inf bucket {counts[-1]} against count {figures['count']}")
        if value(values, "kvcache_operation_duration_seconds_count", op=op) != figures["count"]:
            fail(f"{op}: _count differs from the JSON's count")
        if abs(value(values, "kvcache_operation_duration_seconds_sum", op=op)
               - figures["total_seconds"]) > 1e-6:
            fail(f"{op}: _sum differs from the JSON's total_seconds")
        if value(values, "kvcache_operations_total", op=op) != figures["count"]:
            fail(f"{op}: kvcache_operations_total differs")
    if snapshot["prefix"]["lookups"] <= 0:
        fail("the run looked nothing up")

    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    time.sleep(0.1)
    out = stdout_box[0] if stdout_box else ""
    if code != 0:
        fail(f"the tool exited {code}: {''.join(stderr_lines)}")
    if kind == "replay":
        m = re.search(r"prefix hit rate\s+[0-9.]+% \((\d+) of (\d+) prompt blocks\)", out)
        if not m:
            fail(f"no hit rate line in the replay's output:\n{out}")
        if (int(m.group(1)), int(m.group(2))) != (snapshot["prefix"]["hit_blocks"],
                                                  snapshot["prefix"]["requested_blocks"]):
            fail(f"the replay printed {m.group(1)} of {m.group(2)}; /metrics said "
                 f"{snapshot['prefix']['hit_blocks']} of {snapshot['prefix']['requested_blocks']}")
        if "recommendations" not in out:
            fail("the replay printed no recommendations section")
    print(f"ok: {during} scrapes during the run, {len(values)} samples checked after it")


if __name__ == "__main__":
    main()
