#!/usr/bin/env python3
"""Print a Markdown table from Google Benchmark JSON output.

usage: summarize.py RESULT.json [...]

Columns: benchmark, time per iteration, GB/s (read + write), the copy's GB/s
measured in the same iterations, the ratio, the goal set for the GPU kernels
(blank where none is set); rate counters (items/s, steps/s, ...) fill the
last column for benchmarks without a ratio.
"""
import json
import sys

# The GPU goals: paged append / gather and int8 quantize-append at 0.92 of a
# device-to-device copy; a decode append of 256 sequences under 5 us; the
# host tier's offload and onboard at 0.9 of cudaMemcpyAsync from pinned memory;
# decode attention (plain and over every codec) reading its pages at 0.7 of
# the copy's bandwidth (FlashInfer's decode is the anchor).
# On the CPU: the tier at 0.8 of memcpy, checkpoint and restore at 0.8 of
# plain file I/O of the same bytes.
GOALS = (
    ("BM_CpuTier", "ratio >= 0.80"),
    ("BM_CpuCheckpoint", "ratio >= 0.80"),
    ("BM_GpuTier", "ratio >= 0.90"),
    ("BM_GpuAppend", "ratio >= 0.92"),
    ("BM_GpuGather", "ratio >= 0.92"),
    ("BM_GpuQuantizeAppend<Int8", "ratio >= 0.92"),
    ("BM_GpuDecodeAppend", "< 5 us"),
    ("BM_GpuDecodeAttention", "ratio >= 0.70"),
    ("BM_GpuCodecDecodeAttention", "ratio >= 0.70"),
)


def goal(name):
    return next((g for prefix, g in GOALS if name.startswith(prefix)), "")


def fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def main(paths):
    print("| benchmark | time | GB/s | copy GB/s | ratio | goal | other |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        for bench in data.get("benchmarks", []):
            if bench.get("run_type") == "aggregate" and bench.get("aggregate_name") != "median":
                continue
            name = bench["name"].replace("/manual_time", "")
            time = f'{bench["real_time"]:.3g} {bench["time_unit"]}'
            copy = next((v for k, v in bench.items() if k.endswith("_GB/s") and k != "GB/s"), None)
            other = []
            for key in ("alloc+free/s", "steps/s", "requests/s", "items_per_second"):
                if key in bench and "ratio" not in bench:
                    other.append(f"{key}={bench[key] / 1e6:.3g}M")
                    break
            print(f'| {name} | {time} | {fmt(bench.get("GB/s"))} | {fmt(copy)} | '
                  f'{fmt(bench.get("ratio"), 3)} | {goal(name)} | {" ".join(other)} |')


if __name__ == "__main__":
    main(sys.argv[1:])
