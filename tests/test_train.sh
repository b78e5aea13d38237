#!/usr/bin/env bash
# End-to-end checks of train_llama_cpu (or of TRAIN_BIN, e.g. the GPU build on the CUDA emulator,
# build/emu/train_llama) on synthetic data: the loss falls (AdamW and Grass),
# resuming is bit-exact (AdamW; Grass across a refresh; with gradient accumulation), --grad-dtype
# fp32 changes no bit of the fp32 build, and every kind of bad input stops with a clear message
# and a non-zero exit.
# Prints "N passed, N failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_llama_cpu}  # TRAIN_BIN=build/emu/train_llama: the GPU build on the emulator
[ -x $BIN ] || { echo "build $BIN first (make train_llama_cpu)"; exit 1; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
source tests/harness.sh
# two state files hold the same training state, their saved setups (the option text) aside: for runs
# whose options differ only in how they compute (--recompute)
same_state() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
def strip(path):
    d = open(path, "rb").read()
    if struct.unpack("<i", d[84:88])[0] == 1: d = d[:-16]  # the checksum trailer covers the setup too
    if struct.unpack("<i", d[80:84])[0] != 1: return d
    i = d.find(b"--", 256); n = struct.unpack("<i", d[i - 4:i])[0]
    return d[:i - 4] + d[i + n:]
sys.exit(0 if strip(sys.argv[1]) == strip(sys.argv[2]) else 1)
PY
}
ckpt_dtype() { python3 -c "import struct, sys; print(struct.unpack('<64i', open(sys.argv[1], 'rb').read(256))[10])" "$1"; }

python3 dev/data/make_synthetic.py --out-dir "$W/data" --vocab 256 --train-tokens 60000 --val-tokens 8000 >/dev/null || { echo "FAIL synthetic data"; exit 1; }
DATA=(-i "$W/data/synthetic_train_*.bin" -j "$W/data/synthetic_val_*.bin")
MODEL=(-c tiny --vocab 256 --dim 48 --ffn 80 --heads 4 --kv-heads 2 --layers 2 --max-seq 64)
COMMON=("${DATA[@]}" "${MODEL[@]}" -b 4 -t 32 --eval-tokens 2048 --log-every 1000)

# ---- the loss falls ---------------------------------------------------------------------------
val_losses() { grep -o 'val_loss=[0-9.]*' "$1" | cut -d= -f2; }
for opt in adamw grass galore; do
  extra=(); [ $opt = grass ] && extra=(--optimizer grass --rank 12 --update-freq 10)
  [ $opt = galore ] && extra=(--optimizer galore --rank 12 --update-freq 10)
  if $BIN "${COMMON[@]}" -x 80 -v 40 -l 1e-2 -o "$W/fall_$opt" "${extra[@]}" > "$W/fall_$opt.out" 2>&1; then
    first=$(val_losses "$W/fall_$opt/log.txt" | head -1); last=$(val_losses "$W/fall_$opt/log.txt" | tail -1)
    if python3 -c "import sys; sys.exit(0 if $last < $first - 2.0 else 1)"; then ok "$opt: val loss falls $first -> $last"
    else bad "$opt: val loss did not fall enough ($first -> $last)"; fi
  else bad "$opt: training run failed"; tail -5 "$W/fall_$opt.out"; fi
done

# ---- text samples: one before training (step 0) and at every --sample-every, decoded with the
# tokenizer (a byte-level one written here: id i is the byte i)
python3 - "$W/bytes_tok.bin" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<8i", 20261104, 1, 256, 1, 2, 0, 6, 0))
    for i in range(256):
        piece = ("<0x%02X>" % i).encode()
        f.write(struct.pack("<fii", 0.0, 6, len(piece)) + piece)
PY
if out=$($BIN "${COMMON[@]}" -x 4 -v 0 -s 2 -g 12 -e "$W/bytes_tok.bin" -o "$W/samples" 2>&1); then
  n=$(echo "$out" | grep -c "^---- sample at step")
  echo "$out" | grep -q "^---- sample at step 0 (before training) ----" && echo "$out" | grep -q "^---- sample at step 4 ----" && [ "$n" = 3 ] \
    && ok "samples at steps 0 (before training), 2 and 4" || bad "samples: $n sample blocks, $(echo "$out" | grep "sample at" | tr '\n' ' ')"
else bad "run with samples failed: $(echo "$out" | tail -2)"; fi

# ---- model-FLOPs and executed-FLOPs MFU ----------------------------------------------------------
# AdamW executes the model formula (6 N + 12 L d T); Grass runs its weight-gradient GEMMs on r of
# the rows, so less on a plain step and more on a refresh step (the norm pass); and the
# refresh lines of the log carry the selection's statistics
mfu_check() {  # mfu_check LOG: prints "equal below above" counts of mfu_exec vs mfu over train lines
  python3 - "$1" <<'PY'
import sys
rows = [dict(kv.split("=", 1) for kv in l.split()) for l in open(sys.argv[1]) if l.startswith("step=") and " loss=" in l]
refresh = {l.split()[0] for l in open(sys.argv[1]) if " refresh=1 " in l}
eq = sum(abs(float(r["mfu_exec"]) / float(r["mfu"]) - 1) < 1e-3 for r in rows)
below = sum(float(r["mfu_exec"]) < float(r["mfu"]) * 0.999 and "step=" + r["step"] not in refresh for r in rows)
above = sum(float(r["mfu_exec"]) > float(r["mfu"]) * 1.001 and "step=" + r["step"] in refresh for r in rows)
print(len(rows), eq, below, above, len(refresh))
PY
}
# (--ffn-align 1: the GPU build pads the ffn, which the executed FLOPs count and the model's do not; below)
for opt in adamw grass; do
  extra=(); [ $opt = grass ] && extra=(--optimizer grass --rank 12 --update-freq 3)
  $BIN "${COMMON[@]}" -x 6 -v 0 --peak-tflops 1 --ffn-align 1 -o "$W/mfu_$opt" "${extra[@]}" > "$W/mfu_$opt.out" 2>&1 || { bad "$opt: MFU run failed"; continue; }
  read -r n eq below above nref <<< "$(mfu_check "$W/mfu_$opt/log.txt")"
  if [ $opt = adamw ]; then
    [ "$n" = 6 ] && [ "$eq" = 6 ] && ok "adamw: executed-FLOPs MFU == model-FLOPs MFU on all 6 steps" || bad "adamw: mfu_exec vs mfu: $n $eq"
  else
    [ "$nref" = 2 ] && [ "$below" = 4 ] && [ "$above" = 2 ] \
      && ok "grass: executed MFU below model MFU on 4 plain steps, above on the 2 refresh steps (the norm pass)" \
      || bad "grass: mfu_exec vs mfu: rows $n, below $below, above $above, refreshes $nref"
    grep -qE '^step=1 refresh=1 distinct=[0-9]+ draws=[0-9]+ mult_mean=[0-9.]+ mult_max=[0-9.]+ captured=0\.[0-9]+ sel_hash=[0-9a-f]{16} rows=[0-9]+ again=0\.0000 trained=0\.[0-9]{4}$' "$W/mfu_$opt/log.txt" \
      && ok "grass: refresh lines in the log (distinct rows, draws, step multipliers, selection hash; none held before the first)" \
      || bad "grass: refresh line missing"
    # the second refresh: a share held before, and trained= (rows chosen at some refresh) no lower than at the first
    t1=$(sed -n 's/^step=1 refresh=1 .* trained=\([0-9.]*\)$/\1/p' "$W/mfu_$opt/log.txt")
    t4=$(sed -n 's/^step=4 refresh=1 .* again=[01]\.[0-9]\{4\} trained=\([0-9.]*\)$/\1/p' "$W/mfu_$opt/log.txt")
    [ -n "$t1" ] && [ -n "$t4" ] && python3 -c "import sys; sys.exit(not (0 < $t1 <= $t4 <= 1))" \
      && ok "grass: trained= grows from $t1 to $t4 at the second refresh" || bad "grass: trained= at steps 1 and 4: '$t1' '$t4'"
  fi
