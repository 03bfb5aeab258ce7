"""The authors' release layout: the world written in it (--mode=export_release) and read back
(configs/clever_release.py) gives the same facts, bags, instance order, images and metrics; bad
release files get errors that name the file and the record."""

import collections
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from clever_jax import job
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, prepare, release, release_write, text
from clever_jax.data.bags import build_bags
from clever_jax.data.jsonio import DataError
from clever_jax.data.records import open_records
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.evaluation import evaluate
from clever_jax.experiments import results
from clever_jax.kb import build
from clever_jax.training import builder
from configs import clever_release, demo
from tests.kb.test_knowledge import annotated_features


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(world config, its records, release config, the release's records, release folder)."""
    root = tmp_path_factory.mktemp("release")
    world = demo.get_config("tiny")
    world.model.pretrained = False
    job.run(world, str(root / "world"), "export_release")
    release_dir = str(root / "world" / "release")
    from_release = clever_release.get_config("tiny")
    from_release.model.pretrained = False
    from_release.data.release_dir = release_dir
    return (world, prepare.prepare(world, str(root / "world")), from_release,
            prepare.prepare(from_release, str(root / "read")), release_dir)


def _as_their_getitem_orders(bag):
    """The positions of a bag's instances in the order the authors' __getitem__ gives them: grouped by
    image, images in order of first listing (their dict of image -> pairs)."""
    by_image = {}
    for position, image in enumerate(bag["images"].tolist()):
        by_image.setdefault(image, []).append(position)
    return [position for positions in by_image.values() for position in positions]


def test_the_release_path_gives_the_world_path_records(both):
    _, world_records, _, release_records, _ = both
    (world_images, world_bags), (release_images, release_bags) = open_records(world_records), open_records(
        release_records)
    assert len(world_images) == len(release_images) > 0
    for i in range(len(world_images)):  # Same images, boxes, classes, region vectors and tags.
        a, b = world_images[i], release_images[i]
        assert all(np.array_equal(a[k], b[k]) for k in a), i
    assert world_bags.keys() == release_bags.keys() == {"train", "val", "test"}
    regrouped = 0
    for split in world_bags:  # Same bags in the same order: pairs, facts, instances and their order.
        a, b = world_bags[split], release_bags[split]
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            x, y = a[i], b[i]
            for key in ("pair", "labels"):
                assert np.array_equal(x[key], y[key]), (split, i, key)
            order = _as_their_getitem_orders(x)  # The world's ranked instances, as the authors' reader orders them.
            regrouped += order != sorted(order)
            for key in ("images", "subjects", "objects"):
                assert np.array_equal(x[key][order], y[key]), (split, i, key)
            moved = np.stack([np.argsort(order)[x["annotations"][:, 0]], x["annotations"][:, 1]], axis=1)
            assert set(map(tuple, moved.tolist())) == set(map(tuple, y["annotations"].tolist())), (split, i)
            assert len(y["truth"]) == 0  # The release carries no latent truth.
    assert regrouped > 0  # The test can see the order.
    world_stats = json.load(open(os.path.join(world_records, prepare.STATS)))
    release_stats = json.load(open(os.path.join(release_records, prepare.STATS)))
    for split, sizes in release_stats["splits"].items():
        assert sizes == {k: v for k, v in world_stats["splits"][split].items() if k in sizes}
        report = release_stats["release"][split]
        assert report["flags_agreeing_with_label_file"] == report["listed_instances"] >= sizes["instances"]
        assert report["flags_disagreeing_with_label_file"] == 0
        assert report["image_sort_bags"] == report["image_sort_bags_of_this_split"] == report["bags"]
        assert report["image_sort_bags_not_listing_the_pairs_data_images"] == 0
        assert report["image_idx_to_id_entries"] == sizes["images"] and report["image_idx_to_id_not_of_this_split"] == 0
        assert report["bag_instances_with_an_object_index_of_50_or_more"] == 0


def test_the_pickles_map_as_the_authors_reader_maps_them(both):
    """Their load_cached_image_ids, restated: a key's VG-150 ids -> names -> label_to_idx ids give the bag
    key, and each entry of its list is a key of image_idx_to_id, which gives the image id. Every bag is
    looked up, and its images are those its pairs_data instances list (label lines -> image ids)."""
    *_, release_dir = both
    vocab_map = json.load(open(os.path.join(release_dir, release.VOCAB_FILE)))
    name_of_150 = {i: name for name, i in vocab_map["label_to_vg_150_idx"].items()}
    image_of_line = [int(line.split("\t", 1)[0]) for line in open(os.path.join(release_dir, release.LABEL_FILE))]
    for split in ("train", "val", "test"):
        idx_to_id = pickle.load(open(release.split_file(release_dir, "image_idx_to_id", split), "rb"))
        sorted_images = pickle.load(open(release.split_file(release_dir, "image_sort", split), "rb"))
        bag_ids = {"#".join(str(vocab_map["label_to_idx"][name_of_150[c]]) for c in key): [idx_to_id[i] for i in v]
                   for key, v in sorted_images.items()}
        features = [int(line.split("\t", 1)[0]) for line in open(release.split_file(release_dir, "features", split))]
        assert list(idx_to_id.values()) == [features[i] for i in idx_to_id]  # Image index = features line.
        for key, entries in json.load(open(release.split_file(release_dir, "pairs_data", split))).items():
            assert bag_ids[key] == list(dict.fromkeys(image_of_line[line] for line, *_ in entries)), (split, key)


def test_the_authors_reader_limits_are_counted(both):
    """Export counts what their reader cannot take: the tiny world's 8 + 6 wide regions (every image
    trips the 2054 padding), images with a tag of several words ("t-shirt" is three to their reader),
    objects at index 50 or more (none in the world)."""
    world, *_ = both
    built = prepare.assemble(world, os.path.dirname(os.path.dirname(both[1])))
    available = int(np.bincount(built.benchmark.bag_index[built.benchmark.bag_index >= 0]).max())
    ranked = build_bags(built.corpus, built.candidates, built.benchmark.bag_index, built.benchmark.num_bags,
                        available, world.data.sampler, world.data.seed)
    tokenizer = text.load_tokenizer(text.pretrained_dir(world))
    trips = release_write.authors_reader_trips(built.corpus, ranked, tokenizer)
    assert trips["images_read"] > 0 and trips["images_tripping_the_2054_padding"] == trips["images_read"]
    assert trips["instances_dropped_object_index_50_or_more"] == 0
    corpus = built.corpus
    clean = next(row for row in np.unique(ranked.images) if not any(
        "-" in name for name in corpus.object_names[corpus.object_start[row]:corpus.object_start[row + 1]]))
    corpus.object_names[corpus.object_start[clean]] = "t-shirt"
    after = release_write.authors_reader_trips(corpus, ranked, tokenizer)["images_tripping_the_tag_count_assert"]
    assert after == trips["images_tripping_the_tag_count_assert"] + 1


@pytest.mark.slow  # End to end: two built runs over records, both scored.
def test_the_release_path_scores_like_the_world_path(both):
    world, world_records, from_release, release_records, _ = both
    world_run, release_run = builder.build(world, world_records), builder.build(from_release, release_records)
    params = world_run.init_params()
    for split in ("val", "test"):
        a, _ = evaluate.evaluate(world_run.scorer(split), params, None)
        b, _ = evaluate.evaluate(release_run.scorer(split), params, None)
        assert b.keys() <= a.keys() and {"auc", "mauc", "f1", "attention_on_annotated"} <= b.keys()
        np.testing.assert_allclose([b[k] for k in b], [a[k] for k in b], rtol=1e-6, atol=1e-6)  # All but truth's.
    for split in ("val", "test"):  # The results table's labels and pairs.
        ours, theirs = results.split_labels(release_records, split), results.split_labels(world_records, split)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_release_as_a_detector_output_gives_the_features_file_bags(both, tmp_path):
    """A knowledge base from the release's label file and features (extract.features_path = the folder)
    has the bags of the world's features file with the annotated names, for the same images."""
    world, world_records, _, _, release_dir = both
    world_dir = os.path.join(os.path.dirname(os.path.dirname(world_records)), "world")  # WORKDIR/records/<hash>
    image_ids = {int(line.split("\t", 1)[0]) for line in open(os.path.join(world_dir, "features.tsv"))}
    features = annotated_features(world_dir, image_ids, tmp_path / "f.tsv")
    built = {}
    for name, path in (("release", release_dir), ("features", features)):
        config = world.copy_and_resolve_references()
        config.extract.update(features_path=path, min_images=2)
        built[name] = open_records(build.prepare_detections(config, str(tmp_path / name)))
    ids, records = {}, {}
    for name, (images, _) in built.items():
        ids[name] = np.array([int(r["image_id"]) for r in images.__getitems__(list(range(len(images))))])
        records[name] = {int(r["image_id"]): r for r in images.__getitems__(list(range(len(images))))}
    # The features reader leaves out images with fewer than two vocabulary objects (they make no
    # instance); the release reader keeps every image of its features files, as the release path does.
    assert set(ids["features"]) <= set(ids["release"]) == image_ids and len(ids["features"]) > 0.9 * len(image_ids)
    for image_id, a in records["features"].items():
        b = records["release"][image_id]
        assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a), image_id
    a, b = built["release"][1]["test"], built["features"][1]["test"]
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        assert np.array_equal(a[i]["pair"], b[i]["pair"])
        mask = a[i]["instance_mask"] if "instance_mask" in a[i] else np.ones(len(a[i]["images"]), bool)
        assert np.array_equal(ids["release"][a[i]["images"]][mask], ids["features"][b[i]["images"]][mask]), i
        for key in ("subjects", "objects"):
            assert np.array_equal(a[i][key], b[i][key]), (i, key)
    shutil.copytree(release_dir, tmp_path / "partial")
    os.remove(tmp_path / "partial" / "obj_feat_val.tsv")
    with pytest.raises(FileNotFoundError, match=r"partial: a release folder as extract.features_path needs .*"
                                                r"missing: .*obj_feat_val\.tsv"):
        detections.read_release(str(tmp_path / "partial"), benchmark_vocab())


