"""How much one instance tells beyond its class pair: predicate classification (PredCls) on a corpus.

  python -m clever_jax.experiments.predcls --config=configs/demo.py --workdir=runs/predcls

Visual Genome's scene-graph benchmark has measured this on real images. Zellers et al., "Neural
Motifs" (CVPR 2018), Table 1, PredCls with graph constraint, recall@20 / 50 / 100: given every
object's box and class, a baseline answering the most frequent relation of the class pair
(FREQ) reaches 49.4 / 59.9 / 64.1 and their full model (boxes, appearance and context,
MotifNet-LeftRight) 58.5 / 65.2 / 67.1. This command measures the same on the corpus a config
reads (the generated world or Visual Genome files), so that the world's instance-level signal
can be set beside that of real images (docs/world.md):

* the images are split at random (`--test_fraction`, seed config.seed) into train and test;
* a pair is an ordered pair of two vocabulary objects of one image; its classes are its
  annotated relations, or "no relation" (NA, class 0) when it has none;
* `freq`: p(relation | subject class, object class), NA included, counted on the train pairs
  (equal scores are ranked in random order);
* `boxes`: a one-hidden-layer MLP over freq's log-probabilities (for a train pair counted on the
  train images outside its fold of five, so that no prior holds the pair's own label) and the 18
  pair-geometry numbers
  (models.encoder.pair_geometry), trained on the train pairs by cross-entropy against the pair's
  classes (uniform over its annotated relations);
* `boxes_appearance`: the same plus both objects' appearance vectors, each projected onto
  `--appearance_dim` principal components of the train objects;
* recall@K on the test images: a pair is scored by its best relation other than NA (one per pair:
  the graph constraint), an image's K best pairs are its predictions, and recall is the share of
  the image's distinct annotated (subject, relation, object) records among them, averaged over
  the test images that have one.

Writes WORKDIR/predcls.json. An analysis command: it trains nothing the other commands use.
"""

from __future__ import annotations

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags, logging
from ml_collections import config_flags

from clever_jax import cli, files
from clever_jax.data import prepare
from clever_jax.data.bags import Candidates, annotated_relations, enumerate_candidates
from clever_jax.data.vg import Corpus, box_geometry, ingest
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import recall
from clever_jax.models.geometry import pair_geometry

RECALL_AT = (20, 50, 100)
PUBLISHED = {  # Zellers et al. 2018, Table 1, Visual Genome, PredCls with graph constraint.
    "source": "Zellers et al., Neural Motifs, CVPR 2018, Table 1 (PredCls, graph constraint)",
    "freq": {"R@20": 49.4, "R@50": 59.9, "R@100": 64.1},
    "motifnet": {"R@20": 58.5, "R@50": 65.2, "R@100": 67.1},
}


def annotated_records(corpus: Corpus, subject: np.ndarray, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct annotated records as (pair index [L], relation id [L]) into the pairs (subject, obj)."""
    distinct = np.unique(np.stack(annotated_relations(corpus, subject, obj), axis=1), axis=0)
    return distinct[:, 0], distinct[:, 1]


def pair_classes(num_pairs: int, record_pair: np.ndarray, record_relation: np.ndarray,
                 num_classes: int) -> np.ndarray:
    """bool [M, R+1]: each pair's annotated relations, NA (0) for a pair with none."""
    classes = np.zeros((num_pairs, num_classes), bool)
    classes[record_pair, record_relation] = True
    classes[~classes.any(axis=1), 0] = True
    return classes


def frequency_prior(subject_class: np.ndarray, object_class: np.ndarray, classes: np.ndarray,
                    num_entities: int) -> np.ndarray:
    """p(relation | subject class, object class) [E, E, R+1] from pairs' classes [M, R+1] (smoothed by 1e-3)."""
    counts = np.full((num_entities, num_entities, classes.shape[1]), 1e-3)
    np.add.at(counts, (subject_class, object_class), classes.astype(np.float64))
    return counts / counts.sum(axis=-1, keepdims=True)


def cross_fitted_prior(image: np.ndarray, train: np.ndarray, subject_class: np.ndarray,
                       object_class: np.ndarray, classes: np.ndarray, num_entities: int, seed: int,
                       folds: int = 5) -> np.ndarray:
    """float32 [M, R+1]: each pair's `frequency_prior` row. Test pairs get the prior of all train
    pairs; a train pair gets the prior of the train images outside its fold (images split in
    `folds`), so that the classifiers never see a prior counted on the pair's own label."""
    fold = np.random.default_rng(seed + 1).integers(folds, size=image.max() + 1)[image]
    out = np.empty(classes.shape, np.float32)
    for k in range(-1, folds):  # -1: the test pairs' prior.
        rows = ~train if k < 0 else train & (fold == k)
        fit = train & (fold != k)
        table = frequency_prior(subject_class[fit], object_class[fit], classes[fit], num_entities)
        out[rows] = table[subject_class[rows], object_class[rows]]
    return out


class PairClassifier(nn.Module):
    """[M, D] standardised pair features -> [M, R+1] relation logits."""

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(x)))


