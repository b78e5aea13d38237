#!/usr/bin/env bash
# Faults lose nothing (train_llama_cpu, or TRAIN_BIN=build/emu/train_llama): a run killed
# (SIGKILL) while it writes a checkpoint, a truncated or corrupted checkpoint file, SIGINT and
# SIGTERM during training, a full disk while writing. After each, -y 1 resumes from the newest
# intact checkpoint and ends with the same weights, bit for bit, as a run that never stopped.
# The multi-rank faults (a rank that dies, a signal to one rank, SIGKILL while writing a ZeRO-1
# block) are in tests/test_mpi.sh. Prints "N passed, N failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_llama_cpu}
[ -x $BIN ] || { echo "build $BIN first (make train_llama_cpu)"; exit 1; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
source tests/harness.sh

python3 dev/data/make_synthetic.py --out-dir "$W/data" --vocab 256 --train-tokens 60000 --val-tokens 8000 >/dev/null || { echo "FAIL synthetic data"; exit 1; }
# Grass with a refresh inside every interval between checkpoints, so the selection and moments
# must come back exactly too
C=(-i "$W/data/synthetic_train_*.bin" -j "$W/data/synthetic_val_*.bin" -c tiny --vocab 256 --dim 48 --ffn 80 --heads 4
   --kv-heads 2 --layers 2 --max-seq 64 -b 4 -t 32 --eval-tokens 2048 --log-every 1000 -v 4 -n 4 -x 12
   --optimizer grass --rank 12 --update-freq 5)

# the reference: 12 steps straight through, checkpoints at 4, 8, 12
$BIN "${C[@]}" -o "$W/ref" > "$W/ref.out" 2>&1 || { bad "reference run failed"; tail -5 "$W/ref.out"; finish test_faults; exit 1; }
same_as_ref() {  # same_as_ref DIR: the step-12 weights equal the reference's, and every training loss it logged too
  cmp -s "$1/model_00000012.bin" "$W/ref/model_00000012.bin" &&
    [ -z "$(comm -23 <(grep -o '^step=[0-9]* loss=[^ ]*' "$1/log.txt" | sort -u) <(grep -o '^step=[0-9]* loss=[^ ]*' "$W/ref/log.txt" | sort -u))" ]
}
# a copy of the reference's checkpoints up to step $2 in $1, as if the run had stopped there
copy_upto() {
  mkdir -p "$1"
  for s in 00000004 00000008; do [ "${s#0000000}" -le "$2" ] && cp "$W/ref/model_$s.bin" "$W/ref/state_$s.bin" "$1/"; done
  echo "$2" > "$1/checkpoint_latest.txt"
}

# ---- the checksum trailer is the standard CRC-32 of the file's contents ---------------------------
python3 - "$W/ref/model_00000012.bin" "$W/ref/state_00000012.bin" <<'PY' && ok "model and state files end in a CRC-32 trailer that zlib.crc32 confirms" || bad "checksum trailer: zlib.crc32 disagrees"
import struct, sys, zlib
for p in sys.argv[1:]:
    d = open(p, "rb").read()
    magic, crc, n = struct.unpack("<IIQ", d[-16:])
    assert magic == 0x43524347 and n == len(d) - 16, (p, hex(magic), n, len(d))
    assert crc == zlib.crc32(d[:-16]), (p, crc, zlib.crc32(d[:-16]))
PY

# ---- SIGKILL while writing a checkpoint ----------------------------------------------------------
for part in model_00000008 state_00000008; do
  d="$W/kill_$part"
  { GRASS_FAULT_KILL_WRITE=$part $BIN "${C[@]}" -o "$d" > "$d.out" 2>&1; } 2>/dev/null; rc=$?  # (bash would print "Killed")
  if [ $rc -ne 137 ] || ! grep -q "killed while writing" "$d.out"; then bad "SIGKILL in $part: the fault did not fire (rc $rc)"; continue; fi
  [ "$(cat "$d/checkpoint_latest.txt")" = 4 ] && [ -f "$d/$part.bin.tmp" ] \
    && ok "SIGKILL while writing $part: checkpoint_latest.txt still names step 4, the partial file is only $part.bin.tmp" \
    || bad "SIGKILL while writing $part: latest $(cat "$d/checkpoint_latest.txt"), files: $(ls "$d" | tr '\n' ' ')"
  $BIN "${C[@]}" -o "$d" -y 1 > "$d.resume.out" 2>&1 || { bad "SIGKILL in $part: -y 1 failed"; tail -3 "$d.resume.out"; continue; }
  grep -q "resumed from step 4" "$d.resume.out" && grep -q "removed '.*$part.bin.tmp'" "$d.resume.out" && ! ls "$d" | grep -q '\.tmp$' \
    && same_as_ref "$d" && ok "SIGKILL while writing $part: -y 1 resumes from step 4, removes the partial file, ends bit-identical" \
    || bad "SIGKILL while writing $part: the resumed run differs (or kept the partial file)"
done

# ---- damaged checkpoints: reported by name, the newest intact one is used ---------------------------
damage() {  # damage NAME FILE-IN-DIR HOW
  local d="$W/dmg_$1"; copy_upto "$d" 8
  case $3 in
    flip) printf '\x55' | dd of="$d/$2" bs=1 seek=100000 conv=notrunc status=none ;;
    truncate) truncate -s -100 "$d/$2" ;;
    empty) : > "$d/$2" ;;
    missing) rm "$d/$2" ;;
  esac
  $BIN "${C[@]}" -o "$d" -y 1 > "$d.out" 2>&1 || { bad "$1: -y 1 failed instead of falling back"; tail -3 "$d.out"; return; }
  grep -q "checkpoint at step 8 is damaged: '.*$2'" "$d.out" && grep -q "falling back to the checkpoint at step 4" "$d.out" \
    && grep -q "resumed from step 4" "$d.out" && same_as_ref "$d" \
    && ok "$1: named ($(grep -o "$2'*: [^(]*" "$d.out" | head -1 | cut -c1-60)...), fell back to step 4, bit-identical end" \
    || { bad "$1: not reported or not recovered"; grep -E "damaged|falling|error" "$d.out" | head -3; }
}
damage "a flipped byte in the model" model_00000008.bin flip
damage "a flipped byte in the state" state_00000008.bin flip
damage "a truncated state" state_00000008.bin truncate
damage "an empty model file" model_00000008.bin empty
damage "a missing state file" state_00000008.bin missing
# every checkpoint damaged: refused, naming each
d="$W/dmg_all"; copy_upto "$d" 8
truncate -s -100 "$d/model_00000008.bin"; printf '\x55' | dd of="$d/state_00000004.bin" bs=1 seek=5000 conv=notrunc status=none
out=$($BIN "${C[@]}" -o "$d" -y 1 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "no intact checkpoint in" && echo "$out" | grep -q "step 8: '.*model_00000008.bin'" \
  && echo "$out" | grep -q "step 4: '.*state_00000004.bin': checksum mismatch" && ok "every checkpoint damaged: refused, naming both files" \
  || bad "every checkpoint damaged: rc=$rc, $(echo "$out" | tail -1 | cut -c1-200)"
# --init-from a corrupted model file
cp "$W/ref/model_00000008.bin" "$W/bad_model.bin"; printf '\x55' | dd of="$W/bad_model.bin" bs=1 seek=100000 conv=notrunc status=none
out=$($BIN "${C[@]}" -o "$W/initbad" --init-from "$W/bad_model.bin" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "bad_model.bin' is damaged: checksum mismatch" && ok "--init-from a corrupted model file: refused by name" \
  || bad "--init-from a corrupted model file: rc=$rc"
# files from before checksums (no trailer, flag 0) still load
d="$W/legacy"; copy_upto "$d" 8
python3 - "$d/model_00000008.bin" "$d/state_00000008.bin" <<'PY'
import struct, sys
for p, flag in ((sys.argv[1], 14), (sys.argv[2], 21)):
    d = bytearray(open(p, "rb").read()[:-16])
    struct.pack_into("<i", d, 4 * flag, 0)
    open(p, "wb").write(bytes(d))
PY
$BIN "${C[@]}" -o "$d" -y 1 > "$d.out" 2>&1 && grep -q "resumed from step 8" "$d.out" && same_as_ref "$d" \
  && ok "checkpoint files without a checksum trailer (older builds) still resume, bit-identical" || bad "older checkpoint files no longer load"

# ---- SIGTERM and SIGINT: a checkpoint at the end of the step, exit 0 ------------------------------
d="$W/sigterm"
GRASS_FAULT_SIGNAL_STEP=5 $BIN "${C[@]}" -o "$d" > "$d.out" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "stopped by SIGTERM after step 6 of 12" "$d.out" && [ "$(cat "$d/checkpoint_latest.txt")" = 6 ] \
  && ok "SIGTERM during step 6: checkpoint at step 6, exit 0" || bad "SIGTERM: rc=$rc, latest $(cat "$d/checkpoint_latest.txt" 2>/dev/null)"
$BIN "${C[@]}" -o "$d" -y 1 > "$d.resume.out" 2>&1 && grep -q "resumed from step 6" "$d.resume.out" && same_as_ref "$d" \
  && ok "SIGTERM: -y 1 continues from step 6 and ends bit-identical" || bad "SIGTERM: the resumed run differs"
# a real SIGINT from outside (Ctrl-C), at whatever step the run has reached
d="$W/sigint"
$BIN "${C[@]}" -x 100000 -n 0 -v 0 -o "$d" > "$d.out" 2>&1 &
pid=$!
for i in $(seq 300); do grep -q '^step=3 ' "$d/log.txt" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
st=$(grep -o 'stopped by SIGINT after step [0-9]*' "$d.out" | grep -o '[0-9]*$')
[ $rc -eq 0 ] && [ -n "$st" ] && [ "$(cat "$d/checkpoint_latest.txt")" = "$st" ] && [ -f "$d/model_$(printf %08d "$st").bin" ] \
  && ok "SIGINT from outside at step $st: checkpoint written, exit 0" || bad "SIGINT: rc=$rc, '$(tail -1 "$d.out")'"
$BIN "${C[@]}" -x $((st + 2)) -n 0 -v 0 -o "$d" -y 1 > "$d.resume.out" 2>&1 && grep -q "resumed from step $st" "$d.resume.out" \
  && ok "SIGINT: -y 1 resumes from step $st" || bad "SIGINT: -y 1 did not resume"

# ---- a full disk while writing (/dev/full: every write fails with ENOSPC) ----------------------------
for part in model_00000008 state_00000008; do
  d="$W/full_$part"; mkdir -p "$d"
  ln -s /dev/full "$d/$part.bin.tmp"  # the checkpoint's temporary file is the full device
  out=$($BIN "${C[@]}" -o "$d" 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "$part.bin.tmp'.*No space left on device" && echo "$out" | grep -q "disk (or quota) is full" \
     && [ "$(cat "$d/checkpoint_latest.txt")" = 4 ] && [ ! -e "$d/$part.bin.tmp" ]; then
    ok "full disk while writing $part: a clear error, the partial file removed, step 4 still the latest"
  else bad "full disk while writing $part: rc=$rc, $(echo "$out" | grep error | head -1)"; fi
  $BIN "${C[@]}" -o "$d" -y 1 > "$d.resume.out" 2>&1 && grep -q "resumed from step 4" "$d.resume.out" && same_as_ref "$d" \
    && ok "full disk while writing $part: once there is space, -y 1 resumes from step 4, bit-identical" || bad "full disk: resume failed"
done

finish test_faults
