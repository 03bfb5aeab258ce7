"""clever_jax: CLEVER (visually grounded commonsense knowledge acquisition) in JAX/Flax."""

__version__ = "0.1.0"