def test_every_fact_of_a_split_is_a_bag_label(both):
    _, _, from_release, _, release_dir = both
    _, _, benchmark, _ = release.read(from_release.data, benchmark_vocab())
    entity_of, relation_of, _ = release.read_vocab_map(os.path.join(release_dir, release.VOCAB_FILE),
                                                       benchmark_vocab())
    for s, split in enumerate(("train", "val", "test")):
        expected = set()
        for key, bag in json.load(open(release.split_file(release_dir, "bag_data", split))).items():
            subject, obj = (entity_of[i] for i in key.split("#"))
            expected |= {(subject, relation_of[r], obj) for r in bag["label"] if r}
        assert set(map(tuple, benchmark.facts(s).tolist())) == expected


# --- Bad input -----------------------------------------------------------------------------------


@pytest.fixture
def broken(both, tmp_path):
    """A copy of the release to break, and a function reading it."""
    _, _, from_release, _, release_dir = both
    copy = str(tmp_path / "release")
    shutil.copytree(release_dir, copy)
    data = from_release.data.copy_and_resolve_references()
    data.release_dir = copy

    def read():
        return release.read(data, benchmark_vocab())
    return copy, read


def _edit_json(path, change):
    table = json.load(open(path))
    change(table)
    json.dump(table, open(path, "w"))


