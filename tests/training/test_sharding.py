"""Sharded training on a mesh of 8 forced CPU devices equals the single-device step."""

import json
import os
import subprocess
import sys

import pytest

from clever_jax.training import sharding
from configs import demo


@pytest.fixture(scope="module")
def multidevice():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # XLA's lowest optimisation level, as in test_multihost.py: the check compiles 5 sharded steps (34 -> 24 s).
    flags = ("--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
             "--xla_llvm_disable_expensive_passes=true")
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root}
    result = subprocess.run([sys.executable, os.path.join(root, "tests", "training", "multidevice_check.py")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.multiprocess
def test_data_parallel_step_equals_single_device(multidevice):
    assert multidevice["devices"] == 8
    assert multidevice["data8"]["allclose"], multidevice["data8"]["max_abs_diff"]
    assert all("fsdp" not in spec and "data" not in spec for spec in multidevice["data8"]["specs"].values())


@pytest.mark.multiprocess
def test_fsdp_step_equals_single_device_and_shards_parameters(multidevice):
    fsdp = multidevice["fsdp"]
    assert fsdp["allclose"], fsdp["max_abs_diff"]
    specs = fsdp["specs"]
    # Leaves of 2**14 values or more are split over the fsdp axis; small ones stay replicated.
    assert "fsdp" in specs["['instance_encoder']['embeddings']['word_embeddings']['embedding']"]
    assert "fsdp" in specs["['classifier']['hidden']['kernel']"]
    assert "fsdp" not in specs["['classifier']['hidden']['bias']"]


@pytest.mark.multiprocess
def test_accumulated_step_on_four_devices_equals_one_device(multidevice):
    assert multidevice["accumulate"]["allclose"], multidevice["accumulate"]["max_abs_diff"]


@pytest.mark.multiprocess
def test_packed_steps_on_eight_devices_equal_the_padded_step_on_one(multidevice):
    # Replicated, accumulated and FSDP parameters.
    # Each device packs its own bags (and each micro-batch's), so the gathers stay on the device: the packed step
    # sends between devices what the padded one sends (the gradients' all-reduce).
    for name in ("packed8", "packed_accumulate", "packed_fsdp"):
        assert multidevice[name]["allclose"], (name, multidevice[name]["max_abs_diff"])
    assert multidevice["packed8"]["collectives"] == multidevice["data8"]["collectives"]
    assert set(multidevice["packed8"]["collectives"]) == {"all-reduce"}


def test_mesh_sizes_must_cover_the_devices():
    config = demo.get_config()
    config.mesh.update(data=3, fsdp=1)
    with pytest.raises(ValueError, match="does not cover the 1 devices"):
        sharding.make_mesh(config)
    config.mesh.update(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.make_mesh(config)
    config.mesh.update(data=-1, fsdp=1, params="zero3")
    with pytest.raises(ValueError, match="config.mesh.params must be one of"):
        sharding.tree_shardings({"w": None}, sharding.make_mesh(config), config.mesh.params, config.mesh.fsdp_min_size)
