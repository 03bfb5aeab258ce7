"""Vocabulary normalisation and Visual Genome ingestion, including every kind of bad input."""

import json
import os

import numpy as np
import pytest
from conftest import FEATURE_DIM, feature_b64, write_vg

from clever_jax.data import jsonio, vg
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab

VOCAB = benchmark_vocab()


@pytest.mark.parametrize(
    "raw, expected",
    [("man", "man"), ("Man", "man"), (" MEN ", "man"), ("umbrellas", "umbrella"), ("boxes", "box"),
     ("leaves", "leaf"), ("shelves", "shelf"), ("glasses", "glass"), ("pants", "pant"), ("Jeans", "jean"),
     ("people", "person"), ("sky", None), ("bus", "bus"), ("buses", "bus")],
)
def test_entity_names_normalise_onto_the_vocabulary(raw, expected):
    assert VOCAB.entity_id(raw) == (VOCAB.entities.index(expected) if expected else -1)


def test_predicates_normalise_case_and_spaces():
    assert VOCAB.relation_id(" Standing  On") == VOCAB.predicates.index("standing on") + 1
    assert VOCAB.relation_id("in front of") == VOCAB.predicates.index("in front of") + 1
    assert VOCAB.relation_id("zapping") == -1
    assert len(VOCAB.entities) == 100 and VOCAB.num_relations == 101 and VOCAB.relations[0] == "NA"


def test_ingest_normalises_validates_and_counts_skips(small_vg):
    corpus = vg.ingest(*small_vg, VOCAB)
    # Image 3 has no features, image 4 has one vocabulary object: both skipped and counted.
    assert corpus.image_ids.tolist() == [1, 2]
    assert corpus.skipped["image_without_features"] == 1
    assert corpus.skipped["image_with_fewer_than_two_vocabulary_objects"] == 1
    # Object 22 has w=0; object 24 sticks out of its 100x100 image and is clipped.
    assert corpus.object_ids.tolist() == [11, 12, 13, 14, 21, 23, 24, 25]
    assert corpus.skipped["object_degenerate_box"] == 1
    assert corpus.skipped["object_box_clipped"] == 1
    np.testing.assert_array_equal(corpus.boxes[0], [10, 10, 60, 90])  # x, y, w, h -> x1, y1, x2, y2
    np.testing.assert_array_equal(corpus.boxes[6], [90, 90, 100, 100])
    names = dict(zip(corpus.object_ids.tolist(), corpus.object_names, strict=True))
    assert names[12] == "umbrella" and names[21] == "man" and names[24] == "dog" and names[13] == "sky"
    classes = dict(zip(corpus.object_ids.tolist(), corpus.object_classes.tolist(), strict=True))
    assert classes[13] == -1 and classes[25] == -1 and classes[11] == VOCAB.entity_index["man"]
    # Relationships: "Holding" and "near" kept; one to the out-of-vocabulary sky and one with an
    # unknown predicate are counted skips.
    triples = {(int(corpus.object_ids[s]), int(r), int(corpus.object_ids[o]))
               for s, r, o in zip(corpus.rel_subjects, corpus.rel_relations, corpus.rel_objects, strict=True)}
    assert triples == {(11, VOCAB.relation_id("holding"), 12), (14, VOCAB.relation_id("near"), 11),
                       (21, VOCAB.relation_id("near"), 23)}
    assert corpus.skipped["relationship_unknown_predicate"] == 1
    assert corpus.skipped["relationship_object_not_usable"] == 1
    # Features: each object matched to its own region (the test writes the object id first).
    for row in range(corpus.num_images):
        lo, hi = corpus.object_start[row], corpus.object_start[row + 1]
        feats = corpus.regions(row)
        assert feats.shape == (hi - lo, FEATURE_DIM + vg.GEOMETRY_DIM)
        np.testing.assert_array_equal(feats[:, 0], corpus.object_ids[lo:hi])


def test_regions_without_object_ids_match_by_box(tmp_path, small_vg):
    _, features_path = small_vg
    with open(features_path) as f:
        lines = f.read().splitlines()
    stripped = []
    for line in lines:
        image_id, payload = line.split("\t")
        record = json.loads(payload)
        for region in record["objects"]:
            del region["object_id"]
        record["objects"].reverse()  # Order must not matter either.
        stripped.append(f"{image_id}\t{json.dumps(record)}")
    with open(features_path, "w") as f:
        f.write("\n".join(stripped) + "\n")
    corpus = vg.ingest(small_vg[0], features_path, VOCAB)
    lo, hi = corpus.object_start[0], corpus.object_start[1]
    feats = vg.read_region_features(features_path, corpus.feature_offsets[0], corpus.feature_slots[lo:hi], 4)
    np.testing.assert_array_equal(feats[:, 0], corpus.object_ids[lo:hi])


def _rewrite(path, transform):
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(transform(text))


