#!/usr/bin/env bash
# Several nodes with mpirun: one rank per GPU, ranks spread over the hosts of a hostfile.
#   hosts:            node1 slots=8
#                     node2 slots=8
#   HOSTFILE=hosts NGPU=16 scripts/multinode_mpirun.sh 7b grass        # the paper recipe (scripts/run_llama.sh)
#   HOSTFILE=hosts NGPU=4 scripts/multinode_mpirun.sh -- ./train_llama -c 1b ...   # any trainer command
# Every node needs the same checkout, build (make train_llama) and data paths (a shared file system,
# or the same copy on each), and a way for mpirun to start processes there: passwordless ssh by
# default, or RSH_AGENT, a program called as `RSH_AGENT HOST COMMAND...` instead of ssh
# (tests/test_multinode.sh enters its namespace hosts that way). NCCL picks the network itself;
# NCCL_SOCKET_IFNAME / NCCL_IB_HCA select interfaces when it picks wrong, and NCCL_DEBUG=INFO shows
# its choice. Each rank picks its GPU from its local rank on the node.
#
# Environment:
#   HOSTFILE, NGPU    the hostfile and the number of ranks (required)
#   RSH_AGENT         mpirun's remote launcher instead of ssh (plm_rsh_agent)
#   MPI_NET           the network MPI's TCP traffic and mpirun's own channel use: an interface or
#                     a CIDR such as 10.1.0.0/16 (btl_tcp_if_include, oob_tcp_if_include); default:
#                     Open MPI's choice
#   OOB_KEEPALIVE     seconds of silence before mpirun's channel to a node starts TCP keepalives
#                     (default 10; then probes every OOB_KEEPALIVE/2 s, 3 missed = the node is lost:
#                     20 s in all by default). Open MPI's
#                     default, 300 s then 9 x 20 s, lets a job whose node vanished sit for 8 minutes
#                     after its ranks have stopped (docs/DISTRIBUTED.md)
#   MPIRUN_EXTRA      more mpirun options
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOSTFILE:?set HOSTFILE to an mpirun hostfile}"
: "${NGPU:?set NGPU to the total number of GPUs (ranks)}"
[ -f "$HOSTFILE" ] || { echo "error: HOSTFILE=$HOSTFILE: no such file" >&2; exit 1; }
if [ "${1:-}" != "--" ]; then  # a recipe: run_llama.sh builds the trainer's flags and calls back with --
  export HOSTFILE NGPU
  exec scripts/run_llama.sh "$@"
fi
shift
[ $# -gt 0 ] || { echo "usage: HOSTFILE=hosts NGPU=N scripts/multinode_mpirun.sh -- TRAINER ARGS..." >&2; exit 2; }
ka=${OOB_KEEPALIVE:-10}
launcher=(mpirun -np "$NGPU" --hostfile "$HOSTFILE" --map-by slot --bind-to none
          --mca oob_tcp_keepalive_time "$ka" --mca oob_tcp_keepalive_intvl $(( ka > 1 ? ka / 2 : 1 )) --mca oob_tcp_keepalive_probes 3
          -x OMP_NUM_THREADS -x PATH -x LD_LIBRARY_PATH)
[ -n "${RSH_AGENT:-}" ] && launcher+=(--mca plm_rsh_agent "$RSH_AGENT")
[ -n "${MPI_NET:-}" ] && launcher+=(--mca btl_tcp_if_include "$MPI_NET" --mca oob_tcp_if_include "$MPI_NET")
[ "$(id -u)" = 0 ] && launcher+=(--allow-run-as-root)
# a cut link: the ranks stop after --comm-timeout, but mpirun's channel to the lost host holds data
# that TCP retransmits (keepalives do not apply then) until tcp_retries2 gives up: 15 is ~15 minutes
r2=$(cat /proc/sys/net/ipv4/tcp_retries2 2>/dev/null || echo 0)
if [ "$r2" -gt 8 ]; then
  echo "note: net.ipv4.tcp_retries2 is $r2 on this host: if a node's link is cut, the ranks stop after --comm-timeout," \
       "but mpirun may wait ~15 min for TCP to give up on that node; sysctl -w net.ipv4.tcp_retries2=5 makes it ~13 s" >&2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
# shellcheck disable=SC2086
exec "${launcher[@]}" ${MPIRUN_EXTRA:-} "$@"
