"""The authors' release of the benchmark (one folder), read into the corpus, benchmark and bags that
Visual Genome ingestion builds, with the release's splits, facts, bags and instance order verbatim.

Files (README, "Reproducing the paper from the authors' release"): vg_dict.json,
VG_100_100_label.tsv, and per split {split}_bag_data.json, {split}_pairs_data.json,
obj_feat_{split}.tsv and {split}_feat_idx_to_label_line.tsv; optional (both or neither), checked as
the authors' reader indexes them (release_pickles): {split}_image_sort_by_IoU_and_distance.pkl and
{split}_image_idx_to_id.pkl.

Where the format leaves a point open, this reader takes (and release_write writes):
  - images in pairs_data and relation_image_ids are 0-based line numbers of the label file;
  - entity ids are those of vg_dict's idx_to_label (any base), mapped onto the benchmark
    vocabulary by name; predicate ids are predicate_to_idx's (0 is no relation);
  - an NA bag's label is [0] (or []);
  - a pairs_data entry is [image, subject index, object index] with an optional 4th flag, which is
    only compared with the label file's relations (agreements counted in stats.json);
  - a feat_idx_to_label_line line is "<label line>" or "<features line>\\t<label line>";
  - image sizes come from "image_w"/"image_h" of the label record when present, else
    are recorded as 0 x 0 (the model reads the geometry stored in the features);
  - objects whose class is outside vg_dict stay as context regions (class -1), counted; an
    instance must be two distinct objects of its bag's classes.
A bag's instances are ordered as the authors' __getitem__ orders them (authors_order): its first
data.bag_size listed instances grouped by image, then the rest as listed. Their reader groups its
first `real_bag_size` instances (a flag, 50 in their scripts), so the two orders agree when
data.bag_size equals it. Their get_image_item drops
an instance with an object at index AUTHORS_REGIONS or more in its image; this reader keeps it and
counts it (stats.json: bag_instances_with_an_object_index_of_50_or_more).
Pickles are read by plain_pickle.load_pickle, which builds only plain containers, strings and
numbers (numpy numeric scalars included) and refuses anything else.
"""

from __future__ import annotations

import collections
import os

import ml_collections
import numpy as np

from clever_jax.data.bags import Candidates, annotated_relations
from clever_jax.data.benchmark import SPLITS, Benchmark
from clever_jax.data.jsonio import DataError, field, finite, id_and_record, load_json
from clever_jax.data.release_pickles import check as check_pickles
from clever_jax.data.vg import GEOMETRY_DIM, Corpus, index_features, usable_relationships
from clever_jax.data.vocab import Vocab, clean

VOCAB_FILE = "vg_dict.json"
LABEL_FILE = "VG_100_100_label.tsv"
SPLIT_FILES = {"bag_data": "{}_bag_data.json", "pairs_data": "{}_pairs_data.json", "features": "obj_feat_{}.tsv",
               "feature_lines": "{}_feat_idx_to_label_line.tsv"}
AUTHORS_REGIONS = 50  # The authors' img_seq_len: objects their reader keeps of each image.
PICKLE_FILES = {"image_sort": "{}_image_sort_by_IoU_and_distance.pkl", "image_idx_to_id": "{}_image_idx_to_id.pkl"}

HELP = """\
The authors' release is incomplete: {missing}
Put the release's files in one folder and give it as --config.data.release_dir (now {release_dir}):
  vg_dict.json, VG_100_100_label.tsv, and for each of train, val and test:
  {{split}}_bag_data.json, {{split}}_pairs_data.json, obj_feat_{{split}}.tsv, {{split}}_feat_idx_to_label_line.tsv
  (optional: {{split}}_image_sort_by_IoU_and_distance.pkl, {{split}}_image_idx_to_id.pkl)."""


def split_file(release_dir: str, kind: str, split: str) -> str:
    return os.path.join(release_dir, {**SPLIT_FILES, **PICKLE_FILES}[kind].format(split))


def input_files(release_dir: str) -> list[str]:
    """The release's files that prepare reads (the optional pickles when present); FileNotFoundError
    naming each missing required file."""
    required = [os.path.join(release_dir, name) for name in (VOCAB_FILE, LABEL_FILE)]
    required += [split_file(release_dir, kind, split) for split in SPLITS for kind in SPLIT_FILES]
    missing = [path for path in required if not (release_dir and os.path.isfile(path))]
    if missing:
        raise FileNotFoundError(HELP.format(missing=", ".join(missing), release_dir=release_dir or "unset"))
    optional = [split_file(release_dir, kind, split) for split in SPLITS for kind in PICKLE_FILES]
    return required + [path for path in optional if os.path.isfile(path)]


