"""The paper's benchmark on real Visual Genome files and VinVL-style region features.

  python -m clever_jax.main --config=configs/vg.py --workdir=runs/vg \
      --config.data.vg_dir=/data/vg --config.data.features_path=/data/vg/features.tsv
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
    config = demo.get_config()
    data = config.data
    data.source = "vg"
    data.vg_dir = ""  # image_data.json, objects.json, relationships.json.
    data.features_path = ""  # VinVL-style TSV of region features.
    data.feature_dim = 2048
    data.bag_size = 50  # The paper's bag size.
    data.text_len = 70  # [CLS] tags [SEP], as in the published code.
    data.num_regions = 50
    # Batches of 60 x 50 instances nearly always fill Lt and Lr, so buckets would not pay; with several
    # processes agreeing on one costs a host all-gather per step that waits for the previous step.
    data.length_multiple = 0
    data.batch_size = 60  # Bags per batch, as in the paper.
    data.eval_batch_size = 60

    model = config.model
    model.checkpoint_dir = ""  # A VinVL-base checkpoint folder (config.json + weights); required for the paper.
    model.num_layers = 0  # All layers (BERT-base: 12).
    model.region_layer_norm = True
    model.head = "clever"
    model.temperature = 11.0

    train = config.train
    train.lr = 7e-5  # Paper appendix (script grid 4e-5..6e-5).
    train.weight_decay = 0.01
    train.warmup_steps = 1000
    train.max_epochs = 18
    train.eval_every_steps = 0
    train.log_every = 50
    return config
