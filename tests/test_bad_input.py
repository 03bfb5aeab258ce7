"""Bad input at the edges (issue 26, "Why" 7): each a DataError or ConfigError naming the file, line
or record and what was expected."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import feature_b64, write_vg

from clever_jax import files
from clever_jax.config_checks import ConfigError
from clever_jax.data import detections, jsonio, prepare, vg
from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import build, export
from clever_jax.training import builder
from clever_jax.training.checkpoints import Checkpoints
from configs import demo

VOCAB = benchmark_vocab()
MAN_AND_HORSE = [{"rect": [0, 0, 5, 5], "class": "man"}, {"rect": [1, 1, 8, 8], "class": "horse"}]


def detections_line(image_id, regions=MAN_AND_HORSE, width=9, height=9, dims=None) -> str:
    """One features TSV line; region k's feature has dims[k] values (default 4)."""
    dims = dims or [4] * len(regions)
    objects = [{**region, "feature": feature_b64([0.5] * dim)} for region, dim in zip(regions, dims, strict=True)]
    return f"{image_id}\t{json.dumps({'image_w': width, 'image_h': height, 'objects': objects})}\n"


def read(tmp_path, *lines: str, feature_dim: int | None = None):
    (tmp_path / "f.tsv").write_text("".join(lines))
    return detections.read_detections(str(tmp_path / "f.tsv"), VOCAB, feature_dim)


