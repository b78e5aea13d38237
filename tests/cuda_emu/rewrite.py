#!/usr/bin/env python3
"""rewrite.py: copies the project's C/CUDA sources into a folder, changed so that a host C++
compiler builds them against the CUDA emulator (tests/cuda_emu/cuda_emu.h):

  kernel<<<grid, block[, smem[, stream]]>>>(args)  ->  emu::launch(kernel, "kernel", grid, block...)(args)
  extern __shared__ ... name[];                    ->  ... * name = emu::dynamic_smem();
  __CUDACC__                                        ->  GRASS_CUDA_EMU  (the GPU build's code paths)
  defined(__CUDA_ARCH__) / __CUDA_ARCH__            ->  1 / 900         (device code as for sm_90)

Nothing else changes, so the emulated build compiles the same kernels and host code as nvcc does.
Usage: rewrite.py OUT_DIR FILE...   (each FILE relative to the repository root)
"""
import os
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
EXTERN_SMEM = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w ]*?)\s+(\w+)\s*\[\s*\]\s*;")


def rewrite(text):
    n_launch = 0

    def launch(m):
        nonlocal n_launch
        n_launch += 1
        name, cfg = m.group(1), " ".join(m.group(2).split())
        return 'emu::launch(%s, "%s", %s)(' % (name, name, cfg)

    text = LAUNCH.sub(launch, text)
    text = EXTERN_SMEM.sub(lambda m: "%s* %s = (%s*)emu::dynamic_smem();" % (m.group(1), m.group(2), m.group(1)), text)
    text = text.replace("__CUDACC__", "GRASS_CUDA_EMU")
    text = text.replace("defined(__CUDA_ARCH__)", "1").replace("__CUDA_ARCH__", "900")
    if "<<<" in text:
        raise SystemExit("rewrite.py: a <<<...>>> launch it could not parse is left")
    return text, n_launch


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: rewrite.py OUT_DIR FILE...")
    out_dir = sys.argv[1]
    total = 0
    for path in sys.argv[2:]:
        if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
            sys.exit("rewrite.py: %s: give paths relative to the repository root, inside it" % path)
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
        try:
            new, n = rewrite(text)
        except SystemExit as e:
            sys.exit("%s: %s" % (path, e))
        total += n
        dst = os.path.join(out_dir, path)
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        old = None
        if os.path.exists(dst):
            with open(dst, "r", encoding="utf-8") as f:
                old = f.read()
        if old != new:  # keep timestamps of unchanged copies, so make rebuilds only what changed
            with open(dst, "w", encoding="utf-8") as f:
                f.write(new)
    print("rewrite.py: %d files, %d kernel launches -> %s" % (len(sys.argv) - 2, total, out_dir))


if __name__ == "__main__":
    main()
