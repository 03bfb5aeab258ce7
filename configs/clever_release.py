"""The paper's benchmark from the authors' release: their splits, facts, bags, instance order and features.

  python -m clever_jax.main --config=configs/clever_release.py --workdir=runs/release \
      --config.data.release_dir=/data/clever_release --config.model.pretrained_dir=/models/vinvl-base \
      --config.train.init_from=/models/clever_avg/pytorch_model.bin

configs/vg.py's published recipe, reading the release folder (clever_jax.data.release) instead of
Visual Genome files: each bag keeps the first data.bag_size instances its pairs_data lists
(sampler "listed"; "random" or "overlap" re-rank the listed instances), and the region vectors
are the release's 2048 appearance + 6 geometry values as stored. CLEVER starts from the authors'
AVG model (train.init_from), as in the paper.

Variants for a release written from the generated world (--mode=export_release): "demo" with
configs/demo.py's settings, "tiny" with configs/demo.py:tiny's (the tests' size).
"""

import ml_collections

from configs import demo, vg


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    if variant is None:
        config = vg.get_config()
    elif variant in ("demo", "tiny"):
        config = demo.get_config("tiny" if variant == "tiny" else None)
        config.data.feature_dim = 0  # The world's size, taken from the files.
    else:
        raise ValueError(f"configs/clever_release.py: unknown variant {variant!r}; expected 'demo', 'tiny' or none")
    config.data.update(source="release", sampler="listed", vg_dir="", features_path="")
    return config