def _edit_tsv(path, line, change):
    """Applies change(record) to the JSON record of line `line` of an "id<TAB>json" file."""
    lines = open(path).read().splitlines(keepends=True)
    image, record = lines[line].split("\t")
    record = json.loads(record)
    change(record)
    lines[line] = f"{image}\t{json.dumps(record)}\n"
    open(path, "w").writelines(lines)


def test_a_missing_file_is_named_with_where_it_goes(broken):
    copy, read = broken
    os.remove(release.split_file(copy, "pairs_data", "val"))
    with pytest.raises(FileNotFoundError, match=r"(?s)val_pairs_data\.json.*--config\.data\.release_dir"):
        read()


def test_bag_keys_must_agree_between_bag_data_and_pairs_data(broken):
    copy, read = broken
    path = release.split_file(copy, "pairs_data", "test")
    _edit_json(path, lambda table: table.pop(next(iter(table))))
    with pytest.raises(DataError, match=r"test_bag_data\.json: 1 bags are not in .*test_pairs_data\.json"):
        read()


def test_an_instance_of_other_classes_is_refused(broken):
    copy, read = broken
    path = release.split_file(copy, "pairs_data", "train")
    table = json.load(open(path))
    key = next(k for k in table if len(set(k.split("#"))) == 2)
    table[key][0][1], table[key][0][2] = table[key][0][2], table[key][0][1]  # Subject and object swapped.
    json.dump(table, open(path, "w"))
    with pytest.raises(DataError, match=rf"train_pairs_data\.json: bag '{key}', entry 0 .*bag's classes"):
        read()


