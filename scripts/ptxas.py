#!/usr/bin/env python3
"""Resource use of every CUDA kernel, as ptxas reports it (no GPU needed).

Compiles each kernels/*.cu for one architecture with `-Xptxas -v` and the
library's own flags, and prints one line per kernel: registers per thread,
static shared memory, spills, the CTAs of 256 threads an SM can hold (Hopper limits: 64K registers,
228 KB shared memory, 2048 threads, 32 CTAs), and from the PTX the 8-bit
global stores and loads and the 64-bit divisions and remainders.

    python3 scripts/ptxas.py [--arch 90] [--filter NAME] [--markdown]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["append.cu", "gather.cu", "copy_blocks.cu", "attention.cu", "calibration.cu",
           "codecs_int8.cu", "codecs_fp8.cu", "codecs_kivi.cu", "codecs_low_rank.cu"]
EXACT = {"codecs_int8.cu", "codecs_fp8.cu", "codecs_kivi.cu", "codecs_low_rank.cu",
         "calibration.cu", "attention.cu"}


def short_name(demangled):
    """kvcache::kernels::cuda::ns::kernel<Rows<32, 2>, Half>(...) -> kernel<Rows<32,2>,Half>"""
    name = demangled.replace("(anonymous namespace)::", "").split("(")[0]
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"kvcache::kernels::cuda::(\w+::)?", "", name)
    name = name.replace("kvcache::", "")
    name = re.sub(r"\s+", "", name)
    return name


def demangle(names):
    if not names:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out))


def ctas_per_sm(registers, shared, threads=256):
    warps = threads // 32
    regs_per_warp = ((max(registers, 1) * 32 + 255) // 256) * 256
    by_regs = 65536 // (regs_per_warp * warps)
    by_threads = 2048 // threads
    by_shared = (233472 // (shared + 1024)) if shared > 0 else 32
    return max(0, min(by_regs, by_threads, by_shared, 32))


def run(arch, source):
    nvcc = os.environ.get("NVCC", "nvcc")
    flags = ["-std=c++20", "-O2", "-DKVCACHE_HAS_CUDA=1", f"-I{ROOT}/include", f"-I{ROOT}/kernels",
             f"--generate-code=arch=compute_{arch},code=sm_{arch}", "-cubin", "-Xptxas", "-v"]
    if source in EXACT:
        flags.append("--fmad=false")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([nvcc, *flags, "-o", os.path.join(tmp, "out.cubin"),
                                 os.path.join(ROOT, "kernels", source)],
                                capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nvcc failed on {source}:\n{result.stderr}")
    kernels = []
    current = None
    for line in result.stderr.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = {"mangled": m.group(1), "spill_stores": 0, "spill_loads": 0,
                       "registers": 0, "shared": 0, "stack": 0}
            kernels.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            current["stack"] = int(m.group(1))
            current["spill_stores"] = int(m.group(2))
            current["spill_loads"] = int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["shared"] = int(s.group(1)) if s else 0
    names = demangle([k["mangled"] for k in kernels])
    for k in kernels:
        k["name"] = short_name(names[k["mangled"]])
        k["source"] = source
    return kernels


def ptx_counts(arch, source):
    """Per kernel: 8-bit global stores and loads, 64-bit divisions and remainders."""
    nvcc = os.environ.get("NVCC", "nvcc")
    flags = ["-std=c++20", "-O2", "-DKVCACHE_HAS_CUDA=1", f"-I{ROOT}/include", f"-I{ROOT}/kernels",
             f"-arch=compute_{arch}", "-ptx"]
    if source in EXACT:
        flags.append("--fmad=false")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.ptx")
        subprocess.run([nvcc, *flags, "-o", out, os.path.join(ROOT, "kernels", source)],
                       check=True, capture_output=True)
        text = open(out).read()
    counts = {}
    for m in re.finditer(r"\.entry (\S+)\((.*?)\n}\n", text, re.S):
        body = m.group(2)
        counts[m.group(1)] = {
            "st8": len(re.findall(r"st\.global(\.\w+)*\.[ubs]8\b", body)),
            "ld8": len(re.findall(r"ld\.global(\.\w+)*\.[ubs]8\b", body)),
            "div64": len(re.findall(r"(div|rem)\.[su]64", body)),
        }
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90")
    parser.add_argument("--filter", default="")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    for source in SOURCES:
        kernels = [k for k in run(args.arch, source) if args.filter in k["name"]]
        counts = ptx_counts(args.arch, source) if kernels else {}
        for k in kernels:
            k.update(counts.get(k["mangled"], {"st8": 0, "ld8": 0, "div64": 0}))
        rows += kernels
    if args.markdown:
        print("| kernel | registers | shared bytes | spills (st/ld) | CTAs of 256 per SM "
              "| 8-bit st/ld (PTX) | 64-bit div/rem (PTX) |")
        print("|---|---|---|---|---|---|---|")
    for k in sorted(rows, key=lambda k: (k["source"], k["name"])):
        ctas = ctas_per_sm(k["registers"], k["shared"])
        if args.markdown:
            print(f"| `{k['name']}` | {k['registers']} | {k['shared']} | "
                  f"{k['spill_stores']}/{k['spill_loads']} | {ctas} | {k['st8']}/{k['ld8']} | "
                  f"{k['div64']} |")
        else:
            print(f"{k['source']:18} {k['registers']:4} regs {k['shared']:6} B smem "
                  f"{k['spill_stores']:3}/{k['spill_loads']:<3} spill {ctas:2} CTA/SM "
                  f"{k['st8']:3}/{k['ld8']:<3} u8 st/ld {k['div64']:3} div64  {k['name']}")


if __name__ == "__main__":
    main()
