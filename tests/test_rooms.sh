#!/usr/bin/env bash
# tests/test_rooms.sh: the optimizer keeps to its rooms (issue 22). The trainer names no optimizer
# type (the optimizer describes itself: optim/describe.h), grass_optim.cuh is only a list of
# includes of optim/*.h, and no room grows past 500 lines. A check of the source text: it fails
# when a change brings an optimizer branch back into train_llama.cu.
# Prints "N passed, N failed"; exits non-zero on any failure.
cd "$(dirname "$0")/.."
source tests/harness.sh

types=$(grep -nE '\bOPT_(ADAMW|GRASS|GALORE)\b|\bOptimizerType\b' train_llama.cu || true)
if [ -z "$types" ]; then ok "train_llama.cu names no optimizer type (no OPT_* value, no OptimizerType)"
else bad "train_llama.cu names optimizer types: $(echo "$types" | head -3 | tr '\n' ' ')"; fi
# the check finds what it looks for: the same grep on a copy with a type in it
printf 'if (a.oc.type == OPT_GALORE) x();\n' > "$W/probe.cu"
grep -qE '\bOPT_(ADAMW|GRASS|GALORE)\b' "$W/probe.cu" && ok "the grep finds a type where one is named" \
  || bad "the grep misses OPT_GALORE in a probe"

other=$(grep -vE '^\s*(#include "optim/[a-z_]+\.h".*|#ifndef GRASS_OPTIM_CUH|#define GRASS_OPTIM_CUH|#endif.*|/\*.*|\*.*|\s*\*.*|//.*|)$' \
        grass_optim.cuh || true)
[ -z "$other" ] && ok "grass_optim.cuh is a list of includes ($(grep -c '^#include "optim/' grass_optim.cuh) rooms)" \
  || bad "grass_optim.cuh holds more than includes: $(echo "$other" | head -2 | tr '\n' ' ')"
missing=0
for f in optim/*.h; do
  grep -q "^#include \"$f\"" grass_optim.cuh || { bad "$f is not listed in grass_optim.cuh"; missing=1; }
  n=$(wc -l < "$f")
  [ "$n" -le 500 ] && ok "$f: $n lines (at most 500)" || bad "$f: $n lines, over 500"
done
[ $missing = 0 ] && ok "every optim/*.h is listed in grass_optim.cuh"
finish test_rooms