def test_features_of_the_wrong_size_are_named(broken):
    copy, read = broken

    def shorten(record):
        record["objects"][1]["feature"] = record["objects"][1]["feature"][:-8]  # 6 bytes fewer than a vector.
    _edit_tsv(release.split_file(copy, "features", "val"), 0, shorten)
    with pytest.raises(DataError, match=r"obj_feat_val\.tsv: line 1 \(image \d+\), region 1: feature has"):
        read()


def test_a_label_line_of_another_image_is_named(broken):
    copy, read = broken
    path = release.split_file(copy, "feature_lines", "train")
    rows = open(path).read().split()
    rows[0], rows[1] = rows[1], rows[0]
    open(path, "w").write("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"obj_feat_train\.tsv: image \d+ \(features line 1\), label line \d+ of "
                                        r"VG_100_100_label\.tsv: the label line's image id is \d+"):
        read()


def test_vocabulary_names_outside_the_benchmark_are_refused_and_label_classes_counted(broken):
    copy, read = broken
    used = {(line, k) for split in ("train", "val", "test")
            for entries in json.load(open(release.split_file(copy, "pairs_data", split))).values()
            for line, *objects, _ in entries for k in objects}
    label_path = os.path.join(copy, release.LABEL_FILE)
    vocab = benchmark_vocab()
    line, k = next((i, k) for i, text in enumerate(open(label_path)) for k, obj in enumerate(json.loads(
        text.split("\t")[1])["objects"]) if vocab.entity_id(obj["class"]) >= 0 and (i, k) not in used)  # No instance.
    before = read()[0].skipped["object_outside_vocabulary_map_kept_as_context"]
    _edit_tsv(label_path, line, lambda record: record["objects"][k].update({"class": "spaceship"}))
    assert read()[0].skipped["object_outside_vocabulary_map_kept_as_context"] == before + 1
    vocab_path = os.path.join(copy, release.VOCAB_FILE)

    def rename(table):
        del table["label_to_idx"]  # The id -> name table alone.
        table["idx_to_label"]["1"] = "spaceship"
    _edit_json(vocab_path, rename)
    with pytest.raises(DataError, match=r"vg_dict\.json: idx_to_label\['1'\] = 'spaceship' is not an entity"):
        read()


def test_a_repeated_key_is_refused(broken):
    copy, read = broken
    path = release.split_file(copy, "bag_data", "val")
    text = open(path).read().strip()
    first = json.loads(text)
    key = next(iter(first))
    open(path, "w").write(text[:-1] + f', "{key}": {json.dumps(first[key])}}}')
    with pytest.raises(DataError, match=rf"val_bag_data\.json: key '{key}' appears twice"):
        read()


class _Anything:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickles_hold_only_plain_values(broken):
    copy, read = broken
    path = release.split_file(copy, "image_idx_to_id", "train")
    table = pickle.load(open(path, "rb"))
    pickle.dump({np.int64(k): np.int64(v) for k, v in table.items()}, open(path, "wb"))  # Numpy numbers: fine.
    assert read()[3]["train"]["image_idx_to_id_entries"] == len(table)
    pickle.dump({k + 1: v for k, v in table.items()}, open(path, "wb"))  # Indices 1.., not the features lines.
    with pytest.raises(DataError, match=r"train_image_sort_by_IoU_and_distance\.pkl: key \(\d+, \d+\) \(bag '\d+#\d+'\)"
                                        r", entry \d+: 0 is not an image index of .*train_image_idx_to_id\.pkl"):
        read()
    pickle.dump(collections.OrderedDict(table), open(path, "wb"))
    with pytest.raises(DataError, match=r"train_image_idx_to_id\.pkl: .*refuses to build collections\.OrderedDict"):
        read()
    pickle.dump([_Anything()], open(path, "wb"))
    with pytest.raises(DataError, match=r"refuses to build posix\.getcwd"):
        read()
    pickle.dump(table, open(path, "wb"))
    path = release.split_file(copy, "image_sort", "val")
    pickle.dump({"a#b": [1]}, open(path, "wb"))
    with pytest.raises(DataError, match=r"val_image_sort_by_IoU_and_distance\.pkl: key 'a#b'"):
        read()


