#!/usr/bin/env bash
# Multi-node DDP with torchrun: run this on every node (same command, its own NODE_RANK), from the repository root.
# Lightning detects torchrun (TorchElasticEnvironment) and takes ranks and world size from it; --trainer.num_nodes
# and --trainer.devices must equal --nnodes and --nproc_per_node. Shards are split over all nodes x GPUs (global
# rank), then over each rank's DataLoader workers; every rank runs samples_per_epoch per epoch.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example MASTER_PORT=29500 GPUS=8 examples/torchrun.sh \
#       --config lightning_configs/osfv/vox256.yaml --data.init_args.shards 'vox2/train-{000000..000999}.tar'
set -euo pipefail
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
exec torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m talkinghead fit --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" --trainer.strategy ddp "$@"
