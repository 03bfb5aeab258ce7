"""The benchmark on a Cloud TPU pod slice (e.g. v4-32: 4 hosts x 4 chips): every host runs it.

  python3 launch/tpu_pod.py all --name=clever --zone=us-central2-b --data_uri=gs://BUCKET/clever-data \
      --ckpt_bucket=CKPT_BUCKET

The vg_gpu run (bf16, 64 bags: a multiple of the chip count of slices up to 64 chips) with one
JAX process per host (jax.distributed.initialize finds the others on a TPU slice). Parameters are
replicated; to split them and the optimiser state over chips instead (FSDP), add
--config.mesh.params=fsdp --config.mesh.fsdp=4 (bags are then split over both mesh axes).
"""

import ml_collections

from configs import vg_gpu


def get_config() -> ml_collections.ConfigDict:
    config = vg_gpu.get_config()
    config.distributed.enabled = True
    # Packed capacities must agree over processes: a host all-gather per step that waits for the step in
    # flight (as length buckets would). Not measured on a pod; padded until it is (docs/performance.md).
    config.data.packing = False
    return config
