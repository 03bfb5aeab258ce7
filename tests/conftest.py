"""Shared test helpers: a tiny hand-written Visual Genome folder, config builders and a dead pid."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

FEATURE_DIM = 4


def pytest_configure(config):
    """One XLA compilation cache for the whole test run (every xdist worker and subprocess inherits
    the variable): the many tests that build the same tiny model compile its steps once. It is
    made fresh for each run, so the suite's time is that of a clean machine."""
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.xla_cache_dir = tempfile.mkdtemp(prefix="clever_jax_tests_xla_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.xla_cache_dir
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"


def pytest_collection_modifyitems(config, items):
    """The tiers: a test not marked slow (end to end) or multiprocess is a unit test (`make test-fast`).

    The longest files run first (each file's tests in their order): the journey's and the several-process
    ones, then the other end-to-end ones. With them last, one worker ran the last of them alone while the
    other waited.
    """
    rank = {}  # File -> 0 (journey, multiprocess), 1 (slow) or 2 (unit only).
    for item in items:
        markers = {marker.name for marker in item.iter_markers()}
        if not markers & {"slow", "multiprocess"}:
            item.add_marker(pytest.mark.unit)
        first = 0 if markers & {"journey", "multiprocess"} else 1 if "slow" in markers else 2
        rank[item.path] = min(rank.get(item.path, 2), first)
    items.sort(key=lambda item: rank[item.path])


def pytest_unconfigure(config):
    if getattr(config, "xla_cache_dir", None):
        shutil.rmtree(config.xla_cache_dir, ignore_errors=True)
        del os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]


def dead_pid() -> int:
    """The pid of a process that ran and exited (what a killed command leaves in its files' names)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def feature_b64(values) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


def write_vg(root, images: list[dict], feature_dim: int = FEATURE_DIM, seed: int = 0) -> tuple[str, str]:
    """Writes image_data.json, objects.json, relationships.json and features.tsv.

    Each image: {"id", "size": (w, h), "objects": [(object_id, name, (x, y, w, h))],
    "relations": [(subject_id, predicate, object_id)], "features": bool (default True)}.
    A region's feature is [object_id, 0, 0, ...] so tests can see which region landed where.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    image_data, objects, relationships, lines = [], [], [], []
    for image in images:
        width, height = image.get("size", (100, 100))
        image_data.append({"image_id": image["id"], "url": "", "width": width, "height": height})
        objs = [
            {"object_id": oid, "x": box[0], "y": box[1], "w": box[2], "h": box[3], "names": [name], "synsets": []}
            for oid, name, box in image["objects"]
        ]
        objects.append({"image_id": image["id"], "objects": objs})
        by_id = {o["object_id"]: o for o in objs}
        rels = [
            {
                "relationship_id": 1000 * image["id"] + k,
                "predicate": predicate,
                "synsets": [],
                "subject": {**by_id[s], "name": by_id[s]["names"][0]},
                "object": {**by_id[o], "name": by_id[o]["names"][0]},
            }
            for k, (s, predicate, o) in enumerate(image.get("relations", []))
        ]
        relationships.append({"image_id": image["id"], "relationships": rels})
        if image.get("features", True):
            regions = []
            for oid, name, (x, y, w, h) in image["objects"]:
                values = np.concatenate([[oid], rng.normal(size=feature_dim - 1)])
                regions.append({"object_id": oid, "rect": [x, y, x + w, y + h], "class": name, "conf": 1.0,
                                "feature": feature_b64(values)})
            lines.append(f"{image['id']}\t{json.dumps({'image_h': height, 'image_w': width, 'objects': regions})}")
    for name, content in (("image_data.json", image_data), ("objects.json", objects),
                          ("relationships.json", relationships)):
        with open(os.path.join(root, name), "w") as f:
            json.dump(content, f)
    features_path = os.path.join(root, "features.tsv")
    with open(features_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(root), features_path


def random_images(num_images: int, seed: int, names, max_objects: int = 8) -> list[dict]:
    """Images of random boxes named from `names`, with up to 3 random relations each (for write_vg)."""
    rng = np.random.default_rng(seed)
    images, oid = [], 1
    for image_id in range(1, num_images + 1):
        objects = []
        for _ in range(rng.integers(2, max_objects)):
            x, y = rng.integers(0, 80, 2)
            w, h = rng.integers(5, 40, 2)
            objects.append((oid, names[rng.integers(len(names))], (int(x), int(y), int(w), int(h))))
            oid += 1
        relations = []
        for _ in range(rng.integers(0, 4)):
            a, b = rng.choice(len(objects), 2, replace=False)
            relations.append((objects[a][0], ["on", "near", "holding", "has"][rng.integers(4)], objects[b][0]))
        images.append({"id": image_id, "objects": objects, "relations": relations})
    return images


@pytest.fixture
def small_vg(tmp_path):
    """Four images: valid objects, name variants, a degenerate box, an unknown name, one image
    without features and one with a single vocabulary object."""
    images = [
        {"id": 1, "size": (200, 100), "objects": [
            (11, "Man", (10, 10, 50, 80)), (12, "umbrellas ", (20, 0, 60, 30)), (13, "sky", (0, 0, 200, 20)),
            (14, "dog", (150, 50, 40, 40))],
         "relations": [(11, "Holding", 12), (14, "near", 11), (11, "under", 13)]},
        {"id": 2, "size": (100, 100), "objects": [
            (21, "men", (0, 0, 30, 30)), (22, "umbrella", (50, 50, 0, 20)), (23, "dog", (40, 40, 50, 50)),
            (24, "Dogs", (90, 90, 30, 30)), (25, "blorp", (5, 5, 5, 5))],
         "relations": [(21, "near", 23), (21, "zapping", 23)]},
        {"id": 3, "objects": [(31, "man", (0, 0, 10, 10)), (32, "dog", (5, 5, 10, 10))], "features": False},
        {"id": 4, "objects": [(41, "man", (0, 0, 10, 10)), (42, "tree-ish", (5, 5, 10, 10))]},
    ]
    return write_vg(tmp_path / "vg", images)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[object, str]:
    """The tiny world with a random model saved as its run's best (config, workdir; config.extract.features_path
    the world's features): the knowledge-base tests' shared run."""
    from clever_jax.data import prepare
    from clever_jax.training import builder
    from clever_jax.training.checkpoints import Checkpoints
    from configs import demo

    config = demo.get_config("tiny")
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    run = builder.build(config, prepare.prepare(config, workdir))
    checkpoints = Checkpoints(workdir)
    checkpoints.save("best", run.initial_state(), {})
    checkpoints.wait()
    config.extract.features_path = os.path.join(workdir, "world", "features.tsv")
    return config, workdir
