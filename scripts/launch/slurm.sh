#!/usr/bin/env bash
# spark-vl on SLURM: one task per node, each running torchrun over the node's GPUs; every node meets at the
# first node of the allocation (torchrun's static rendezvous: --rdzv_endpoint = first node, --node_rank =
# SLURM_NODEID).
#
#   sbatch --nodes 2 scripts/launch/slurm.sh configs/qwen2_5_vl/32b_grpo.yaml [section.key=value ...]
#   sbatch --nodes 2 scripts/launch/slurm.sh configs/qwen2_5_vl/32b_grpo.yaml --resume latest   # after preemption
#   DRY_RUN=1 SLURM_NNODES=2 SLURM_JOB_NODELIST=node[01-02] bash scripts/launch/slurm.sh CONFIG  # print, don't run
#
# Environment: GPUS_PER_NODE (default: SLURM_GPUS_ON_NODE, else 8), MASTER_PORT (default 29500), PYTHON
# (default python), SPARK_VL_ENV (a file sourced on every node first, e.g. to activate a virtualenv).
# Run `spark-vl plan --config CONFIG --gpus-per-node 8 --nodes N` before submitting.
#SBATCH --job-name=spark-vl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch --nodes N $0 CONFIG [overrides ...] [--resume latest]" >&2
    exit 2
fi
CONFIG=$1
shift

NNODES=${SLURM_NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ -z "${MASTER_ADDR:-}" ]]; then
    if [[ -n "${SLURM_JOB_NODELIST:-}" ]] && command -v scontrol > /dev/null; then
        # sed, not head: head exits after one line, scontrol then dies of SIGPIPE and pipefail ends the job (141)
        MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
    elif [[ "${SLURM_JOB_NODELIST:-}" =~ ^([^],[]+)(\[([0-9]+))? ]]; then  # no scontrol (a dry run elsewhere)
        MASTER_ADDR="${BASH_REMATCH[1]}${BASH_REMATCH[3]}"  # gpu[01-02] -> gpu01, a,b -> a
    else
        MASTER_ADDR=127.0.0.1
    fi
fi

# The torchrun command of one node, split around its node rank (srun's inner shell fills in $SLURM_NODEID).
prefix=$(printf '%q ' "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" \
    --node_rank)
suffix=$(printf '%q ' --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" -m spark_vl.cli train --config "$CONFIG" "$@")
setup=""
if [[ -n "${SPARK_VL_ENV:-}" ]]; then
    setup="source $(printf '%q' "$SPARK_VL_ENV") && "
fi

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    for ((rank = 0; rank < NNODES; rank++)); do
        echo "node $rank: ${prefix}${rank} ${suffix}"
    done
    exit 0
fi

mkdir -p logs
echo "spark-vl: $NNODES node(s) x $GPUS_PER_NODE GPUs, rendezvous $MASTER_ADDR:$MASTER_PORT, config $CONFIG $*"
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "${setup}exec ${prefix}\"\$SLURM_NODEID\" ${suffix}"
