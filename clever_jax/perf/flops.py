"""Sizes of a run (`Shapes`), the analytic FLOP count of its steps (clever_jax.perf.throughput and
clever_jax.perf.memory share both) and the measured matmul peak that MFU divides by.

`step_flops` counts the matrix multiplies of one step analytically, 2 FLOPs per
multiply-add; gathers (embeddings), elementwise work (GELU, LayerNorm, softmax, dropout, the
optimiser) are left out. Forward parts, for B bags, N instances, L = Lt + Lr tokens (the timed
batch's bucket), hidden H, FFN size I, region size F, pair size D = 4H, classifier hidden C
(8H: config.model.classifier_width), R + 1 relations, and T_r = B N Lr region tokens, T = B N L
tokens (a packed batch: its compact slots G Cr and G (Ct + Cr), data/packing.py):

  region projection        2 T_r F H
  attention projections    per layer 2 T 4H^2  (query, key, value, output)
  attention scores, mix    per layer 2 P 2 H (q.k and probs.v) over P = B N L^2 pairs of positions
                           (packed: sum over length classes of G n_k R_k^2, data/packing.py)
  FFN                      per layer 2 T 2 H I
  classifier (instances)   2 B N (D C + C (R+1))  (all heads but avg in training)
  head                     clever (train and eval) and att (eval), factorised (models/heads.py):
                           per-relation mixes of the instances' hidden pre-activations
                           2 B (R+1) N C, the diagonal 2 B (R+1) C;
                           avg: mean 2 B N D + classifier on B bags; att (train):
                           weighted sum 2 B N D + classifier on B bags; one (train): classifier
                           on B bags; one/max (eval), vrd: nothing more.

Convention: a train step is 3x its forward pass (backward = 2x forward: gradients of the inputs
and of the weights of every matmul), except where JAX computes no input gradient: the region
projection (its input is data) counts 2x, and for the `one` head the instance classifier, whose
output only feeds an argmax, counts 1x. The analytic count is cross-checked against XLA's
cost analysis of the compiled step (`xla_flops`, which also counts elementwise work and the
optimiser, so it is a little higher).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from clever_jax.training.builder import Run


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Sizes of the benchmarked model and batches.

    Attributes:
      batch_size, eval_batch_size: B bags per train / eval batch.
      bag_size: N. text_len: Lt. num_regions: Lr. region_dim: F. num_relations: R + 1.
      hidden: H. intermediate: I (FFN). num_layers, num_heads: encoder layers and attention heads.
      head, eval_head: the training and evaluation heads.
      classifier_width: the classifier's hidden layer is classifier_width x H (C).
      text_tokens, region_tokens: the text and region tokens a batch's per-token work runs on: 0 for
        B N Lt and B N Lr (padded), else a packed batch's compact slots (data/packing.py).
      attention_pairs: the pairs of positions attention scores: 0 for B N L^2 (padded), else a packed
        batch's (its length classes' rows: sum G n_k R_k^2).
    """

    batch_size: int
    eval_batch_size: int
    bag_size: int
    text_len: int
    num_regions: int
    region_dim: int
    num_relations: int
    hidden: int
    intermediate: int
    num_layers: int
    num_heads: int
    head: str
    eval_head: str
    classifier_width: int = 8
    text_tokens: int = 0
    region_tokens: int = 0
    attention_pairs: int = 0

    @property
    def seq_len(self) -> int:
        return self.text_len + self.num_regions

    def pairs(self, batch_size: int) -> int:
        """Pairs of positions attention scores in a batch of `batch_size` bags (a packed batch's own count,
        attention_pairs, whatever `batch_size`: these sizes describe one batch, as `tokens` does)."""
        return self.attention_pairs or batch_size * self.bag_size * self.seq_len**2

    def tokens(self, batch_size: int) -> tuple[int, int]:
        """(text, region) tokens of a batch of `batch_size` bags that the per-token work runs on."""
        sequences = batch_size * self.bag_size
        return (self.text_tokens or sequences * self.text_len, self.region_tokens or sequences * self.num_regions)

    def real(self, batch: dict[str, Any]) -> Shapes:
        """These sizes with the real tokens of `batch` (padded arrays text_mask [B, N, Lt], region_mask [B, N, Lr])
        as the tokens and pairs computed: what a step on that batch needs at the least (useful MFU)."""
        text, regions = np.asarray(batch["text_mask"]), np.asarray(batch["region_mask"])
        lengths = text.sum(axis=-1).astype(np.int64) + regions.sum(axis=-1)
        return dataclasses.replace(self, text_tokens=max(int(text.sum()), 1), region_tokens=max(int(regions.sum()), 1),
                                   attention_pairs=max(int((lengths**2).sum()), 1))

    @classmethod
    def of(cls, run: Run, text_len: int | None = None, num_regions: int | None = None, text_tokens: int = 0,
           region_tokens: int = 0, attention_pairs: int = 0) -> Shapes:
        """The sizes of a built run (Lt and Lr: the padded lengths, or a batch's bucket if given; packed
        batches: their compact slots and attention rows)."""
        enc, data = run.model.encoder, run.config.data
        if run.model.encoder_type != "vlp":
            raise ValueError(f"FLOP and memory estimates count the VLP encoder, not "
                             f"model.encoder={run.model.encoder_type!r}")
        return cls(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size, bag_size=run.shape.bag_size,
                   text_len=text_len or run.shape.text_len, num_regions=num_regions or run.shape.num_regions,
                   region_dim=run.shape.region_dim, num_relations=run.shape.num_relations, hidden=enc.hidden_size,
                   intermediate=enc.intermediate_size, num_layers=enc.num_layers, num_heads=enc.num_heads,
                   head=run.model.head, eval_head=run.model.eval_head, classifier_width=run.model.classifier_width,
                   text_tokens=text_tokens, region_tokens=region_tokens, attention_pairs=attention_pairs)