def fit_and_score(x_train: np.ndarray, classes_train: np.ndarray, x_test: np.ndarray, hidden: int,
                  epochs: int, seed: int, batch_size: int = 2048) -> np.ndarray:
    """Trains `PairClassifier` on (x_train [M, D], classes_train bool [M, R+1]); test probabilities [M', R+1]."""
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    model = PairClassifier(hidden, classes_train.shape[1])
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, x_train.shape[1])))
    optimizer = optax.adam(1e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, x, classes):
        def loss(params):
            target = classes / classes.sum(axis=-1, keepdims=True)
            return optax.softmax_cross_entropy(model.apply(params, x), target).mean()

        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(x_train))
    steps = len(x_train) // batch_size
    for _ in range(epochs):  # Minibatches of fixed shape: one compiled step.
        order = rng.permutation(len(x_train))[: steps * batch_size].reshape(steps, batch_size)
        for rows in order:
            params, state = step(params, state, (x_train[rows] - mean) / scale, classes_train[rows].astype(np.float32))
    predict = jax.jit(lambda params, x: jax.nn.softmax(model.apply(params, x)))
    return np.concatenate([np.asarray(predict(params, (x_test[i: i + 65536] - mean) / scale))
                           for i in range(0, len(x_test), 65536)])


def appearance(corpus: Corpus, rows: np.ndarray, train_rows: np.ndarray, dim: int) -> np.ndarray:
    """The appearance vectors of object rows [K] projected onto `dim` principal components of the
    train_rows' vectors -> float32 [K, dim] (read from the corpus' features files)."""
    image = corpus.object_image[rows]
    order = np.argsort(image, kind="stable")
    vectors = np.zeros((len(rows), corpus.feature_dim), np.float32)
    bounds = np.flatnonzero(np.diff(image[order])) + 1
    for group in np.split(order, bounds):  # One features line per image.
        i = image[group[0]]
        vectors[group] = corpus.regions(i, rows[group])[:, :corpus.feature_dim]
    fit = vectors[np.isin(rows, train_rows)]
    mean = fit.mean(axis=0)
    _, _, components = np.linalg.svd(fit[: 20000] - mean, full_matrices=False)
    return (vectors - mean) @ components[:dim].T


def baseline_probabilities(corpus: Corpus, pairs: Candidates, train: np.ndarray, test: np.ndarray, hidden: int,
                           epochs: int, appearance_dim: int, seed: int) -> dict[str, np.ndarray]:
    """freq, boxes and boxes_appearance (module docstring) fitted on the annotations of the pairs `train`
    (bool [M]) -> each one's relation probabilities of the pairs `test` [M_test, R + 1]."""
    vocab = benchmark_vocab()
    image, subject, obj = pairs.images, pairs.subjects, pairs.objects
    record_pair, record_relation = annotated_records(corpus, subject, obj)
    classes = pair_classes(len(image), record_pair, record_relation, vocab.num_relations)
    cs, co = corpus.object_classes[subject], corpus.object_classes[obj]
    prior = cross_fitted_prior(image, train, cs, co, classes, len(vocab.entities), seed)
    size = corpus.image_sizes[image]
    geometry = np.asarray(pair_geometry(box_geometry(corpus.boxes[subject], size),
                                        box_geometry(corpus.boxes[obj], size)))
    objects = np.unique(np.concatenate([subject, obj]))
    projected = appearance(corpus, objects, np.unique(subject[train]), appearance_dim)
    look = np.concatenate([projected[np.searchsorted(objects, subject)], projected[np.searchsorted(objects, obj)]], 1)
    features = {"boxes": np.concatenate([np.log(prior), geometry], axis=1)}
    features["boxes_appearance"] = np.concatenate([features["boxes"], look], axis=1)  # float32 [M, D]
    probabilities = {"freq": prior[test]}
    for name, x in features.items():
        clock = time.perf_counter()
        probabilities[name] = fit_and_score(x[train], classes[train], x[test], hidden, epochs, seed)
        logging.info("%s fitted and scored in %.1f s", name, time.perf_counter() - clock)
    return probabilities


