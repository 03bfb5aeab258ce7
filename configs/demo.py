"""The embedded default: a generated Visual-Genome-like world, small enough for 2 CPU cores.

  python -m clever_jax.main --config=configs/demo.py --workdir=runs/demo
"""

import ml_collections

from clever_jax.data import world


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.source = "world"  # "world" (generated here) or "vg" (Visual Genome files on disk).
    data.world = world.world_config("demo")
    data.world_dir = ""  # Default: WORKDIR/world.
    data.vg_dir = ""
    data.features_path = ""
    data.feature_dim = 0  # Expected appearance size of the features file; 0 = take it from the file.
    data.split_ratios = (0.71, 0.07, 0.22)  # Entity pairs per split, as in the paper (6443/678/1964).
    data.na_ratio = 1.0  # NA bags per positive bag in each split.
    data.min_fact_count = 1  # Relationships needed for a triplet to be a fact (1: every distinct triplet).
    data.bag_size = 8  # N instances per bag (the paper: 50; gains flatten past ~20).
    data.sampler = "overlap"  # "overlap" (IoU, then centre distance) or "random".
    data.seed = 0  # Splits, NA pairs and random bag sampling.
    data.text_len = 32  # Lt word pieces per instance, [CLS] and [SEP] included.
    data.num_regions = 12  # Lr regions per instance.
    data.length_multiple = 8  # Cut each batch's trailing padding to multiples of this (0: always Lt and Lr).
    data.batch_size = 8  # Bags per training batch (global, over all processes).
    data.eval_batch_size = 16
    data.worker_count = 0  # Grain worker processes; 0 reads in the main process.

    config.model = model = ml_collections.ConfigDict()
    model.checkpoint_dir = ""  # BERT folder (config.json, vocab.txt, model.safetensors); "" = packaged MiniLM.
    model.pretrained = True  # Start the encoder from that checkpoint's weights.
    model.num_layers = 2  # Keep the first k encoder layers; 0 = all.
    model.region_layer_norm = True
    model.head = "clever"  # Training head: avg, one, att, clever.
    model.eval_head = ""  # Evaluation head ("" = the training head; "max" for max pooling).
    model.temperature = 11.0  # tau of the contrastive attention (the published script's value).
    model.bag_dropout = 0.2
    model.dtype = "float32"  # Compute: float32, bfloat16 or float16 (clever_jax/precision.py).
    model.remat = False  # Rematerialise encoder layers (saves memory, costs compute).

    config.train = train = ml_collections.ConfigDict()
    train.lr = 2e-4
    train.weight_decay = 0.01
    train.grad_clip = 1.0
    train.freeze_word_embeddings = True
    train.warmup_steps = 50  # Linear warm-up from lr/10 to lr.
    train.loss = "sampled"  # "sampled" gold relation (the paper) or "all_gold".
    train.max_epochs = 3
    train.eval_every_steps = 0  # 0 = once per epoch.
    train.mauc_weight = 1.0  # Validation score = AUC + w * mAUC.
    train.patience = 2
    train.cooldown = 1
    train.decay = 0.1
    train.max_decays = 3  # Stop after the third decay.
    train.log_every = 10
    train.init_from = ""  # Workdir of another run whose best checkpoint initialises this one.
    train.grad_accum_steps = 1  # Micro-batches per optimiser step (batch_size / this bags each).
    train.loss_scale_init = 2.0**15  # float16 only: initial dynamic loss scale,
    train.loss_scale_period = 2000  # doubled after this many finite steps in a row, halved on overflow.

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # Devices along the data axis (-1: all that are left).
    mesh.fsdp = 1  # Devices along the parameter-sharding axis.
    mesh.params = "replicated"  # "replicated" or "fsdp": parameters and optimiser state split over fsdp.

    config.distributed = distributed = ml_collections.ConfigDict()
    distributed.enabled = False  # Multi-host: connect the processes with jax.distributed.initialize.
    distributed.coordinator_address = ""  # "host:port" of process 0; "" = detect (TPU, Slurm, MPI, env).
    distributed.num_processes = 0  # 0 = detect.
    distributed.process_id = -1  # -1 = detect.
    distributed.local_device_ids = ""  # This process's devices, e.g. "0,1"; "" = all it sees.

    config.extract = extract = ml_collections.ConfigDict()
    extract.split = "test"  # A split, or "all": every pair of the benchmark.
    extract.top_k = 0  # Triplets written, best first; 0 = every (pair, relation) of the split.
    extract.num_evidence = 3  # Evidence instances per triplet.
    return config
