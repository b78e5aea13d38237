# tests/testhosts.sh: hosts for tests, on one machine (sourced by tests/test_multinode.sh).
# A host is a network namespace with its own address on a private bridge, its own hostname (UTS
# namespace) and its own /tmp and /dev/shm (a mount namespace with tmpfs mounted there): what Open
# MPI's shared-memory transport and its session directories see as another node. The repository
# stays visible on every host, standing in for a cluster's shared file system, and /etc/hosts
# names the hosts. The bridge lives in a namespace of its own ("switch"), so the test's own
# namespace gets no interface and no address; every address is inside namespaces made here.
#   testhosts_create N      hosts ${TH_PREFIX}-h1..hN at 10.199.77.1..N/24 on ${TH_PREFIX}-sw
#   testhosts_remove        removes everything named ${TH_PREFIX}-* (also what a killed run left)
#   testhost_exec HOST CMD  runs CMD on HOST, in the current directory
#   testhost_link HOST up|down   plugs HOST's cable in or out (at the switch)
# $TH_AGENT is the rsh agent for mpirun (tests/testhost_rsh.sh): `agent HOST COMMAND...`.
# Each host's kernel gives up on an unanswered TCP connection after TH_TCP_RETRIES2 (5: about 13 s)
# retransmissions, as docs/DISTRIBUTED.md asks of a cluster's launch node; Linux's default, 15,
# keeps mpirun waiting about 15 minutes on a host whose link was cut.
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 and util-linux's unshare and nsenter;
# testhosts_can tells whether this machine allows it, and why not.
TH_PREFIX=${TH_PREFIX:-gcmn}
TH_DIR=/run/$TH_PREFIX         # namespace handles (a private bind mount, as unshare --mount=FILE needs)
TH_NET=10.199.77
TH_TCP_RETRIES2=${TH_TCP_RETRIES2:-5}
TH_AGENT=$PWD/tests/testhost_rsh.sh
export TH_PREFIX TH_DIR
TH_ORIGIN_PID=$$               # the agent enters hosts from this process's mount namespace
export TH_ORIGIN_PID

testhosts_can() {  # 0 when hosts can be made here; else prints why
  [ "$(id -u)" = 0 ] || { echo "needs root (network and mount namespaces)"; return 1; }
  local c; for c in ip unshare nsenter; do command -v $c >/dev/null 2>&1 || { echo "no $c command"; return 1; }; done
  ip netns add "${TH_PREFIX}-probe" 2>/dev/null || { echo "ip netns add is not permitted here"; return 1; }
  ip netns del "${TH_PREFIX}-probe"
  unshare --uts --mount true 2>/dev/null || { echo "unshare --uts --mount is not permitted here"; return 1; }
}

testhosts_remove() {
  local ns f
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${TH_PREFIX}-"); do ip netns del "$ns" 2>/dev/null; done
  if [ -d "$TH_DIR" ]; then
    for f in "$TH_DIR"/*.uts "$TH_DIR"/*.mnt; do [ -e "$f" ] && { umount "$f" 2>/dev/null; rm -f "$f"; }; done
    mountpoint -q "$TH_DIR" && umount "$TH_DIR"
    rm -rf "$TH_DIR"
  fi
  return 0
}

testhosts_create() {  # testhosts_create N
  local n=$1 i h
  testhosts_remove
  mkdir -p "$TH_DIR"
  mount --bind "$TH_DIR" "$TH_DIR" && mount --make-private "$TH_DIR" || return 1
  { echo "127.0.0.1 localhost"; for i in $(seq 1 "$n"); do echo "$TH_NET.$i ${TH_PREFIX}-h$i"; done; } > "$TH_DIR/hosts"
  ip netns add "${TH_PREFIX}-sw" && ip -n "${TH_PREFIX}-sw" link add br0 type bridge && ip -n "${TH_PREFIX}-sw" link set br0 up || return 1
  for i in $(seq 1 "$n"); do
    h=${TH_PREFIX}-h$i
    ip netns add "$h" || return 1
    ip link add eth0 netns "$h" type veth peer name "port$i" netns "${TH_PREFIX}-sw" || return 1
    ip -n "${TH_PREFIX}-sw" link set "port$i" master br0 up
    ip -n "$h" addr add "$TH_NET.$i/24" dev eth0
    ip -n "$h" link set eth0 up && ip -n "$h" link set lo up || return 1
    ip netns exec "$h" sysctl -q -w net.ipv4.tcp_retries2="$TH_TCP_RETRIES2" || return 1
    touch "$TH_DIR/$h.uts" "$TH_DIR/$h.mnt"
    unshare --uts="$TH_DIR/$h.uts" --mount="$TH_DIR/$h.mnt" --propagation private sh -c \
      "hostname $h && mount -t tmpfs -o size=512m tmpfs /tmp && mount -t tmpfs -o size=512m tmpfs /dev/shm \
       && mount --bind $TH_DIR/hosts /etc/hosts" || return 1
  done
}

testhost_exec() {  # testhost_exec HOST CMD...
  local h=$1; shift
  nsenter --net="/run/netns/$h" --uts="$TH_DIR/$h.uts" --mount="$TH_DIR/$h.mnt" --wd="$PWD" -- "$@"
}

testhost_link() {  # testhost_link HOST up|down
  local i=${1##*-h}
  ip -n "${TH_PREFIX}-sw" link set "port$i" "$2"
}
