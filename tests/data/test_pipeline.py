"""Records and the input pipeline: build, reuse, rebuild, batch layout, determinism, resume."""

import json
import logging
import os
import shutil

import grain
import numpy as np
import pytest
from conftest import random_images, write_vg

from clever_jax.data import pipeline, prepare, records
from clever_jax.data.jsonio import DataError
from configs import vg as vg_config


def _config(vg_dir, features_path, **data):
    config = vg_config.get_config()
    config.data.update(dict(vg_dir=vg_dir, features_path=features_path, feature_dim=0, bag_size=4, text_len=10,
                            num_regions=5, batch_size=3, eval_batch_size=4, split_ratios=(0.5, 0.25, 0.25)))
    config.data.update(data)
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    names = ["man", "dog", "umbrellas", "tree", "car", "sky", "leaves"]
    vg_dir, features_path = write_vg(root / "vg", random_images(80, 0, names, max_objects=9))
    config = _config(vg_dir, features_path)
    workdir = str(root / "work")
    return config, workdir, prepare.prepare(config, workdir)


def _reference_instance(image, s, o, shape, cls_id, sep_id):
    """Loop version of one instance's encoder input."""
    k = len(image["classes"])
    order = ([s, o] + [j for j in range(k) if j not in (s, o)])[: shape.num_regions]
    starts = np.concatenate([[0], np.cumsum(image["tag_lengths"])])
    tags = [image["tag_pieces"][starts[j]:starts[j + 1]].tolist() for j in order]
    pieces = [p for tag in tags for p in tag][: shape.text_len - 2]
    text = [cls_id, *pieces, sep_id]
    subject = (1, min(1 + len(tags[0]), shape.text_len - 1))
    obj = (min(1 + len(tags[0]), shape.text_len - 1), min(1 + len(tags[0]) + len(tags[1]), shape.text_len - 1))
    return image["regions"][order], text, subject, obj


def test_batches_match_a_loop_reference(built):
    config, _, build_dir = built
    shape = pipeline.instance_shape(config.data, build_dir)
    images, bags = records.open_records(build_dir)
    loader = pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=0)
    batch = next(iter(loader))
    assert batch["text_ids"].shape == (3, 4, 10) and batch["regions"].shape == (3, 4, 5, 4 + 6)
    by_bag = {int(bags["train"][i]["bag"]): bags["train"][i] for i in range(len(bags["train"]))}
    for b in range(3):
        bag = by_bag[int(batch["bag"][b])]
        n = min(len(bag["images"]), 4)
        assert batch["instance_mask"][b].tolist() == [True] * n + [False] * (4 - n)
        assert batch["labels"][b].nonzero()[0].tolist() == sorted(set(bag["labels"].tolist()))
        assert batch["target"][b] in bag["labels"]
        for i in range(n):
            image = images[int(bag["images"][i])]
            regions, text, subject, obj = _reference_instance(
                image, bag["subjects"][i], bag["objects"][i], shape, shape.cls_id, shape.sep_id)
            np.testing.assert_array_equal(batch["regions"][b, i, : len(regions)], regions)
            assert not batch["regions"][b, i, len(regions):].any()
            assert batch["region_mask"][b, i].sum() == len(regions)
            assert batch["text_ids"][b, i, : len(text)].tolist() == text
            assert batch["text_mask"][b, i].sum() == len(text)
            assert tuple(batch["subject_span"][b, i]) == subject and tuple(batch["object_span"][b, i]) == obj
            assert image["classes"][bag["subjects"][i]] == bag["pair"][0]
            assert image["classes"][bag["objects"][i]] == bag["pair"][1]
        assert not batch["regions"][b, n:].any() and not batch["text_mask"][b, n:].any()


def test_loader_is_deterministic_and_resumes_from_saved_state(built):
    config, _, build_dir = built
    shape = pipeline.instance_shape(config.data, build_dir)

    def batches(iterator, count):
        return [next(iterator) for _ in range(count)]

    first = batches(iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=7)), 6)
    iterator = iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=7))
    batches(iterator, 2)
    state = iterator.get_state()
    resumed = iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=7))
    resumed.set_state(state)
    for want, got in zip(first[2:], batches(resumed, 4), strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    other = batches(iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=8)), 6)
    assert any(not np.array_equal(a["bag"], b["bag"]) for a, b in zip(first, other, strict=True))


def test_eval_loader_reads_every_bag_once_and_pads(built):
    config, _, build_dir = built
    shape = pipeline.instance_shape(config.data, build_dir)
    _, bags = records.open_records(build_dir)
    seen = []
    for batch in pipeline.make_loader(build_dir, "test", shape, 4, train=False, seed=0):
        batch = pipeline.pad_batch(batch, 4)
        assert batch["text_ids"].shape[0] == 4
        seen.extend(batch["bag"][batch["bag_mask"]].tolist())
    assert sorted(seen) == sorted(int(bags["test"][i]["bag"]) for i in range(len(bags["test"])))