def test_malformed_json_names_file_and_record(small_vg):
    vg_dir, features_path = small_vg
    path = os.path.join(vg_dir, "objects.json")
    _rewrite(path, lambda t: t.replace('"objects": [{"object_id": 21', '"objects": [{"object_id": 21,,', 1))
    with pytest.raises(DataError, match=r"objects\.json: record 1: malformed JSON"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_truncated_json_is_an_error(small_vg):
    vg_dir, features_path = small_vg
    _rewrite(os.path.join(vg_dir, "relationships.json"), lambda t: t[: len(t) // 2])
    with pytest.raises(DataError, match=r"relationships\.json: record \d+"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_missing_field_names_the_object(small_vg):
    vg_dir, features_path = small_vg
    _rewrite(os.path.join(vg_dir, "objects.json"), lambda t: t.replace('"x": 150, ', "", 1))
    with pytest.raises(DataError, match=r"record 0 \(image 1\), object 3: missing field 'x'"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_wrong_feature_size_is_an_error(small_vg):
    vg_dir, features_path = small_vg
    with pytest.raises(DataError, match=r"features\.tsv: line 1 \(image 1\), region 0: feature has 4 values, "
                                        r"expected 16"):
        vg.ingest(vg_dir, features_path, VOCAB, feature_dim=16)
    _rewrite(features_path, lambda t: t.replace(t.split('"feature": "')[2].split('"')[0], feature_b64([1, 2, 3])))
    with pytest.raises(DataError, match=r"line 1 \(image 1\), region 1: feature has 3 values, expected 4"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_malformed_features_line_is_an_error(small_vg):
    vg_dir, features_path = small_vg
    with open(features_path, "a") as f:
        f.write("7\t{not json\n")
    with pytest.raises(DataError, match=r"features\.tsv: line 4: expected 'image_id<TAB>json'"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_non_positive_image_size_is_an_error(tmp_path):
    vg_dir, features_path = write_vg(tmp_path, [{"id": 5, "size": (0, 10), "objects": []}])
    with pytest.raises(DataError, match=r"image_data\.json: record 0 \(image 5\): width and height must be whole "
                                        r"numbers of pixels from 1"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_box_outside_the_image_is_skipped(tmp_path):
    vg_dir, features_path = write_vg(tmp_path, [{"id": 1, "objects": [
        (1, "man", (0, 0, 10, 10)), (2, "dog", (20, 20, 10, 10)), (3, "dog", (300, 300, 10, 10))]}])
    corpus = vg.ingest(vg_dir, features_path, VOCAB)
    assert corpus.object_ids.tolist() == [1, 2]
    assert corpus.skipped["object_box_outside_image"] == 1


def test_geometry_is_appended_relative_to_image_size():
    geometry = vg.box_geometry(np.array([[10, 20, 60, 70]], np.float32), np.array([100, 200]))
    np.testing.assert_allclose(geometry, [[0.1, 0.1, 0.6, 0.35, 0.5, 0.25]], rtol=1e-6)


@pytest.mark.parametrize("tail", ['[{"image_id": 9, "url": "", "width": 5, "height": 5}]', "junk", "]"])
def test_anything_after_the_json_list_is_an_error(small_vg, tail):
    """Concatenated shards or junk after the list would otherwise drop data silently."""
    vg_dir, features_path = small_vg
    _rewrite(os.path.join(vg_dir, "image_data.json"), lambda t: t.rstrip() + "\n" + tail + "\n")
    with pytest.raises(DataError, match=r"image_data\.json: the JSON list of \d+ records ends at char \d+, but "
                                        r"more follows .*concatenated lists"):
        vg.ingest(vg_dir, features_path, VOCAB)
    path = os.path.join(vg_dir, "empty.json")
    with open(path, "w") as f:
        f.write("[] []")
    with pytest.raises(DataError, match="list of 0 records"):
        list(jsonio.iter_json_list(path))
    with open(path, "w") as f:
        f.write(" [1, 2] \n\n")
    assert list(jsonio.iter_json_list(path)) == [(0, 1), (1, 2)]


def test_an_image_twice_in_relationships_is_an_error(small_vg):
    vg_dir, features_path = small_vg
    path = os.path.join(vg_dir, "relationships.json")
    with open(path) as f:
        records = json.load(f)
    with open(path, "w") as f:
        json.dump(records + records[:1], f)
    with pytest.raises(DataError, match=rf"relationships\.json: record {len(records)}: image 1 appears twice"):
        vg.ingest(vg_dir, features_path, VOCAB)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_boxes_are_errors(small_vg, value):
    vg_dir, features_path = small_vg
    objects = os.path.join(vg_dir, "objects.json")
    _rewrite(objects, lambda t: t.replace('"w": 50', f'"w": {value}', 1))
    with pytest.raises(DataError, match=r"objects\.json: record 0 \(image 1\), object 0: x, y, w, h must be finite"):
        vg.ingest(vg_dir, features_path, VOCAB)
    _rewrite(objects, lambda t: t.replace(f'"w": {value}', '"w": 50', 1))
    _rewrite(features_path, lambda t: t.replace('"rect": [10, 10, 60, 90]', f'"rect": [{value}, 10, 60, 90]', 1))
    with pytest.raises(DataError, match=r"features\.tsv: line 1 \(image 1\), region 0: 'rect' must be finite"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_non_finite_features_are_errors_naming_line_image_and_region(small_vg):
    vg_dir, features_path = small_vg
    corpus = vg.ingest(vg_dir, features_path, VOCAB)
    with open(features_path) as f:
        lines = f.read().split("\n")
    record = json.loads(lines[1].split("\t")[1])
    record["objects"][2]["feature"] = feature_b64([1.0, np.nan, 0.0, 0.0])
    lines[1] = lines[1].split("\t")[0] + "\t" + json.dumps(record)
    with open(features_path, "w") as f:
        f.write("\n".join(lines))
    row = 1
    lo, hi = corpus.object_start[row], corpus.object_start[row + 1]
    slots = corpus.feature_slots[lo:hi]
    assert 2 in slots.tolist()
    with pytest.raises(DataError, match=r"features\.tsv: line 2 \(image 2\), region 2: the feature holds NaN"):
        vg.read_region_features(features_path, corpus.feature_offsets[row], slots, FEATURE_DIM)
