"""The paper's reproduction: one host with 10 RTX 2080 Ti (11 GB, Turing: fp16, no fast bf16).

  python3 launch/gpu_host.py --workdir=runs/vg_gpu10 --vg_dir=/data/vg \
      --features_path=/data/vg/features.tsv --pretrained_dir=/data/vinvl-base

One process drives the 10 GPUs. A step sees the paper's 60 bags as 6 micro-batches of 10 bags,
one bag of 50 instances per GPU: the README's per-device memory estimate (section "Scale") puts
one bag, BERT-base, fp16 compute with fp32 parameters and without rematerialisation inside 11 GB.
"""

import ml_collections

from configs import vg


def get_config() -> ml_collections.ConfigDict:
    config = vg.get_config()
    config.mesh.data = 10  # The 10 GPUs; `launch/gpu_host.py --num_gpus` checks nvidia-smi shows them.
    config.model.dtype = "float16"  # With dynamic loss scaling (train.loss_scale_*).
    config.model.remat = False  # Not needed at one bag per GPU (README memory estimate).
    config.train.grad_accum_steps = 6  # 60 bags = 6 micro-steps x 10 GPUs x 1 bag.
    return config
