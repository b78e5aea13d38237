# tests/harness.sh: what the shell tests share (sourced by test_train.sh, test_mpi.sh and
# tests/cuda_emu/test_train_emu.sh). Gives a scratch folder $W (removed on exit), ok/bad that
# count and print one check each, and finish NAME, which prints "N passed, N failed" and
# returns non-zero when something failed (the line tests/run_all.sh reads).
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
finish() { echo "$1: $pass passed, $fail failed"; [ $fail -eq 0 ]; }
