#!/usr/bin/env bash
# tests/test_rooms.sh: the optimizer keeps to its rooms (issue 22). The trainer names no optimizer
# type (the optimizer describes itself: optim/describe.h), grass_optim.cuh is only a list of
# includes of optim/*.h, and no room grows past 500 lines. The trainer keeps to its own: main()
# reads as a table of contents (at most 120 lines), the command line is train_args.h and the
# checkpoints train_checkpoint.h (neither names an optimizer type), and the wrapped files keep
# their lines within 120 characters. A check of the source text: it fails when a change brings an
# optimizer branch back into the trainer, or main() or a line grows past its bound.
# Prints "N passed, N failed"; exits non-zero on any failure.
cd "$(dirname "$0")/.."
source tests/harness.sh

# the trainer and its rooms name no optimizer type
for f in train_llama.cu train_args.h train_checkpoint.h; do
  [ -f "$f" ] || { bad "$f is missing"; continue; }
  types=$(grep -nE '\bOPT_(ADAMW|GRASS|GALORE)\b|\bOptimizerType\b' "$f" || true)
  if [ -z "$types" ]; then ok "$f names no optimizer type (no OPT_* value, no OptimizerType)"
  else bad "$f names optimizer types: $(echo "$types" | head -3 | tr '\n' ' ')"; fi
done
for f in train_args.h train_checkpoint.h; do
  grep -q "^#include \"$f\"" train_llama.cu && ok "train_llama.cu includes $f" || bad "train_llama.cu does not include $f"
done
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

# ---- main() as a table of contents, and lines of at most 120 characters -------------------------
# main_lines FILE: the lines from "int main(" to the first "}" in column 0 (empty if none)
main_lines() { awk '/^int main\(/ { s = NR } s && /^}/ { print NR - s + 1; exit }' "$1"; }
# long_lines FILE...: "file:line (N chars)" for each line over 120 characters
long_lines() { awk 'length > 120 { print FILENAME ":" FNR " (" length " chars)" }' "$@"; }
n=$(main_lines train_llama.cu)
[ -n "$n" ] && [ "$n" -le 120 ] && ok "main() in train_llama.cu: $n lines (at most 120)" \
  || bad "main() in train_llama.cu: ${n:-no main found} lines, over 120"
# the files wrapped at 120 characters so far; the list grows as files are wrapped
WRAPPED_FILES="train_llama.cu train_args.h train_checkpoint.h backend_cpu.h backend.h kernels_cpu.h optim/*.h cuda/*.cuh"
for f in $WRAPPED_FILES; do
  long=$(long_lines "$f")
  [ -z "$long" ] && ok "$f: no line over 120 characters" \
    || bad "$f: $(echo "$long" | wc -l) lines over 120 characters: $(echo "$long" | head -3 | tr '\n' ' ')"
done
# the checks find what they look for: a main() of 121 lines and a line of 121 characters
{ echo 'int main(int argc, char** argv) {'; for i in $(seq 119); do echo '    x();'; done; echo '}'; } > "$W/probe_main.c"
[ "$(main_lines "$W/probe_main.c")" = 121 ] && ok "main_lines counts a 121-line main() as 121" \
  || bad "main_lines counts a 121-line main() as $(main_lines "$W/probe_main.c")"
printf '%0121d\n%0120d\n' 0 0 > "$W/probe_long.c"
[ "$(long_lines "$W/probe_long.c")" = "$W/probe_long.c:1 (121 chars)" ] && ok "long_lines finds the 121-character line only" \
  || bad "long_lines on a probe: '$(long_lines "$W/probe_long.c" | tr '\n' ' ')'"
finish test_rooms