def _id_map(table, key: str, path: str) -> dict[str, str]:
    """vg_dict's table `key` as {str id: name} from either direction (name -> id or id -> name)."""
    values = field(table, key, dict, path)
    pairs = [(str(i), str(name)) for i, name in values.items()] if key.startswith("idx_to") else \
        [(str(i), str(name)) for name, i in values.items()]
    for side, what in ((0, "id"), (1, "name")):
        repeated = [v for v, n in collections.Counter(p[side] for p in pairs).items() if n > 1]
        if repeated:
            raise DataError(f"{path}: {key}: the {what} {repeated[0]!r} appears for two entries")
    return dict(pairs)


def read_vocab_map(path: str, vocab: Vocab) -> tuple[dict[str, int], dict[int, int], dict[int, int]]:
    """(release entity id -> class, release predicate id -> relation id, VG-150 id -> class) from
    vg_dict.json; DataError for a name outside the benchmark vocabulary or inconsistent tables."""
    table = load_json(path)
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a JSON object with idx_to_label (or label_to_idx) and predicate_to_idx")
    entities = _id_map(table, "idx_to_label" if "idx_to_label" in table else "label_to_idx", path)
    if "label_to_idx" in table and _id_map(table, "label_to_idx", path) != entities:
        raise DataError(f"{path}: label_to_idx and idx_to_label disagree")
    entity_of = {}
    for i, name in entities.items():
        entity_of[i] = vocab.entity_id(name)
        if entity_of[i] < 0:
            raise DataError(f"{path}: idx_to_label[{i!r}] = {name!r} is not an entity of the benchmark vocabulary")
    relation_of = {}
    for i, name in _id_map(table, "predicate_to_idx", path).items():
        if not i.isdecimal() or not i.isascii() or int(i) == 0 or vocab.relation_id(name) < 0:
            raise DataError(f"{path}: predicate_to_idx[{name!r}] = {i}: expected a predicate of the benchmark "
                            "vocabulary with an id >= 1 (0 is no relation)")
        relation_of[int(i)] = vocab.relation_id(name)
    vg150 = {}
    for i, name in (_id_map(table, "label_to_vg_150_idx", path) if "label_to_vg_150_idx" in table else {}).items():
        if not i.isdecimal() or vocab.entity_id(name) < 0:
            raise DataError(f"{path}: label_to_vg_150_idx[{name!r}] = {i}: expected an entity of the benchmark "
                            "vocabulary and an integer id")
        vg150[int(i)] = vocab.entity_id(name)
    return entity_of, relation_of, vg150


def _read_label_file(path: str, vocab: Vocab, mapped: set[int], skipped: collections.Counter) -> dict:
    """The label file as flat lists: per line image id, size, object count; per object class, name and box;
    per relation (line, subject index, object index, predicate name)."""
    out = {"ids": [], "sizes": [], "counts": [], "classes": [], "names": [], "boxes": [], "relations": []}
    with open(path, "rb") as f:
        for row, raw in enumerate(f):
            where = f"{path}: line {row + 1}"
            image_id, record = id_and_record(raw, where)
            where += f" (image {image_id})"
            objects = field(record, "objects", list, where)
            for k, obj in enumerate(objects):
                name = clean(field(obj, "class", str, f"{where}, object {k}"))
                rect = field(obj, "rect", list, f"{where}, object {k}")
                if len(rect) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in rect):
                    raise DataError(f"{where}, object {k}: 'rect' should be [x1, y1, x2, y2], found {rect!r:.60}")
                out["boxes"].append(finite(rect, "'rect'", f"{where}, object {k}"))
                out["classes"].append(vocab.entity_id(name) if vocab.entity_id(name) in mapped else -1)
                out["names"].append(vocab.entities[out["classes"][-1]] if out["classes"][-1] >= 0 else name)
            for k, rel in enumerate(field(record, "relations", list, where) if "relations" in record else []):
                rwhere = f"{where}, relation {k}"
                subject, obj = field(rel, "subj_id", int, rwhere), field(rel, "obj_id", int, rwhere)
                if not (0 <= subject < len(objects) and 0 <= obj < len(objects)):
                    raise DataError(f"{rwhere}: subj_id {subject} / obj_id {obj} outside the {len(objects)} objects")
                out["relations"].append((row, subject, obj, field(rel, "class", str, rwhere)))
            out["ids"].append(image_id)
            size = tuple(field(record, key, int, where) if key in record else 0 for key in ("image_w", "image_h"))
            out["sizes"].append(size)
            out["counts"].append(len(objects))
    skipped["object_outside_vocabulary_map_kept_as_context"] = out["classes"].count(-1)
    return out


