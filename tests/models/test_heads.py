"""Each bag head against a direct, loop-based NumPy computation of its formula, with padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clever_jax.models import heads

B, N, D, HID, R1 = 3, 5, 6, 7, 4  # R1 = R + 1 relations
TAU = 2.5


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(B, N, D)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    v[~mask] = 1e3 * rng.normal(size=((~mask).sum(), D))  # padding must not matter, however large
    target = np.array([1, 3, 0])
    classifier = heads.RelationClassifier(HID, R1)
    params = classifier.init(jax.random.key(0), jnp.zeros((1, D)))["params"]
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    bound = classifier.bind({"params": params})
    w1, b1 = np.asarray(params["hidden"]["kernel"]), np.asarray(params["hidden"]["bias"])
    w2, b2 = np.asarray(params["out_kernel"]), np.asarray(params["out_bias"])

    def mlp(x):
        return np.maximum(x @ w1 + b1, 0) @ w2 + b2

    return v, mask, target, bound, mlp


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def reference_train(head, v, mask, target, mlp):
    if head == "vrd":  # the instance logits, padding included
        return np.array([[mlp(x) for x in bag] for bag in v])
    out = []
    for b in range(B):
        inst = [v[b, j] for j in range(N) if mask[b, j]]
        logits = [mlp(x) for x in inst]
        if head == "avg":
            out.append(mlp(np.mean(inst, axis=0)))
        elif head == "one":
            best = int(np.argmax([softmax(lg)[target[b]] for lg in logits]))
            out.append(mlp(inst[best]))
        elif head == "att":
            alpha = softmax(np.array([lg[target[b]] for lg in logits]))
            out.append(mlp(sum(a * x for a, x in zip(alpha, inst, strict=True))))
        elif head == "clever":
            s = []
            for r in range(R1):
                alpha = softmax(np.array([lg[r] / TAU for lg in logits]))
                s.append(mlp(sum(a * x for a, x in zip(alpha, inst, strict=True)))[r])
            out.append(np.array(s))
    return np.array(out)


def reference_eval(head, v, mask, mlp):
    scores, evidence = [], []
    for b in range(B):
        inst = [v[b, j] for j in range(N) if mask[b, j]]
        probs = np.array([softmax(mlp(x)) for x in inst])  # [n, R1]
        ev = np.zeros((R1, N))
        if head in ("att", "clever"):
            tau = TAU if head == "clever" else 1.0
            s = []
            for r in range(R1):
                alpha = softmax(np.array([mlp(x)[r] / tau for x in inst]))
                ev[r, : len(inst)] = alpha
                s.append(mlp(sum(a * x for a, x in zip(alpha, inst, strict=True)))[r])
            scores.append(softmax(np.array(s)))
        else:
            ev[:, : len(inst)] = (probs / probs.sum(axis=0)).T
            scores.append(softmax(mlp(np.mean(inst, axis=0))) if head == "avg" else probs.max(axis=0))  # one/max/vrd
        evidence.append(ev)
    return np.array(scores), np.array(evidence)


@pytest.mark.parametrize("head", heads.TRAIN_HEADS)
def test_train_logits_match_the_formula(setup, head):
    v, mask, target, bound, mlp = setup
    got = heads.train_logits(head, bound, jnp.asarray(v), jnp.asarray(mask), jnp.asarray(target), lambda x: x, TAU)
    np.testing.assert_allclose(np.asarray(got), reference_train(head, v, mask, target, mlp), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("head", heads.EVAL_HEADS)
def test_eval_scores_match_the_formula(setup, head):
    v, mask, _, bound, mlp = setup
    scores, evidence = heads.eval_scores(head, bound, jnp.asarray(v), jnp.asarray(mask), TAU)
    want_scores, want_evidence = reference_eval(head, v, mask, mlp)
    np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(evidence), want_evidence, rtol=2e-5, atol=2e-6)
    assert not np.asarray(evidence)[~np.broadcast_to(mask[:, None, :], evidence.shape)].any()


@pytest.mark.parametrize("head", heads.TRAIN_HEADS)
def test_bag_dropout_acts_on_every_head_but_clever(setup, head):
    """The published CLEVER has no dropout on its bags B_r; AVG, ONE and ATT drop out their bag (vrd has none)."""
    v, mask, target, bound, mlp = setup
    args = (head, bound, jnp.asarray(v), jnp.asarray(mask), jnp.asarray(target))
    dropped = np.asarray(heads.train_logits(*args, lambda x: 0.0 * x, TAU))  # drops every unit
    if head in ("clever", "vrd"):
        np.testing.assert_allclose(dropped, np.asarray(heads.train_logits(*args, lambda x: x, TAU)), rtol=1e-6)
    else:
        np.testing.assert_allclose(dropped, np.broadcast_to(mlp(np.zeros(D)), (B, R1)), rtol=1e-5, atol=1e-6)


def test_clever_never_builds_the_relation_by_relation_logits(setup):
    """Neither CLEVER's training logits nor its scores form the [B, R+1, R+1] logits of every relation's bag."""
    v, mask, target, bound, _ = setup

    def builds_square(fn) -> bool:
        text = jax.jit(fn).lower(jnp.asarray(v)).as_text()
        return f"{B}x{R1}x{R1}x" in text or f"{B},{R1},{R1}]" in text

    # Positive control: classifying every per-relation bag, then taking the diagonal, is seen in the program text.
    attention = lambda x: heads.relation_attention(bound(x), jnp.asarray(mask), TAU)  # noqa: E731
    assert builds_square(lambda x: jnp.diagonal(bound(heads.per_relation_bags(attention(x), x)), axis1=1, axis2=2))
    assert not builds_square(lambda x: heads.train_logits("clever", bound, x, jnp.asarray(mask), jnp.asarray(target),
                                                          lambda y: y, TAU))
    assert not builds_square(lambda x: heads.eval_scores("clever", bound, x, jnp.asarray(mask), TAU))


def test_unknown_heads_are_errors(setup):
    v, mask, target, bound, _ = setup
    with pytest.raises(ValueError, match="unknown training head 'max'"):
        heads.train_logits("max", bound, jnp.asarray(v), jnp.asarray(mask), jnp.asarray(target), lambda x: x, 1.0)
    with pytest.raises(ValueError, match="unknown evaluation head"):
        heads.eval_scores("mean", bound, jnp.asarray(v), jnp.asarray(mask), 1.0)
