"""Turns the benchmark, sweep and demo outputs into gnuplot data and PNGs.

    python3 scripts/charts.py DATA_DIR OUT_DIR "machine and date"
"""
import json
import os
import re
import subprocess
import sys

data, out, machine = sys.argv[1], sys.argv[2], sys.argv[3]


def plot(name, script):
    path = os.path.join(data, name + ".gp")
    with open(path, "w") as f:
        f.write('set terminal pngcairo size 960,540 font "DejaVu Sans,11" noenhanced\n')
        f.write('set output "%s"\n' % os.path.join(out, name + ".png"))
        f.write(script)
    subprocess.run(["gnuplot", path], check=True)


# 1. Kernel bandwidth against a plain copy of the same bytes, same run.
rows = []
for file in ("cpu.json", "codec.json"):
    for b in json.load(open(os.path.join(data, file)))["benchmarks"]:
        if "memcpy_GB/s" not in b:
            continue
        label = b["name"].replace("BM_", "").replace("/manual_time", "").replace("/16384", "")
        rows.append((label, b["GB/s"], b["memcpy_GB/s"]))
with open(os.path.join(data, "kernels.dat"), "w") as f:
    for label, kernel, copy in rows:
        f.write('"%s" %.3f %.3f\n' % (label, kernel, copy))
plot("kernels", """
set title "CPU kernels: bandwidth against memcpy of the same bytes ({m})"
set ylabel "GB/s (bytes the kernel reads and writes)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -35 scale 0 font ",9"
set key top right
set grid ytics
set yrange [0:*]
set bmargin 7
set rmargin 9
plot "{d}/kernels.dat" using 2:xtic(1) title "kernel", "" using 3 title "memcpy, same run"
""".format(m=machine, d=data))

# 2. Hit rate against capacity for every eviction policy (the sweep's first table).
lines = open(os.path.join(data, "sweep.md")).read().splitlines()
trace = os.path.basename(lines[0].split(":")[0].replace("trace ", ""))
header = None
points = []
for line in lines:
    if line.startswith("| capacity") and header is None:
        header = [c.strip() for c in line.strip("|").split("|")]
        continue
    if header and line.startswith("|---"):
        continue
    if header and line.startswith("|"):
        cells = [c.strip() for c in line.strip("|").split("|")]
        m = re.match(r"(\d+) \((1/\d+)\)", cells[0])
        if not m:
            break
        points.append([m.group(1)] + [c.rstrip("%") for c in cells[1:len(header) - 1]])
    elif header and points:
        break
policies = header[1:-1]
with open(os.path.join(data, "sweep.dat"), "w") as f:
    for p in points:
        f.write(" ".join(p) + "\n")
series = ", ".join('"{d}/sweep.dat" using 1:{c} with linespoints lw 2 title "{n}"'.format(
    d=data, c=i + 2, n=n) for i, n in enumerate(policies) if n != "none")
plot("hit_rate", """
set title "Prefix hit rate against cache capacity, trace {t} ({m})"
set xlabel "capacity (blocks of 512 tokens)"
set ylabel "hit rate (%)"
set logscale x 2
set grid
set key bottom right
set yrange [0:*]
plot {s}
""".format(t=trace, m=machine, s=series))

# 3. Memory against output error for every configuration of the demo.
demo = json.load(open(os.path.join(data, "demo.json")))
with open(os.path.join(data, "memory_error.dat"), "w") as f:
    for r in demo["runs"]:
        if r["config"] == "reference":
            continue
        f.write('"%s" %.1f %.3e\n' % (r["config"], r["bytes_per_token"],
                                      max(r["logit_error_mean"], 1e-5)))
model = demo["model"]
plot("memory_error", """
set title "kvcache-demo: bytes per stored token against logit error ({m})"
set xlabel "bytes per token stored at the peak (all {l} layers, K and V)"
set ylabel "mean relative logit error against the fp32 cache (log scale)"
set logscale xy
set format y "%g"
set xrange [300:30000]
set grid
set key off
set offsets graph 0.05, graph 0.15, graph 0.1, graph 0.1
plot "{d}/memory_error.dat" using 2:3 with points pt 7 ps 1.5, \
     "" using 2:3:1 with labels offset 1,0.8 left font ",9"
""".format(m=machine, d=data, l=model["layers"]))

# 4. The article's table: claimed range against measured saving.
with open(os.path.join(data, "article.dat"), "w") as f:
    for i, a in enumerate(demo["article"]):
        low, high = 100 * a["claimed_saved_low"], 100 * a["claimed_saved_high"]
        f.write('%d "%s\\n(%s)" %.1f %.1f %.1f %.1f\n' % (
            i, a["strategy"], a["config"], (low + high) / 2, low, high, 100 * a["measured_saved"]))
plot("article", """
set title "Memory saved against a contiguous fp16 cache at the longest request ({m})"
set ylabel "memory saved (%)"
set style fill solid 0.7 border -1
set boxwidth 0.35
set grid ytics
set xtics scale 0 font ",9"
set xrange [-0.6:{n}-0.4]
set yrange [0:100]
set key top left
set bmargin 5
plot "{d}/article.dat" using ($1-0.2):4:4:5:5:xtic(2) with candlesticks lc rgb "#999999" title "claimed (range)", \
     "" using ($1+0.2):6 with boxes lc rgb "#2a9d8f" title "measured"
""".format(m=machine, d=data, n=len(demo["article"])))
