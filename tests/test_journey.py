"""The commands of the README and the manuals, run as a user runs them (the `journey` tier).

Every command in a code block of README.md or docs/*.md is one of three kinds, listed here:
- JOURNEY: run below as a subprocess from a fresh folder that holds only `configs/` (a link to
  the repository's), exactly as the README writes it, with only these changes: `configs/demo.py`
  becomes its tiny variant (`configs/demo.py:tiny`, `configs/clever_release.py:tiny`) and other
  commands get TINY settings appended, `/tmp/` becomes the folder's `tmp/`,
  `/data/my_images/features.tsv` a detector's output for images that are not the generated
  world's (their own ids, names and boxes), and the query's example names and image id are those of
  the knowledge base the tiny run made. Each step checks what the README says the command writes.
- REAL_DATA: needs files this machine cannot have (Visual Genome, the authors' release, VinVL
  weights, GPUs, a cloud project), with the reason.
- ELSEWHERE: run by the named test file.
A command in none of them fails `test_every_readme_command_is_accounted_for`, and a listed command
that no page shows any more fails it too: when a page changes a command, this file changes with it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import report
from tests.conftest import random_images, write_vg

pytestmark = [pytest.mark.slow, pytest.mark.journey]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")

PREPARE = ".venv/bin/python -m clever_jax.main --config=configs/demo.py --mode=prepare --workdir=runs/demo"
MAIN = "python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo"
EVAL = "python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo --mode=eval"
EXPORT = "python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo --mode=export"
KB_WORLD = ("python -m clever_jax.main --mode=kb --config=configs/demo.py --workdir=runs/demo "
                 "--config.extract.features_path=runs/demo/world/features.tsv "
                 "--config.extract.target_precision=0.8 --config.extract.top_k=100000")
KB_NEGATIVES = KB_WORLD + " --config.extract.negatives=1000"  # TINY: KB_WORLD's settings (a prefix).
KB_OWN = ("python -m clever_jax.main --mode=kb --config=configs/demo.py --workdir=runs/demo "
               "--config.extract.features_path=/data/my_images/features.tsv --config.extract.min_images=2 "
               "--config.extract.top_k=100000")
KB_OWN_IMAGES = KB_OWN + " --config.extract.image_index=true"
KB_BUNDLE = ("python -m clever_jax.main --mode=kb --config=configs/demo.py --workdir=runs/my_kb "
                  "--config.extract.bundle=runs/demo/export "
                  "--config.extract.features_path=/data/my_images/features.tsv")
REPORT_MODE = "python -m clever_jax.main --mode=report --config=configs/demo.py --workdir=runs/demo"
REPORT = "python -m clever_jax.kb.report --kb=runs/demo/kb/kb.jsonl --out=/tmp/report.html --screenshot=/tmp/report.png"
QUERY_PAIR = "python -m clever_jax.kb.query --kb=runs/demo/kb/kb.jsonl man horse"
QUERY_RELATION = "python -m clever_jax.kb.query --kb=runs/demo/kb/kb.jsonl --relation=riding --top=20"
QUERY_IMAGE = "python -m clever_jax.kb.query --kb=runs/demo/kb/kb.jsonl --image=2417"
QUERY_IMAGES = "python -m clever_jax.kb.query --kb=runs/demo/kb/kb.jsonl --images man riding horse"
SCENE_GRAPHS = ("python -m clever_jax.main --mode=scene_graphs --config=configs/demo.py --workdir=runs/demo "
                "--config.extract.features_path=/data/my_images/features.tsv")
EXPORT_RELEASE = "python -m clever_jax.main --config=configs/demo.py --mode=export_release --workdir=runs/demo"
RELEASE_RUN = ("python -m clever_jax.main --config=configs/clever_release.py:demo --workdir=runs/demo_release "
               "--config.data.release_dir=runs/demo/release")

MEMORY = "python -m clever_jax.perf.memory --config=configs/vg_gpu10.py --config.model.pretrained_dir=configs/bert_base"

JOURNEY = (PREPARE, MAIN, EVAL, EXPORT, KB_WORLD, KB_NEGATIVES, KB_OWN, KB_OWN_IMAGES, KB_BUNDLE, REPORT_MODE, REPORT,
           QUERY_PAIR, QUERY_RELATION, QUERY_IMAGE, QUERY_IMAGES, SCENE_GRAPHS, EXPORT_RELEASE, RELEASE_RUN, MEMORY)
PACKED = ["--config.data.packing=True"]  # configs/demo.py packs; its tiny variant does not (tests elsewhere).
TINY = {  # Settings appended: BERT-base's sizes with one layer and short instances where the config has no tiny
    # variant; fewer pairs and epochs where the tiny world's work is more than the step needs to show; runs/demo
    # packed, as `make demo` is.
    MEMORY: ["--config.model.num_layers=1", "--config.data.bag_size=2", "--config.data.text_len=16",
             "--config.data.num_regions=8"],
    PREPARE: PACKED, MAIN: PACKED, KB_WORLD: [*PACKED, "--config.extract.min_images=2"], KB_OWN: PACKED,
    SCENE_GRAPHS: PACKED,
    RELEASE_RUN: ["--config.train.max_epochs=1"],
}

REAL_DATA = {
    "python -m clever_jax.main --config=configs/vg.py": "Visual Genome's files, features and VinVL weights",
    ".venv/bin/python -m clever_jax.main --config=configs/vg.py": "Visual Genome's files and features",
    "python -m clever_jax.main --config=configs/clever_release.py --workdir=runs/release":
        "the authors' release files and checkpoints (the same reader runs on the world's release: RELEASE_RUN)",
    "python -m clever_jax.main --config=configs/clever_release.py --workdir=runs/release_avg":
        "the authors' release files and AVG checkpoint",
    "python -m clever_jax.experiments.results --config=configs/clever_release.py":
        "the authors' release files and checkpoints",
    "python3 launch/gpu_host.py": "a host with 10 NVIDIA GPUs and Visual Genome (its dry run: tests/test_launch.py)",
    "python3 launch/tpu_pod.py": "a Google Cloud project with TPU quota (its dry run: tests/test_launch.py)",
}

MAKE_DEMO = ("Makefile", "demo: $(VENV)/.installed\n\t$(PY) -m clever_jax.main --config=configs/demo.py "
             "--workdir=$(WORKDIR)")  # MAIN at the demo's size, into runs/demo.
ELSEWHERE = {  # A page's command -> (the file that runs it, what that file must contain to run it).
    "make demo": MAKE_DEMO,
    "make test": (".ci/run", "make test"),
    "make gpu-check": ("tests/test_launch.py", 'launch("gpu_check.py", "--dry_run"'),
    # docs/world.md's PredCls measurements: the command's function on the tiny world.
    "make predcls": ("Makefile", "predcls: $(VENV)/.installed\n\t$(PY) -m clever_jax.experiments.predcls "
                     "--config=configs/demo.py --workdir=runs/predcls"),
    "python -m clever_jax.experiments.predcls --config=configs/demo.py": (
        "tests/experiments/test_predcls.py", 'predcls.measure(demo.get_config("tiny")'),
    # docs/attention.md's runs of the diagnosis (issue 11): MAIN into another folder, and the settings they
    # change, each run at the tiny size by the named test; the diagnosis' settings check.
    "python -m clever_jax.main --config=configs/demo.py --workdir=runs/clever": MAKE_DEMO,
    "python -m clever_jax.main --config=configs/demo.py --workdir=runs/avg --config.model.head=avg": (
        "tests/perf/test_throughput.py", '@pytest.mark.parametrize("head", ["clever", "avg", "att", "one"])'),
    "python -m clever_jax.main --config=configs/demo.py --workdir=runs/vrd --config.model.head=vrd": (
        "tests/training/test_train.py", 'model.clone(head="vrd", eval_head="vrd")'),
    "python -m clever_jax.main --config=configs/demo.py --workdir=runs/clever9 --config.train.max_epochs=9": (
        "tests/test_main.py", '"--config.train.max_epochs=3"'),
    "python -m clever_jax.experiments.diagnose --config=configs/demo.py": (
        "tests/experiments/test_diagnose.py", "diagnose.diagnose(config, str(tmp_path)"),
    # docs/beyond.md's measurements on the world (issue 29): the scene graphs of the test images, and every
    # instance scored for the image index, whose retrieval measurement runs on an oracle's scores.
    SCENE_GRAPHS.replace("/data/my_images/features.tsv", "runs/demo/world/features.tsv")
    + " --config.scene_graphs.images=test": (
        "tests/kb/test_scene_graphs.py", 'config.scene_graphs.update(images="test"'),
    # docs/beyond.md's bootstrapping: the mode on a copy of a tiny run, one round.
    "python -m clever_jax.main --mode=bootstrap --config=configs/demo.py --workdir=runs/demo": (
        "tests/kb/test_bootstrap.py", 'job.run(config, workdir, "bootstrap")'),
    KB_WORLD + " --config.extract.image_index=true": (
        "tests/kb/test_image_index.py", "build.world_retrieval(config, workdir, oracle)"),
}


def pages() -> list[str]:
    """The README and the manuals, whose code blocks hold the commands."""
    return [README] + sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def page_commands(path: str) -> list[str]:
    """The commands of a page's code blocks: continuation lines joined, comments and spaces dropped."""
    with open(path) as f:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", f.read(), re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if re.match(r"(\.venv/bin/)?python3?\s|make\s|[A-Z_]+=\S+\s", line):
                commands.append(" ".join(line.split()))
    return commands


