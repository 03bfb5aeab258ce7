"""Throughput benchmark: analytic FLOPs against XLA's cost analysis, the report, the command line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from clever_jax.data import pipeline, synthetic, text
from clever_jax.models.clever import Clever, bag_loss
from clever_jax.perf import flops, throughput
from clever_jax.perf.flops import Shapes
from clever_jax.training import builder
from configs import demo

# XLA also counts elementwise work (GELU, LayerNorm, softmax, the optimiser) that the analytic
# count leaves out, so it reads a few percent higher at these sizes.
TOLERANCE = 0.15

# Real text needs 16 positions at most (8 regions): trimmed from 24 by length_multiple 8.
TINY = {"batch_size": 2, "eval_batch_size": 2, "bag_size": 8, "text_len": 24, "num_regions": 8}
REPORT_KEYS = (
    "device", "jax_version", "precision", "config", "data", "train", "eval", "peak", "peak_flops", "flops_analytic",
    "flops_xla", "flops_analytic_eval", "flops_xla_eval", "bags_per_s", "instances_per_s", "tokens_per_s",
    "real_tokens_per_s", "mfu", "mfu_eval", "useful_mfu", "useful_mfu_eval",
)
STEP_KEYS = (
    "median_s", "p25_s", "p75_s", "bags_per_s", "instances_per_s", "real_instances_per_s", "tokens_per_s",
    "real_tokens_per_s", "flops_analytic", "flops_xla", "mfu", "useful_mfu", "compile_s", "flops_parts",
)


def tiny_config(head: str = "clever"):
    """Tiny shapes at MiniLM's width (config.json only): at the tiny variant's width 32 the elementwise work
    that the analytic count leaves out is a third of the step."""
    config = demo.get_config("tiny")
    config.data.update(TINY)
    config.model.update(head=head, pretrained=False, pretrained_dir=text.default_model_dir())
    return config


@pytest.mark.slow  # End to end: a built run's steps compiled and timed.
@pytest.mark.parametrize("packing", [False, True])
def test_compiled_steps_flops_and_report(packing):
    config = tiny_config()
    config.data.packing = packing
    compiled = throughput.compile_steps(config, num_token_batches=3)
    for shapes in (compiled.train_shapes, compiled.eval_shapes):  # Trimmed as training trims.
        assert shapes.text_len == 16 and shapes.num_regions == 8 and compiled.shapes.text_len == 24
    assert compiled.train_batch["text_ids"].shape == (2, 8, 16) and compiled.eval_batch["regions"].shape[2] == 8
    # Packed: one group per step (one device, no accumulation), its slots a multiple of 1/32 of its tokens.
    slots = (compiled.train_batch["packed_text"].shape[1] + compiled.train_batch["packed_regions"].shape[1]
             if packing else 2 * 8 * (16 + 8))
    assert (compiled.train_shapes.text_tokens > 0) == packing
    assert slots < 2 * 8 * (16 + 8) if packing else slots == 2 * 8 * (16 + 8)  # Packed: fewer than the bucket's.
    step_flops = flops.step_flops(compiled.train_shapes, compiled.eval_shapes)
    for step, executable in (("train", compiled.train_step), ("eval", compiled.eval_step)):
        ratio = flops.xla_flops(executable) / step_flops[step]
        assert abs(ratio - 1) < TOLERANCE, (step, ratio)

    report = throughput.measure(compiled, repeats=2, warmup=1, peak_sizes=[128, 256])
    assert set(REPORT_KEYS) <= set(report) and report["config"]["packing"] == packing
    for step in ("train", "eval"):
        assert set(STEP_KEYS) <= set(report[step])
        assert report[step]["p25_s"] <= report[step]["median_s"] <= report[step]["p75_s"]
        assert report[step]["real_tokens_per_s"] < report[step]["tokens_per_s"]
    assert report["train"]["tokens_per_s"] == pytest.approx(slots / report["train"]["median_s"])
    data = report["data"]
    assert data["buckets"] == {"16x8": 3}
    assert data["computed_tokens"] == pytest.approx(3 * 2 * 8 * (16 + 8) / 3) if not packing else (
        data["real_tokens"] <= data["computed_tokens"] < 2 * 8 * (16 + 8))
    assert data["real_tokens"] <= data["computed_tokens"] < data["padded_tokens"] == 2 * 8 * (24 + 8)
    assert data["real_share_of_computed"] == pytest.approx(data["real_tokens"] / data["computed_tokens"])
    useful = flops.step_flops(compiled.train_shapes.real(compiled.train_batch))["train"]
    assert report["train"]["flops_useful"] == pytest.approx(useful) and useful < report["flops_analytic"]
    assert report["useful_mfu"] == pytest.approx(useful / report["train"]["median_s"] / report["peak_flops"])
    assert report["mfu"] > 0 and report["mfu_eval"] > 0 and 0 < report["useful_mfu"] <= report["mfu"]
    assert report["peak_flops"] > 0 and report["precision"] == "float32"
    assert len(report["peak"]["runs"]) == 2 and report["peak_flops"] == max(report["peak"]["runs"])
    assert report["config"]["region_dim"] == 8 + 6 and report["config"]["num_relations"] == 101
    assert report["config"]["length_multiple"] == 8 and report["train"]["text_len"] == 16
    json.dumps(report)  # Serialisable as is.


def test_useful_sizes_are_the_real_tokens_and_the_pairs_within_each_instance():
    shapes = Shapes.of(builder.build(tiny_config()))
    text, regions = np.zeros((1, 2, 4), bool), np.zeros((1, 2, 3), bool)
    text[0, 0, :2], regions[0, 0, :1], text[0, 1, :4], regions[0, 1, :1] = True, True, True, True  # 3 and 5 tokens.
    real = shapes.real({"text_mask": text, "region_mask": regions})
    assert (real.text_tokens, real.region_tokens, real.attention_pairs) == (6, 2, 3**2 + 5**2)
    assert real.pairs(real.batch_size) == 34 and shapes.pairs(2) == 2 * shapes.bag_size * shapes.seq_len**2


@pytest.mark.parametrize("head", ["clever", "avg", "att", "one"])
def test_analytic_flops_of_each_head(head):
    """Loss + gradient (no optimiser) and the eval forward of each head against XLA's count of the
    lowered (unoptimised) programs: no compilation needed."""
    run = builder.build(tiny_config(head))
    model, shapes = run.model, Shapes.of(run)
    shape, vocab_size = synthetic.with_vocabulary(run.shape, run.pretrained_dir)
    batch = jax.device_put(synthetic.synthetic_batch(shape, shapes.batch_size, np.random.default_rng(0), 12.0,
                                                     vocab_size))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), batch)["params"])

    def loss(p):
        logits = model.apply({"params": p}, batch, batch["target"], method=Clever.train_logits,
                             rngs={"dropout": jax.random.key(0)})
        return bag_loss(logits, batch["labels"], batch["target"], batch["bag_mask"], "sampled")

    step_flops = flops.step_flops(shapes)
    grad_flops = flops.xla_flops(jax.jit(jax.value_and_grad(loss)).lower(params))
    eval_flops = flops.xla_flops(jax.jit(lambda p: model.apply({"params": p}, batch)).lower(params))
    assert abs(grad_flops / step_flops["train"] - 1) < TOLERANCE, grad_flops / step_flops["train"]
    assert abs(eval_flops / step_flops["eval"] - 1) < TOLERANCE, eval_flops / step_flops["eval"]


def test_synthetic_batch_layout():
    shape = synthetic.instance_shape(tiny_config().data)
    batch = synthetic.synthetic_batch(shape, 3, np.random.default_rng(0), 6.0, 30522)
    layout = pipeline.bag_layout(shape)
    assert batch.keys() == layout.keys()
    for key, (bag_shape, dtype) in layout.items():
        assert batch[key].shape == (3, *bag_shape) and batch[key].dtype == dtype, key
    assert batch["text_ids"].shape == batch["text_mask"].shape == (3, 8, 24)
    assert batch["regions"].shape == (3, 8, 8, 14) and batch["region_mask"].shape == (3, 8, 8)
    assert batch["subject_span"].shape == batch["object_span"].shape == (3, 8, 2)
    assert batch["labels"].shape == (3, 101) and batch["target"].shape == batch["bag_mask"].shape == (3,)
    real = batch["instance_mask"]
    assert real[:, 0].all() and not batch["text_mask"][~real].any() and not batch["region_mask"][~real].any()
    assert (batch["region_mask"][real].sum(-1) >= 2).all()  # Subject and object regions.
    assert (batch["text_ids"][real][:, 0] == 101).all()  # [CLS]
    spans = batch["subject_span"][real]
    assert (spans[:, 0] >= 1).all() and (spans[:, 1] > spans[:, 0]).all()
    counts = throughput.token_counts([batch], 0)
    assert 0 < counts["real_token_share"] == counts["real_share_of_computed"] < 1 and counts["buckets"] == {"24x8": 1}
    assert (batch["regions"][~batch["region_mask"]] == 0).all() and batch["regions"][batch["region_mask"]].std() > 0.5


def test_synthetic_ids_are_the_vocabularys_and_features_can_wait():
    """The tiny encoder's 189 words: [CLS], [SEP] and every word id inside them (an id past the table
    embeds as NaN); without features the regions stay zero until `region_features` fills the real ones."""
    bert = synthetic.instance_shape(demo.get_config("tiny").data)
    shape, vocab_size = synthetic.with_vocabulary(bert, demo.TINY_BERT)
    assert (shape.cls_id, shape.sep_id, vocab_size) == (2, 3, 189)
    base_dir = os.path.join(os.path.dirname(demo.TINY_BERT), "bert_base")  # Only a config.json: BERT's ids.
    assert synthetic.with_vocabulary(bert, base_dir) == (bert, 30522) and (bert.cls_id, bert.sep_id) == (101, 102)
    rng = np.random.default_rng(0)
    batch = synthetic.synthetic_batch(shape, 4, rng, 6.0, vocab_size, features=False)
    real = batch["instance_mask"]
    assert (batch["text_ids"][real][:, 0] == 2).all() and batch["text_ids"].max() < vocab_size
    assert not batch["regions"].any()
    regions = synthetic.region_features(batch["region_mask"], 5, rng)
    assert regions.shape == (*batch["region_mask"].shape, 5) and regions.dtype == np.float32
    assert (regions[~batch["region_mask"]] == 0).all() and (regions[batch["region_mask"]] != 0).all()


# The command line's tiny run: 2 bags of 2 instances, 8 word pieces and 4 regions; two timed steps.
COMMAND_ARGS = ["--config=configs/demo.py:tiny", "--config.data.batch_size=2", "--config.data.bag_size=2",
                "--config.data.text_len=8", "--config.data.num_regions=4", "--config.data.world.feature_dim=8",
                "--repeats=2", "--warmup=1"]


def run_command(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m clever_jax.perf.throughput ARGS` from the repository's root (with `env` added to the
    environment), checked to succeed."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-m", "clever_jax.perf.throughput", *args], cwd=root,
                            capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_command_line(tmp_path):
    out = tmp_path / "throughput.json"
    result = run_command([*COMMAND_ARGS, "--config.data.eval_batch_size=2", "--peak_sizes=128,256", f"--out={out}"])
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("train step:"), last
    mfu = float(last.rsplit("mfu=", 1)[1])
    report = json.loads(out.read_text())
    assert mfu > 0 and report["mfu"] == pytest.approx(mfu, abs=1e-3)
    assert report["config"]["num_layers"] == 1 and report["config"]["batch_size"] == 2
    assert report["config"]["file"] == "configs/demo.py:tiny"


@pytest.mark.slow
def test_command_line_compares_packing(tmp_path):
    out = tmp_path / "packing.json"
    # 16 word pieces: at 8 the slots, in multiples of 8, are all of the 2 x 2 x 8 padded ones.
    result = run_command([*COMMAND_ARGS, "--config.data.text_len=16", "--config.data.eval_batch_size=2",
                          "--peak_sizes=128", "--compare_packing", f"--out={out}"])
    last = result.stdout.strip().splitlines()[-1]
    report = json.loads(out.read_text())
    assert float(last.rsplit("speedup=", 1)[1]) == pytest.approx(report["speedup"]["train"], abs=1e-3)
    padded, packed = report["padded"], report["packed"]
    assert (padded["config"]["packing"], packed["config"]["packing"]) == (False, True)
    for step in ("train", "eval"):  # The same batches, timed alternately.
        assert len(padded[step]["times_s"]) == len(packed[step]["times_s"]) == 2
        assert report["speedup"][step] == pytest.approx(padded[step]["median_s"] / packed[step]["median_s"])
        assert padded[step]["real_instances_per_s"] * padded[step]["median_s"] == pytest.approx(
            packed[step]["real_instances_per_s"] * packed[step]["median_s"])
    assert packed["data"]["real_tokens"] == padded["data"]["real_tokens"] <= packed["data"]["computed_tokens"]
    assert packed["data"]["computed_tokens"] < padded["data"]["computed_tokens"]
    assert packed["config"]["file"] == "configs/demo.py:tiny"


@pytest.mark.multiprocess
def test_weak_scaling_on_eight_forced_devices(tmp_path):
    out = tmp_path / "scaling.json"
    args = [*COMMAND_ARGS, "--weak_scaling=8", f"--out={out}"]
    result = run_command(args, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"})
    last = result.stdout.strip().splitlines()[-1]
    report = json.loads(out.read_text())
    assert float(last.rsplit("time_ratio=", 1)[1]) == pytest.approx(report["time_ratio"], abs=1e-3)
    assert report["devices"] == 8 and report["mesh"] == {"data": 8, "fsdp": 1} and report["platform"] == "cpu"
    assert report["per_device_batch"] == 2 and report["global_batch"] == 16
    for run, bags in (("single", 2), ("sharded", 16)):
        times = report[run]
        assert times["p25_s"] <= times["median_s"] <= times["p75_s"] and len(times["times_s"]) == 2
        assert times["bags_per_s"] == pytest.approx(bags / times["median_s"])
    assert report["time_ratio"] == pytest.approx(report["sharded"]["median_s"] / report["single"]["median_s"])
    # Eight forced devices share this machine's cores: ideally eight times the single-device time.
    assert report["ideal_time_ratio"] == 8
    assert report["normalised_time_ratio"] == pytest.approx(report["time_ratio"] / 8)
    assert report["config"]["file"] == "configs/demo.py:tiny"


def test_weak_scaling_needs_the_devices():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=8"):
        throughput.weak_scaling(tiny_config(), 8)