done

# with the ffn padded (80 stored as 128) AdamW executes 6 x the padding's 2 x 3 x 48 x 48 parameters
# more per token: N = 2 (4 x 48 x 48 - 2 x 48 x 24 + 3 x 48 x 80) + 256 x 48 = 49152 matmul parameters,
# model 6 N + 12 L d T = 331776 FLOPs per token (T = 32), executed 331776 + 82944: a ratio of 1.25
if $BIN "${COMMON[@]}" -x 3 -v 0 --peak-tflops 1 --ffn-align 64 -o "$W/mfu_pad" > "$W/mfu_pad.out" 2>&1; then
  r=$(python3 -c "
import sys
rows = [dict(kv.split('=', 1) for kv in l.split()) for l in open(sys.argv[1]) if l.startswith('step=') and ' loss=' in l]
print(len(rows), sum(abs(float(r['mfu_exec']) / float(r['mfu']) - 1.25) < 1e-3 for r in rows))" "$W/mfu_pad/log.txt")
  [ "$r" = "3 3" ] && ok "adamw, ffn padded 80 -> 128: executed FLOPs are 1.25 x the model's on all 3 steps (the padding counted)" \
    || bad "adamw, padded ffn: executed/model FLOPs ratio not 1.25 ($r of the steps)"
else bad "padded MFU run failed"; tail -3 "$W/mfu_pad.out"; fi

# ---- --grass-norms auto: exact where it fits, else the sketch ----------------------------------------
# with 2 micro-steps exact holds every projected matrix's fp32 gradient (4.5 MiB for this model;
# the k=4 sketch 0.1 MiB): under a limit between the two plans' totals auto takes the sketch, under
# a limit above both it stays exact, and exact itself is refused over the limit
NP=(-c tiny --vocab 256 --dim 256 --ffn 512 --heads 4 --kv-heads 2 --layers 2 --max-seq 64 -b 4 -t 32 -d 256
    --optimizer grass --rank 8 --sketch-dim 4)
plan_mib() { $BIN "${NP[@]}" --plan-only 1 "$@" 2>&1 | grep -E '^  total' | awk '{print ($3 == "GiB") ? $2 * 1024 : $2}'; }
te=$(plan_mib --grass-norms exact); ts=$(plan_mib --grass-norms sketch)
mid=$(python3 -c "print(($te + $ts) / 2 / 1024)"); high=$(python3 -c "print(($te + 8) / 1024)")
out=$($BIN "${NP[@]}" --plan-only 1 --memory-limit-gb $mid 2>&1)
echo "$out" | grep -q "Grass norm pass .*(sketch, k=4)" && echo "$out" | grep -q "norms auto" \
  && ok "norms auto under a limit between the plans ($ts < limit < $te MiB): the sketch" || bad "norms auto, limit $mid: $(echo "$out" | grep 'norm pass')"
out=$($BIN "${NP[@]}" --plan-only 1 --memory-limit-gb $high 2>&1)
echo "$out" | grep -q "Grass norm pass .*exact: every projected matrix's fp32 gradient" \
  && ok "norms auto under a limit above both: exact (the whole gradients with accumulation)" || bad "norms auto, limit $high: $(echo "$out" | grep 'norm pass')"
out=$($BIN "${NP[@]}" --grass-norms exact --memory-limit-gb $mid -x 2 "${DATA[@]}" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "needs .* GiB but .* GiB is available" \
  && ok "norms exact over the limit: refused with the sizes" || bad "norms exact over the limit: rc=$rc $(echo "$out" | tail -1)"

# ---- resume is bit-exact ----------------------------------------------------------------------
# run A: 8 steps straight, checkpoints every 4 (or 3). Run B: starts from A's first checkpoint
# with -y 1 and must write the same final model and state, and log the same losses.
resume_case() {
  local name=$1 every=$2; shift 2
  local A="$W/res_${name}_a" B="$W/res_${name}_b"
  $BIN "${COMMON[@]}" -x 8 -v 0 -n $every -o "$A" "$@" > "$A.out" 2>&1 || { bad "$name: straight run failed"; tail -3 "$A.out"; return; }
  mkdir -p "$B"
  local s=$(printf "%08d" $every)
  cp "$A/model_$s.bin" "$A/state_$s.bin" "$B/" && echo $every > "$B/checkpoint_latest.txt"
  $BIN "${COMMON[@]}" -x 8 -v 0 -n $every -y 1 -o "$B" "$@" > "$B.out" 2>&1 || { bad "$name: resumed run failed"; tail -3 "$B.out"; return; }
  grep -q "resumed from step $every" "$B.out" || bad "$name: run B did not resume"
  if cmp -s "$A/model_00000008.bin" "$B/model_00000008.bin" && cmp -s "$A/state_00000008.bin" "$B/state_00000008.bin"; then
    ok "$name: resume at step $every gives bit-identical weights and optimizer state at step 8"
  else bad "$name: resumed run differs from the straight run"; fi
  if diff <(grep '^step=[0-9]* loss' "$A/log.txt" | awk -F'[= ]' -v e=$every '$2>e {print $2, $4}') \
          <(grep '^step=[0-9]* loss' "$B/log.txt" | awk -F'[= ]' -v e=$every '$2>e {print $2, $4}') >/dev/null; then
    ok "$name: identical losses after the resume point"
  else bad "$name: losses differ after resume"; fi
}
resume_case adamw 4 -l 3e-3 --weight-decay 0.1 --grad-clip 1.0
resume_case grass_topr 4 --optimizer grass --rank 8 --update-freq 3 --grass-select topr -l 1e-2
resume_case grass_multinorm_accum 3 --optimizer grass --rank 8 --update-freq 3 -d 256 -l 1e-2
resume_case adamw_bf16_states 4 -l 3e-3 --weight-decay 0.1 --state-dtype bf16
resume_case grass_bf16_states 4 --optimizer grass --rank 8 --update-freq 3 --grass-select topr -l 1e-2 --state-dtype bf16
# bf16 moments: the state file holds half the bytes for them, and the run still learns
s32=$(stat -c %s "$W/res_grass_topr_a/state_00000008.bin"); s16=$(stat -c %s "$W/res_grass_bf16_states_a/state_00000008.bin")
python3 -c "import sys; sys.exit(0 if $s16 < 0.6 * $s32 else 1)" && ok "bf16 states: state file $s16 bytes vs $s32 with fp32 states" \
  || bad "bf16 state file $s16 vs fp32 $s32 bytes"
if $BIN "${COMMON[@]}" -x 80 -v 40 -l 1e-2 -o "$W/fall_bf16" --optimizer grass --rank 12 --update-freq 10 --state-dtype bf16 > "$W/fall_bf16.out" 2>&1; then
  f32=$(val_losses "$W/fall_grass/log.txt" | tail -1); f16=$(val_losses "$W/fall_bf16/log.txt" | tail -1)
  python3 -c "import sys; sys.exit(0 if abs($f16 - $f32) < 0.05 * $f32 else 1)" && ok "bf16 states: final val loss $f16 vs $f32 with fp32 states" \
    || bad "bf16 states: val loss $f16 vs $f32"
  grep -q "bf16 optimizer states" "$W/fall_bf16.out" && ok "bf16 states shown in the memory plan" || bad "plan does not show bf16 states"
else bad "bf16 states: training run failed"; tail -3 "$W/fall_bf16.out"; fi
# GaLore: its projectors and moments (kept across a projector change) resume bit for bit, with
# and without accumulation (the SVD pass then holds every matrix's gradient)
resume_case galore 4 --optimizer galore --rank 8 --update-freq 3 -l 1e-2 --weight-decay 0.1
resume_case galore_accum_unfused 3 --optimizer galore --rank 0.25 --update-freq 2 -d 256 -l 1e-2 --grass-fused 0 --state-dtype bf16
out=$($BIN "${COMMON[@]}" --optimizer galore --rank 8 --update-freq 3 --plan-only 1 2>&1)
echo "$out" | grep -q "gradients (GaLore)" && echo "$out" | grep -q "GaLore SVD pass .*one layer's fp32 gradients" \
  && echo "$out" | grep -q "GaLore scratch" && ok "galore: the plan shows R, the SVD pass and the scratch" || bad "galore plan: $out"
grep -q "^step=4 refresh=1" "$W/res_galore_a/log.txt" && grep -q "new GaLore projectors" "$W/res_galore_a.out" \
  && ok "galore: new projectors every K steps, in the log and on the console" || bad "galore: refresh lines missing"
# clipping with the fused update (the previous step's norm sets the step's factor): the norm it
# needs survives a resume (the state file carries it), and the clip acts (other weights than unclipped)
resume_case grass_fused_clip 4 --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -l 1e-2 --grad-clip 0.3
resume_case galore_fused_clip 4 --optimizer galore --rank 8 --update-freq 3 -l 1e-2 --grad-clip 0.3
$BIN "${COMMON[@]}" -x 8 -v 0 -o "$W/noclip_grass" --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -l 1e-2 > /dev/null 2>&1
cmp -s "$W/noclip_grass/model_00000008.bin" "$W/res_grass_fused_clip_a/model_00000008.bin" \
  && bad "fused clipping changed nothing" || ok "fused clipping at 0.3 gives other weights than no clipping"
resume_case grass_master_weights 4 --optimizer grass --rank 8 --update-freq 3 -l 1e-2 --master-weights 1 --weight-decay 0.1
# fp32 master weights: in the fp32 CPU build the weights equal their master copy, so a run with
# one must give the bits of a run without (a master left stale or unsynced would not)
# (a bf16 build, TRAIN_BIN=build/emu/train_llama: rounding the master to nearest instead of
# rounding stochastically must give other weights, or the master copy is not in use)
for mw in 0 1; do
  $BIN "${COMMON[@]}" -x 6 -v 3 -n 6 -o "$W/mw$mw" --optimizer grass --rank 8 --update-freq 2 -l 1e-2 --weight-decay 0.1 \
       --master-weights $mw > "$W/mw$mw.out" 2>&1 || bad "master weights $mw: run failed"
done
if [ "$(ckpt_dtype "$W/mw0/model_00000006.bin")" = 0 ]; then
  cmp -s "$W/mw0/model_00000006.bin" "$W/mw1/model_00000006.bin" && ok "master weights: same weights as without (fp32 build)" \
    || bad "master weights changed the fp32 result"
else
  cmp -s "$W/mw0/model_00000006.bin" "$W/mw1/model_00000006.bin" && bad "bf16 build: master weights made no difference" \
    || ok "master weights: other weights than stochastic rounding (bf16 build)"
fi
# --select-on-device 1: the CPU backend has no device path and must fall back to the host selection
$BIN "${COMMON[@]}" -x 6 -v 3 -n 6 -o "$W/sod" --optimizer grass --rank 8 --update-freq 2 -l 1e-2 --weight-decay 0.1 \
     --select-on-device 1 > "$W/sod.out" 2>&1 || bad "select-on-device: run failed"
cmp -s "$W/mw0/model_00000006.bin" "$W/sod/model_00000006.bin" && ok "--select-on-device 1 on the CPU: the host selection, same weights" \
  || bad "--select-on-device 1 changed the CPU result"
grep -q "master weights .*(fp32 copy)" "$W/mw1.out" && ok "master weights shown in the memory plan" || bad "no master weights line in the plan"
resume_case grass_unfused_nr 4 --optimizer grass --rank 0.25 --update-freq 5 --grass-select multinorm-nr --grass-fused 0 --grad-clip 0.5

# ---- --grass-refresh-state keep, --galore-refresh-state reset ------------------------------------
# keep: the moments of rows selected again and the rows' own step counts (in the state file) resume
# bit for bit across the refreshes after the checkpoint (K=3: refreshes at 0, 3, 6; the checkpoint at
# 4, and at 3, just before a refresh), fused and unfused, fp32 and bf16 moments, with accumulation
resume_case grass_keep 4 --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -l 1e-2 --grass-refresh-state keep
resume_case grass_keep_bf16_accum 3 --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -d 256 -l 1e-2 \
  --grass-fused 0 --state-dtype bf16 --grass-refresh-state keep
resume_case grass_keep_topr_align 3 --optimizer grass --rank 7 --update-freq 3 --grass-select topr -l 1e-2 --grass-row-align 4 \
  --grass-refresh-state keep
resume_case galore_reset 4 --optimizer galore --rank 8 --update-freq 3 -l 1e-2 --weight-decay 0.1 --galore-refresh-state reset
# keep and reset agree up to the first refresh that keeps a row (step 4 of the log, the refresh at
# step index 3) and part after it; the same for GaLore's reset against its keep
kr() { grep "^step=$2 loss" "$1" | grep -o 'loss=[0-9.]*'; }
$BIN "${COMMON[@]}" -x 8 -v 0 -n 4 -o "$W/keep_vs_reset" --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -l 1e-2 \
  > "$W/keep_vs_reset.out" 2>&1 || bad "grass reset run failed"
if [ "$(kr "$W/keep_vs_reset/log.txt" 3)" = "$(kr "$W/res_grass_keep_a/log.txt" 3)" ] \
   && [ "$(kr "$W/keep_vs_reset/log.txt" 5)" != "$(kr "$W/res_grass_keep_a/log.txt" 5)" ]; then
  ok "grass keep == reset until the first refresh that keeps rows, then other losses ($(kr "$W/keep_vs_reset/log.txt" 5) vs $(kr "$W/res_grass_keep_a/log.txt" 5))"
else bad "grass keep vs reset: step 3 $(kr "$W/keep_vs_reset/log.txt" 3) / $(kr "$W/res_grass_keep_a/log.txt" 3), step 5 $(kr "$W/keep_vs_reset/log.txt" 5) / $(kr "$W/res_grass_keep_a/log.txt" 5)"; fi
if [ "$(kr "$W/res_galore_a/log.txt" 3)" = "$(kr "$W/res_galore_reset_a/log.txt" 3)" ] \
   && [ "$(kr "$W/res_galore_a/log.txt" 5)" != "$(kr "$W/res_galore_reset_a/log.txt" 5)" ]; then
  ok "galore reset == keep until the second projector, then other losses"
else bad "galore reset vs keep: step 5 $(kr "$W/res_galore_a/log.txt" 5) / $(kr "$W/res_galore_reset_a/log.txt" 5)"; fi
grep -q "refresh_state=keep" "$W/res_grass_keep_a/log.txt" && ! grep -q "refresh_state" "$W/keep_vs_reset/log.txt" \
  && grep -q "^moments at a refresh: keep" "$W/res_grass_keep_a.out" && ok "keep named in the log header and on the console (reset: as before)" \
  || bad "keep not named in the log header or on the console"
# the host selection and --select-on-device 1 alike with keep (the GPU build selects on the device)
$BIN "${COMMON[@]}" -x 8 -v 0 -n 4 -o "$W/keep_sod" --optimizer grass --rank 8 --update-freq 3 --grass-select multinorm -l 1e-2 \
  --grass-refresh-state keep --select-on-device 1 > "$W/keep_sod.out" 2>&1 || bad "keep with --select-on-device 1: run failed"
cmp -s "$W/res_grass_keep_a/model_00000008.bin" "$W/keep_sod/model_00000008.bin" \
  && same_state "$W/res_grass_keep_a/state_00000008.bin" "$W/keep_sod/state_00000008.bin" \
  && ok "keep: --select-on-device 1 gives the host selection's weights and state, bit for bit" \
  || bad "keep: --select-on-device 1 differs from the host selection"

# ---- --grad-dtype fp32: the dense gradients accumulated, reduced and read in fp32 --------------------
# The CPU build is fp32 already: the flag must give the default's bits, for AdamW and for Grass (whose
# embeddings, head and norms are dense). A bf16 build (TRAIN_BIN=build/emu/train_llama) must give
# other weights, or the fp32 gradients are not in use. The plan shows 4 bytes per dense value, and a
# state file resumes across the flag (gradients are not saved).
for opt in adamw grass; do
  extra=(-l 3e-3 --weight-decay 0.1); [ $opt = grass ] && extra=(--optimizer grass --rank 8 --update-freq 2 -l 1e-2 --grass-fused 0 --grad-clip 0.5)
  for gd in model fp32; do
    $BIN "${COMMON[@]}" -x 6 -v 3 -n 6 -o "$W/gd_${opt}_$gd" --grad-dtype $gd "${extra[@]}" > "$W/gd_${opt}_$gd.out" 2>&1 \
      || { bad "--grad-dtype $gd, $opt: run failed"; tail -3 "$W/gd_${opt}_$gd.out"; }
  done
  same=0
  cmp -s "$W/gd_${opt}_model/model_00000006.bin" "$W/gd_${opt}_fp32/model_00000006.bin" \
    && same_state "$W/gd_${opt}_model/state_00000006.bin" "$W/gd_${opt}_fp32/state_00000006.bin" \
    && diff <(grep -v '^#' "$W/gd_${opt}_model/log.txt" | grep -o ' \(val_\)\?loss=[^ ]*\| grad_norm=[^ ]*') \
            <(grep -v '^#' "$W/gd_${opt}_fp32/log.txt" | grep -o ' \(val_\)\?loss=[^ ]*\| grad_norm=[^ ]*') > /dev/null && same=1
  if [ "$(ckpt_dtype "$W/gd_${opt}_model/model_00000006.bin")" = 0 ]; then
    [ $same = 1 ] && ok "--grad-dtype fp32, $opt: bit-identical losses, gradient norms, weights and state to the default (fp32 build)" \
      || bad "--grad-dtype fp32 changed the fp32 build's $opt result"
  else
    [ $same = 0 ] && ok "--grad-dtype fp32, $opt: other weights than bf16 dense gradients (bf16 build)" \
      || bad "bf16 build: --grad-dtype fp32 made no difference for $opt"
  fi
done
grep -q "gradients (dense) .*(fp32, 4 bytes per value)" "$W/gd_adamw_fp32.out" && grep -q "fp32 dense gradients" "$W/gd_adamw_fp32.out" \
  && ok "--grad-dtype fp32: the plan shows the dense gradients in fp32, 4 bytes per value" || bad "no fp32 dense-gradient line in the plan"
# a state file written with the default resumes with --grad-dtype fp32 (fp32 build: the straight run's bits)
mkdir -p "$W/gd_res" && cp "$W/res_adamw_a/model_00000004.bin" "$W/res_adamw_a/state_00000004.bin" "$W/gd_res/" && echo 4 > "$W/gd_res/checkpoint_latest.txt"
if $BIN "${COMMON[@]}" -x 8 -v 0 -n 4 -y 1 -o "$W/gd_res" -l 3e-3 --weight-decay 0.1 --grad-clip 1.0 --grad-dtype fp32 > "$W/gd_res.out" 2>&1 \
   && grep -q "resumed from step 4" "$W/gd_res.out"; then
  if [ "$(ckpt_dtype "$W/gd_res/model_00000008.bin")" = 0 ]; then
    cmp -s "$W/res_adamw_a/model_00000008.bin" "$W/gd_res/model_00000008.bin" && same_state "$W/res_adamw_a/state_00000008.bin" "$W/gd_res/state_00000008.bin" \
      && ok "a state file written with --grad-dtype model resumes with fp32 (the straight run's bits, fp32 build)" || bad "resume across --grad-dtype differs"
  else ok "a state file written with --grad-dtype model resumes with fp32 (bf16 build)"; fi
else bad "resume with --grad-dtype fp32 failed"; tail -3 "$W/gd_res.out"; fi

# ---- activation recomputation changes memory, not results ------------------------------------
recompute_case() {
  local name=$1; shift
  $BIN "${COMMON[@]}" -x 6 -v 3 -n 6 -o "$W/rc0_$name" --recompute 0 "$@" > "$W/rc0_$name.out" 2>&1 || { bad "$name: run without recompute failed"; return; }
  $BIN "${COMMON[@]}" -x 6 -v 3 -n 6 -o "$W/rc1_$name" --recompute 1 "$@" > "$W/rc1_$name.out" 2>&1 || { bad "$name: run with recompute failed"; tail -3 "$W/rc1_$name.out"; return; }
  if cmp -s "$W/rc0_$name/model_00000006.bin" "$W/rc1_$name/model_00000006.bin" \
     && same_state "$W/rc0_$name/state_00000006.bin" "$W/rc1_$name/state_00000006.bin"; then
    ok "$name: --recompute 1 gives bit-identical weights and optimizer state"
  else bad "$name: --recompute 1 changed the result"; fi
  local a0=$(grep -o 'activations *[0-9.]* [MG]iB' "$W/rc0_$name.out" | grep -o '[0-9.]* [MG]iB')
  local a1=$(grep -o 'activations *[0-9.]* [MG]iB' "$W/rc1_$name.out" | grep -o '[0-9.]* [MG]iB')
  python3 -c "import sys; sys.exit(0 if float('${a1% *}') < float('${a0% *}') else 1)" 2>/dev/null \
    && grep -q "recomputed per layer" "$W/rc1_$name.out" && ok "$name: the plan shows fewer activation bytes ($a0 -> $a1)" \
    || bad "$name: activation plan $a0 -> $a1"
}
recompute_case adamw -l 3e-3
recompute_case grass_accum --optimizer grass --rank 8 --update-freq 3 -d 256 -l 1e-2
recompute_case grass_fused --optimizer grass --rank 8 --update-freq 2 --grass-select uniform -l 1e-2

# ---- a model exported to Hugging Face format and imported back starts a run --------------------
bf16_flag=(); [ "$(ckpt_dtype "$W/fall_adamw/model_00000080.bin")" = 1 ] && bf16_flag=(--bf16)
if python3 dev/export_hf.py "$W/fall_adamw/model_00000080.bin" "$W/hf" > /dev/null 2>&1 \
   && python3 dev/import_hf.py "$W/hf" "$W/imported.bin" "${bf16_flag[@]}" > /dev/null 2>&1; then
  cmp -s <(tail -c +257 "$W/fall_adamw/model_00000080.bin" | head -c -16) <(tail -c +257 "$W/imported.bin" | head -c -16) \
    && ok "HF export + import keeps every weight bit" || bad "HF round trip changed weights"
  if $BIN "${COMMON[@]}" -x 2 -v 1 -o "$W/from_hf" --init-from "$W/imported.bin" > "$W/from_hf.out" 2>&1 \
     && grep -q "initialized from" "$W/from_hf.out"; then
    v_hf=$(grep -o 'val_loss=[0-9.]*' "$W/from_hf/log.txt" | head -1 | cut -d= -f2)
    v_end=$(grep -o 'val_loss=[0-9.]*' "$W/fall_adamw/log.txt" | tail -1 | cut -d= -f2)
    [ "$v_hf" = "$v_end" ] \
      && ok "a run from the imported HF model starts at the exported run's val loss ($v_hf)" || bad "imported model starts at val loss $v_hf, the exported run ended at $v_end"
  else bad "run from the imported model failed"; tail -3 "$W/from_hf.out"; fi
else bad "HF export/import failed"; fi

# ---- the ffn stored padded (--ffn-align) changes the layout, not the model -----------------------
# ffn 80 with --ffn-align 64 is stored as 128 (zero rows in gate/up, zero columns in down): the
# same losses to the summation order, a model file of the same size (it holds the Hugging Face
# shapes) that loads into an unpadded run, for AdamW and for Grass (its selection never sees the padding)
rel_log_diff() {  # worst relative difference of two logs' losses and val losses (same steps)
  python3 - "$1" "$2" <<'PY'
import re, sys
def read(p):
    return {(m.group(2), int(m.group(1))): float(m.group(3)) for m in
            (re.match(r"step=(\d+) (loss|val_loss)=([-0-9.e+]+)", l) for l in open(p)) if m}
a, b = read(sys.argv[1]), read(sys.argv[2])
print("inf" if not a or a.keys() != b.keys() else "%.3e" % max(abs(a[k] - b[k]) / abs(b[k]) for k in a))
PY
}
for v in "adamw" "grass --optimizer grass --rank 12 --update-freq 4"; do
  set -- $v; name=$1; shift
  if $BIN "${COMMON[@]}" -x 10 -v 5 -l 1e-2 --ffn-align 1 -o "$W/pad1_$name" "$@" > "$W/pad1_$name.out" 2>&1 \
     && $BIN "${COMMON[@]}" -x 10 -v 5 -l 1e-2 --ffn-align 64 -o "$W/pad64_$name" "$@" > "$W/pad64_$name.out" 2>&1; then
    grep -q "the ffn padded from 80 to 128" "$W/pad64_$name.out" && ok "$name: the plan says the ffn is stored padded (80 -> 128)" \
      || bad "$name: the plan does not show the padding"
    d=$(rel_log_diff "$W/pad64_$name/log.txt" "$W/pad1_$name/log.txt")
    python3 -c "import sys; sys.exit(0 if $d < 2e-3 else 1)" && ok "$name: padded and unpadded ffn give the same losses (worst rel diff $d)" \
      || bad "$name: padded ffn losses differ by $d (relative)"
    [ "$(stat -c %s "$W/pad64_$name/model_00000010.bin")" = "$(stat -c %s "$W/pad1_$name/model_00000010.bin")" ] \
      && ok "$name: the padded run's model file has the unpadded one's size (Hugging Face shapes)" || bad "$name: model file sizes differ"
  else bad "$name: a --ffn-align run failed"; tail -3 "$W/pad1_$name.out" "$W/pad64_$name.out"; fi
done
if $BIN "${COMMON[@]}" -x 1 -v 1 --ffn-align 1 -o "$W/pad_init" --init-from "$W/pad64_adamw/model_00000010.bin" > "$W/pad_init.out" 2>&1; then
  v0=$(val_losses "$W/pad_init/log.txt" | head -1); v10=$(val_losses "$W/pad64_adamw/log.txt" | tail -1)
  [ "$v0" = "$v10" ] && ok "the padded run's model file starts an unpadded run at its val loss ($v0)" \
    || bad "the padded model file starts an unpadded run at val loss $v0, it ended at $v10"
else bad "--init-from a padded run's model failed"; tail -3 "$W/pad_init.out"; fi

# ---- bad input: non-zero exit and a message naming the problem ---------------------------------
expect_fail() {  # expect_fail "label" "message regex" args...
  local label=$1 pattern=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -qE "$pattern"; then ok "bad input: $label"
  else bad "bad input: $label (rc=$rc; wanted /$pattern/) -> $(echo "$out" | tail -2)"; fi
}
T=(-b 4 -t 32 -x 2 -v 0 -o "$W/badrun")
expect_fail "no shards" "no data shards match" $BIN -i "$W/nothing_*.bin" "${MODEL[@]}" "${T[@]}"
printf 'not a shard at all, just some text that is long enough to hold a header............' > "$W/junk_train_0.bin"
expect_fail "wrong magic" "junk_train_0.bin" $BIN -i "$W/junk_train_*.bin" -j none "${MODEL[@]}" "${T[@]}"
head -c 1000 "$W/data/synthetic_train_000000.bin" > "$W/trunc_train_0.bin"
expect_fail "truncated shard" "trunc_train_0.bin" $BIN -i "$W/trunc_train_*.bin" -j none "${MODEL[@]}" "${T[@]}"
expect_fail "shard vocab larger than the model's" "synthetic_train_000000.bin" $BIN "${DATA[@]}" -c tiny --vocab 128 --dim 48 --ffn 80 --heads 4 --layers 2 "${T[@]}"
expect_fail "unknown option" "unknown option '--bogus'" $BIN --bogus 1
expect_fail "non-numeric value" "is not a number" $BIN "${COMMON[@]}" -b abc
expect_fail "out-of-range lr" "out of range" $BIN "${COMMON[@]}" -l -1
expect_fail "zero batch" "out of range" $BIN "${COMMON[@]}" -b 0
expect_fail "unknown --attention" "attention 'flash': own \| cudnn" $BIN "${COMMON[@]}" "${T[@]}" --attention flash
# the CPU build and a GPU build without cuDNN's frontend (the emulated one) say why they cannot
expect_fail "--attention cudnn where it is not built" "attention cudnn: (the CPU build has one attention|this GPU build was made without cuDNN)" \
  $BIN "${COMMON[@]}" "${T[@]}" --attention cudnn
expect_fail "unknown config" "unknown model config 'huge'" $BIN "${DATA[@]}" -c huge
expect_fail "heads not dividing dim" "not divisible" $BIN "${DATA[@]}" -c tiny --vocab 256 --dim 50 --heads 4
expect_fail "sequence longer than max_seq" "longer than the model's max_seq_len 64" $BIN "${COMMON[@]}" "${T[@]}" -t 128
expect_fail "total batch not a multiple" "not a multiple of B\\*T\\*ranks" $BIN "${COMMON[@]}" -d 1000 "${T[@]}"
expect_fail "unknown optimizer" "unknown --optimizer 'sgd'" $BIN "${COMMON[@]}" --optimizer sgd "${T[@]}"
expect_fail "grass rank 0" "rank" $BIN "${COMMON[@]}" --optimizer grass --rank 0 "${T[@]}"
expect_fail "grass rank > dimension" "larger than the dimension" $BIN "${COMMON[@]}" --optimizer grass --rank 49 "${T[@]}"
expect_fail "grass K = 0" "update-freq.*out of range" $BIN "${COMMON[@]}" --optimizer grass --update-freq 0 "${T[@]}"
expect_fail "unknown grass variant" "unknown --grass-select 'best'" $BIN "${COMMON[@]}" --optimizer grass --grass-select best "${T[@]}"
expect_fail "unknown grass layer" "unknown layer type 'attn'" $BIN "${COMMON[@]}" --optimizer grass --grass-layers q,attn "${T[@]}"
expect_fail "galore with sketched norms" "GaLore's projector is the SVD" $BIN "${COMMON[@]}" --optimizer galore --rank 8 --grass-norms sketch "${T[@]}"
expect_fail "galore rank > dimension" "larger than the dimension" $BIN "${COMMON[@]}" --optimizer galore --rank 49 "${T[@]}"
expect_fail "matrix lr scale with grass" "is for full-rank AdamW" $BIN "${COMMON[@]}" --optimizer grass --rank 8 --matrix-lr-scale 0.5 "${T[@]}"
expect_fail "resume galore as grass" "another setup.*--optimizer: checkpoint galore, command line grass" $BIN "${COMMON[@]}" -x 8 -v 0 -y 1 -o "$W/res_galore_a" --optimizer grass --rank 8 --update-freq 3 -l 1e-2 --weight-decay 0.1
# GaLore's conventions (--galore-side, --adam-eps-style) are part of the setup: another value is refused
# on a resume. A state file from before they existed resumes with the old ways (rows, corrected): made
# here by a run with those flags whose step-4 state loses their setup lines; resumed without them, it
# must end bit for bit where the run ended (the state file also records each matrix's side, so a wrong
# side is refused by the optimizer's own check), and it refuses the official side as a changed setup
expect_fail "resume galore with the other side" "another setup.*--galore-side: checkpoint official, command line rows" $BIN -x 8 -v 0 -y 1 -o "$W/res_galore_a" --galore-side rows
expect_fail "resume galore with the other eps style" "another setup.*--adam-eps-style: checkpoint raw, command line corrected" $BIN -x 8 -v 0 -y 1 -o "$W/res_galore_a" --adam-eps-style corrected
$BIN "${COMMON[@]}" -x 8 -v 0 -n 4 -o "$W/galore_old_a" --optimizer galore --rank 8 --update-freq 3 -l 1e-2 --galore-side rows \
  --adam-eps-style corrected --adam-eps 1e-3 > "$W/galore_old_a.out" 2>&1 || bad "galore --galore-side rows run failed: $(tail -1 "$W/galore_old_a.out")"
mkdir -p "$W/galore_legacy" && python3 - "$W/galore_old_a/state_00000004.bin" "$W/galore_legacy/state_00000004.bin" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
assert struct.unpack("<i", d[84:88])[0] == 1 and struct.unpack("<i", d[80:84])[0] == 1
d = d[:-16]                                     # no checksum trailer, h[21] = 0
d[84:88] = struct.pack("<i", 0)
i = d.find(b"--", 256)
n = struct.unpack("<i", d[i - 4:i])[0]
lines = [l for l in bytes(d[i:i + n]).split(b"\n") if l and not l.startswith((b"--galore-side\t", b"--adam-eps-style\t"))]
# a run at the values older files mean (rows, corrected) writes no line for either option
# (SETUP_IMPLIED in train_args.h): its setup is already what a file from before them held
assert len(lines) == bytes(d[i:i + n]).count(b"\n")
text = b"\n".join(lines) + b"\n"
open(sys.argv[2], "wb").write(bytes(d[:i - 4]) + struct.pack("<i", len(text)) + text + bytes(d[i + n:]))
PY
cp "$W/galore_old_a/model_00000004.bin" "$W/galore_legacy/" && echo 4 > "$W/galore_legacy/checkpoint_latest.txt"
expect_fail "legacy galore state with the official side" "another setup.*--galore-side: checkpoint rows, command line official" $BIN -x 8 -v 0 -y 1 -o "$W/galore_legacy" --galore-side official
out=$($BIN -x 8 -v 0 -n 4 -y 1 -o "$W/galore_legacy" 2>&1) && echo "$out" | grep -q "resumed from step 4" \
  && echo "$out" | grep -q -- "--galore-side rows, --adam-eps-style corrected" \
  && cmp -s "$W/galore_legacy/model_00000008.bin" "$W/galore_old_a/model_00000008.bin" \
  && ok "a GaLore state file from before --galore-side and --adam-eps-style resumes with rows and corrected: bit-identical at step 8" \
  || bad "legacy GaLore state file: $(echo "$out" | grep -- "--galore-side"; echo "$out" | tail -1)"
expect_fail "unknown galore side" "unknown --galore-side 'left'" $BIN "${COMMON[@]}" --optimizer galore --rank 8 --galore-side left "${T[@]}"
expect_fail "unknown eps style" "unknown --adam-eps-style 'hat'" $BIN "${COMMON[@]}" --adam-eps-style hat "${T[@]}"
expect_fail "model does not fit" "needs .* GiB but .* available" $BIN "${COMMON[@]}" --memory-limit-gb 0.001 "${T[@]}"
expect_fail "13b on this machine" "needs .* GiB but" $BIN "${DATA[@]}" -c 13b --vocab 256 -b 1 -t 32 "${T[@]}"
expect_fail "missing tokenizer for samples" "nowhere/tokenizer.bin" $BIN "${COMMON[@]}" -s 1 -e "$W/nowhere/tokenizer.bin" "${T[@]}"
# checkpoints: another config, not a checkpoint, truncated, NaN weights
expect_fail "resume with another config" "another setup.*--dim: checkpoint 48, command line 64" $BIN "${DATA[@]}" -c tiny --vocab 256 --dim 64 --ffn 80 --heads 4 --kv-heads 2 --layers 2 --max-seq 64 -b 4 -t 32 -x 8 -v 0 -y 1 -o "$W/res_adamw_a"
expect_fail "resume with another optimizer, named" "another setup.*--optimizer: checkpoint adamw, command line grass.*--rank: checkpoint 128, command line 8" $BIN "${COMMON[@]}" -x 8 -v 0 -y 1 -o "$W/res_adamw_a" --optimizer grass --rank 8
expect_fail "resume with another state dtype" "another setup.*--state-dtype: checkpoint fp32, command line bf16" $BIN "${COMMON[@]}" -x 8 -v 0 -y 1 -o "$W/res_adamw_a" -l 3e-3 --state-dtype bf16
# checkpoints carry their setup: -y 1 needs no model, data or optimizer flag; what may change
# (steps, lr schedule, evaluation) changes; a state file from before saved setups (rewritten here
# without its setup block) still loads, and there the optimizer's own check names what differs
rm -rf "$W/carry" && mkdir -p "$W/carry" && cp "$W/res_grass_master_weights_a"/model_00000004.bin "$W/res_grass_master_weights_a"/state_00000004.bin "$W/carry/" && echo 4 > "$W/carry/checkpoint_latest.txt"
if $BIN -o "$W/carry" -y 1 -x 8 -n 4 > "$W/carry.out" 2>&1 && grep -q "resumed from step 4" "$W/carry.out" \
   && cmp -s "$W/carry/model_00000008.bin" "$W/res_grass_master_weights_a/model_00000008.bin" \
   && cmp -s "$W/carry/state_00000008.bin" "$W/res_grass_master_weights_a/state_00000008.bin"; then
  ok "resume with only -o and -y 1 (model, data, Grass, master weights from the checkpoint): bit-identical at step 8"
else bad "resume with only -o -y 1: $(tail -2 "$W/carry.out")"; fi
if $BIN -o "$W/carry" -y 1 -x 10 -l 5e-3 -v 0 > "$W/carry2.out" 2>&1 && grep -q "resumed from step 8" "$W/carry2.out" && grep -q "^step=10 " "$W/carry/log.txt"; then
  ok "resume with more steps and another peak lr (options that may change)"
else bad "resume with -x 10: $(tail -2 "$W/carry2.out")"; fi
python3 - "$W/res_adamw_a/state_00000008.bin" "$W/old_state/state_00000008.bin" <<'PY'
import os, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
assert struct.unpack("<i", data[84:88])[0] == 1
data = data[:-16]                               # no checksum trailer, h[21] = 0
data[84:88] = struct.pack("<i", 0)
i = data.find(b"--", 256)                       # the setup text, after its int32 length
n = struct.unpack("<i", data[i - 4:i])[0]
assert data[i + n - 1:i + n] == b"\n" and struct.unpack("<i", data[80:84])[0] == 1
data[80:84] = struct.pack("<i", 0)              # h[20]: no setup block
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
open(sys.argv[2], "wb").write(bytes(data[:i - 4] + data[i + n:]))
PY
cp "$W/res_adamw_a/model_00000008.bin" "$W/old_state/" && echo 8 > "$W/old_state/checkpoint_latest.txt"
expect_fail "old state file, another optimizer, named" "another optimizer setup.*--optimizer: file adamw, this run grass" $BIN "${COMMON[@]}" -x 9 -v 0 -y 1 -o "$W/old_state" --optimizer grass --rank 8
out=$($BIN "${COMMON[@]}" -x 9 -v 0 -y 1 -o "$W/old_state" -l 3e-3 --weight-decay 0.1 --grad-clip 1.0 2>&1) && echo "$out" | grep -q "resumed from step 8" \
  && ok "a state file without a saved setup resumes with the flags repeated" || bad "old state file: $(echo "$out" | tail -1)"
# the refresh state is part of the setup: resuming with the other one is refused, named
expect_fail "resume keep as reset" "another setup.*--grass-refresh-state: checkpoint keep, command line reset" $BIN "${COMMON[@]}" -x 9 -v 0 -y 1 \
  -o "$W/res_grass_keep_a" --grass-refresh-state reset
expect_fail "resume reset as keep" "another setup.*--grass-refresh-state: checkpoint reset, command line keep" $BIN "${COMMON[@]}" -x 9 -v 0 -y 1 \
  -o "$W/res_grass_topr_a" --grass-refresh-state keep
expect_fail "resume galore keep as reset" "another setup.*--galore-refresh-state: checkpoint keep, command line reset" $BIN "${COMMON[@]}" -x 9 -v 0 \
  -y 1 -o "$W/res_galore_a" --galore-refresh-state reset
expect_fail "bad --grass-refresh-state" "unknown --grass-refresh-state 'kept'" $BIN "${COMMON[@]}" -x 2 -o "$W/bad_rs" --optimizer grass --grass-refresh-state kept
# a Grass state file from before the flag (no saved setup, no refresh field: as this build writes for
# reset) resumes as reset, and keep is refused by the optimizer's signature
python3 - "$W/res_grass_topr_a/state_00000008.bin" "$W/old_grass/state_00000008.bin" <<'PY'
import os, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
data = data[:-16]; data[84:88] = struct.pack("<i", 0)
i = data.find(b"--", 256); n = struct.unpack("<i", data[i - 4:i])[0]
data[80:84] = struct.pack("<i", 0)
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
open(sys.argv[2], "wb").write(bytes(data[:i - 4] + data[i + n:]))
PY
cp "$W/res_grass_topr_a/model_00000008.bin" "$W/old_grass/" && echo 8 > "$W/old_grass/checkpoint_latest.txt"
GT=(--optimizer grass --rank 8 --update-freq 3 --grass-select topr -l 1e-2)
expect_fail "old grass state file resumed with keep" "written with --grass-refresh-state reset and this run uses keep" $BIN "${COMMON[@]}" -x 9 -v 0 \
  -y 1 -o "$W/old_grass" "${GT[@]}" --grass-refresh-state keep
out=$($BIN "${COMMON[@]}" -x 9 -v 0 -y 1 -o "$W/old_grass" "${GT[@]}" 2>&1) && echo "$out" | grep -q "resumed from step 8" \
  && ok "an old grass state file resumes as reset" || bad "old grass state file: $(echo "$out" | tail -1)"
# --init-from takes the model config from the file; a model flag that disagrees is refused, named
out=$($BIN "${DATA[@]}" -b 4 -t 32 -x 2 -v 0 -o "$W/initcfg" --init-from "$W/res_adamw_a/model_00000008.bin" 2>&1) \
  && echo "$out" | grep -q "model: vocab 256, dim 48, ffn 80, layers 2, heads 4, kv heads 2" \
  && ok "--init-from without model flags: the file's config" || bad "--init-from config: $(echo "$out" | tail -1)"
expect_fail "--init-from with a conflicting model flag" "another model config than the flags give.*--dim: file 48, flags 64" $BIN "${DATA[@]}" -b 4 -t 32 -x 2 -v 0 -o "$W/initcfg2" --init-from "$W/res_adamw_a/model_00000008.bin" --dim 64
expect_fail "ZeRO-1 with master weights" "not supported yet" $BIN "${COMMON[@]}" "${T[@]}" --zero 1 --master-weights 1
expect_fail "unknown state dtype" "unknown --state-dtype 'fp16'" $BIN "${COMMON[@]}" "${T[@]}" --state-dtype fp16
expect_fail "unknown gradient dtype" "unknown --grad-dtype 'bf16'" $BIN "${COMMON[@]}" "${T[@]}" --grad-dtype bf16
expect_fail "init from a non-checkpoint" "not a grass.c model checkpoint" $BIN "${COMMON[@]}" "${T[@]}" --init-from "$W/data/synthetic_val_000000.bin"
head -c 5000 "$W/res_adamw_a/model_00000008.bin" > "$W/trunc_model.bin"
expect_fail "truncated checkpoint" "truncated or corrupt" $BIN "${COMMON[@]}" "${T[@]}" --init-from "$W/trunc_model.bin"
python3 - "$W/res_adamw_a/model_00000008.bin" "$W/nan_model.bin" <<'PY'
import sys, numpy as np
raw = bytearray(open(sys.argv[1], "rb").read()[:-16])   # without the checksum trailer: flag h[14] = 0
raw[56:60] = np.int32(0).tobytes()
w = np.frombuffer(raw, dtype=np.float32, offset=256).copy(); w[-1] = np.nan  # lm_head: every logit row
open(sys.argv[2], "wb").write(bytes(raw[:256]) + w.tobytes())
PY
rm -rf "$W/nanrun"
expect_fail "NaN loss" "loss became nan" $BIN "${COMMON[@]}" -x 4 -v 0 -n 1 -o "$W/nanrun" --init-from "$W/nan_model.bin"
if ls "$W/nanrun"/model_*.bin >/dev/null 2>&1; then bad "NaN run wrote a checkpoint"; else ok "NaN run wrote no checkpoint"; fi

finish test_train
