"""Writes a benchmark in the layout of the authors' release, which `release` reads back.

  python -m clever_jax.main --config=configs/demo.py --mode=export_release --workdir=DIR

writes DIR/release/ from the same corpus, benchmark and bags that prepare builds (nothing is
trained). Each bag's pairs_data lists all its candidate instances in the sampler's ranking (the
first data.bag_size are the bag's instances), with the flag 1 when the label file relates the two
objects. The generated world has no VG-150 classes, so label_to_vg_150_idx gives each entity its
own id, and the pickles are keyed by those ids. Entity ids are 1-based, as predicate ids.
"""

from __future__ import annotations

import base64
import json
import os
import pickle

import ml_collections
import numpy as np

from clever_jax import files
from clever_jax.data import prepare, release
from clever_jax.data.bags import build_bags
from clever_jax.data.benchmark import SPLITS
from clever_jax.data.vocab import Vocab, benchmark_vocab


def _vocab_map(vocab: Vocab) -> dict:
    ids = {name: i + 1 for i, name in enumerate(vocab.entities)}
    return {"label_to_idx": ids, "idx_to_label": {str(i): name for name, i in ids.items()},
            "predicate_to_idx": {p: i + 1 for i, p in enumerate(vocab.predicates)},
            "idx_to_predicate": {str(i + 1): p for i, p in enumerate(vocab.predicates)},
            "label_to_vg_150_idx": ids}


def _label_lines(corpus, vocab: Vocab):
    """One label-file line per corpus row: objects (class, rect) and the relations among them."""
    rel_image = corpus.object_image[corpus.rel_subjects]
    order = np.argsort(rel_image, kind="stable")
    bounds = np.searchsorted(rel_image[order], np.arange(corpus.num_images + 1))
    for row in range(corpus.num_images):
        lo, hi = corpus.object_start[row], corpus.object_start[row + 1]
        rels = order[bounds[row]:bounds[row + 1]]
        record = {
            "image_w": int(corpus.image_sizes[row, 0]), "image_h": int(corpus.image_sizes[row, 1]),
            "objects": [{"class": corpus.object_names[o], "rect": corpus.boxes[o].tolist()} for o in range(lo, hi)],
            "relations": [{"subj_id": int(corpus.rel_subjects[k] - lo), "obj_id": int(corpus.rel_objects[k] - lo),
                           "class": vocab.predicates[corpus.rel_relations[k] - 1]} for k in rels],
        }
        yield f"{corpus.image_ids[row]}\t{json.dumps(record)}\n"


def _feature_line(corpus, row: int) -> str:
    lo, hi = corpus.object_start[row], corpus.object_start[row + 1]
    vectors = corpus.regions(row).astype("<f4")
    regions = [{"rect": corpus.boxes[o].tolist(), "class": corpus.object_names[o],
                "feature": base64.b64encode(vectors[o - lo].tobytes()).decode("ascii")} for o in range(lo, hi)]
    return f"{corpus.image_ids[row]}\t{json.dumps({'objects': regions})}\n"


def _relation_images(corpus, benchmark, num_entities: int) -> dict[int, list[int]]:
    """bag -> the rows of its split's images whose annotations relate objects of its two classes."""
    classes = corpus.object_classes
    codes = classes[corpus.rel_subjects].astype(np.int64) * num_entities + classes[corpus.rel_objects]
    images = corpus.object_image[corpus.rel_subjects]
    bag_of_code = dict(zip((benchmark.pairs[:, 0] * num_entities + benchmark.pairs[:, 1]).tolist(),
                           range(benchmark.num_bags), strict=True))
    out: dict[int, list[int]] = {}
    for code, image in np.unique(np.stack([codes, images], axis=1), axis=0).tolist():
        bag = bag_of_code.get(code)
        if bag is not None and benchmark.image_split[image] == benchmark.split[bag]:
            out.setdefault(bag, []).append(image)
    return out


def write(built: prepare.Assembled, data: ml_collections.ConfigDict, out_dir: str) -> dict[str, int]:
    """Writes the release files of `built` into out_dir; returns the bags written per split."""
    corpus, benchmark, vocab = built.corpus, built.benchmark, benchmark_vocab()
    available = int(np.bincount(benchmark.bag_index[benchmark.bag_index >= 0]).max(initial=1))
    ranked = build_bags(corpus, built.candidates, benchmark.bag_index, benchmark.num_bags, available,
                        data.sampler, data.seed)
    annotated = ranked.annotated
    os.makedirs(out_dir, exist_ok=True)
    files.write_json(os.path.join(out_dir, release.VOCAB_FILE), _vocab_map(vocab))
    with files.atomic_write(os.path.join(out_dir, release.LABEL_FILE)) as f:
        f.writelines(_label_lines(corpus, vocab))
    relation_images = _relation_images(corpus, benchmark, len(vocab.entities))
    counts = {}
    for s, split in enumerate(SPLITS):
        rows = np.flatnonzero(benchmark.image_split == s)
        with files.atomic_write(release.split_file(out_dir, "features", split)) as f:
            f.writelines(_feature_line(corpus, row) for row in rows)
        with files.atomic_write(release.split_file(out_dir, "feature_lines", split)) as f:
            f.writelines(f"{row}\n" for row in rows)
        bag_data, pairs_data, image_sort = {}, {}, {}
        for bag in np.flatnonzero(benchmark.split == s):
            subject, obj = (int(c) for c in benchmark.pairs[bag])
            key = f"{subject + 1}#{obj + 1}"
            lo, hi = ranked.start[bag], ranked.start[bag + 1]
            images = ranked.images[lo:hi]
            first = corpus.object_start[images]
            bag_data[key] = {"label": benchmark.labels[benchmark.label_start[bag]:benchmark.label_start[bag + 1]]
                             .tolist(), "relation_image_ids": relation_images.get(int(bag), [])}
            pairs_data[key] = np.stack([images, ranked.subjects[lo:hi] - first, ranked.objects[lo:hi] - first,
                                        annotated[lo:hi]], axis=1).tolist()
            image_sort[(subject + 1, obj + 1)] = list(dict.fromkeys(corpus.image_ids[images].tolist()))
        files.write_json(release.split_file(out_dir, "bag_data", split), bag_data)
        files.write_json(release.split_file(out_dir, "pairs_data", split), pairs_data)
        for kind, table in (("image_sort", image_sort),
                            ("image_idx_to_id", dict(enumerate(corpus.image_ids[rows].tolist())))):
            with files.atomic_write(release.split_file(out_dir, kind, split), "wb") as f:
                pickle.dump(table, f, protocol=4)
        counts[split] = len(bag_data)
    return counts


def export(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds the benchmark of `config` (as prepare does) and writes it to WORKDIR/release; returns that folder."""
    out_dir = os.path.join(workdir, "release")
    write(prepare.assemble(config, workdir), config.data, out_dir)
    return out_dir
