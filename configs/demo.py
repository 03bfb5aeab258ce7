"""The embedded default: the generated world, sized for 2 CPU cores (`make demo`: under 10 minutes on two).

  python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m clever_jax.main --config=configs/demo.py:tiny ...    (seconds: the tests' size)

The published recipe (configs/default.py) with these departures, each to fit the time:
2 MiniLM layers instead of all of a base-size encoder, bags of 8 instances (paper: 50), batches
of 8 bags (paper: 60), 32 word pieces and 12 regions per instance (published: 70 and 50; no demo
instance needs more) with length buckets, a higher learning rate (2e-4; paper 7e-5) with a
50-step warm-up (paper: 1000) and AdamW's beta2 0.999 (published: 0.98), 3 epochs (paper: up to
18) with one validation per epoch (published: every 200 steps), so the plateau rule never decays.
One departure in the model: `model.pair_geometry`, an embedding of the query boxes' relative
geometry joined to the subject and object regions, in place of what the paper's pre-trained
VinVL brings and the text-only MiniLM lacks (docs/attention.md measures why).

The tiny variant (tests, and the README's commands as tests run them) keeps the first layer of a
two-layer BERT of width 32, on a 150-image world: configs/tiny_bert holds its config, a vocabulary
of the benchmark's words and random weights (transformers' BertModel initialisation, seed 0).
With MiniLM's 384-wide layer and 30,522-word table a tiny train step took 121 ms, with this one
3-4 ms (docs/testing.md); tests of the packaged MiniLM name it themselves. Its learning rate is
1e-3: at 3e-4 the small random encoder learned too little for the README's precision target of
0.8 (test AUC 16.6 against 35.8; at 1e-3 runs with config.seed 0 to 3 all reach it).

The demo packs its batches (data.packing: the encoder computes the real tokens only, the same
results up to float rounding; docs/performance.md, "Packing", has the demo both ways); the tiny
variant stays padded (packed, each tiny run compiles more step shapes than it saves time).
"""

import os

import ml_collections

from configs import default

TINY_BERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_bert")  # The tiny variant's encoder.


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The demo config; variant "tiny": a world and model small enough for tests (seconds per run)."""
    config = default.get_config()
    config.data.update(bag_size=8, text_len=32, num_regions=12, length_multiple=8, batch_size=8, eval_batch_size=16,
                       packing=True)
    config.model.update(num_layers=2, pair_geometry=True)
    config.train.update(lr=2e-4, adam_b2=0.999, warmup_steps=50, max_epochs=3, eval_every_steps=0, log_every=10)
    if variant == "tiny":
        config.data.world.update(num_images=150, feature_dim=8)
        config.data.update(bag_size=4, text_len=16, num_regions=6, packing=False)
        config.model.update(num_layers=1, pretrained_dir=TINY_BERT)
        config.train.update(lr=1e-3, warmup_steps=5, max_epochs=2, log_every=5)
    elif variant is not None:
        raise ValueError(f"configs/demo.py: unknown variant {variant!r}; expected 'tiny' or none")
    return config
