"""Ingestion of Visual Genome files (real or generated) and of VinVL-style region features.

Reads `image_data.json`, `objects.json`, `relationships.json` and `features.tsv`, normalises names
onto the vocabulary, converts boxes to (x1, y1, x2, y2), matches objects to feature regions and
validates every record: malformed files and wrong feature sizes raise `DataError` naming the file and
record; what a real dataset is expected to have (unknown names, degenerate boxes, images without
features) are counted skips (`Corpus.skipped`, then the build statistics).
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import json
import os

import numpy as np

from clever_jax.data.jsonio import DataError, field, finite, id_and_record, id_field, iter_json_list
from clever_jax.data.vocab import Vocab, entity_classes

VG_FILES = ("image_data.json", "objects.json", "relationships.json")
GEOMETRY_DIM = 6  # x1/W, y1/H, x2/W, y2/H, w/W, h/H appended to each appearance vector.
MIN_FEATURE_IOU = 0.5  # A region without object_id matches an object when their IoU is at least this.
MAX_IMAGE_SIDE = 2**31 - 1  # Image sizes are stored as int32.


@dataclasses.dataclass
class Corpus:
    """Validated annotations in flat arrays.

    Images are rows 0..I-1; objects are rows 0..O-1 grouped by image: image i owns rows
    `object_start[i]:object_start[i + 1]`, in the order of objects.json.

    Attributes:
      image_ids: int64 [I] Visual Genome image ids.
      image_sizes: int32 [I, 2] width, height in pixels.
      feature_offsets: int64 [I] byte offset of the image's line in `features_path`.
      object_start: int64 [I + 1].
      object_ids: int64 [O] Visual Genome object ids.
      object_classes: int32 [O] entity id, -1 for names outside the vocabulary.
      object_names: [O] normalised names, the region tags the text encoder reads.
      boxes: float32 [O, 4] x1, y1, x2, y2 in pixels.
      feature_slots: int32 [O] position of the object's region in its features line.
      rel_subjects, rel_objects: int64 [L] object rows of each annotated relationship.
      rel_relations: int32 [L] relation ids 1..R.
      feature_paths: the region feature files (Visual Genome: one; the authors' release: one per split).
      feature_file: int32 [I] index into feature_paths of each image's line.
      feature_dim: appearance dimension per region (geometry excluded).
      geometry_in_features: whether the files store the 6 geometry values after the appearance
        (the authors' release) rather than leaving them to be computed from the boxes.
      skipped: counted skips by reason.
      true_subjects, true_objects, true_relations: like rel_*, what truly holds between two
        objects (the generated world's interactions.json); None for real data, which has only
        annotations.
    """

    image_ids: np.ndarray
    image_sizes: np.ndarray
    feature_offsets: np.ndarray
    object_start: np.ndarray
    object_ids: np.ndarray
    object_classes: np.ndarray
    object_names: list[str]
    boxes: np.ndarray
    feature_slots: np.ndarray
    rel_subjects: np.ndarray
    rel_objects: np.ndarray
    rel_relations: np.ndarray
    feature_paths: tuple[str, ...]
    feature_file: np.ndarray
    feature_dim: int
    skipped: dict[str, int]
    geometry_in_features: bool = False
    true_subjects: np.ndarray | None = None
    true_objects: np.ndarray | None = None
    true_relations: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def object_image(self) -> np.ndarray:
        """int64 [O]: image row of each object."""
        return np.repeat(np.arange(self.num_images), np.diff(self.object_start))

    def regions(self, row: int, objects: np.ndarray | None = None) -> np.ndarray:
        """float32 [K, D + 6]: appearance and geometry of image `row`'s object rows `objects` [K]
        (default: all of the image's, in object order)."""
        if objects is None:
            objects = np.arange(self.object_start[row], self.object_start[row + 1])
        stored = self.feature_dim + (GEOMETRY_DIM if self.geometry_in_features else 0)
        vectors = read_region_features(self.feature_paths[self.feature_file[row]], self.feature_offsets[row],
                                       self.feature_slots[objects], stored)
        if self.geometry_in_features:
            return vectors
        return np.concatenate([vectors, box_geometry(self.boxes[objects], self.image_sizes[row])], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [..., 4] and b [..., 4] (x1, y1, x2, y2), broadcasting over leading axes."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def box_geometry(boxes: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The 6-d geometry of boxes [K, 4] in images of size (width, height) [2] or [K, 2]: float32 [K, 6]."""
    size = np.asarray(size, np.float32)
    scaled = boxes / np.concatenate([size, size], axis=-1)
    return np.concatenate([scaled, scaled[:, 2:] - scaled[:, :2]], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Region features (VinVL TSV: "image_id \t {"objects": [{"rect", "class", "feature"}, ...]}").


@dataclasses.dataclass
class _FeatureLine:
    offset: int
    object_ids: np.ndarray | None  # int64 [K] when every region carries "object_id"
    rects: np.ndarray  # float32 [K, 4]


def _b64_dim(encoded: str) -> int:
    """Number of float32 values a base64 string holds, from its length alone."""
    padding = len(encoded) - len(encoded.rstrip("="))
    num_bytes = len(encoded) * 3 // 4 - padding
    return num_bytes // 4 if num_bytes % 4 == 0 else -1


def feature_lines(path: str):
    """(byte offset, "FILE: line K", image id, record) of every non-blank line of a features TSV;
    DataError naming the id and both lines when an image appears twice."""
    line_of: dict[int, int] = {}
    with open(path, "rb") as f:
        offset = 0
        for line_no, raw in enumerate(f, start=1):
            line_offset, offset = offset, offset + len(raw)
            if raw.strip():
                where = f"{path}: line {line_no}"
                image_id, record = id_and_record(raw, where)
                if image_id in line_of:
                    raise DataError(f"{where}: image {image_id} appears twice in the features file (lines "
                                    f"{line_of[image_id]} and {line_no}): its regions would count twice")
                line_of[image_id] = line_no
                yield line_offset, where, image_id, record


def image_size(record, keys: tuple[str, str], where: str) -> tuple[int, int]:
    """(width, height) of record[keys]: whole pixels from 1 to MAX_IMAGE_SIDE, else DataError naming `where`."""
    sides = [field(record, key, int | float, where) for key in keys]
    # The range first: NaN fails it, and int() of an infinity, or math.isfinite of 10**400, would raise.
    if not all(1 <= side <= MAX_IMAGE_SIDE and side == int(side) for side in sides):
        raise DataError(f"{where}: {keys[0]} and {keys[1]} must be whole numbers of pixels from 1 to {MAX_IMAGE_SIDE}, "
                        f"found {sides[0]!r:.20} x {sides[1]!r:.20}")
    return int(sides[0]), int(sides[1])


class FeatureSizes:
    """The appearance size of a features file's regions, from each feature's base64 length: with `expected`
    (config.data.feature_dim) another size is an error at once; without, the size most regions have, and
    `dim()`, after the last region, names the first region of another size."""

    def __init__(self, path: str, expected: int | None):
        self.path, self.expected = path, expected
        self.first_of: dict[int, str] = {}  # Size -> the first region that has it.
        self.count: collections.Counter[int] = collections.Counter()

    def rect(self, region, where: str) -> list[float]:
        """The region's rect [x1, y1, x2, y2], its feature's size checked; DataError naming `where` otherwise."""
        rect = field(region, "rect", list, where)
        dim = _b64_dim(field(region, "feature", str, where))
        if dim <= 0 or (self.expected and dim != self.expected):
            raise DataError(f"{where}: feature has {dim if dim >= 0 else 'a non-float32 number of'} values, expected "
                            f"{self.expected or 'one or more'} float32 values (base64)")
        self.count[dim] += 1
        self.first_of.setdefault(dim, where)
        if len(rect) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in rect):
            raise DataError(f"{where}: 'rect' should be [x1, y1, x2, y2], found {rect!r:.60}")
        return finite(rect, "'rect'", where)

    def dim(self) -> int:
        """The appearance size of every region seen; DataError naming the first of another size."""
        if not self.count:
            raise DataError(f"{self.path}: no region features found")
        dim, most = self.count.most_common(1)[0]
        other = next((d for d in self.first_of if d != dim), None)
        if other is not None:
            raise DataError(f"{self.first_of[other]}: feature has {other} values, expected {dim} float32 values "
                            f"(base64), the size of {most} of the file's {self.count.total()} regions")
        return dim


def index_features(path: str, feature_dim: int | None) -> tuple[dict[int, _FeatureLine], int]:
    """Image id -> line offset and region boxes/ids of a features file, and the appearance dimension
    (`feature_dim` if given, else the one most regions have; every region's size checked: FeatureSizes)."""
    index: dict[int, _FeatureLine] = {}
    sizes = FeatureSizes(path, feature_dim)
    for line_offset, where, image_id, record in feature_lines(path):
        regions = field(record, "objects", list, f"{where} (image {image_id})")
        rects, ids = [], []
        for k, region in enumerate(regions):
            rects.append(sizes.rect(region, f"{where} (image {image_id}), region {k}"))
            ids.append(region.get("object_id"))
        has_ids = bool(ids) and all(isinstance(i, int) for i in ids)
        index[image_id] = _FeatureLine(
            offset=line_offset,
            object_ids=np.asarray(ids, np.int64) if has_ids else None,
            rects=np.asarray(rects, np.float32).reshape(-1, 4),
        )
    return index, sizes.dim()


def read_region_features(path: str, offset: int, slots: np.ndarray, feature_dim: int) -> np.ndarray:
    """Decodes the appearance vectors of regions `slots` [K] of the line at `offset`: [K, D]."""
    with open(path, "rb") as f:
        f.seek(offset)
        image_part, _, payload = f.readline().partition(b"\t")
    regions = json.loads(payload)["objects"]
    out = np.empty((len(slots), feature_dim), np.float32)
    for row, slot in enumerate(slots):
        try:
            out[row] = np.frombuffer(base64.b64decode(regions[slot]["feature"]), "<f4")
        except (binascii.Error, ValueError) as e:
            raise DataError(f"{path}: image {int(image_part)}, region {slot}: bad feature: {e}") from e
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        with open(path, "rb") as f:
            line = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(min(1 << 24, offset - f.tell())), b""))
        raise DataError(f"{path}: line {line} (image {int(image_part)}), region {int(slots[np.argmax(bad)])}: the "
                        "feature holds NaN or infinite values")
    return out


def _match_regions(line: _FeatureLine, object_ids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """int32 [K]: for each object, its region slot in the features line, or -1."""
    if line.object_ids is not None:
        order = np.argsort(line.object_ids, kind="stable")
        pos = np.searchsorted(line.object_ids, object_ids, sorter=order)
        pos = np.minimum(pos, len(order) - 1)
        found = line.object_ids[order[pos]] == object_ids
        return np.where(found, order[pos], -1).astype(np.int32)
    if len(line.rects) == 0:
        return np.full(len(boxes), -1, np.int32)
    iou = box_iou(boxes[:, None, :], line.rects[None, :, :])
    best = iou.argmax(axis=1)
    return np.where(iou.max(axis=1) >= MIN_FEATURE_IOU, best, -1).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Visual Genome JSON.


def _object_name(obj: dict, where: str) -> str:
    names = obj.get("names")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    if isinstance(obj.get("name"), str):
        return obj["name"]
    raise DataError(f"{where}: expected 'names' (a list of strings) or 'name', found neither")


def _xywh(obj: dict, where: str) -> list[float]:
    return finite([field(obj, key, int | float, where) for key in ("x", "y", "w", "h")], "x, y, w, h", where)


def read_image_sizes(path: str) -> dict[int, tuple[int, int]]:
    """image id -> (width, height) from image_data.json."""
    sizes = {}
    for index, record in iter_json_list(path):
        where = f"{path}: record {index}"
        image_id = id_field(record, "image_id", where)
        width, height = image_size(record, ("width", "height"), f"{where} (image {image_id})")
        if image_id in sizes:
            raise DataError(f"{where}: image {image_id} appears twice")
        sizes[image_id] = (width, height)
    return sizes


def ingest(vg_dir: str, features_path: str, vocab: Vocab, feature_dim: int | None = None,
           truth_path: str | None = None) -> Corpus:
    """Reads and validates a Visual Genome directory and its region features.

    Args:
      vg_dir: folder with image_data.json, objects.json and relationships.json.
      features_path: VinVL-style TSV of region features (one line per image).
      vocab: the benchmark vocabulary names are normalised onto.
      feature_dim: expected appearance dimension, or None to take it from the file.
      truth_path: the generated world's interactions.json (relationships.json's format: what truly
        holds between objects), or None.
    """
    skipped: collections.Counter[str] = collections.Counter()
    sizes = read_image_sizes(os.path.join(vg_dir, "image_data.json"))
    feature_index, feature_dim = index_features(features_path, feature_dim)
    skipped["features_for_unknown_image"] = len(feature_index.keys() - sizes.keys())

    class_of: dict[str, tuple[int, str]] = {}  # raw name -> (class id, normalised name)

    image_ids, image_sizes, offsets, counts = [], [], [], []
    object_ids, classes, names, boxes, slots = [], [], [], [], []
    objects_path = os.path.join(vg_dir, "objects.json")
    seen_images = set()
    for index, record in iter_json_list(objects_path):
        where = f"{objects_path}: record {index}"
        image_id = id_field(record, "image_id", where)
        where = f"{where} (image {image_id})"
        objects = field(record, "objects", list, where)
        if image_id in seen_images:
            raise DataError(f"{where}: image {image_id} appears twice")
        seen_images.add(image_id)
        if image_id not in sizes:
            skipped["objects_of_unknown_image"] += 1
            continue
        if image_id not in feature_index:
            skipped["image_without_features"] += 1
            continue
        width, height = sizes[image_id]
        ids, xywh, raw_names = [], [], []
        for k, obj in enumerate(objects):
            owhere = f"{where}, object {k}"
            ids.append(id_field(obj, "object_id", owhere))
            xywh.append(_xywh(obj, owhere))
            raw_names.append(_object_name(obj, owhere))
        ids_arr = np.asarray(ids, np.int64)
        xywh_arr = np.asarray(xywh, np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh_arr[:, :2], xywh_arr[:, :2] + xywh_arr[:, 2:]], axis=1)
        clipped = np.clip(xyxy, 0, np.array([width, height, width, height], np.float32))
        degenerate = (xywh_arr[:, 2] <= 0) | (xywh_arr[:, 3] <= 0)
        outside = ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
        skipped["object_degenerate_box"] += int(degenerate.sum())
        skipped["object_box_outside_image"] += int(outside.sum())
        skipped["object_box_clipped"] += int((~degenerate & ~outside & (clipped != xyxy).any(axis=1)).sum())
        slot = _match_regions(feature_index[image_id], ids_arr, clipped)
        skipped["object_without_feature"] += int((~degenerate & ~outside & (slot < 0)).sum())
        keep = ~degenerate & ~outside & (slot >= 0)
        cls = np.array(entity_classes(raw_names, vocab, class_of), np.int32).reshape(-1)
        skipped["object_out_of_vocabulary"] += int((keep & (cls < 0)).sum())
        if int((keep & (cls >= 0)).sum()) < 2:
            skipped["image_with_fewer_than_two_vocabulary_objects"] += 1
            continue
        kept = np.flatnonzero(keep)
        image_ids.append(image_id)
        image_sizes.append((width, height))
        offsets.append(feature_index[image_id].offset)
        counts.append(len(kept))
        object_ids.append(ids_arr[kept])
        classes.append(cls[kept])
        names.extend(class_of[raw_names[k]][1] for k in kept)
        boxes.append(clipped[kept])
        slots.append(slot[kept])
    skipped["image_without_objects_record"] = len(sizes.keys() - seen_images)
    if not image_ids:
        raise DataError(f"{objects_path}: no image has two or more usable vocabulary objects")

    object_ids_arr = np.concatenate(object_ids)
    if len(np.unique(object_ids_arr)) != len(object_ids_arr):
        raise DataError(f"{objects_path}: object ids are not unique across images")
    object_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    object_image = np.repeat(np.arange(len(counts)), counts)
    relationships_path = os.path.join(vg_dir, "relationships.json")
    rel_subjects, rel_objects, rel_relations = read_relationships(
        relationships_path, vocab, object_ids_arr, np.concatenate(classes), object_image, skipped
    )
    truth = (None, None, None)
    if truth_path is not None:  # Its skips are the world's own (OOV objects), not the user's: not counted.
        truth = read_relationships(truth_path, vocab, object_ids_arr, np.concatenate(classes), object_image,
                                   collections.Counter())
    return Corpus(
        image_ids=np.asarray(image_ids, np.int64),
        image_sizes=np.asarray(image_sizes, np.int32),
        feature_offsets=np.asarray(offsets, np.int64),
        object_start=object_start,
        object_ids=object_ids_arr,
        object_classes=np.concatenate(classes),
        object_names=names,
        boxes=np.concatenate(boxes),
        feature_slots=np.concatenate(slots),
        rel_subjects=rel_subjects,
        rel_objects=rel_objects,
        rel_relations=rel_relations,
        feature_paths=(os.fspath(features_path),),
        feature_file=np.zeros(len(image_ids), np.int32),
        feature_dim=feature_dim,
        skipped={k: v for k, v in sorted(skipped.items()) if v},
        true_subjects=truth[0],
        true_objects=truth[1],
        true_relations=truth[2],
    )


def read_relationships(
    path: str,
    vocab: Vocab,
    object_ids: np.ndarray,
    object_classes: np.ndarray,
    object_image: np.ndarray,
    skipped: collections.Counter,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object rows of subject and object, and relation ids, of the usable relationships of `path`
    (relationships.json's format); the others are counted in `skipped`."""
    subject_ids, obj_ids, relations = [], [], []
    seen_images = set()
    for index, record in iter_json_list(path):
        where = f"{path}: record {index}"
        image_id = id_field(record, "image_id", where)
        if image_id in seen_images:
            raise DataError(f"{where}: image {image_id} appears twice (its relationships would count twice)")
        seen_images.add(image_id)
        for k, rel in enumerate(field(record, "relationships", list, f"{where} (image {image_id})")):
            rwhere = f"{where} (image {image_id}), relationship {k}"
            predicate = field(rel, "predicate", str, rwhere)
            subject_ids.append(id_field(field(rel, "subject", dict, rwhere), "object_id", f"{rwhere} subject"))
            obj_ids.append(id_field(field(rel, "object", dict, rwhere), "object_id", f"{rwhere} object"))
            relations.append(vocab.relation_id(predicate))
    subject_ids_arr, obj_ids_arr = np.asarray(subject_ids, np.int64), np.asarray(obj_ids, np.int64)
    relations_arr = np.asarray(relations, np.int32)
    order = np.argsort(object_ids)
    rows = []
    for ids in (subject_ids_arr, obj_ids_arr):
        pos = np.minimum(np.searchsorted(object_ids, ids, sorter=order), max(len(order) - 1, 0))
        found = object_ids[order[pos]] == ids
        rows.append(np.where(found, order[pos], -1))
    return usable_relationships(*rows, relations_arr, object_classes, object_image, skipped)


def usable_relationships(
    subject_rows: np.ndarray,
    object_rows: np.ndarray,
    relations: np.ndarray,
    object_classes: np.ndarray,
    object_image: np.ndarray,
    skipped: collections.Counter,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The relationships [L] (object rows, -1 for an unknown object; relation ids, -1 for an unknown
    predicate) between two distinct vocabulary objects of one image; the others counted in `skipped`."""
    known = relations > 0
    usable = (subject_rows >= 0) & (object_rows >= 0)
    usable &= (object_classes[subject_rows] >= 0) & (object_classes[object_rows] >= 0)
    usable &= (subject_rows != object_rows) & (object_image[subject_rows] == object_image[object_rows])
    skipped["relationship_unknown_predicate"] += int((~known).sum())
    skipped["relationship_object_not_usable"] += int((known & ~usable).sum())
    keep = known & usable
    return subject_rows[keep], object_rows[keep], relations[keep]
