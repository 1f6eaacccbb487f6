#!/usr/bin/env bash
# MindSpore Transformers' msrun_launcher.sh, for `pretrain launch`: the same positional forms,
# defaults and log layout, so existing job scripts keep working.
#
#   scripts/msrun_launcher.sh "<command>"                          # 8 workers on this node
#   scripts/msrun_launcher.sh "<command>" WORKER_NUM
#   scripts/msrun_launcher.sh "<command>" WORKER_NUM MASTER_PORT LOG_DIR JOIN CLUSTER_TIME_OUT
#   scripts/msrun_launcher.sh "<command>" WORKER_NUM LOCAL_WORKER MASTER_ADDR MASTER_PORT \
#                             NODE_RANK LOG_DIR JOIN CLUSTER_TIME_OUT
#
# <command> is a pretrain command line, e.g. "pretrain train --config configs/qwen3/x.yaml" or
# "train --config configs/qwen3/x.yaml --parallel_config.data_parallel 2". Unlike msrun, JOIN
# False still waits for the workers (a container must not exit while they run); it only
# decides whether their output is also streamed here. The pretrain binary is $PRETRAIN_BIN,
# else target/release/pretrain of this checkout, else `pretrain` on PATH. Several nodes need
# one secret token: export PRETRAIN_STORE_TOKEN_FILE (or PRETRAIN_STORE_TOKEN) on every node.
set -euo pipefail

WORKER_NUM=8
LOCAL_WORKER=8
MASTER_ADDR=127.0.0.1
MASTER_PORT=8118
NODE_RANK=0
LOG_DIR=output/msrun_log
JOIN=False
CLUSTER_TIME_OUT=7200

usage() {
  sed -n '2,13p' "$0" >&2
  exit 2
}

case $# in
  1) ;;
  2) WORKER_NUM=$2; LOCAL_WORKER=$2 ;;
  6) WORKER_NUM=$2; LOCAL_WORKER=$2; MASTER_PORT=$3; LOG_DIR=$4; JOIN=$5; CLUSTER_TIME_OUT=$6 ;;
  9) WORKER_NUM=$2; LOCAL_WORKER=$3; MASTER_ADDR=$4; MASTER_PORT=$5; NODE_RANK=$6; LOG_DIR=$7
     JOIN=$8; CLUSTER_TIME_OUT=$9 ;;
  *) echo "error: msrun_launcher.sh takes 1, 2, 6 or 9 arguments, got $#" >&2; usage ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${PRETRAIN_BIN:-}"
if [[ -z "$bin" ]]; then
  if [[ -x "$root/target/release/pretrain" ]]; then bin="$root/target/release/pretrain"; else bin=pretrain; fi
fi

# shellcheck disable=SC2206 # the command is one string of words, as msrun takes it
cmd=($1)
echo "pretrain launch: ${WORKER_NUM} workers (${LOCAL_WORKER} here), master ${MASTER_ADDR}:${MASTER_PORT}, node ${NODE_RANK}, logs in ${LOG_DIR}" >&2
exec "$bin" launch \
  --worker-num "$WORKER_NUM" --local-worker-num "$LOCAL_WORKER" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" --node-rank "$NODE_RANK" \
  --log-dir "$LOG_DIR" --join "$JOIN" --cluster-time-out "$CLUSTER_TIME_OUT" \
  -- "${cmd[@]}"
