#!/usr/bin/env bash
# Command 2 of the README: install what the tests need (scripts/install_deps.sh test: apt and pip,
# saying what and why), build with every core, and run the tests. Works on a fresh machine, also
# before the quick start has ever run.
#
#   scripts/test.sh          # make test: the fast tier (every CPU test, the parity tests, a
#                            #   representative subset of the emulated GPU build)
#   scripts/test.sh all      # make test-all: everything (what CI runs after the fast tier)
#
# Exits non-zero when a test fails. The wall times measured on 2 cores are in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-fast} in
  fast) target=test ;;
  all) target=test-all ;;
  *) echo "usage: scripts/test.sh [fast|all]" >&2; exit 2 ;;
esac
start=$(date +%s)
scripts/install_deps.sh test
make -j"$(nproc)" $target
echo "scripts/test.sh ${1:-fast}: passed in $(( $(date +%s) - start )) s (build and tests)"
