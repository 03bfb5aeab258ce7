"""The embedded default: a generated Visual-Genome-like world, small enough for 2 CPU cores.

  python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo
"""

import ml_collections

from clever_jax.data import world


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.source = "world"  # "world" (generated here) or "vg" (Visual Genome files on disk).
    data.world = world.world_config("demo")
    data.world_dir = ""  # Default: WORKDIR/world.
    data.vg_dir = ""
    data.features_path = ""
    data.feature_dim = 0  # Expected appearance size of the features file; 0 = take it from the file.
    data.split_ratios = (0.71, 0.07, 0.22)  # Entity pairs per split, as in the paper (6443/678/1964).
    data.na_ratio = 1.0  # NA bags per positive bag in each split.
    data.min_fact_count = 1  # Relationships needed for a triplet to be a fact (1: every distinct triplet).
    data.bag_size = 16  # N instances per bag.
    data.sampler = "overlap"  # "overlap" (IoU, then centre distance) or "random".
    data.seed = 0  # Splits, NA pairs and random bag sampling.
    data.text_len = 40  # Lt word pieces per instance, [CLS] and [SEP] included.
    data.num_regions = 20  # Lr regions per instance.
    data.batch_size = 8  # Bags per training batch (global, over all processes).
    data.eval_batch_size = 16
    data.worker_count = 0  # Grain worker processes; 0 reads in the main process.

    config.model = model = ml_collections.ConfigDict()
    model.checkpoint_dir = ""  # BERT folder (config.json, vocab.txt, model.safetensors); "" = packaged MiniLM.
    return config
