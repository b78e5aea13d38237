#!/usr/bin/env bash
# Several hosts for real, on one machine: 2 hosts (tests/testhosts.sh: each a network namespace
# with its own address on a bridge, its own hostname, /tmp and /dev/shm), 2 ranks on each,
# launched as a user launches a cluster job: scripts/multinode_mpirun.sh with a hostfile and an rsh
# agent that enters a host (tests/testhost_rsh.sh, in place of ssh). Open MPI then talks TCP
# between the hosts and shared memory within each.
# Checks: 2 hosts x 2 ranks give the losses of 1 rank with the same global batch for AdamW, Grass
# multinorm and GaLore; ranks in sync; the ranks ran on both hosts; ZeRO-1 and overlap on/off
# across hosts; the emulated GPU build's NCCL path (NCCL emulated over MPI) across hosts.
# Removes everything it made on exit, also on failure; first removes what a killed run left.
# Without the rights to make namespaces it prints a counted skip. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${TRAIN_BIN:-./train_llama_cpu}
EMU_MPI=build/emu/train_llama_mpi
source tests/harness.sh
source tests/testhosts.sh
if ! why=$(testhosts_can); then
  skip "the multi-host checks: $why"
  finish test_multinode; exit $?
fi
command -v mpirun >/dev/null 2>&1 || { bad "mpirun not found (scripts/install_deps.sh test)"; finish test_multinode; exit 1; }
ldd "$BIN" 2>/dev/null | grep -q libmpi || { bad "$BIN is not an MPI build (make train_llama_cpu with OpenMPI installed)"; finish test_multinode; exit 1; }
# the hosts share the repository (the cluster's shared file system), not /tmp: runs write under build/
S=$ROOT/build/test_multinode
cleanup() { testhosts_remove; rm -rf "$S" "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$S"; mkdir -p "$S"
testhosts_create 2 || { bad "could not create the test hosts"; finish test_multinode; exit 1; }
H1=${TH_PREFIX}-h1; H2=${TH_PREFIX}-h2
printf '%s slots=2\n%s slots=2\n' "$H1" "$H2" > "$S/hostfile"

# the hosts are hosts: own names, own /tmp and /dev/shm, reachable over the bridge only
[ "$(testhost_exec $H2 hostname)" = "$H2" ] && [ "$(hostname)" != "$H2" ] && ok "host 2 has its own hostname" || bad "hostname of host 2"
touch /dev/shm/gcmn_probe_$$
testhost_exec $H1 sh -c "[ ! -e /dev/shm/gcmn_probe_$$ ] && touch /tmp/p && [ ! -e /tmp/p ] || true" >/dev/null
testhost_exec $H1 test ! -e /dev/shm/gcmn_probe_$$ && ok "hosts have a private /dev/shm" || bad "host 1 sees this machine's /dev/shm"
rm -f /dev/shm/gcmn_probe_$$
testhost_exec $H1 touch /tmp/gcmn_h1_only
testhost_exec $H2 test ! -e /tmp/gcmn_h1_only && ok "hosts have a private /tmp" || bad "host 2 sees host 1's /tmp"

python3 dev/data/make_synthetic.py --out-dir "$S/data" --vocab 256 --train-tokens 40000 --val-tokens 6000 >/dev/null
C=(-i "$S/data/synthetic_train_*.bin" -j "$S/data/synthetic_val_*.bin" -c tiny --vocab 256 --dim 48 --ffn 80
   --heads 4 --kv-heads 2 --layers 2 --max-seq 64 -b 2 -t 32 -d 256 --eval-tokens 1024 --log-every 1000 -l 5e-3 -x 7 -v 3)
# multi NAME ARGS...: the trainer on 2 hosts x 2 ranks through scripts/multinode_mpirun.sh, started
# from host 1 as from a login node
multi() {
  local name=$1 bin=$2; shift 2
  testhost_exec $H1 env HOSTFILE="$S/hostfile" NGPU=4 RSH_AGENT="$TH_AGENT" MPI_NET="$TH_NET.0/24" OMP_NUM_THREADS=1 \
    OOB_KEEPALIVE=2 timeout 180 scripts/multinode_mpirun.sh -- "$bin" "${C[@]}" -o "$S/$name" "$@" > "$S/$name.out" 2>&1
}

declare -A opt_args=([adamw]="--optimizer adamw" [multinorm]="--optimizer grass --grass-select multinorm --rank 8 --update-freq 3"
                     [galore]="--optimizer galore --rank 8 --update-freq 3")
for opt in adamw multinorm galore; do
  # shellcheck disable=SC2206
  extra=(${opt_args[$opt]})
  OMP_NUM_THREADS=1 $BIN "${C[@]}" -o "$S/one_$opt" "${extra[@]}" > "$S/one_$opt.out" 2>&1 || { bad "$opt: 1-rank run failed"; tail -3 "$S/one_$opt.out"; continue; }
  multi "hosts_$opt" "$BIN" "${extra[@]}" || { bad "$opt: 2 hosts x 2 ranks failed"; tail -8 "$S/hosts_$opt.out"; continue; }
  grep -q "ranks=4 accumulation=1" "$S/hosts_$opt.out" && grep -q "accumulation=4" "$S/one_$opt.out" \
    && ok "$opt: 4 ranks on 2 hosts, 1 rank accumulating 4 micro-batches" || bad "$opt: unexpected batch split"
  if msg=$(same_losses "$S/one_$opt/log.txt" "$S/hosts_$opt/log.txt" 2e-4); then ok "$opt: 2 hosts x 2 ranks == 1 rank ($msg)"
  else bad "$opt: 2 hosts x 2 ranks vs 1 rank: $msg"; fi
  grep -q "ranks in sync: 4 ranks hold identical weights" "$S/hosts_$opt.out" && ok "$opt: the 4 ranks end in sync" || bad "$opt: no in-sync confirmation"
done
# where the ranks ran: the trainer's banner names each rank's host
hosts_seen=$(grep -m1 "^hosts: " "$S/hosts_adamw.out" | grep -o "[^ ]* (ranks" | awk '{print $1}' | sort -u | tr "\n" " ")
[ "$hosts_seen" = "$H1 $H2 " ] && ok "ranks ran on both hosts ($hosts_seen)" || bad "ranks' hosts: '$hosts_seen'"

# ZeRO-1 across hosts (AdamW moments sharded over 4 ranks), overlap on and off
multi zero "$BIN" --optimizer adamw --zero 1 || { bad "ZeRO-1 on 2 hosts failed"; tail -5 "$S/zero.out"; }
grep -q "ZeRO-1: the full-rank AdamW moments are sharded over 4 ranks" "$S/zero.out" && ok "ZeRO-1 announced over 4 ranks" || bad "ZeRO-1 not announced"
if msg=$(same_losses "$S/one_adamw/log.txt" "$S/zero/log.txt" 2e-4); then ok "ZeRO-1, 2 hosts x 2 ranks == 1 rank ($msg)"; else bad "ZeRO-1 vs 1 rank: $msg"; fi
for ov in 0 1; do
  multi "ov$ov" "$BIN" --optimizer grass --rank 8 --update-freq 3 --overlap-comm $ov || { bad "overlap $ov on 2 hosts failed"; tail -5 "$S/ov$ov.out"; }
  grep -q "overlap=$ov" "$S/ov$ov.out" || bad "overlap=$ov not shown"
done
if msg=$(same_losses "$S/ov0/log.txt" "$S/ov1/log.txt" 2e-4); then ok "Grass across hosts: overlapped == immediate all-reduce ($msg)"
else bad "overlap on vs off across hosts: $msg"; fi
if msg=$(same_losses "$S/one_multinorm/log.txt" "$S/ov1/log.txt" 2e-4); then ok "Grass overlapped across hosts == 1 rank ($msg)"; else bad "overlap vs 1 rank: $msg"; fi

# the emulated GPU build: NCCL (emulated over MPI) across the hosts
if [ -x $EMU_MPI ]; then
  G=(--optimizer grass --rank 8 --update-freq 3)
  OMP_NUM_THREADS=1 timeout 300 $EMU_MPI "${C[@]}" -x 4 -v 2 -o "$S/emu_one" "${G[@]}" > "$S/emu_one.out" 2>&1 || bad "emulated 1-rank run failed"
  printf '%s slots=1\n%s slots=1\n' "$H1" "$H2" > "$S/hostfile2"
  testhost_exec $H1 env HOSTFILE="$S/hostfile2" NGPU=2 RSH_AGENT="$TH_AGENT" MPI_NET="$TH_NET.0/24" OMP_NUM_THREADS=1 \
    timeout 300 scripts/multinode_mpirun.sh -- $EMU_MPI "${C[@]}" -x 4 -v 2 -o "$S/emu_two" "${G[@]}" > "$S/emu_two.out" 2>&1 \
    || { bad "emulated GPU build on 2 hosts failed"; tail -8 "$S/emu_two.out"; }
  grep -q "NCCL all-reduce" "$S/emu_two.out" && grep -q "ranks in sync" "$S/emu_two.out" \
    && ok "emulated GPU build: NCCL path across 2 hosts, ranks in sync" || bad "emulated GPU build: no NCCL or no in-sync line"
  # bf16 gradients on the wire: the tolerance of tests/cuda_emu/test_train_emu.sh's 2-rank check
  if msg=$(same_losses "$S/emu_one/log.txt" "$S/emu_two/log.txt" 3e-3); then ok "emulated GPU build: 2 hosts == 1 rank ($msg)"
  else bad "emulated GPU build: 2 hosts vs 1 rank: $msg"; fi
else
  skip "the emulated GPU build across hosts: no $EMU_MPI (make $EMU_MPI)"
fi

# ---- faults: the collective watchdog (--comm-timeout) turns a lost or stalled peer into a stop ----
TO=4                      # --comm-timeout of these runs
# seconds beyond it for every rank and mpirun to be gone: after the ranks stop, mpirun's channel to
# the cut-off host gives up after the hosts' TCP retransmissions (tcp_retries2 5: about 13 s)
MARGIN=${MULTINODE_MARGIN:-20}
F=(--optimizer grass --rank 8 --update-freq 3 -x 120 -n 20 -v 0 --comm-timeout $TO)
gone_within() {  # gone_within SECONDS PATTERN: 0 when no process matches PATTERN within SECONDS
  local t=0
  while pgrep -f "$2" >/dev/null; do sleep 0.2; t=$((t + 1)); [ $t -gt $(( $1 * 5 )) ] && return 1; done
  return 0
}
# fault NAME BIN ACTION: a 2 x 2 run of BIN; once it has a checkpoint past step 40, ACTION (a command)
# is done to it; then mpirun must end non-zero within TO + MARGIN, and no rank may be left on any host
fault() {
  local name=$1 bin=$2; shift 2
  multi "$name" "$bin" "${F[@]}" & local job=$!
  local t=0
  until [ "$(cat "$S/$name/checkpoint_latest.txt" 2>/dev/null || echo 0)" -ge 40 ]; do
    sleep 0.1; t=$((t + 1))
    if [ $t -gt 1200 ] || ! kill -0 $job 2>/dev/null; then bad "$name: the run never reached a checkpoint at step 40"; tail -5 "$S/$name.out"; wait $job; return 1; fi
  done
  local t0; t0=$(date +%s.%N)
  "$@"
  wait $job; local rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ $rc -ne 0 ] && awk -v d="$dt" -v l=$((TO + MARGIN)) 'BEGIN { exit !(d <= l) }' \
    && ok "$name: mpirun ended (exit $rc) $dt s after the fault (--comm-timeout $TO, allowed $((TO + MARGIN)) s)" \
    || bad "$name: mpirun exit $rc after $dt s (allowed $((TO + MARGIN)) s)"
  gone_within 5 "train_llama.*$S/$name( |$)" && ok "$name: no rank left on any host" || { bad "$name: ranks still running"; pkill -9 -f "$S/$name( |$)"; }
}
cut_h2() { testhost_link $H2 down; }
fault cut "$BIN" cut_h2
grep -q "error: rank [01] on $H1: step [0-9]*: no answer from the other ranks for [0-9.]* s in .*waiting on rank [23] on $H2" "$S/cut.out" \
  && ok "link cut: the ranks of $H1 name the step, the wait and a rank of $H2 they waited on" \
  || { bad "link cut: no message naming a rank of $H2"; grep -m3 error "$S/cut.out"; }