def test_the_listed_order_needs_the_release():
    config = demo.get_config("tiny")
    config.data.sampler = "listed"
    with pytest.raises(ConfigError, match=r"data\.sampler='listed'.*needs data\.source='release'"):
        job.run(config, "/nonexistent", "prepare")


def _second_split_bag(copy):
    """Lists train's first bag in val too (bag_data and pairs_data)."""
    for kind in ("bag_data", "pairs_data"):
        table = json.load(open(release.split_file(copy, kind, "train")))
        key = next(iter(table))
        _edit_json(release.split_file(copy, kind, "val"), lambda val, key=key, table=table: val.update(
            {key: table[key]}))


BREAKAGES = {
    "a rect of strings": (lambda copy: _edit_tsv(os.path.join(copy, release.LABEL_FILE), 0, lambda r: r["objects"][0]
                                                 .update(rect=["0", "0", "5", "5"])),
                          r"VG_100_100_label\.tsv: line 1 \(image \d+\), object 0: 'rect' should be"),
    "an image size that is not an integer": (lambda copy: _edit_tsv(os.path.join(copy, release.LABEL_FILE), 0,
                                                                    lambda r: r.update(image_w="wide")),
                                             r"line 1 \(image \d+\): field 'image_w' should be int"),
    "a label line without a tab": (lambda copy: open(os.path.join(copy, release.LABEL_FILE), "a").write("7 {}\n"),
                                   r"VG_100_100_label\.tsv: line \d+: expected 'image_id<TAB>json', found no tab"),
    "a pair in two splits": (_second_split_bag, r"val_bag_data\.json: bag '[\d#]+' is also a bag of .*train_bag_data"),
    "two predicates with one id": (lambda copy: _edit_json(os.path.join(copy, release.VOCAB_FILE), lambda t: t[
        "predicate_to_idx"].update(near=t["predicate_to_idx"]["on"])), r"predicate_to_idx: the id '1' appears for two"),
    "a VG-150 id that is not a number": (lambda copy: _edit_json(os.path.join(copy, release.VOCAB_FILE), lambda t: t[
        "label_to_vg_150_idx"].update(man="first")), r"label_to_vg_150_idx\['man'\] = first: expected"),
    "a features-to-label line that is not a number": (
        lambda copy: open(release.split_file(copy, "feature_lines", "test"), "a").write("x\n"),
        r"test_feat_idx_to_label_line\.tsv: line \d+: expected '<label line>'"),
    "a list where an image id belongs": (lambda copy: pickle.dump({0: [1, 2]}, open(release.split_file(
        copy, "image_idx_to_id", "val"), "wb")), r"image_idx_to_id\.pkl: entry 0 is \[1, 2\]: expected an"),
    "a bare numpy dtype in a pickle": (lambda copy: pickle.dump(np.dtype("i8"), open(release.split_file(
        copy, "image_idx_to_id", "val"), "wb")), r"val_image_idx_to_id\.pkl: holds something other than plain"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_broken_record_is_named(broken, breakage):
    copy, read = broken
    edit, message = BREAKAGES[breakage]
    edit(copy)
    with pytest.raises(DataError, match=message):
        read()


def test_flags_repeats_and_three_value_entries_are_counted(broken):
    copy, read = broken
    path = release.split_file(copy, "pairs_data", "train")
    table = json.load(open(path))
    first, second = list(table)[:2]
    table[first][0][3] = 1 - table[first][0][3]  # A flag the label file contradicts.
    table[first].insert(1, table[first][0])  # The same instance listed twice.
    table[second] = [entry[:3] for entry in table[second]]  # No flags.
    json.dump(table, open(path, "w"))
    report = read()[3]["train"]
    listed = report["listed_instances"]
    assert report["listed_instances_repeated"] == 1
    assert report["flags_disagreeing_with_label_file"] == 2  # The flipped entry and its repeat.
    assert report["flags_agreeing_with_label_file"] == listed - 2 - len(table[second])
