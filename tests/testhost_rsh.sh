#!/bin/sh
# tests/testhost_rsh.sh HOST COMMAND...: mpirun's rsh agent for the test hosts of tests/testhosts.sh,
# in place of ssh: runs COMMAND with a shell on HOST (its network, hostname and /tmp, /dev/shm), in
# the directory mpirun runs in. A host's mount namespace does not see the other hosts' namespace
# handles, so the agent first steps back into the test's own mount namespace (TH_ORIGIN_PID).
host=$1; shift
: "${TH_DIR:?TH_DIR unset (tests/testhosts.sh)}" "${TH_ORIGIN_PID:?TH_ORIGIN_PID unset}"
exec nsenter -t "$TH_ORIGIN_PID" --mount -- nsenter --net="/run/netns/$host" --uts="$TH_DIR/$host.uts" \
     --mount="$TH_DIR/$host.mnt" --wd="$PWD" -- /bin/sh -c "$*"