def test_processes_read_disjoint_shards_that_cover_the_split(built):
    config, _, build_dir = built
    shape = pipeline.instance_shape(config.data, build_dir)
    _, bags = records.open_records(build_dir)
    everything = [int(bags["train"][i]["bag"]) for i in range(len(bags["train"]))]
    assert len(everything) % 3  # A remainder: the first shards get one bag more, none is lost.
    shards = []
    for index in range(3):
        options = grain.sharding.ShardOptions(shard_index=index, shard_count=3, drop_remainder=False)
        loader = pipeline.make_loader(build_dir, "train", shape, 1, train=False, seed=0, shard_options=options)
        shards.append([int(b["bag"][0]) for b in loader])
    assert sum(shards, []) == everything  # Contiguous ranges, in order.


@pytest.mark.multiprocess
def test_worker_processes_are_deterministic(built):
    # Grain batches within each worker, so batches depend on worker_count, but not on the run.
    config, _, build_dir = built
    shape = pipeline.instance_shape(config.data, build_dir)
    one = iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=1, worker_count=2))
    two = iter(pipeline.make_loader(build_dir, "train", shape, 3, train=True, seed=1, worker_count=2))
    for _ in range(3):
        a, b = next(one), next(two)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_prepare_reuses_an_unchanged_build_and_redoes_a_changed_one(built, tmp_path, caplog):
    config, workdir, build_dir = built
    stats = json.load(open(os.path.join(workdir, "stats.json")))
    assert set(stats["splits"]) == {"train", "val", "test"}
    assert stats["splits"]["train"]["facts"] > 0 and stats["corpus"]["feature_dim"] == 4
    assert prepare.prepare(config, workdir) == build_dir
    changed = _config(config.data.vg_dir, config.data.features_path, bag_size=2)
    assert prepare.prepare(changed, workdir) != build_dir
    loader_only = _config(config.data.vg_dir, config.data.features_path, batch_size=5)
    with caplog.at_level(logging.INFO):
        assert prepare.prepare(loader_only, workdir) == build_dir
    assert "also holds 1 other record builds" in caplog.text  # The bag_size=2 build.


def test_truncated_record_file_is_reported(built, tmp_path):
    config, workdir, build_dir = built
    copy = tmp_path / "copy"
    shutil.copytree(build_dir, copy)
    manifest = records.read_manifest(str(copy))
    victim = next(name for name in manifest["files"] if "bag_records" in name)
    with open(copy / victim, "r+b") as f:
        f.truncate(manifest["files"][victim]["size"] // 2)
    with pytest.raises(DataError, match=r"record file is \d+ bytes, the build wrote \d+ bytes"):
        records.open_records(str(copy))


def test_overwritten_or_swapped_record_files_are_reported(built, tmp_path):
    """The content counts, not only the size: an overwritten byte, or the test file in place of val."""
    _, _, build_dir = built
    copy = tmp_path / "copy"
    shutil.copytree(build_dir, copy)
    records.open_records(str(copy))
    manifest = records.read_manifest(str(copy))
    image_file = next(name for name in manifest["files"] if "image_records" in name)
    with open(copy / image_file, "r+b") as f:
        f.seek(manifest["files"][image_file]["size"] // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match=r"image_records.*content differs from what the build wrote \(SHA-256"):
        records.open_records(str(copy))
    shutil.rmtree(copy)
    shutil.copytree(build_dir, copy)
    name = {split: next(n for n in manifest["files"] if f"bag_records-{split}." in n) for split in ("val", "test")}
    shutil.copyfile(copy / name["test"], copy / name["val"])
    manifest["files"][name["val"]] = manifest["files"][name["test"]]  # Even with a manifest edited to match.
    with open(copy / records.MANIFEST, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(DataError, match=r"split 'val' holds \d+ bags of split 'test'"):
        records.open_records(str(copy))
    manifest["version"] = "0.9.0"  # Records an older clever_jax built.
    with open(copy / records.MANIFEST, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(DataError, match=rf"records of format 0\.9\.0, this version of clever_jax reads "
                                        rf"{records.RECORDS_VERSION}; delete"):
        records.open_records(str(copy))


def test_missing_visual_genome_files_say_what_to_put_where(tmp_path):
    config = _config(str(tmp_path / "nowhere"), str(tmp_path / "nowhere" / "features.tsv"))
    with pytest.raises(FileNotFoundError, match=r"(?s)image_data\.json.*objects\.json.*relationships\.json.*features"):
        prepare.prepare(config, str(tmp_path / "work"))


def test_prepare_reports_the_skips_largest_first():
    report = prepare.skip_report({"object_out_of_vocabulary": 12, "image_without_features": 3000,
                                  "object_degenerate_box": 12})
    assert report.splitlines() == ["Skipped while reading the data (largest first; also in stats.json):",
                                   "       3,000  image_without_features", "          12  object_degenerate_box",
                                   "          12  object_out_of_vocabulary"]
    assert prepare.skip_report({}) == ""
