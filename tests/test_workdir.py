"""A workdir belongs to one run: its lock and its settings."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from clever_jax import job, workdir
from configs import demo


def test_a_live_lock_refuses_a_second_command_and_a_stale_one_is_taken_over(tmp_path):
    run_dir = str(tmp_path / "run")
    with workdir.lock(run_dir):
        owner = json.load(open(os.path.join(run_dir, workdir.LOCK)))
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(workdir.WorkdirInUse, match=rf"in use by process {os.getpid()} on "):
            with workdir.lock(run_dir):
                pass
        # job.run stops before anything is written (no world, no records).
        with pytest.raises(workdir.WorkdirInUse):
            job.run(demo.get_config("tiny"), run_dir, "prepare")
        assert sorted(os.listdir(run_dir)) == [workdir.LOCK]
    assert os.listdir(run_dir) == []  # Released.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(run_dir, workdir.LOCK), "w") as f:
        json.dump({"pid": int(gone.stdout), "host": socket.gethostname(), "started": "earlier"}, f)
    with workdir.lock(run_dir):  # Its process has exited: taken over.
        assert json.load(open(os.path.join(run_dir, workdir.LOCK)))["pid"] == os.getpid()
    with open(os.path.join(run_dir, workdir.LOCK), "w") as f:  # This very pid, not held: a restarted container.
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": "before the restart"}, f)
    with workdir.lock(run_dir):
        pass
    open(os.path.join(run_dir, workdir.LOCK), "w").close()  # Left empty by a writer killed a minute ago.
    os.utime(os.path.join(run_dir, workdir.LOCK), (time.time() - 120,) * 2)
    with workdir.lock(run_dir):
        pass
    with open(os.path.join(run_dir, workdir.LOCK), "w") as f:
        json.dump({"pid": 1, "host": "another-host", "started": "earlier"}, f)
    with pytest.raises(workdir.WorkdirInUse, match=r"on another-host .* delete .*run\.lock"):
        with workdir.lock(run_dir):
            pass


RACER = """
import os, sys, time
from clever_jax import workdir
run_dir, tried, racers = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with workdir.lock(run_dir):
        open(os.path.join(tried, str(os.getpid())), "w").close()
        deadline = time.time() + 120
        while len(os.listdir(tried)) < racers and time.time() < deadline:  # Held until every racer has tried.
            time.sleep(0.05)
        print("took it")
except workdir.WorkdirInUse:
    open(os.path.join(tried, str(os.getpid())), "w").close()
    print("refused")
"""


def test_commands_racing_for_a_stale_lock_cannot_both_take_it(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / workdir.LOCK, "w") as f:
        json.dump({"pid": int(gone.stdout), "host": socket.gethostname(), "started": "earlier"}, f)
    (tmp_path / "tried").mkdir()
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "run"), str(tmp_path / "tried"), "4"],
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=180)[0].strip() for p in racers)
    assert outcomes == ["refused"] * 3 + ["took it"]
    assert not (tmp_path / "run" / workdir.LOCK).exists()


def test_releasing_a_lock_leaves_a_lock_file_that_is_not_its_own(tmp_path):
    first = workdir.lock(str(tmp_path))
    first.__enter__()
    os.remove(tmp_path / workdir.LOCK)  # Deleted by hand (as the in-use message suggests), then taken again.
    second = workdir.lock(str(tmp_path))
    second.__enter__()
    first.__exit__(None, None, None)
    assert json.load(open(tmp_path / workdir.LOCK))["pid"] == os.getpid()  # The second's file stays.
    with pytest.raises(workdir.WorkdirInUse):
        with workdir.lock(str(tmp_path)):
            pass
    second.__exit__(None, None, None)
    assert not (tmp_path / workdir.LOCK).exists()


def test_settings_kept_where_earlier_versions_wrote_them_move_to_the_checkpoints(tmp_path):
    config = demo.get_config("tiny")
    os.makedirs(tmp_path / "checkpoints" / "latest" / "12")
    with open(tmp_path / "run_settings.json", "w") as f:
        json.dump(workdir.result_settings(config), f)
    config.train.lr = 1.0
    with pytest.raises(workdir.ChangedSettings, match=r"train\.lr"):
        workdir.check_settings(config, str(tmp_path), write=True)
    assert (tmp_path / workdir.SETTINGS).is_file() and not (tmp_path / "run_settings.json").exists()


def test_changed_result_settings_stop_and_list_the_differences(tmp_path):
    run_dir = str(tmp_path)
    config = demo.get_config("tiny")
    workdir.check_settings(config, run_dir, write=True)
    saved = json.load(open(tmp_path / workdir.SETTINGS))
    assert saved["train.lr"] == config.train.lr and saved["seed"] == 0 and "train.log_every" not in saved
    changed = demo.get_config("tiny")
    changed.train.lr = 5e-4
    workdir.check_settings(changed, run_dir, write=True)  # No checkpoint yet: a retry may change anything.
    assert json.load(open(tmp_path / workdir.SETTINGS))["train.lr"] == 5e-4
    workdir.check_settings(config, run_dir, write=True)
    os.makedirs(tmp_path / "checkpoints" / "latest" / "12")  # Now the workdir holds a run.
    faster = demo.get_config("tiny")
    faster.train.log_every, faster.model.remat = 1, True  # Not result settings.
    workdir.check_settings(faster, run_dir, write=True)
    changed = demo.get_config("tiny")
    changed.train.lr, changed.model.head = 5e-4, "avg"
    with pytest.raises(workdir.ChangedSettings) as error:
        workdir.check_settings(changed, run_dir, write=True)
    message = str(error.value)
    assert "model.head: 'clever' (the run's) -> 'avg' (now)" in message
    assert f"train.lr: {config.train.lr!r} (the run's) -> 0.0005 (now)" in message and "allow_changed_config" in message
    # Evaluating a CLEVER run as AVG stops before any work.
    with pytest.raises(workdir.ChangedSettings, match="model.head"):
        job.run(changed, run_dir, "eval")
    # A setting the code added since the run (absent from its file) is not compared.
    newer = json.load(open(tmp_path / workdir.SETTINGS))
    del newer["model.encoder"]
    with open(tmp_path / workdir.SETTINGS, "w") as f:
        json.dump(newer, f)
    workdir.check_settings(config, run_dir, write=False)
    changed.train.allow_changed_config = True
    workdir.check_settings(changed, run_dir, write=True)  # The deliberate case: logged, saved.
    assert json.load(open(tmp_path / workdir.SETTINGS))["model.head"] == "avg"


def test_taking_the_lock_removes_what_killed_commands_of_this_host_left(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    host = socket.gethostname()
    left = [tmp_path / f"val_scores.npz.{host}.{dead}.tmp", tmp_path / "checkpoints" / f"x.json.{host}.{dead}.tmp",
            tmp_path / "kb" / "versions" / f"5.{host}.{dead}.tmp" / "kb.jsonl"]  # A partial knowledge base.
    live = tmp_path / f"metrics.json.{host}.{os.getppid()}.tmp"  # Still being written by a live process.
    for path in [*left, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with workdir.lock(str(tmp_path)):
        assert not any(path.exists() for path in left) and live.exists()
    assert not (tmp_path / "kb" / "versions" / f"5.{host}.{dead}.tmp").exists()