def starts(command: str, prefix: str) -> bool:
    """`command` is `prefix` or `prefix` with more arguments (runs/clever9 is not runs/clever)."""
    return command == prefix or command.startswith(prefix + " ")


def test_every_readme_command_is_accounted_for():
    shown = {path: page_commands(path) for path in pages()}
    commands = [c for page in shown.values() for c in page]
    unknown = [f"{os.path.relpath(path, ROOT)}: {c}" for path, page in shown.items() for c in page
               if c not in JOURNEY and not any(starts(c, p) for p in (*REAL_DATA, *ELSEWHERE))]
    assert not unknown, f"commands no test runs (add them to tests/test_journey.py): {unknown}"
    missing = [c for c in JOURNEY if c not in commands]
    assert not missing, f"commands this test runs that no page shows any more: {missing}"
    for prefix in (*REAL_DATA, *ELSEWHERE):
        assert any(starts(c, prefix) for c in commands), f"{prefix!r} is no longer in the README or docs/"
    for prefix, (path, runs_it) in ELSEWHERE.items():
        with open(os.path.join(ROOT, path)) as f:
            assert runs_it in f.read(), f"{path} no longer runs {prefix!r} ({runs_it!r})"


def own_detections(path: str) -> str:
    """A detector's output for 60 images that are not the world's: ids from 900001, names as a detector
    writes them (case, plurals, names outside the vocabulary), 8 appearance values (the tiny world's)."""
    names = ["man", "Men", "horse", "horses", "shirt", "Dog", "table", "chair", "woman", "street lamp-ish"]
    images = random_images(60, seed=7, names=names)
    for image in images:
        image["id"] += 900000
    _, features = write_vg(path, images, feature_dim=8, seed=7)
    return features


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """Runs README commands in a fresh folder (see the module docstring); returns run(command) -> stdout."""
    base = tmp_path_factory.mktemp("journey")
    os.symlink(os.path.join(ROOT, "configs"), base / "configs")  # What a user's commands name, from a clone.
    features = own_detections(str(base / "my_images"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(command: str, ok: bool = True, examples: dict[str, list[str]] | None = None) -> subprocess.CompletedProcess:
        """Runs `command` with the substitutions above; `examples`: README words -> this KB's (quoted here)."""
        line = command.replace("configs/demo.py", "configs/demo.py:tiny")
        line = line.replace("configs/clever_release.py:demo", "configs/clever_release.py:tiny")
        line = re.sub(r"(?<=[\s=])/tmp/", f"{base}/tmp/", line)
        line = line.replace("/data/my_images/features.tsv", features) + "".join(
            f" {setting}" for prefix, settings in TINY.items() if command.startswith(prefix) for setting in settings)
        for old, new in (examples or {}).items():
            line = line.replace(old, shlex.join(new))
        argv = shlex.split(line)
        argv[0] = sys.executable
        os.makedirs(base / "tmp", exist_ok=True)
        start = time.time()
        result = subprocess.run(argv, cwd=base, env=env, capture_output=True, text=True, timeout=600)
        print(f"{time.time() - start:6.1f} s  {command}")  # Shown with pytest -s: where the tier's time goes.
        if ok:
            assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stderr[-4000:]}"
        return result

    run.base, run.features = base, features
    return run


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_the_journey(user):
    demo, release, my_kb = (os.path.join(user.base, "runs", name) for name in ("demo", "demo_release", "my_kb"))

    # Prepare: the world, the records, the statistics.
    user(PREPARE)
    assert sorted(os.listdir(os.path.join(demo, "world"))) == sorted(
        ["image_data.json", "objects.json", "relationships.json", "features.tsv", "captions.json",
         "interactions.json", "commonsense.json", ".clever_jax_world"])
    stats = json.load(open(os.path.join(demo, "stats.json")))
    for split in ("train", "val", "test"):
        sizes = stats["splits"][split]
        assert sizes["facts"] > 0 and sizes["entity_pairs"] > 0 and sizes["images"] > 0
        assert sizes["instances"] <= sizes["candidate_instances"]
        assert 0 < sizes["instances_showing_a_gold_relation"] <= sizes["instances"]
        assert 0 < sizes["facts_with_an_instance_showing_them"] <= sizes["facts"]
    assert stats["paper"]["test"]["facts"] == 3496
    assert stats["skipped"]["object_out_of_vocabulary"] > 0
    assert sum(stats["predicate_frequency"]["train"].values()) == stats["splits"]["train"]["facts"]
    assert len(os.listdir(os.path.join(demo, "records"))) == 1

    # The main job: train, keep the best on validation, evaluate on test, extract.
    main = user(MAIN)
    assert "Reusing the records" in main.stderr  # Those prepare built.
    assert "packed into" in main.stderr  # As `make demo` packs: the real tokens only.
    metrics = json.load(open(os.path.join(demo, "metrics.json")))
    for key in ("auc", "f1", "p@2%", "mauc", "mf1", "mp@2%", "attention_on_annotated", "attention_chance",
                "attention_on_true", "attention_true_chance", "top_evidence_true", "attention_true_auc", "spearman",
                "spearman_top", "spearman_top_triplets"):
        assert np.isfinite(metrics["test"][key]), key
    for name in ("pr_curve.png", "history.json", "val_scores.npz", "test_scores.npz",
                 "checkpoints/run_settings.json"):
        assert os.path.isfile(os.path.join(demo, name)), name
    assert os.listdir(os.path.join(demo, "checkpoints", "best"))
    triplets = read_jsonl(os.path.join(demo, "triplets.jsonl"))
    assert {"subject", "relation", "object", "score", "known", "evidence"} <= set(triplets[0])
    assert {"image_id", "subject_box", "object_box", "weight", "annotated", "true"} <= set(triplets[0]["evidence"][0])
    assert [t["score"] for t in triplets] == sorted((t["score"] for t in triplets), reverse=True)

    # Evaluate again: the same checkpoint gives the same metrics.
    user(EVAL)
    again = json.load(open(os.path.join(demo, "metrics.json")))
    for key, value in metrics["test"].items():
        assert again["test"][key] == pytest.approx(value, abs=1e-6), key

    # Export the inference bundle.
    user(EXPORT)
    bundle = os.path.join(demo, "export")
    for name in ("model.json", "config.json", "checksums.json", "training_facts.tsv", "val_scores.npz"):
        assert os.path.isfile(os.path.join(bundle, name)), name

    # A knowledge base from the world's features, filtered for precision 0.8 on validation.
    user(KB_WORLD)
    meta = json.load(open(os.path.join(demo, "kb", "kb_meta.json")))
    assert meta["filters"]["target_precision"] == 0.8 and "world_truth" in meta
    world_kb = read_jsonl(os.path.join(demo, "kb", "kb.jsonl"))
    assert meta["triplets"] == len(world_kb)
    # A trained model's confident triplets include training facts (19 to 96 in runs of four seeds).
    assert 0 < meta["in_training_kb"] == sum(t["in_training_kb"] for t in world_kb) <= meta["triplets"]
    # The same with informative negatives: the knowledge base unchanged, negatives.jsonl beside it.
    user(KB_NEGATIVES)
    negatives = read_jsonl(os.path.join(demo, "kb", "negatives.jsonl"))
    with_negatives = json.load(open(os.path.join(demo, "kb", "kb_meta.json")))
    assert len(negatives) == with_negatives["negatives"]["count"] <= 1000
    assert {"pool", "precision_vs_truth", "pool_false_rate"} <= set(with_negatives["negatives"])
    assert read_jsonl(os.path.join(demo, "kb", "kb.jsonl")) == world_kb

    # A knowledge base from a detector's output for other images, with the workdir's model, then with the bundle
    # in a fresh folder: the same triplets and scores.
    user(KB_OWN)
    own = json.load(open(os.path.join(demo, "kb", "kb_meta.json")))
    assert own["features_path"] == user.features and "world_truth" not in own and "filters" not in own
    kb = read_jsonl(os.path.join(demo, "kb", "kb.jsonl"))
    assert len(kb) == own["triplets"] > 0
    assert all(e["image_id"] > 900000 for t in kb for e in t["evidence"])
    assert {t["subject"] for t in kb} <= set(benchmark_vocab().entities)
    with open(os.path.join(demo, "kb", "kb.csv")) as f:
        assert len(list(csv.DictReader(f))) == len(kb)
    user(KB_OWN_IMAGES)  # The same knowledge base, and every instance scored into its image index.
    assert read_jsonl(os.path.join(demo, "kb", "kb.jsonl")) == kb
    with np.load(os.path.join(demo, "kb", "images.npz")) as index:
        assert len(index["image_ids"]) > len(kb) / 100 and index["image_ids"].min() > 900000
    user(KB_BUNDLE)
    from_bundle = read_jsonl(os.path.join(my_kb, "kb", "kb.jsonl"))
    assert [(t["subject"], t["relation"], t["object"]) for t in from_bundle] == [
        (t["subject"], t["relation"], t["object"]) for t in kb]
    np.testing.assert_allclose([t["score"] for t in from_bundle], [t["score"] for t in kb], atol=1e-5)

    # The evidence page: next to the KB, and anywhere (the screenshot needs Chromium).
    user(REPORT_MODE)
    assert "<html" in open(os.path.join(demo, "kb", "report.html")).read().lower()
    browser = any(shutil.which(name) for name in report.CHROMIUMS)
    shown = user(REPORT, ok=browser)
    assert os.path.isfile(os.path.join(user.base, "tmp", "report.html"))
    if browser:
        assert os.path.getsize(os.path.join(user.base, "tmp", "report.png")) > 0
    else:
        assert shown.returncode != 0 and "install chromium" in shown.stderr

    # Ask it: the README's examples with the names and image this knowledge base has.
    top = kb[0]
    pair = user(QUERY_PAIR, examples={"man horse": [top["subject"], top["object"]]})
    assert top["relation"] in pair.stdout
    by_relation = user(QUERY_RELATION, examples={"--relation=riding": [f"--relation={top['relation']}"]})
    assert top["subject"] in by_relation.stdout
    image = user(QUERY_IMAGE, examples={"2417": [str(top["evidence"][0]["image_id"])]})
    assert top["relation"] in image.stdout
    images = user(QUERY_IMAGES, examples={"man riding horse": [top["subject"], top["relation"], top["object"]]})
    assert f"image {top['evidence'][0]['image_id']}  score" in images.stdout

    # A scene graph per image of the detector's output.
    user(SCENE_GRAPHS)
    graphs = read_jsonl(os.path.join(demo, "scene_graphs", "scene_graphs.jsonl"))
    assert graphs and all(g["image_id"] > 900000 and g["relations"] for g in graphs)
    assert json.load(open(os.path.join(demo, "scene_graphs", "metrics.json")))["images"] == len(graphs)

    # The memory estimate of the paper's 10-GPU setting (one layer of BERT-base, short instances).
    user(MEMORY)
    estimate = json.load(open(os.path.join(user.base, "runs", "memory", "vg_gpu10.json")))
    assert estimate["analytic_gib"] > 0 and estimate["xla_gib"] > 0
    assert estimate["config"]["packed_token_share"] == 1.0  # vg.py packs: the most a batch can need.

    # The benchmark in the authors' release layout, read back and trained on.
    user(EXPORT_RELEASE)
    for name in ("vg_dict.json", "VG_100_100_label.tsv", "test_bag_data.json", "test_pairs_data.json",
                 "obj_feat_test.tsv", "test_image_sort_by_IoU_and_distance.pkl", "test_image_idx_to_id.pkl"):
        assert os.path.isfile(os.path.join(demo, "release", name)), name
    user(RELEASE_RUN)
    from_release = json.load(open(os.path.join(release, "metrics.json")))
    for key in ("auc", "f1", "p@2%", "mauc", "mf1", "mp@2%"):
        assert np.isfinite(from_release["test"][key]), key