def measure(config: ml_collections.ConfigDict, workdir: str, test_fraction: float, hidden: int, epochs: int,
            appearance_dim: int) -> dict:
    """The PredCls recall of freq, boxes and boxes_appearance (module docstring); also WORKDIR/predcls.json."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--test_fraction must be between 0 and 1 (exclusive), found {test_fraction}")
    if config.data.source == "release":
        raise ValueError("predcls reads Visual Genome files or the generated world (config.data.source 'vg' or "
                         "'world'), not the authors' release: run it on Visual Genome files with configs/vg.py")
    vocab = benchmark_vocab()
    vg_dir, features_path = prepare.input_paths(config, workdir)
    corpus = ingest(vg_dir, features_path, vocab, config.data.feature_dim or None)
    pairs = enumerate_candidates(corpus, len(vocab.entities))  # Every ordered pair of vocabulary objects.
    image = pairs.images
    record_pair, record_relation = annotated_records(corpus, pairs.subjects, pairs.objects)
    test_image = np.random.default_rng(config.seed).random(corpus.num_images) < test_fraction
    train, test = ~test_image[image], test_image[image]
    probabilities = baseline_probabilities(corpus, pairs, train, test, hidden, epochs, appearance_dim, config.seed)
    on_test = test[record_pair]
    position = np.cumsum(test) - 1  # Of each test pair among the test pairs.
    rows = {}
    for name, p in probabilities.items():
        found = recall.recall(image[test], p, position[record_pair[on_test]], record_relation[on_test], RECALL_AT,
                              graph_constraint=True)
        rows[name] = {f"R@{k}": found[f"recall@{k}"] for k in RECALL_AT}
    objects = np.unique(np.concatenate([pairs.subjects, pairs.objects]))
    annotated_pairs = len(np.unique(record_pair))
    per_image = np.bincount(corpus.object_image[objects], minlength=corpus.num_images)
    result = {
        "corpus": {"images": int(corpus.num_images), "test_images": int(test_image.sum()),
                   "vocabulary_objects_per_image": float(per_image.mean()),
                   "records_per_image": float(len(record_pair) / corpus.num_images),
                   "pairs": int(len(image)), "annotated_pairs": float(100 * annotated_pairs / len(image))},
        "settings": {"test_fraction": test_fraction, "hidden": hidden, "epochs": epochs,
                     "appearance_dim": appearance_dim, "seed": config.seed},
        "recall": rows, "published_visual_genome": PUBLISHED,
    }
    files.write_json(os.path.join(workdir, "predcls.json"), result)
    return result


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    result = measure(f.config, f.workdir, f.test_fraction, f.hidden, f.epochs, f.appearance_dim)
    logging.info("PredCls recall on %s:\n%s", f.workdir, json.dumps(result, indent=1))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file of the corpus (configs/*.py).", lock_config=False)
    flags.DEFINE_string("workdir", None, "Folder for predcls.json (and the generated world, if not given).")
    flags.DEFINE_float("test_fraction", 0.3, "Share of the images held out for recall.")
    flags.DEFINE_integer("hidden", 256, "Hidden units of the pair classifier.")
    flags.DEFINE_integer("epochs", 4, "Passes over the train pairs.")
    flags.DEFINE_integer("appearance_dim", 32, "Principal components kept of each object's appearance.")
    cli.run(main, required=["config", "workdir"])