def _feature_lines(release_dir: str, split: str, labels: dict, stored_dim: int | None):
    """(label line of each features line [F], features index entries [F], stored dim) of one split, with
    each features line checked against its label line (image id, number and boxes of objects)."""
    path, lines_path = split_file(release_dir, "features", split), split_file(release_dir, "feature_lines", split)
    index, stored_dim = index_features(path, stored_dim)
    rows = []
    with open(lines_path, "rb") as f:
        for i, raw in enumerate(f):
            line = raw.decode("ascii", "replace")
            parts = line.split()
            if len(parts) not in (1, 2) or not all(p.isdecimal() and p.isascii() for p in parts) or (
                    len(parts) == 2 and int(parts[0]) != i):
                raise DataError(f"{lines_path}: line {i + 1}: expected '<label line>' or '{i}\\t<label line>', "
                                f"found {line.strip()!r:.60}")
            rows.append(int(parts[-1]))
    if len(rows) != len(index):
        raise DataError(f"{lines_path}: {len(rows)} lines, but {path} has {len(index)} images (one line each)")
    boxes_start = np.concatenate([[0], np.cumsum(labels["counts"])])
    for i, ((image_id, entry), row) in enumerate(zip(index.items(), rows, strict=True)):
        where = f"{path}: image {image_id} (features line {i + 1}), label line {row + 1} of {LABEL_FILE}"
        if row >= len(labels["ids"]) or labels["ids"][row] != image_id:
            found = labels["ids"][row] if row < len(labels["ids"]) else "no such line"
            raise DataError(f"{where}: the label line's image id is {found} ({os.path.basename(lines_path)} "
                            f"line {i + 1} maps them)")
        boxes = np.asarray(labels["boxes"][boxes_start[row]:boxes_start[row + 1]], np.float32).reshape(-1, 4)
        if len(entry.rects) != len(boxes) or not np.allclose(entry.rects, boxes, atol=0.5):
            raise DataError(f"{where}: the features line's {len(entry.rects)} regions are not the label line's "
                            f"{len(boxes)} objects in the same order (boxes differ)")
    return np.asarray(rows, np.int64), list(index.values()), stored_dim


