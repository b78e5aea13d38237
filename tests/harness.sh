# tests/harness.sh: what the shell tests share (sourced by test_train.sh, test_mpi.sh and
# tests/cuda_emu/test_train_emu.sh). Gives a scratch folder $W (removed on exit), ok/bad that
# count and print one check each, skip that counts a check that could not run (with its reason,
# on a line "skipped: REASON" that tests/run_all.sh counts and, under CI=true, fails unless the
# reason is allowed in tests/skip_allowlist.txt), and finish NAME, which prints
# "N passed, N failed[, N skipped]" and returns non-zero when something failed.
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0; skipped=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
skip() { skipped=$((skipped+1)); echo "skipped: $1"; }
finish() { echo "$1: $pass passed, $fail failed$([ $skipped -gt 0 ] && echo ", $skipped skipped")"; [ $fail -eq 0 ]; }
