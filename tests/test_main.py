"""The command line, end to end on a small generated world."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # Subprocesses: the command line end to end.

TINY = "--config=configs/demo.py:tiny"


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clever_jax.main", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_vg_config_without_files_says_what_to_put_where(tmp_path):
    result = run_main("--config=configs/vg.py", "--mode=prepare", f"--workdir={tmp_path}",
                      f"--config.data.vg_dir={tmp_path / 'vg'}")
    assert result.returncode != 0
    assert "Put these files in config.data.vg_dir" in result.stderr
    assert "relationships.json" in result.stderr and "features_path" in result.stderr


def test_the_old_name_of_the_pretrained_folder_says_the_new_one(tmp_path):
    result = run_main(TINY, f"--workdir={tmp_path}", "--config.model.checkpoint_dir=/models/vinvl-base")
    assert result.returncode != 0
    assert "--config.model.checkpoint_dir: renamed to --config.model.pretrained_dir" in result.stderr


def test_sigterm_saves_the_latest_state_and_the_next_run_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    args = [sys.executable, "-m", "clever_jax.main", TINY, "--mode=train", f"--workdir={workdir}",
            "--config.train.log_every=1", "--config.train.max_epochs=3"]
    log = open(tmp_path / "log.txt", "w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 240
    while "step 3/" not in (tmp_path / "log.txt").read_text() and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    text = (tmp_path / "log.txt").read_text()
    assert "Interrupted at step" in text, text[-3000:]
    step = int(text.split("Interrupted at step ")[1].split(";")[0])
    assert os.listdir(os.path.join(workdir, "checkpoints", "latest")) == [str(step)]
    resumed = run_main(*args[3:], "--config.train.max_epochs=0", "--config.train.allow_changed_config=True")
    assert f"Resumed from step {step}" in resumed.stderr, resumed.stderr[-3000:]