def read_corpus(release_dir: str, vocab: Vocab, mapped: set[int], stored_dim: int | None) -> tuple[Corpus, np.ndarray]:
    """The corpus of the label lines that have features (rows in label-line order), and the corpus row of
    every label line (-1 without features). Objects of a class outside `mapped` (the classes vg_dict
    names) are context regions, class -1; stored_dim: values per region expected, None = the file's."""
    skipped = collections.Counter()
    labels = _read_label_file(os.path.join(release_dir, LABEL_FILE), vocab, mapped, skipped)
    num_lines = len(labels["ids"])
    file_of, entry_of = np.full(num_lines, -1, np.int32), [None] * num_lines
    for s, split in enumerate(SPLITS):
        rows, entries, stored_dim = _feature_lines(release_dir, split, labels, stored_dim)
        again = file_of[rows] >= 0
        skipped["image_in_two_feature_files_first_kept"] += int(again.sum())
        for row, entry in zip(rows[~again], np.asarray(entries, object)[~again], strict=True):
            file_of[row], entry_of[row] = s, entry
    if stored_dim <= GEOMETRY_DIM:
        raise DataError(f"{release_dir}: features of {stored_dim} values; expected appearance + 6 geometry values")
    lines = np.flatnonzero(file_of >= 0)
    skipped["label_line_without_features"] = num_lines - len(lines)
    row_of_line = np.full(num_lines, -1, np.int64)
    row_of_line[lines] = np.arange(len(lines))
    counts = np.asarray(labels["counts"], np.int64)
    line_start = np.concatenate([[0], np.cumsum(counts)])
    objects = np.concatenate([np.arange(line_start[i], line_start[i + 1]) for i in lines]).astype(np.int64)
    classes = np.asarray(labels["classes"], np.int32)[objects]
    boxes = np.asarray(labels["boxes"], np.float32).reshape(-1, 4)[objects]
    skipped["object_degenerate_box_kept"] = int(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).sum())
    object_start = np.concatenate([[0], np.cumsum(counts[lines])]).astype(np.int64)
    sizes = np.asarray(labels["sizes"], np.int32)[lines]
    skipped["image_size_unknown"] = int((sizes <= 0).any(axis=1).sum())
    relations = labels["relations"]
    rel_line = np.asarray([r[0] for r in relations], np.int64).reshape(-1)
    rel_rows = row_of_line[rel_line]
    keep = rel_rows >= 0
    skipped["relationship_on_label_line_without_features"] = int((~keep).sum())
    subjects = object_start[rel_rows[keep]] + np.asarray([r[1] for r in relations], np.int64)[keep]
    objs = object_start[rel_rows[keep]] + np.asarray([r[2] for r in relations], np.int64)[keep]
    predicates = np.asarray([vocab.relation_id(relations[k][3]) for k in np.flatnonzero(keep)], np.int32)
    corpus = Corpus(
        image_ids=np.asarray(labels["ids"], np.int64)[lines], image_sizes=sizes,
        feature_offsets=np.asarray([entry_of[i].offset for i in lines], np.int64), object_start=object_start,
        object_ids=np.arange(len(objects), dtype=np.int64), object_classes=classes,
        object_names=[labels["names"][o] for o in objects], boxes=boxes,
        feature_slots=(objects - np.repeat(line_start[lines], counts[lines])).astype(np.int32),
        rel_subjects=np.zeros(0, np.int64), rel_objects=np.zeros(0, np.int64), rel_relations=np.zeros(0, np.int32),
        feature_paths=tuple(split_file(release_dir, "features", split) for split in SPLITS),
        feature_file=file_of[lines], feature_dim=stored_dim - GEOMETRY_DIM, skipped={}, geometry_in_features=True,
    )
    corpus.rel_subjects, corpus.rel_objects, corpus.rel_relations = usable_relationships(
        subjects, objs, predicates.reshape(-1), classes, corpus.object_image, skipped)
    corpus.skipped = {k: v for k, v in sorted(skipped.items()) if v}
    return corpus, row_of_line


def _parse_key(key: str, entity_of: dict[str, int], where: str) -> tuple[int, int]:
    parts = key.split("#")
    if len(parts) != 2 or not all(p in entity_of for p in parts):
        raise DataError(f"{where}: bag key {key!r}: expected '<subject id>#<object id>' with ids of vg_dict's "
                        "idx_to_label")
    return entity_of[parts[0]], entity_of[parts[1]]


def _listed_instances(entries, corpus: Corpus, row_of_line: np.ndarray, pair: tuple[int, int], vocab: Vocab,
                      where: str):
    """int64 [n, 4] (corpus row, subject row, object row, flag or -1) of one bag's pairs_data entries."""
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: expected a non-empty list of [image, subject index, object index, flag]")
    width = len(entries[0]) if isinstance(entries[0], list) else 0

    def good(entry) -> bool:
        return isinstance(entry, list) and len(entry) == width and all(type(v) is int for v in entry)

    if width not in (3, 4) or not all(good(e) for e in entries):
        bad = next(k for k, e in enumerate(entries) if width not in (3, 4) or not good(e))
        raise DataError(f"{where}, entry {bad}: expected [image, subject index, object index(, flag)] integers "
                        f"(all entries alike), found {entries[bad]!r:.60}")
    listed = np.asarray(entries, np.int64)
    line, subject, obj = listed[:, 0], listed[:, 1], listed[:, 2]
    in_range = (line >= 0) & (line < len(row_of_line))
    rows = np.where(in_range, row_of_line[np.where(in_range, line, 0)], -1)
    count = np.where(rows >= 0, np.diff(corpus.object_start)[rows], 0)
    checks = {"the image is not a label line with features": rows >= 0,
              "an object index is outside the image's objects": (subject >= 0) & (subject < count) & (obj >= 0)
              & (obj < count),
              "subject and object are the same object": subject != obj}
    valid = np.logical_and.reduce(list(checks.values()))
    first = corpus.object_start[np.maximum(rows, 0)]
    classes = corpus.object_classes
    subject_class, object_class = classes[np.where(valid, first + subject, 0)], classes[np.where(valid, first + obj, 0)]
    right = (subject_class == pair[0]) & (object_class == pair[1])
    checks["the objects are not of the bag's classes"] = ~valid | right
    for problem, ok in checks.items():
        if not ok.all():
            k = int(np.argmin(ok))
            names = [vocab.entities[c] if c >= 0 else "outside the vocabulary map" for c in (
                classes[first[k] + subject[k]], classes[first[k] + obj[k]])] if valid[k] else []
            raise DataError(f"{where}, entry {k} {entries[k]!r}: {problem}"
                            + (f" ({names[0]}, {names[1]}; the bag is {vocab.entities[pair[0]]}, "
                               f"{vocab.entities[pair[1]]})" if names else ""))
    flag = listed[:, 3] if width == 4 else np.full(len(listed), -1)
    return np.stack([rows, first + subject, first + obj, flag], axis=1)