echo "  $(grep -m1 "error: rank" "$S/cut.out" | cut -c1-300)"
testhost_link $H2 up
# the link back: -y 1 continues from the last checkpoint to the weights of a run that never stopped
multi cut "$BIN" "${F[@]}" -y 1 || { bad "resume after the cut failed"; tail -5 "$S/cut.out"; }
grep -q "resum" "$S/cut.out" || bad "the -y 1 run did not say it resumed"
multi whole "$BIN" "${F[@]}" || { bad "the uninterrupted run failed"; tail -5 "$S/whole.out"; }
cmp -s "$S/cut/model_00000120.bin" "$S/whole/model_00000120.bin" \
  && ok "link restored: -y 1 reaches the weights of the uninterrupted run, bit for bit" || bad "resumed weights differ from the uninterrupted run's"

# a stalled rank: SIGSTOP to the newest rank process; the CPU build, then the emulated GPU build
# (its NCCL calls wait inside the emulator, and the watchdog aborts NCCL before it ends the rank)
for b in "$BIN" $EMU_MPI; do
  [ -x "$b" ] || { skip "a stalled rank of $b: not built"; continue; }
  name=stall_$(basename "$b")
  stop_one() { pkill -STOP -n -f "^$b .*$S/$name( |$)"; }
  fault "$name" "$b" stop_one
  grep -q "waiting on rank [0-9] on ${TH_PREFIX}-h[12]: last heard" "$S/$name.out" \
    && ok "$name: its neighbours name the stalled rank" || { bad "$name: no message naming the stalled rank"; grep -m3 error "$S/$name.out"; }
  echo "  $(grep -m1 "waiting on" "$S/$name.out" | cut -c1-300)"
done
finish test_multinode
