"""The language-model baselines (models/language.py): their inputs, that they learn, the checkpoint
import of BERT's heads and LAMA against PyTorch's masked-LM probabilities."""

from __future__ import annotations

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clever_jax import job
from clever_jax.config_checks import ConfigError
from clever_jax.data import prepare, text
from clever_jax.data.vocab import Vocab, benchmark_vocab
from clever_jax.models import language, weights
from clever_jax.models.encoder import EncoderConfig
from clever_jax.training import builder
from clever_jax.training.steps import TrainState, train_step
from configs import demo

CLS, SEP, MASK = 1, 2, 3


def test_pair_sequences_pack_the_names():
    entities = ((10,), (11, 12), (13, 14, 15))
    ids, mask, segments, middle = jax.device_get(
        language.pair_sequences(jnp.array([[0, 2], [1, 0]]), entities, CLS, MASK, SEP))
    assert ids.shape == (2, 9)
    np.testing.assert_array_equal(ids, [[CLS, 10, MASK, 13, 14, 15, SEP, 0, 0], [CLS, 11, 12, MASK, 10, SEP, 0, 0, 0]])
    np.testing.assert_array_equal(mask, ids > 0)
    np.testing.assert_array_equal(segments, [[0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(middle, [2, 3])


def test_name_tables_verbalise_na_as_background():
    tokenizer = text.load_tokenizer()
    vocab = benchmark_vocab()
    entities, relations = language.name_tables(tokenizer, vocab)
    assert len(entities) == len(vocab.entities) and len(relations) == vocab.num_relations
    assert tokenizer.decode(relations[0]) == "background"
    standing_on = vocab.predicates.index("standing on") + 1
    assert tokenizer.decode(relations[standing_on]) == "standing on" and len(relations[standing_on]) == 2
    with pytest.raises(ValueError, match="names without word pieces"):
        language.name_tables(tokenizer, Vocab(("man", " "), ("on",)))


def tiny_model(head: str, num_entities: int = 6, num_relations: int = 4) -> language.PairTextModel:
    """A random one-layer BERT over made-up word pieces: entity e is piece 4 + e, relation r 20 + r."""
    config = EncoderConfig(vocab_size=32, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                           max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0,
                           freeze_word_embeddings=True)
    return language.PairTextModel(
        encoder=config, num_relations=num_relations, head=head,
        entity_pieces=tuple((4 + e,) for e in range(num_entities)),
        relation_pieces=tuple((20 + r,) if r % 2 else (20 + r, 28) for r in range(num_relations)),
        cls_id=CLS, sep_id=SEP, mask_id=MASK)


@pytest.mark.slow  # End to end: training until a toy relation is learnt.
@pytest.mark.parametrize("head", language.HEADS)
def test_vanilla_and_prompt_fine_tuning_learn_a_toy_relation(head):
    """Every pair's relation is its subject's class mod 3, + 1 (NA never): both heads learn it
    through the project's optimiser and train step (word embeddings frozen, as configured here)."""
    config = demo.get_config("tiny")
    config.train.update(lr=3e-3, warmup_steps=0, grad_clip=1.0, freeze_word_embeddings=True)
    model = tiny_model(head)
    pairs = np.array([(s, o) for s in range(6) for o in range(6) if s != o], np.int32)
    relation = pairs[:, 0] % 3 + 1
    batch = {"pair": pairs, "instance_mask": np.ones((len(pairs), 2), bool), "target": relation,
             "labels": np.eye(4, dtype=np.float32)[relation], "bag_mask": np.ones(len(pairs), bool)}
    params = model.init(jax.random.key(0), batch)["params"]
    tx = builder.make_optimizer(config, params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       lr_scale=jnp.ones((), jnp.float32))
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, config=config))
    scores, _ = model.apply({"params": params}, batch)
    assert (np.argmax(scores, axis=1) == relation).mean() < 0.6
    losses = []
    for _ in range(150):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    scores, evidence = model.apply({"params": state.params}, batch)
    assert (np.argmax(scores, axis=1) == relation).mean() == 1.0 and losses[-1] < 0.6 * losses[0]
    frozen = params["text"]["embeddings"]["word_embeddings"]["embedding"]
    np.testing.assert_array_equal(state.params["text"]["embeddings"]["word_embeddings"]["embedding"], frozen)
    np.testing.assert_allclose(evidence, 0.5)  # No image is looked at: uniform over the two instances.


def write_mlm_checkpoint(folder: str, hidden: int = 16) -> str:
    """A small random BertForMaskedLM (PyTorch, transformers) saved as config.json, model.safetensors
    and the packaged vocab.txt."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # A non-zero decoder bias, so that the test sees it used.
        model.cls.predictions.bias.normal_()
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(os.path.join(text.default_model_dir(), "vocab.txt"), folder)
    return folder


def test_lama_scores_are_pytorch_masked_lm_probabilities(tmp_path):
    import torch
    import transformers

    folder = write_mlm_checkpoint(str(tmp_path / "mlm"))
    assert weights.has_mlm_head(folder) and not weights.has_mlm_head(text.default_model_dir())
    tokenizer = text.load_tokenizer(folder)
    entities, relations = language.name_tables(tokenizer, benchmark_vocab())
    config = EncoderConfig.from_hf(json.load(open(os.path.join(folder, "config.json"))), region_dim=8)
    model = language.PairTextModel(encoder=config, num_relations=len(relations), head="prompt",
                                   entity_pieces=entities, relation_pieces=relations, cls_id=tokenizer.cls_token_id,
                                   sep_id=tokenizer.sep_token_id, mask_id=tokenizer.mask_token_id)
    pairs = np.array([[0, 1], [5, 17], [42, 3]], np.int32)
    batch = {"pair": pairs, "instance_mask": np.ones((3, 1), bool)}
    params = model.init(jax.random.key(0), batch)["params"]
    pretrained, report = weights.text_model_params(folder, config, "prompt")
    assert "cls.predictions.bias" in report.loaded and not report.not_in_checkpoint
    params = weights.merge_pretrained(params, pretrained)
    ours = model.apply({"params": params}, pairs, train=False, method="logits")

    ids, mask, _, middle = jax.device_get(language.pair_sequences(jnp.asarray(pairs), entities, tokenizer.cls_token_id,
                                                                   tokenizer.mask_token_id, tokenizer.sep_token_id))
    torch_model = transformers.BertForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = torch_model(input_ids=torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
    log_probs = jax.nn.log_softmax(logits[np.arange(3), middle])
    expected = np.stack([np.asarray(log_probs)[:, list(pieces)].mean(axis=1) for pieces in relations], axis=1)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_the_cls_head_takes_the_checkpoint_pooler_and_partial_heads_are_named(tmp_path):
    config = EncoderConfig.from_hf(json.load(open(os.path.join(text.default_model_dir(), "config.json"))),
                                   region_dim=8, num_layers=1)
    params, report = weights.text_model_params(text.default_model_dir(), config, "cls")
    assert set(params) == {"text", "pooler"} and "pooler.dense.weight" in report.loaded
    _, report = weights.text_model_params(text.default_model_dir(), config, "prompt")
    assert "transform/kernel" in report.not_in_checkpoint  # MiniLM has no masked-LM head: trained from scratch.
    folder = write_mlm_checkpoint(str(tmp_path / "mlm"))
    from safetensors.numpy import load_file, save_file

    state = load_file(os.path.join(folder, "model.safetensors"))
    del state["cls.predictions.bias"]
    save_file(state, os.path.join(folder, "model.safetensors"))
    config = EncoderConfig.from_hf(json.load(open(os.path.join(folder, "config.json"))), region_dim=8)
    with pytest.raises(ValueError, match=r"part of the prompt head only: .* lacks cls\.predictions\.bias"):
        weights.text_model_params(folder, config, "prompt")


@pytest.mark.slow
def test_the_baselines_run_as_jobs_and_lama_needs_an_mlm_head(tmp_path):
    """Vanilla-FT trains through the main job (no images read); LAMA evaluates the pretrained
    masked-LM head without training, and refuses a checkpoint without one."""
    config = demo.get_config("tiny")
    config.data.world_dir = str(tmp_path / "world")
    config.model.update(encoder="text", head="cls")
    config.train.max_epochs = 1  # Through the job is what is checked here; learning is checked above.
    job.run(config, str(tmp_path / "vanilla"), "all")
    metrics = json.load(open(tmp_path / "vanilla" / "metrics.json"))
    assert metrics["test"]["auc"] > 0 and (tmp_path / "vanilla" / "checkpoints").is_dir()

    lama = config.copy_and_resolve_references()
    lama.model.head, lama.train.max_epochs = "prompt", 0
    records = prepare.prepare(lama, str(tmp_path / "vanilla"))  # The Vanilla-FT run's records, reused.
    with pytest.raises(ConfigError, match="LAMA scores relations with the checkpoint's masked-LM head"):
        builder.build(lama, records).zero_shot_params()  # What --mode=eval calls when nothing was trained.
    lama.model.pretrained_dir = write_mlm_checkpoint(str(tmp_path / "mlm"))
    job.run(lama, str(tmp_path / "lama"), "eval")
    assert json.load(open(tmp_path / "lama" / "metrics.json"))["test"]["auc"] > 0
