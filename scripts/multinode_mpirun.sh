#!/usr/bin/env bash
# Several nodes with mpirun: one rank per GPU, ranks spread over the hosts of a hostfile.
#   hosts:            node1 slots=8
#                     node2 slots=8
#   HOSTFILE=hosts NGPU=16 scripts/multinode_mpirun.sh 7b grass
# Every node needs the same checkout, build (make train_llama) and data paths, and
# passwordless ssh between nodes (what mpirun uses to start remote ranks). NCCL picks the
# network itself; NCCL_SOCKET_IFNAME / NCCL_IB_HCA select interfaces when it picks wrong, and
# NCCL_DEBUG=INFO shows its choice. Each rank picks its GPU from its local rank on the node.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOSTFILE:?set HOSTFILE to an mpirun hostfile}"
: "${NGPU:?set NGPU to the total number of GPUs (ranks)}"
export HOSTFILE NGPU
exec scripts/run_llama.sh "$@"