def _head_flops(head: str, batch_size: int, s: Shapes, *, train: bool) -> float:
    """Matmul FLOPs of a head after the instance classifier (forward)."""
    b, n, d, c, r = batch_size, s.bag_size, 4 * s.hidden, s.classifier_width * s.hidden, s.num_relations
    classify_bags = 2 * b * (d * c + c * r)
    if head == "clever" or (head == "att" and not train):
        return 2 * b * r * n * c + 2 * b * r * c
    if head in ("avg", "att"):
        return 2 * b * n * d + classify_bags
    if head == "one":
        return classify_bags if train else 0.0
    if head in ("max", "vrd"):
        return 0.0
    raise ValueError(f"unknown head {head!r}")


def forward_flops(s: Shapes, batch_size: int, head: str, *, train: bool) -> dict[str, float]:
    """Matmul FLOPs of one forward pass over `batch_size` bags, by part (module docstring)."""
    seqs, h = batch_size * s.bag_size, s.hidden
    d, c = 4 * h, s.classifier_width * h
    text_tokens, region_tokens = s.tokens(batch_size)
    return {
        "region_projection": 2.0 * region_tokens * s.region_dim * h,
        "attention_projections": 2.0 * s.num_layers * (text_tokens + region_tokens) * 4 * h * h,
        "attention_scores": 2.0 * s.num_layers * s.pairs(batch_size) * 2 * h,
        "ffn": 2.0 * s.num_layers * (text_tokens + region_tokens) * 2 * h * s.intermediate,
        # Every head classifies the instances, except avg in training (it classifies only the mean).
        "classifier_instances": 0.0 if train and head == "avg" else 2.0 * seqs * (d * c + c * s.num_relations),
        "head": float(_head_flops(head, batch_size, s, train=train)),
    }


def step_flops(s: Shapes, eval_shapes: Shapes | None = None) -> dict[str, Any]:
    """Analytic FLOPs of a train step (forward + backward) on batches of sizes `s` and an eval step
    (forward) on batches of sizes `eval_shapes` (default `s`), with parts."""
    forward = forward_flops(s, s.batch_size, s.head, train=True)
    multiplier = {k: 3.0 for k in forward}
    multiplier["region_projection"] = 2.0  # No gradient for the regions (data): weights only.
    if s.head == "one":
        multiplier["classifier_instances"] = 1.0  # Its output only feeds an argmax: no backward.
    train_parts = {k: v * multiplier[k] for k, v in forward.items()}
    eval_shapes = eval_shapes or s
    eval_parts = forward_flops(eval_shapes, eval_shapes.eval_batch_size, eval_shapes.eval_head, train=False)
    return {
        "train": sum(train_parts.values()), "eval": sum(eval_parts.values()),
        "train_parts": train_parts, "eval_parts": eval_parts,
    }


def xla_flops(program: Any) -> float:
    """FLOPs by XLA's cost analysis of a compiled (or lowered) program; the analysis is a dict or,
    depending on the JAX version, a list of dicts."""
    analysis = program.cost_analysis()
    if isinstance(analysis, dict):
        analysis = [analysis]
    return float(sum(a.get("flops", 0.0) for a in analysis or []))


# ---------------------------------------------------------------------------------------------
# The measured peak that MFU divides by.


def matmul_peak(dtype: Any, sizes: list[int], repeats: int = 5) -> dict[str, Any]:
    """Best throughput (FLOP/s) of a jitted square matmul a @ b in `dtype` over `sizes`."""
    by_size = {}
    for n in sizes:
        ka, kb = jax.random.split(jax.random.key(n))
        a = jax.random.normal(ka, (n, n), dtype)
        b = jax.random.normal(kb, (n, n), dtype)
        matmul = jax.jit(jnp.matmul).lower(a, b).compile()
        jax.block_until_ready(matmul(a, b))
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(matmul(a, b))
            best = min(best, time.perf_counter() - start)
        by_size[str(n)] = 2.0 * n**3 / best
    size = max(by_size, key=by_size.get)
    return {"flops_per_s": by_size[size], "size": int(size), "dtype": jnp.dtype(dtype).name, "by_size": by_size}


def default_peak_sizes(platform_name: str) -> list[int]:
    """Matrix sizes `matmul_peak` tries on a platform (larger ones on accelerators)."""
    return [1024, 2048, 3072] if platform_name == "cpu" else [2048, 4096, 8192]
