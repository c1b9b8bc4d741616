#!/usr/bin/env bash
# Train on several GPUs (or CPU processes, with the gloo backend) of one machine through torchrun:
#   tools/dist_train.sh CONFIG NGPUS [train.py options]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each. Slurm clusters can instead
# run `srun python tools/train.py CONFIG --launcher slurm`.
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --master_port="$PORT" --nproc_per_node="$GPUS" \
  tools/train.py "$CONFIG" --launcher pytorch "$@"