@pytest.mark.parametrize("size", [-5, 0, float("nan"), 2**31, 1e12, 10**400])
def test_an_impossible_image_size_is_refused_by_detections_and_ingestion_alike(tmp_path, size):
    with pytest.raises(DataError, match=r"f\.tsv: line 1 \(image 1\): image_w and image_h must be whole numbers of "
                                        r"pixels from 1 to 2147483647, found"):
        read(tmp_path, detections_line(1, width=size))
    vg_dir, features_path = write_vg(tmp_path / "vg", [{"id": 5, "size": (10, size), "objects": []}])
    with pytest.raises(DataError, match=r"image_data\.json: record 0 \(image 5\): width and height must be whole "
                                        r"numbers of pixels from 1 to 2147483647"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_a_whole_number_beyond_floats_range_in_a_box_is_named(tmp_path):
    huge = [{"rect": [0, 0, 10**400, 5], "class": "man"}, MAN_AND_HORSE[1]]
    with pytest.raises(DataError, match=r"f\.tsv: line 1 \(image 1\), region 0: 'rect' must be finite numbers"):
        read(tmp_path, detections_line(1, huge))
    vg_dir, features_path = write_vg(tmp_path / "vg", [{"id": 5, "objects": [(1, "man", (0, 0, 10**400, 5))]}])
    with open(features_path) as f:  # A sound box in the features, so that objects.json is read.
        text = f.read().replace(str(10**400), "10")
    with open(features_path, "w") as f:
        f.write(text)
    with pytest.raises(DataError, match=r"objects\.json: record 0 .*x, y, w, h must be finite numbers"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_an_image_id_beyond_int64_is_named(tmp_path):
    with pytest.raises(DataError, match=rf"f\.tsv: line 2: image id {2**70} does not fit a 64-bit integer"):
        read(tmp_path, detections_line(1), detections_line(2**70))
    vg_dir, features_path = write_vg(tmp_path / "vg", [{"id": 2**70, "objects": []}])
    with pytest.raises(DataError, match=rf"image_data\.json: record 0: 'image_id' {2**70} does not fit a 64-bit"):
        vg.ingest(vg_dir, features_path, VOCAB)


def test_json_nested_too_deeply_is_named(tmp_path):
    with pytest.raises(DataError, match=r"f\.tsv: line 2: JSON nested deeper than Python's reader allows"):
        read(tmp_path, detections_line(1), "2\t" + "[" * 200_000 + "\n")
    deep = tmp_path / "objects.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(DataError, match=r"objects\.json: record 0: JSON nested deeper"):
        list(jsonio.iter_json_list(deep))
    with pytest.raises(DataError, match=r"objects\.json: JSON nested deeper"):
        jsonio.load_json(str(deep))


def test_a_duplicate_image_names_the_id_and_both_lines_even_when_the_copy_is_skipped(tmp_path):
    one_region = MAN_AND_HORSE[:1]  # A copy that the reader would skip (fewer than two vocabulary regions).
    for copy in (detections_line(7), detections_line(7, one_region)):
        with pytest.raises(DataError, match=r"f\.tsv: line 3: image 7 appears twice in the features file \(lines 1 "
                                            r"and 3\)"):
            read(tmp_path, detections_line(7), detections_line(8), copy)


@pytest.mark.parametrize("wrong", [0, 1])
def test_a_wrong_feature_size_blames_the_region_that_has_it(tmp_path, wrong):
    """Without data.feature_dim the expected size is the one most regions have, so a wrong first
    region is named as the wrong one (it used to set the size and blame the next region)."""
    dims = [4, 4, 4]
    dims[wrong] = 3
    regions = [*MAN_AND_HORSE, {"rect": [2, 2, 6, 6], "class": "dog"}]
    lines = [detections_line(1, regions, dims=dims), detections_line(2)]
    with pytest.raises(DataError, match=rf"line 1 \(image 1\), region {wrong}: feature has 3 values, expected 4 "
                                        r"float32 values \(base64\), the size of 4 of the file's 5 regions"):
        read(tmp_path, *lines)
    with pytest.raises(DataError, match=rf"line 1 \(image 1\), region {wrong}: feature has 3 values, expected 4"):
        read(tmp_path, *lines, feature_dim=4)  # Given: named at once.
    assert read(tmp_path, detections_line(1), detections_line(2)).feature_dim == 4


def test_world_dir_at_a_file_is_a_config_error(tmp_path):
    config = demo.get_config("tiny")
    config.data.world_dir = str(tmp_path / "world.txt")
    (tmp_path / "world.txt").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"config\.data\.world_dir: .*world\.txt is a file; the generated world is a "
                                          r"folder"):
        prepare.input_paths(config, str(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------
# Export bundles.


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[str, object]:
    """An exported bundle of an untrained tiny model (its best checkpoint), and the config that made it."""
    root = tmp_path_factory.mktemp("bundle")
    config = demo.get_config("tiny")
    config.data.world_dir = str(root / "world")
    workdir = str(root / "run")
    run = builder.build(config, prepare.prepare(config, workdir))
    checkpoints = Checkpoints(workdir)
    checkpoints.save("best", run.initial_state(), {})
    checkpoints.wait()
    return export.export_bundle(run, workdir), config


@pytest.fixture
def copy(bundle, tmp_path) -> str:
    shutil.copytree(bundle[0], tmp_path / "bundle")
    return str(tmp_path / "bundle")


def edit(bundle_dir: str, name: str, change, *, checksum: bool = True) -> None:
    """Rewrites a bundle file's text with `change`, and its checksum (unless `checksum` is False)."""
    path = os.path.join(bundle_dir, name)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(change(text))
    if checksum:
        sums = json.load(open(os.path.join(bundle_dir, export.CHECKSUMS)))
        json.dump({**sums, name: files.sha256(path)}, open(os.path.join(bundle_dir, export.CHECKSUMS), "w"))


def checksums(bundle_dir: str, change) -> None:
    path = os.path.join(bundle_dir, export.CHECKSUMS)
    json.dump(change(json.load(open(path))), open(path, "w"))


def test_the_bundle_loads(bundle):
    assert export.load_bundle(bundle[0]).description["format"] == export.BUNDLE_FORMAT


def test_truncated_json_of_a_bundle_is_named(copy):
    edit(copy, "model.json", lambda t: t[: len(t) // 2], checksum=False)
    with pytest.raises(DataError, match=r"bundle/model\.json differs from the exported file"):
        export.load_bundle(copy)
    edit(copy, "model.json", lambda t: t[: len(t) // 2])
    with pytest.raises(DataError, match=r"bundle/model\.json: not UTF-8 JSON"):
        export.load_bundle(copy)
    edit(copy, export.CHECKSUMS, lambda t: t[: len(t) // 2], checksum=False)
    with pytest.raises(DataError, match=r"bundle/checksums\.json: not UTF-8 JSON"):
        export.load_bundle(copy)


@pytest.mark.parametrize("change, message", [
    (lambda sums: {}, r"checksums\.json: lists no parameter file \(params/\)"),
    (lambda sums: {k: v for k, v in sums.items() if not k.startswith("params/")}, r"lists no parameter file"),
    (lambda sums: dict(list(sums.items())[1:]), r"bundle/\S+: held in the bundle but not listed in checksums\.json "
                                                r"\(nor are 0 more\)"),
    (lambda sums: {**sums, "../elsewhere.txt": "0"}, r"checksums\.json: '\.\./elsewhere\.txt' is not a path inside"),
    (lambda sums: {**sums, "/etc/hostname": "0"}, r"checksums\.json: '/etc/hostname' is not a path inside the bundle"),
    (lambda sums: {**sums, "vocab/extra.txt": "0"}, r"bundle/vocab/extra\.txt is missing: the bundle is damaged"),
])
def test_a_bundle_must_list_every_file_it_holds_and_only_its_own(copy, change, message):
    checksums(copy, change)
    with pytest.raises(DataError, match=message):
        export.load_bundle(copy)


def test_an_old_format_is_refused(copy):
    edit(copy, "model.json", lambda t: t.replace('"format": 3', '"format": 1'))
    with pytest.raises(DataError, match=r"model\.json: bundle format 1, this version reads format 3: export it again"):
        export.load_bundle(copy)
    os.remove(os.path.join(copy, export.CHECKSUMS))  # Format 1 had no checksums: refused all the same.
    with pytest.raises(DataError, match=r"checksums\.json is missing: .*export it again"):
        export.load_bundle(copy)


@pytest.mark.parametrize("setting, value, message", [
    ("classifier_width", 4, r"params: parameter classifier/hidden/bias: float32 \(256,\) in the bundle, the model of "
                            r"config\.json has float32 \(128,\)"),
    ("num_layers", 2, r"params: parameter instance_encoder/\S*layer_1\S*: missing; the model of config\.json has it"),
])
def test_parameters_unlike_the_configs_model_are_named_before_any_records(bundle, copy, tmp_path, setting, value,
                                                                          message):
    edit(copy, "config.json", lambda t: json.dumps({**json.loads(t), "model": {**json.loads(t)["model"],
                                                                               setting: value}}))
    config = bundle[1].copy_and_resolve_references()
    config.extract.update(bundle=copy, features_path=str(tmp_path / "features.tsv"))
    with pytest.raises(DataError, match=message):
        build.extract(config, str(tmp_path / "kb_run"))
    assert not os.path.exists(tmp_path / "kb_run")  # Nothing built.
