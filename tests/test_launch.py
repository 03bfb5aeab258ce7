"""The launchers (dry runs and their checks) and the batch arithmetic of the configs/vg_* variants."""

from __future__ import annotations

import glob
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES = ("gcloud", "gsutil", "gcsfuse", "git", "make", "nvidia-smi", "nohup")
# Device counts each config is meant for: 10 RTX 2080 Ti; 1-8 GPUs; TPU v4 slices up to v4-128.
DEVICES = {"vg_gpu10": (10,), "vg_gpu": (1, 2, 4, 8), "vg_tpu": (4, 8, 16, 32, 64)}


@pytest.fixture
def fake_path(tmp_path):
    """A PATH whose external commands only record their calls in tmp_path/calls (`nvidia-smi -L`
    lists $FAKE_GPUS GPUs); returns (env, calls file)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in FAKES:
        script = bin_dir / name
        listing = 'i=0; while [ $i -lt "$FAKE_GPUS" ]; do echo "GPU $i: Fake (UUID: $i)"; i=$((i+1)); done'
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n' + (listing if name == "nvidia-smi" else ""))
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_GPUS": "0"}
    return env, calls


def launch(script: str, *args: str, env: dict, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60)


def remote(line: str) -> str:
    """The command a `gcloud ... ssh --command=...` line runs on the workers."""
    return next(a for a in shlex.split(line) if a.startswith("--command="))[len("--command="):]


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "vg").mkdir()
    (tmp_path / "features.tsv").write_text("")
    (tmp_path / "vinvl").mkdir()
    return [f"--vg_dir={tmp_path / 'vg'}", f"--features_path={tmp_path / 'features.tsv'}",
            f"--pretrained_dir={tmp_path / 'vinvl'}"]


@pytest.mark.slow
def test_gpu_host_dry_run_prints_the_commands_and_runs_nothing(tmp_path, fake_path, inputs):
    env, calls = fake_path
    result = launch("gpu_host.py", "--workdir=runs/x", *inputs, "--dry_run", "--", "--config.train.lr=5e-5",
                    env={**env, "FAKE_GPUS": "10"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    workdir = tmp_path / "runs" / "x"  # Made absolute: the commands run in the repository root.
    assert lines[:4] == [f"cd {ROOT}", "nvidia-smi -L", "make install-cuda PYTHON=python3", f"mkdir -p {workdir}"]
    assert len(lines) == 5
    words = shlex.split(lines[-1])
    assert words[:6] == ["CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7,8,9", "XLA_CLIENT_MEM_FRACTION=0.95", "nohup",
                         ".venv/bin/python", "-m", "clever_jax.main"]
    assert "--config=configs/vg_gpu10.py" in words and f"--workdir={workdir}" in words
    assert f"--config.data.vg_dir={tmp_path / 'vg'}" in words and "--config.train.lr=5e-5" in words
    assert words[-6:] == ["<", "/dev/null", ">>", f"{workdir}/train.log", "2>&1", "&"]
    assert not calls.exists() and not workdir.exists()


@pytest.mark.slow
def test_gpu_host_runs_what_the_dry_run_prints(tmp_path, fake_path, inputs):
    env, calls = fake_path
    args = [f"--workdir={tmp_path / 'run'}", "--num_gpus=2", *inputs]
    printed = launch("gpu_host.py", *args, "--dry_run", env=env).stdout.splitlines()
    result = launch("gpu_host.py", *args, env={**env, "FAKE_GPUS": "2"})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("+ ")] == [f"+ {c}" for c in printed]
    deadline = time.time() + 30  # nohup runs in the background.
    while "nohup" not in calls.read_text() and time.time() < deadline:
        time.sleep(0.1)
    nohup = shlex.split(printed[-1])[2:-6]
    assert calls.read_text().splitlines() == ["nvidia-smi -L", "make install-cuda PYTHON=python3", shlex.join(nohup)]
    assert (tmp_path / "run" / "train.log").exists()


@pytest.mark.slow
def test_gpu_host_stops_before_installing_when_gpus_or_inputs_are_missing(tmp_path, fake_path, inputs):
    env, calls = fake_path
    result = launch("gpu_host.py", f"--workdir={tmp_path / 'run'}", *inputs, env={**env, "FAKE_GPUS": "4"})
    assert result.returncode != 0 and "Expected 10 GPUs (--num_gpus), nvidia-smi -L lists 4" in result.stderr
    assert calls.read_text().splitlines() == ["nvidia-smi -L"]
    calls.unlink()
    result = launch("gpu_host.py", f"--workdir={tmp_path / 'run'}", *inputs[:2], f"--pretrained_dir={tmp_path}/no",
                    env=env)
    assert result.returncode != 0 and f"{tmp_path}/no not found: expected a checkpoint folder" in result.stderr
    assert not calls.exists()
    result = launch("gpu_host.py", "--workdir=runs/x", "--dry_run", env=env)
    assert result.returncode == 2
    assert "missing --vg_dir, --features_path, --pretrained_dir" in result.stderr


TPU = ["--name=clever", "--zone=us-central2-b", "--data_uri=gs://data/clever", "--ckpt_bucket=ckpts", "--dry_run"]


@pytest.mark.slow
def test_tpu_pod_all_creates_sets_up_and_starts_every_worker(fake_path):
    env, calls = fake_path
    result = launch("tpu_pod.py", "all", *TPU, "--spot", "--run=r1", "--", "--config.train.lr=5e-5", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cd {ROOT}"
    assert lines[1] == ("gcloud compute tpus tpu-vm create clever --accelerator-type=v4-32 "
                        "--version=tpu-ubuntu2204-base --spot --zone=us-central2-b")
    ssh = [line for line in lines if line.startswith("gcloud compute tpus tpu-vm ssh clever ")]
    assert len(ssh) == 5 and all("--worker=all" in line for line in ssh)
    assert "install-tpu PYTHON=python3.11" in remote(ssh[1])
    assert "gcloud storage rsync --recursive gs://data/clever clever_data" in remote(ssh[2])
    mount = remote(ssh[3])
    assert "gcsfuse --implicit-dirs" in mount and " ckpts clever_ckpt" in mount
    assert "ln -sfn $HOME/clever_ckpt/r1/checkpoints clever_jax/runs/r1/checkpoints" in mount
    start = shlex.split(remote(ssh[4]))
    assert start[:5] == ["cd", "clever_jax", "&&", "{", "nohup"]
    assert "--config=configs/vg_tpu.py" in start and "--config.distributed.enabled=True" in start
    assert "--workdir=runs/r1" in start and "--config.train.lr=5e-5" in start
    assert "--config.model.pretrained_dir=$HOME/clever_data/checkpoint" in start
    assert start[-7:] == ["<", "/dev/null", ">>", "runs/r1/train.log", "2>&1", "&", "}"]
    assert any(line.startswith("git archive ") for line in lines)
    assert any(" scp " in line and "--worker=all" in line for line in lines)
    assert not calls.exists()


@pytest.mark.slow
def test_tpu_pod_collect_and_delete(fake_path):
    env, calls = fake_path
    lines = launch("tpu_pod.py", "collect", *TPU, "--run=r1", "--out=/tmp/out", env=env).stdout.splitlines()
    assert "--worker=0" in lines[1] and "clever_ckpt/r1/results" in remote(lines[1])
    assert lines[2:] == ["mkdir -p /tmp/out/r1", "gcloud storage rsync --recursive gs://ckpts/r1 /tmp/out/r1"]
    lines = launch("tpu_pod.py", "delete", *TPU, env=env).stdout.splitlines()
    assert lines[1:] == ["gcloud compute tpus tpu-vm delete clever --quiet --zone=us-central2-b"]
    assert not calls.exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["run", "--name=clever", "--dry_run"], "missing --zone, --ckpt_bucket"),
    (["setup", "--name=clever", "--zone=z", "--dry_run"], "missing --data_uri"),
    (["run", "--name=a b", "--zone=z", "--ckpt_bucket=b", "--dry_run"], "'a b': use letters, digits"),
    (["start", "--name=clever", "--zone=z", "--dry_run"], "invalid choice: 'start'"),
])
def test_tpu_pod_says_which_flags_are_missing_or_wrong(fake_path, args, message):
    env, calls = fake_path
    result = launch("tpu_pod.py", *args, env=env)
    assert result.returncode == 2 and message in result.stderr and not result.stdout
    assert not calls.exists()


def test_vg_configs_split_their_batches_over_the_devices_they_target():
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "vg_*.py")))
    assert names == sorted(DEVICES)
    base = importlib.import_module("configs.vg").get_config()
    for name in names:
        config = importlib.import_module(f"configs.{name}").get_config()
        steps = config.train.grad_accum_steps
        for devices in DEVICES[name]:
            assert config.data.batch_size % (steps * devices) == 0, (name, devices)
            assert config.data.eval_batch_size % devices == 0, (name, devices)
        keep = ("source", "bag_size", "text_len", "num_regions", "feature_dim")
        assert {k: config.data[k] for k in keep} == {k: base.data[k] for k in keep}, name
    gpu10 = importlib.import_module("configs.vg_gpu10").get_config()
    assert (gpu10.mesh.data, gpu10.model.dtype, gpu10.data.batch_size // gpu10.train.grad_accum_steps) == (
        10, "float16", 10)
    assert importlib.import_module("configs.vg_tpu").get_config().distributed.enabled


@pytest.mark.slow
def test_accelerator_installs_add_the_jax_extras(tmp_path):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert (extras["cuda"], extras["tpu"]) == (["jax[cuda12]"], ["jax[tpu]"])
    for target, extra in (("install-cuda", "cuda"), ("install-tpu", "tpu")):
        dry = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={tmp_path}/venv"], cwd=ROOT,
                             capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines()[-1] == f'{tmp_path}/venv/bin/python -m pip install --quiet -e ".[{extra}]"'


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_step(fake_path):
    env, calls = fake_path
    result = launch("gpu_check.py", "--dry_run", env={**env, "FAKE_GPUS": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"cd {ROOT}", "nvidia-smi -L",
                         ".venv/bin/python -c \"import jax; assert jax.default_backend() == 'gpu'\" 2>/dev/null "
                         "|| make .venv/.test-installed install-cuda"]
    for shapes in ("configs/demo.py", "configs/vg_gpu.py --config.model.pretrained_dir=configs/bert_base"):
        for dtype in ("float32", "bfloat16", "float16"):
            assert sum(f"-m clever_jax.perf.throughput --config={shapes}" in line
                       and f"--config.model.dtype={dtype}" in line for line in lines) == 1, (shapes, dtype)
    assert any("-m clever_jax.perf.memory --config=configs/vg_gpu10.py" in line for line in lines)
    demo = lines.index(".venv/bin/python -m clever_jax.main --config=configs/demo.py --workdir=runs/gpu_check/demo")
    paper_bf16 = next(i for i, line in enumerate(lines) if "vg_gpu.py" in line and "dtype=bfloat16" in line)
    assert [i for i, line in enumerate(lines) if "--compare_packing" in line] == [paper_bf16]
    paper_f32 = next(i for i, line in enumerate(lines) if "vg_gpu.py" in line and "dtype=float32" in line)
    assert 3 < paper_bf16 < demo < paper_f32  # The most wanted figures first: a short budget ends the list.
    assert lines[-1].startswith("XLA_PYTHON_CLIENT_PREALLOCATE=false .venv/bin/python -m pytest -q")  # Last.
    assert not os.path.exists(calls) or "make" not in open(calls).read()  # A dry run runs nothing.
    no_gpu = launch("gpu_check.py", env=env)
    assert no_gpu.returncode != 0 and "lists no GPU" in no_gpu.stderr


def test_gpu_check_report_gives_mfu_against_the_cards_published_peak(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "launch"))
    try:
        gpu_check = importlib.import_module("gpu_check")
    finally:
        sys.path.pop(0)
    assert gpu_check.published_peak("NVIDIA H100 80GB HBM3")["bfloat16"] == 989.4
    assert gpu_check.published_peak("NVIDIA H100 PCIe")["bfloat16"] == 756.0
    assert gpu_check.published_peak("Tesla T4") == {}
    bench = {"train": {"median_s": 0.5, "flops_per_s": 494.7e12}, "instances_per_s": 800.0, "mfu": 0.6,
             "peak_flops": 800e12}
    (tmp_path / "bench_paper_bfloat16.json").write_text(json.dumps(  # --compare_packing's report.
        {"padded": {**bench, "train": {"median_s": 0.7}}, "packed": bench, "speedup": {"train": 1.4, "eval": 1.2}}))
    (tmp_path / "bench_demo_float32.json").write_text(json.dumps(bench))
    (tmp_path / "memory_vg_gpu10.json").write_text(json.dumps({"analytic_gib": 5.1, "xla_gib": 12.0}))
    figures = gpu_check.summarise({"steps": []}, str(tmp_path), "NVIDIA H200")["figures"]
    assert figures["bench_paper_bfloat16"]["mfu_vs_published_bfloat16"] == pytest.approx(0.5)
    assert figures["bench_demo_float32"]["mfu_vs_published_tf32"] == pytest.approx(1.0)
    assert figures["bench_paper_bfloat16"]["measured_peak_tflops"] == pytest.approx(800)
    assert figures["bench_paper_bfloat16"]["packing_speedup"] == 1.4
    assert figures["bench_paper_bfloat16"]["padded_train_step_s"] == 0.7
    assert figures["bench_paper_bfloat16"]["train_step_s"] == 0.5
    assert figures["memory_vg_gpu10_gib"] == {"analytic": 5.1, "xla": 12.0, "fits_11gb": False}
    assert "bench_paper_float16" not in figures
