"""Every setting a run reads, each with its default.

The defaults are the published CLEVER recipe wherever the paper's appendix or the authors'
training script fixes a value (said in the comment); the other configs derive from this one and
change only what they state: configs/demo.py (the embedded world on a CPU), configs/vg.py (Visual
Genome), configs/vg_gpu10.py, vg_gpu.py, vg_tpu.py (hardware). Any value can be overridden on the
command line, e.g. --config.train.lr=5e-5.
"""

import ml_collections

from configs import world


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # Parameter initialisation and dropout masks (each step folds its step number in).

    config.data = data = ml_collections.ConfigDict()
    data.source = "world"  # "world" (generated into world_dir), "vg" (Visual Genome files) or "release" (the authors').
    data.world = world.get_config("demo")  # The generated world's settings (configs/world.py).
    data.world_dir = ""  # Folder of the generated world; "" = WORKDIR/world.
    data.vg_dir = ""  # Folder of Visual Genome's image_data.json, objects.json and relationships.json.
    data.features_path = ""  # VinVL-style TSV of region features (README, "Input formats").
    data.release_dir = ""  # Folder of the authors' release files (configs/clever_release.py).
    data.feature_dim = 0  # Appearance size expected in the features file; 0 = take it from the file.
    data.split_ratios = (0.71, 0.07, 0.22)  # Entity pairs per split (the paper's 6443 / 678 / 1964).
    data.na_ratio = 1.0  # NA bags per positive bag in each split.
    data.min_fact_count = 1  # Relationships needed for a triplet to be a fact (1: every distinct triplet).
    # Triplets added as distant labels of the training split (a TSV of subject, relation and object names; what
    # --mode=bootstrap writes, kb/bootstrap.py); "" = none.
    data.added_facts = ""
    data.bag_size = 50  # N instances per bag (paper).
    data.sampler = "overlap"  # Instance ranking: "overlap" (IoU, then centre distance; paper) or "random".
    data.seed = 0  # Splits, NA pairs and random bag sampling.
    data.text_len = 70  # Lt word pieces per instance, [CLS] and [SEP] included (published code).
    data.num_regions = 50  # Lr regions per instance (published code).
    data.length_multiple = 0  # Cut each batch's trailing padding to multiples of this; 0 = always Lt and Lr.
    # Compute only the real tokens of each batch (models/packing.py: the same results); for the VLP encoder, the
    # others have no token sequence. Capacities: what the first 20 training batches need at most, raised for good
    # by a batch that needs more. Off here, on in configs/vg.py and configs/demo.py (docs/performance.md, "Packing").
    data.packing = False
    # Packed attention runs in rows of one instance each, in this many length classes (a group's instances sorted
    # by length, equal counts), each class's rows as long as its sampled longest instance (data/packing.py).
    data.packing_classes = 8
    data.batch_size = 60  # Bags per training batch, over all processes (paper).
    data.eval_batch_size = 60  # Bags per evaluation batch, over all processes.
    data.shuffle_seed = 0  # Order of the training bags and their sampled gold relations (not tied to seed).
    data.worker_count = 0  # Grain worker processes; 0 reads in the main process.

    config.model = model = ml_collections.ConfigDict()
    model.pretrained_dir = ""  # BERT or VinVL folder (config.json, vocab.txt, weights); "" = the packaged MiniLM.
    model.pretrained = True  # Start the encoder from that folder's weights (False: random initialisation).
    # Instance encoder: "vlp" (BERT over tags + regions, paper), "cnn" (Table 2's ablation), or "text": no
    # images, a language-model baseline over the entity names (models/language.py; head "cls" or "prompt").
    model.encoder = "vlp"
    model.num_layers = 0  # Keep the first k encoder layers; 0 = all of them.
    model.hidden_dropout = 0.1  # BERT dropout on embeddings, regions and layer outputs (published: 0.1).
    model.attention_dropout = 0.1  # BERT dropout on attention probabilities (published: 0.1).
    model.region_layer_norm = True  # LayerNorm after the region projection (Oscar's use_img_layernorm).
    model.pair_geometry = False  # Embed the query pair's relative geometry into its two regions (published: no).
    model.classifier_width = 8  # Shared classifier 4H -> width x H -> ReLU -> R + 1 (published: 8).
    # Training head: avg, one, att, clever, or vrd (instance-level baseline on annotations); with encoder "text":
    # cls (Vanilla-FT) or prompt (Prompt-FT; LAMA with train.max_epochs=0).
    model.head = "clever"
    model.eval_head = ""  # Evaluation head; "" = the training head ("max" for max pooling).
    model.temperature = 11.0  # Tau of the contrastive attention (published script: 11).
    model.bag_dropout = 0.2  # Dropout on the avg/one/att bag representation in training (published 0.2; clever none).
    model.dtype = "float32"  # Compute dtype: float32, bfloat16 or float16 (clever_jax/training/precision.py).
    model.remat = False  # Recompute encoder layers in the backward pass (less memory, more compute).

    config.train = train = ml_collections.ConfigDict()
    train.lr = 7e-5  # Peak learning rate (paper appendix; the script's grid: 4e-5, 5e-5, 6e-5).
    train.adam_b1 = 0.9  # AdamW's beta1 (published script).
    train.adam_b2 = 0.98  # AdamW's beta2 (published script).
    train.adam_eps = 1e-8  # AdamW's epsilon (PyTorch's default, which the script keeps).
    train.weight_decay = 0.01  # AdamW weight decay (paper) ...
    train.no_decay = ("bias", "scale", "out_bias")  # ... except on parameters of these names (biases, LayerNorm).
    train.grad_clip = 1.0  # Global gradient-norm clip (published script).
    # The word-embedding table trains, as in the authors' run: their run_bag.py has a --freeze_embedding flag
    # that only their captioning model reads. True keeps the table fixed (no gradient is computed for it).
    train.freeze_word_embeddings = False
    train.loss = "sampled"  # Cross-entropy on a gold relation sampled at each visit (paper), or "all_gold".
    train.warmup_steps = 1000  # Linear warm-up steps (paper appendix; the script: 2000) ...
    train.warmup_start = 0.1  # ... from this fraction of lr up to lr (paper: 7e-6 to 7e-5).
    train.max_epochs = 18  # Upper bound on training (paper: 18 epochs).
    train.eval_every_steps = 200  # Validation every k steps (published script: 200); 0 = once per epoch.
    train.mauc_weight = 1.0  # Validation score = AUC + w * mAUC, in points (script grid: 1, 3, 5).
    train.plateau_threshold = 0.1  # Gain over the best score that counts as improving (script: 0.001 on a 0-1 scale).
    train.patience = 3  # Decay after this many evaluations in a row without improvement (script: 3) ...
    train.cooldown = 0  # ... not counting this many evaluations after a decay (script: 0).
    train.decay = 0.1  # Learning-rate factor of each decay (paper).
    train.max_decays = 3  # Stop after this many decays (paper: three plateaus).
    train.log_every = 50  # Steps between progress lines and TensorBoard points.
    # Workdir of another run whose best checkpoint initialises this one (paper: AVG), or a state dict file
    # of the published bag model (bert.*, classifier.0.*, classifier.2.*; e.g. the authors' AVG model),
    # which --mode=eval also evaluates without training.
    train.init_from = ""
    train.grad_accum_steps = 1  # Micro-batches per optimiser step (batch_size / this bags each).
    train.loss_scale_init = 2.0**15  # float16 only: initial dynamic loss scale ...
    train.loss_scale_period = 2000  # ... doubled after this many finite steps in a row, halved on overflow.
    train.checkpoints_to_keep = 1  # Steps kept in each of WORKDIR/checkpoints/latest and best.
    train.allow_changed_config = False  # Resume or evaluate a workdir with other result settings (workdir.py).

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # Devices along the data axis (-1: all that are left).
    mesh.fsdp = 1  # Devices along the parameter-sharding axis.
    mesh.params = "replicated"  # "replicated", or "fsdp": parameters and optimiser state split over fsdp.
    mesh.fsdp_min_size = 2**14  # FSDP leaves only: smaller leaves stay replicated.

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
    # A detector's features TSV to build a knowledge base from, without annotations (clever_jax/kb/build.py):
    # --mode=kb then scores every entity pair seen in extract.min_images images or more; "" = the benchmark's.
    extract.features_path = ""
    extract.min_images = 1
    # Filters of that knowledge base (clever_jax/kb/filters.py): per-relation score thresholds reaching this
    # precision on the run's validation split (0 = no filters; relations with fewer than min_val_facts validation
    # facts take the global threshold), then at least min_evidence instances weighing more than uniform.
    extract.target_precision = 0.0
    extract.min_val_facts = 5
    extract.min_evidence = 1
    # Then every triplet the predicate table entails (standing on -> on, wearing -> worn by on the swapped pair)
    # ranks in the top consistency_quantile of its relation's scores (0 = off); "" = data/vocab/predicate_relations.tsv.
    extract.consistency_quantile = 0.5
    extract.predicate_relations = ""
    # Informative negatives (clever_jax/kb/negatives.py; needs target_precision): at most this many triplets one
    # entity away from a kept one, scoring below all but negative_quantile of their relation's validation facts,
    # in kb/negatives.jsonl (0 = none).
    extract.negatives = 0
    extract.negative_quantile = 0.05
    # Every instance of the collection scored alone, in kb/images.npz: what `python -m clever_jax.kb.query --images
    # S R O` ranks a triplet's images by (clever_jax/kb/image_index.py; scores every instance, not the bags' top).
    extract.image_index = False
    extract.evidence_dtype = "float16"  # Precision at which evidence weights are kept in memory (4 decimals written).
    # An exported bundle (WORKDIR/export) to extract with instead of the workdir's best checkpoint: its config.json
    # gives the model's settings, its val_scores.npz the filters' thresholds, its training_facts.tsv in_training_kb.
    extract.bundle = ""

    # --mode=scene_graphs (clever_jax/kb/scene_graphs.py): every image's pairs of extract.features_path scored alone.
    config.scene_graphs = scene_graphs = ml_collections.ConfigDict()
    scene_graphs.images = "all"  # "all", or "test": the trained run's test images (scored against the world's truth).
    scene_graphs.top_k = 50  # Relations written per image, best first, one per pair; 0 = every pair.
    # The baselines fitted on the other images' annotations (experiments/predcls.py): hidden units, passes over
    # their pairs and appearance components of the instance-supervised heads.
    scene_graphs.baseline_hidden = 256
    scene_graphs.baseline_epochs = 4
    scene_graphs.appearance_dim = 32

    # --mode=bootstrap (clever_jax/kb/bootstrap.py): rounds of extraction over the training split's pairs without a
    # fact, what the filters keep (extract.target_precision) added as training labels, training continued from the
    # round's best checkpoint for max_epochs (0 = train.max_epochs).
    config.bootstrap = bootstrap = ml_collections.ConfigDict()
    bootstrap.rounds = 2
    bootstrap.max_epochs = 0
    bootstrap.add_facts = True  # False: the same rounds of training with nothing added (the control).

    config.report = report = ml_collections.ConfigDict()  # --mode=report: an HTML page of the knowledge base.
    report.kb_path = ""  # "" = WORKDIR/kb/kb.jsonl; the page is written next to it as report.html.
    report.images_dir = ""  # Visual Genome images (<id>.jpg): boxes drawn over them; "" = over blank canvases.
    report.per_relation = 10  # Top triplets shown per relation.
    return config
