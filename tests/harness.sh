# tests/harness.sh: what the shell tests share (sourced by test_train.sh, test_mpi.sh and
# tests/cuda_emu/test_train_emu.sh). Gives a scratch folder $W (removed on exit), ok/bad that
# count and print one check each, skip that counts a check that could not run (with its reason,
# on a line "skipped: REASON" that tests/run_all.sh counts and, under CI=true, fails unless the
# reason is allowed in tests/skip_allowlist.txt), and finish NAME, which prints
# "N passed, N failed[, N skipped]" and returns non-zero when something failed; and same_losses,
# which compares two runs' log.txt losses.
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0; skipped=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
skip() { skipped=$((skipped+1)); echo "skipped: $1"; }
finish() { echo "$1: $pass passed, $fail failed$([ $skipped -gt 0 ] && echo ", $skipped skipped")"; [ $fail -eq 0 ]; }
# same_losses LOG1 LOG2 TOLERANCE: every train and eval loss of two log.txt files within a relative
# TOLERANCE, the same steps logged; prints the worst difference
same_losses() {
  python3 - "$1" "$2" "$3" <<'PY'
import re, sys
def read(p):
    out = {}
    for line in open(p):
        m = re.match(r"step=(\d+) (loss|val_loss)=([-0-9.e+]+)", line)
        if m: out[(m.group(2), int(m.group(1)))] = float(m.group(3))
    return out
a, b, tol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
if not a or a.keys() != b.keys():
    print("different steps logged"); sys.exit(1)
worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-9) for k in a)
print(f"{len(a)} losses, worst relative difference {worst:.2e}")
sys.exit(0 if worst <= tol else 1)
PY
}