def authors_order(images: np.ndarray, k: int) -> np.ndarray:
    """int64 [n]: the order the authors' __getitem__ gives a bag's n listed instances (their images [n]):
    the first k grouped by image, images in order of first listing and each image's instances as
    listed, then the rest as listed."""
    _, first, inverse = np.unique(images[:k], return_index=True, return_inverse=True)
    return np.concatenate([np.argsort(first[inverse], kind="stable"), np.arange(min(k, len(images)), len(images))])


def _labels(bag, relation_of: dict[int, int], where: str) -> tuple[list[int], int]:
    """(relation ids of a bag_data entry, [0] for NA; how many repeats were dropped)."""
    label = field(bag, "label", list, where)
    if not all(type(i) is int and (i == 0 or i in relation_of) for i in label) or (0 in label and len(set(label)) > 1):
        raise DataError(f"{where}: 'label' should be predicate ids of vg_dict's predicate_to_idx, or [0] for no "
                        f"relation, found {label!r:.60}")
    unique = list(dict.fromkeys(relation_of[i] for i in label if i)) or [0]
    return unique, len([i for i in label if i]) - len(unique) * (unique != [0])


def read(data: ml_collections.ConfigDict, vocab: Vocab) -> tuple[Corpus, Candidates, Benchmark, dict]:
    """The release in data.release_dir: the corpus, every listed instance in file order (as candidates), the
    benchmark (bags of train, then val, then test, each in bag_data's order) and a report for stats.json."""
    release_dir = data.release_dir
    input_files(release_dir)
    entity_of, relation_of, vg150 = read_vocab_map(os.path.join(release_dir, VOCAB_FILE), vocab)
    stored = data.feature_dim + GEOMETRY_DIM if data.feature_dim else None
    corpus, row_of_line = read_corpus(release_dir, vocab, set(entity_of.values()), stored)
    pairs, split_of, labels, label_count, listed, bag_of, report = [], [], [], [], [], [], {}
    split_of_key: dict[str, str] = {}
    beyond_regions = []  # Per bag: its first data.bag_size instances with an object index >= AUTHORS_REGIONS.
    for s, split in enumerate(SPLITS):
        bag_path, pairs_path = split_file(release_dir, "bag_data", split), split_file(release_dir, "pairs_data", split)
        bag_data, pairs_data = load_json(bag_path), load_json(pairs_path)
        for path, table in ((bag_path, bag_data), (pairs_path, pairs_data)):
            if not isinstance(table, dict):
                raise DataError(f"{path}: expected a JSON object keyed by '<subject id>#<object id>'")
        for a, b, path_a, path_b in ((bag_data, pairs_data, bag_path, pairs_path),
                                     (pairs_data, bag_data, pairs_path, bag_path)):
            only = [key for key in a if key not in b]
            if only:
                raise DataError(f"{path_a}: {len(only)} bags are not in {path_b}, e.g. {only[:3]}")
        first_bag, relation_images, repeated = len(pairs), 0, 0
        for key, bag in bag_data.items():
            where = f"{bag_path}: bag {key!r}"
            pair = _parse_key(key, entity_of, where)
            bag_labels, repeats = _labels(bag, relation_of, where)
            images = field(bag, "relation_image_ids", list, where)
            if not all(type(i) is int and 0 <= i < len(row_of_line) for i in images):
                raise DataError(f"{where}: 'relation_image_ids' should be line numbers of {LABEL_FILE} (0.."
                                f"{len(row_of_line) - 1}), found {images!r:.60}")
            if key in split_of_key:
                raise DataError(f"{bag_path}: bag {key!r} is also a bag of {split_of_key[key]}: a pair belongs to "
                                "one split")
            split_of_key[key] = bag_path
            instances = _listed_instances(pairs_data[key], corpus, row_of_line, pair, vocab,
                                          f"{pairs_path}: bag {key!r}")
            # Their reader groups its first real_bag_size (50 in their scripts): the same order when data.bag_size
            # equals it.
            listed.append(instances[authors_order(instances[:, 0], data.bag_size)])
            index = listed[-1][:data.bag_size, 1:3] - corpus.object_start[listed[-1][:data.bag_size, :1]]
            beyond_regions.append(int((index >= AUTHORS_REGIONS).any(axis=1).sum()))
            bag_of.append(np.full(len(listed[-1]), len(pairs)))
            pairs.append(pair)
            split_of.append(s)
            labels += bag_labels
            label_count.append(len(bag_labels))
            relation_images, repeated = relation_images + len(images), repeated + repeats
        if not any(labels[i] for i in range(sum(label_count[:first_bag]), len(labels))):
            raise DataError(f"{bag_path}: no bag with a non-zero label: every split needs a fact")
        report[split] = {"bags": len(pairs) - first_bag, "relation_image_ids": relation_images,
                         "repeated_labels_dropped": repeated}
        report[split]["bag_instances_with_an_object_index_of_50_or_more"] = sum(beyond_regions[first_bag:])
        keys = list(bag_data)
        report[split].update(check_pickles(
            split_file(release_dir, "image_sort", split), split_file(release_dir, "image_idx_to_id", split),
            dict(zip(pairs[first_bag:], keys, strict=True)),
            {key: corpus.image_ids[rows[:, 0]].tolist() for key, rows in zip(keys, listed[first_bag:], strict=True)},
            set(corpus.image_ids[corpus.feature_file == s].tolist()), vg150))
    instances, bag_index = np.concatenate(listed), np.concatenate(bag_of).astype(np.int32)
    pairs_arr, split_arr = np.asarray(pairs, np.int64), np.asarray(split_of, np.int32)
    used = np.zeros(corpus.num_images, bool)
    used[instances[:, 0]] = True
    num_entities = len(vocab.entities)
    classes = corpus.object_classes
    candidates = Candidates(subjects=instances[:, 1].astype(np.int32), objects=instances[:, 2].astype(np.int32),
                            images=instances[:, 0].astype(np.int32),
                            pair_codes=classes[instances[:, 1]] * np.int32(num_entities) + classes[instances[:, 2]])
    benchmark = Benchmark(
        pairs=pairs_arr, split=split_arr, label_start=np.concatenate([[0], np.cumsum(label_count)]).astype(np.int64),
        labels=np.asarray(labels, np.int64), image_split=np.where(used, corpus.feature_file, -1).astype(np.int32),
        bag_index=bag_index, dropped_pairs=0,
    )
    annotated = np.zeros(len(instances), bool)
    annotated[annotated_relations(corpus, candidates.subjects, candidates.objects)[0]] = True
    flagged = instances[:, 3] >= 0
    first_listing = np.zeros(len(instances), bool)  # The same two objects listed again in a bag: counted.
    first_listing[np.unique(np.stack([bag_index, instances[:, 1], instances[:, 2]], 1), axis=0,
                            return_index=True)[1]] = True
    agree = (instances[:, 3] != 0) == annotated
    for s, split in enumerate(SPLITS):
        mine = split_arr[bag_index] == s
        report[split].update(
            listed_instances=int(mine.sum()), listed_instances_repeated=int((mine & ~first_listing).sum()),
            listed_instances_with_features_of_another_split=int((mine & (corpus.feature_file[instances[:, 0]] != s))
                                                                .sum()),
            flags_agreeing_with_label_file=int((mine & flagged & agree).sum()),
            flags_disagreeing_with_label_file=int((mine & flagged & ~agree).sum()))
    return corpus, candidates, benchmark, report
