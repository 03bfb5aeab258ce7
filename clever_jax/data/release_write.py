"""Writes a benchmark in the layout of the authors' release, which `release` reads back.

  python -m clever_jax.main --config=configs/demo.py --mode=export_release --workdir=DIR

writes DIR/release/ from the same corpus, benchmark and bags that prepare builds (nothing is
trained). Each bag's pairs_data lists all its candidate instances in the sampler's ranking (the
first data.bag_size are the bag's instances), with the flag 1 when the label file relates the two
objects. The generated world has no VG-150 classes, so label_to_vg_150_idx gives each entity its
own id, and the pickles are keyed by those ids. Entity ids are 1-based, as predicate ids.

The pickles are written as the authors' reader indexes them: {split}_image_idx_to_id.pkl maps each
line of obj_feat_{split}.tsv (0-based) to its image id, and each bag's list in
{split}_image_sort_by_IoU_and_distance.pkl holds those line numbers for the distinct images of the
bag's ranked instances, in order of first appearance.

What their reader (BagDatasetPairAsUnit) cannot take is counted and logged as a warning, not refused:
the files are complete and this project reads them exactly, and a generated world's features can
never be 2054 wide. Counted over each bag's first AUTHORS_BAG instances: the instances it drops (an
object at index AUTHORS_REGIONS or more in its image), the images whose tags trip its assert (a tag
that tokenises into other than one word, such as "t-shirt", or tags beyond AUTHORS_TAG_PIECES word
pieces) and, when the region vectors are not AUTHORS_WIDTH wide, every image (its padding assumes
that width).
"""

from __future__ import annotations

import base64
import json
import os
import pickle

import ml_collections
import numpy as np
from absl import logging

from clever_jax import files
from clever_jax.data import prepare, release, text
from clever_jax.data.bags import Bags, build_bags
from clever_jax.data.benchmark import SPLITS
from clever_jax.data.vg import GEOMETRY_DIM, Corpus
from clever_jax.data.vocab import Vocab, benchmark_vocab

AUTHORS_BAG = 50  # Their real_bag_size: instances read of each bag.
AUTHORS_TAG_PIECES = 68  # Word pieces of an image's tags their tokenisation keeps (70 less [CLS] and [SEP]).
AUTHORS_WIDTH = 2054  # The region vector width their padding assumes.


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


def authors_reader_trips(corpus: Corpus, ranked: Bags, tokenizer) -> dict[str, int]:
    """Counts of what the authors' reader would drop or fail on in a release of `ranked` (bags of all
    their candidates, ranked), over each bag's first AUTHORS_BAG instances (module docstring).

    The tag count is approximate: it takes each image's tags in object order, while their reader
    puts the pair's two objects first for each pair and then cuts at AUTHORS_TAG_PIECES word pieces,
    so whether an image trips the assert can differ from one of its pairs to another."""
    head = np.concatenate([np.arange(lo, min(lo + AUTHORS_BAG, hi)) for lo, hi in zip(
        ranked.start[:-1], ranked.start[1:], strict=True)] or [np.zeros(0, np.int64)])
    rows = ranked.images[head]
    first = corpus.object_start[rows]
    dropped = (ranked.subjects[head] - first >= release.AUTHORS_REGIONS) | (
        ranked.objects[head] - first >= release.AUTHORS_REGIONS)
    images = np.unique(rows)
    pieces, lengths = text.tokenize_names(tokenizer, corpus.object_names)
    continuation = np.array([t.startswith("##") for t in tokenizer.convert_ids_to_tokens(range(len(tokenizer)))])
    word_starts = np.concatenate([[0], np.cumsum(~continuation[pieces])])
    piece_start = np.concatenate([[0], np.cumsum(lengths)])
    lo = corpus.object_start[images]
    hi = np.minimum(corpus.object_start[images + 1], lo + release.AUTHORS_REGIONS)  # The objects they keep.
    kept_end = np.minimum(piece_start[hi], piece_start[lo] + AUTHORS_TAG_PIECES)
    tags_trip = word_starts[kept_end] - word_starts[piece_start[lo]] != hi - lo
    return {"instances_dropped_object_index_50_or_more": int(dropped.sum()),
            "images_tripping_the_tag_count_assert": int(tags_trip.sum()),
            "images_tripping_the_2054_padding": len(images) * (corpus.feature_dim + GEOMETRY_DIM != AUTHORS_WIDTH),
            "images_read": len(images)}


def write(built: prepare.Assembled, data: ml_collections.ConfigDict, out_dir: str, tokenizer) -> dict[str, dict]:
    """Writes the release files of `built` into out_dir; returns the bags written per split ("bags") and
    authors_reader_trips ("authors_reader"), which is also logged as a warning when not all zero."""
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
        line_of_row = np.full(corpus.num_images, -1, np.int64)
        line_of_row[rows] = np.arange(len(rows))  # Line of obj_feat_{split}.tsv: the image index.
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
            image_sort[(subject + 1, obj + 1)] = list(dict.fromkeys(line_of_row[images].tolist()))
        files.write_json(release.split_file(out_dir, "bag_data", split), bag_data)
        files.write_json(release.split_file(out_dir, "pairs_data", split), pairs_data)
        for kind, table in (("image_sort", image_sort),
                            ("image_idx_to_id", dict(enumerate(corpus.image_ids[rows].tolist())))):
            with files.atomic_write(release.split_file(out_dir, kind, split), "wb") as f:
                pickle.dump(table, f, protocol=4)
        counts[split] = len(bag_data)
    trips = authors_reader_trips(corpus, ranked, tokenizer)
    if any(v for k, v in trips.items() if k != "images_read"):
        logging.warning("%s: the authors' reader (BagDatasetPairAsUnit) would not read this release as written, "
                        "over each bag's first %d instances: %s", out_dir, AUTHORS_BAG, trips)
    return {"bags": counts, "authors_reader": trips}


def export(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Builds the benchmark of `config` (as prepare does) and writes it to WORKDIR/release; returns that folder."""
    out_dir = os.path.join(workdir, "release")
    tokenizer = text.load_tokenizer(text.pretrained_dir(config))
    write(prepare.assemble(config, workdir), config.data, out_dir, tokenizer)
    return out_dir
