#!/bin/bash
# AlexNet on ImageNet, 2 nodes x 8 GPUs, DDP under SLURM (see docs/scaling.md).
#   sbatch configs/imagenet_alexnet_ddp_slurm.sh
# One task per GPU: --ntasks-per-node must equal --trainer.devices. Lightning's SLURM plugin
# saves hpc_ckpt_<n>.ckpt in --trainer.default_root_dir and requeues the job on SIGUSR1 (sent
# 120 s before the time limit); the requeued job resumes from it by itself (no --ckpt_path:
# an explicit --ckpt_path takes precedence over the HPC checkpoint). RUN_DIR must be on
# storage that every node sees. The data need not be: DATA is what `deepfeat prepare` wrote,
# on a local disk of every node or, with no shared filesystem, in an object store (s3://...),
# from which each node streams its own share of the shards.
#SBATCH --job-name=alexnet-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=SIGUSR1@120
#SBATCH --requeue
#SBATCH --output=%x-%j.out

set -euo pipefail

RUN_DIR=${RUN_DIR:-/shared/runs/alexnet}   # shared storage, visible from every node
DATA=${DATA:-s3://my-bucket/imagenet-shards}  # deepfeat prepare /data/imagenet <DATA>, once (then upload)
NODES=${SLURM_NNODES:-2}
GPUS_PER_NODE=8
BATCH_PER_GPU=128
# linear LR-scaling rule: 0.01 per 128 images of global batch (Krizhevsky et al.), eta = 0.01 * B / 128
LR=$(python -c "print(0.01 * $NODES * $GPUS_PER_NODE * $BATCH_PER_GPU / 128)")

srun python -m lightning_deepfeat fit \
    --config configs/imagenet_alexnet.yaml \
    --data.init_args.input_dir "$DATA" \
    --data.init_args.batch_size "$BATCH_PER_GPU" \
    --trainer.num_nodes "$NODES" --trainer.devices "$GPUS_PER_NODE" --trainer.strategy ddp \
    --trainer.precision bf16-mixed \
    --trainer.default_root_dir "$RUN_DIR" \
    --optimizer.init_args.lr "$LR"
