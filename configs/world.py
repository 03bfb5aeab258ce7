"""The generated world's settings (clever_jax.data.world; docs/world.md tells its story and
calibration). configs/default.py puts the demo preset under config.data.world; override any value
on the command line, e.g. --config.data.world.num_images=1000.
"""

import ml_collections


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
    """The world's settings. Presets: "tiny" (tests), "demo" (minutes on a CPU), "vg" (Visual Genome's scale)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # Images: scenes, boxes, appearance, annotation and captions.
    c.commonsense_seed = 0  # The latent commonsense (commonness jitter); images use `seed`.
    c.num_images = 200  # Images written.
    c.feature_dim = 8  # Appearance vector size per region (VinVL: 2048).
    c.image_min_size, c.image_max_size = 500, 1024  # Range of the longer side, in pixels.
    # Scene graphs.
    c.interactions_per_image = 8.0  # Mean true interactions per image (Poisson).
    c.fresh_rate = 0.25  # Chance that an interaction starts a new pair rather than attach to an object.
    c.hub_decay = 0.6  # Attachment weight of an object is multiplied by this per interaction it has.
    c.extra_objects_per_image = 3.0  # Mean non-interacting background objects (Poisson).
    c.triplet_power = 1.5  # Within a predicate, triplets are sampled in proportion to commonness ** power.
    c.commonness_jitter = 0.3  # Standard deviation of the log-normal per-triplet commonness jitter.
    c.scene_background_rate = 0.03  # Affinity of a scene for entities it does not favour.
    # Geometry.
    c.object_scale = 0.75  # Scales the typical box sizes of objects.
    c.geometry_noise = 0.1  # Chance that an interacting pair is placed ignoring its relation.
    c.geometry_jitter = 0.05  # Jitter of each relation's box offsets, in box sizes.
    # Annotation.
    c.annotation_rate = 0.6  # Chance that a true interaction gets a relationship record.
    c.relabel_scale = 1.0  # Scales the odds of non-canonical wordings (0: always the latent predicate).
    c.predicate_noise_rate = 0.015  # Records whose predicate is replaced by an unrelated one.
    c.spurious_rate = 0.015  # Extra records between non-interacting objects, per record.
    c.name_variant_rate = 0.1  # Names/predicates written with case, space or plural variants.
    # Appearance (per latent dimension; the class prototype has unit scale).
    c.class_noise = 0.5  # Noise on the class component of an object's appearance.
    c.pose_signal = 1.0  # Scale of the pose code an object takes from the relations it is in.
    c.pose_noise = 0.7  # Noise on the pose component.
    c.idle_pose = 0.5  # Scale of the pose code of objects in no interaction.
    c.pixel_noise = 0.5  # Noise added to every feature after the projection.
    # Captions.
    c.caption_rate = 0.02  # Mention probability of an interaction of commonness 1 ...
    c.caption_bias = 2.0  # ... growing as commonness ** -bias (capped at 0.9).
    c.max_captions = 3  # Captions per image at most.
    c.filler_caption_rate = 0.3  # Chance of a caption that states no interaction (two entities in a scene).
    if preset == "tiny":
        pass
    elif preset == "demo":
        c.num_images, c.feature_dim = 4000, 2048
        c.interactions_per_image, c.extra_objects_per_image = 9.0, 3.0
    elif preset == "vg":
        c.num_images, c.feature_dim = 108_077, 2048
        c.interactions_per_image, c.extra_objects_per_image = 25.0, 4.5
        c.fresh_rate, c.annotation_rate = 0.2, 0.83
    else:
        raise ValueError(f"unknown world preset {preset!r}: expected tiny, demo or vg")
    return c
