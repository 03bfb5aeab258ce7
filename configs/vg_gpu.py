"""The benchmark on one host with N Ampere or newer GPUs (A100, H100, ...): bf16 compute.

  python3 launch/gpu_host.py --config=configs/vg_gpu.py --num_gpus=8 --workdir=runs/vg_gpu \
      --vg_dir=/data/vg --features_path=/data/vg/features.tsv --pretrained_dir=/data/vinvl-base

64 bags per step instead of the paper's 60: a power of two splits over 1, 2, 4 or 8 GPUs (60
splits over none of 8, 16, ...). The bags must be a multiple of the GPU count; if 64 / N bags do
not fit one GPU, split the step with e.g. --config.train.grad_accum_steps=2.
"""

import ml_collections

from configs import vg


def get_config() -> ml_collections.ConfigDict:
    config = vg.get_config()
    config.data.batch_size = 64
    config.data.eval_batch_size = 64
    config.mesh.data = -1  # Every visible GPU.
    config.model.dtype = "bfloat16"  # Parameters and optimiser state stay float32.
    config.train.grad_accum_steps = 1
    return config
