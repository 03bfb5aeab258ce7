"""A synthetic Visual-Genome-like world, generated from a seed in Visual Genome's file formats.

The world has a latent commonsense (`world_commonsense`): graded plausible triplets over the
benchmark's 100 entities and 100 predicates. Each image samples a scene type, grows a scene
graph of true interactions (fresh pairs, then interactions attached to objects already there),
places boxes with each relation's geometry, adds non-interacting background objects (many out of
the vocabulary), and gives every object an appearance vector (class prototype + a pose component
from the relations it takes part in + noise). Annotators record only some interactions, often
with a coarser, synonymous, inverse or out-of-vocabulary wording, sometimes a wrong one, and add
a few records between objects that do not interact. Captions mention unusual interactions more
than obvious ones. docs/world.md describes the story and its numbers.

`generate(config, out_dir)` writes WORLD_FILES; `iter_chunks(config)` yields the same images
with their latent structure, for tests and analysis.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from clever_jax import files
from clever_jax.config_checks import ConfigError
from clever_jax.data import world_commonsense
from clever_jax.data.jsonio import iter_json_list
from clever_jax.data.vocab import IRREGULAR_PLURALS

WORLD_FILES = (
    "image_data.json", "objects.json", "relationships.json", "features.tsv", "captions.json", "interactions.json",
    "commonsense.json",
)
STREAMED_FILES = WORLD_FILES[:-1]  # Written image by image; commonsense.json at the end.
MARKER = ".clever_jax_world"  # Marks a folder that generate() owns (it may replace its files); holds its settings.
CHUNK_IMAGES = 512  # Images sampled together; part of the random stream, so fixed.
LATENT_DIMS = (32, 16, 16)  # Appearance latent: class, pose, nuisance (projected to feature_dim).

# Relationship record kinds.
CANONICAL, REWORDED, WRONG_PREDICATE, SPURIOUS = 0, 1, 2, 3


class _GroupedSampler:
    """Samples items given (scene, group) with probability proportional to weights [Z, T].

    `group[t]` is item t's group (-1: never sampled). `mass[z, g]` is the group's total weight.
    """

    def __init__(self, weights: np.ndarray, group: np.ndarray, num_groups: int):
        keep = np.flatnonzero(group >= 0)
        self.order = keep[np.argsort(group[keep], kind="stable")]
        g = group[self.order]
        self.start = np.searchsorted(g, np.arange(num_groups))
        self.end = np.searchsorted(g, np.arange(num_groups), side="right")
        w = weights[:, self.order]
        cum = np.cumsum(w, axis=1)
        before = np.where(self.start > 0, cum[:, np.maximum(self.start - 1, 0)], 0.0)  # [Z, G]
        self.mass = np.where(self.end > self.start, cum[:, np.maximum(self.end - 1, 0)] - before, 0.0)
        within = (cum - before[:, g]) / np.where(self.mass > 0, self.mass, 1.0)[:, g]
        self.num_groups, self.width = num_groups, len(g)
        self.keys = (within + g + num_groups * np.arange(len(weights))[:, None]).ravel()

    def sample(self, scene: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, scene * self.num_groups + group + u, side="right") - scene * self.width
        return self.order[np.clip(pos, self.start[group], self.end[group] - 1)]


@dataclasses.dataclass
class Chunk:
    """Consecutive images with their latent structure; objects and records grouped by image.

    Boxes are integer (x, y, w, h). `inter_*` are the true interactions (object rows and latent
    triplet index into `World.cs`); `rel_*` the relationship records: object rows, surface
    predicate index, kind (CANONICAL, REWORDED, WRONG_PREDICATE, SPURIOUS) and the interaction
    recorded (-1 for SPURIOUS). `captions` holds (image row, text, interaction or -1). Names
    are as written in the files (with their variants), one per object and per record side.
    """

    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    scenes: np.ndarray
    obj_image: np.ndarray
    obj_entity: np.ndarray
    obj_box: np.ndarray
    obj_degree: np.ndarray
    features: np.ndarray
    inter_subj: np.ndarray
    inter_obj: np.ndarray
    inter_triplet: np.ndarray
    rel_image: np.ndarray
    rel_subj: np.ndarray
    rel_obj: np.ndarray
    rel_surface: np.ndarray
    rel_kind: np.ndarray
    rel_inter: np.ndarray
    captions: list[tuple[int, str, int]]
    obj_name: list[str]
    obj_conf: np.ndarray
    rel_predicate: list[str]
    rel_subj_name: list[str]
    rel_obj_name: list[str]


class World:
    """The compiled world of a config: commonsense tables, samplers and appearance parameters."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = c = config
        self.cs = cs = world_commonsense.build(c.commonsense_seed, c.triplet_power, c.commonness_jitter,
                                               c.scene_background_rate)
        e = cs.num_entities
        scene_w = cs.weight[None] * cs.scene_affinity[:, cs.subj] * cs.scene_affinity[:, cs.obj]  # [Z, T]
        scene_w /= scene_w.sum(1, keepdims=True)
        self.fresh = _GroupedSampler(scene_w, np.zeros(len(cs.subj), int), 1)
        self.by_subj = _GroupedSampler(scene_w, cs.subj, e)
        self.by_obj = _GroupedSampler(scene_w, cs.obj, e)
        self.by_obj_free = _GroupedSampler(scene_w, np.where(cs.ownership, -1, cs.obj), e)  # Not re-owned.
        self.hub = np.sqrt(self.by_subj.mass + self.by_obj.mass)
        self.hub_owned = 0.5 * np.sqrt(self.by_subj.mass + self.by_obj_free.mass)
        owned_kinds = np.isin(cs.kinds, world_commonsense.OWNED_KINDS)  # Parts never stand alone.
        background = cs.scene_background + 0.05 * ((cs.scene_affinity >= 1) & ~owned_kinds)
        self.background = _GroupedSampler(background, np.zeros(e, int), 1)
        self.scene_cdf = np.cumsum(cs.scene_prob)
        self._compile_geometry()
        self._compile_appearance()
        self._compile_names()
        r = cs.render_prob.copy()
        r[:, 1:] *= c.relabel_scale
        self.render_cdf = np.cumsum(r / r.sum(1, keepdims=True), axis=1)
        noise = 1.0 / np.arange(1, len(cs.predicates) + 1) ** 1.2  # Vocabulary order is VG frequency order.
        self.noise_cdf = np.cumsum(noise / noise.sum())

    # -- compilation -------------------------------------------------------------------------

    def _compile_geometry(self) -> None:
        modes_x, modes_y = ("inside", "side", "overlap", "hand"), ("lin", "inside")
        rows = [world_commonsense.GEOMETRY[n] for n in self.cs.geometry_names]
        self.g_xmode = np.array([modes_x.index(r["x"][0]) for r in rows])
        self.g_x = np.array([r["x"][1:] for r in rows], float)
        self.g_ymode = np.array([modes_y.index(r["y"][0]) for r in rows])
        self.g_y = np.array([(*r["y"][1:], 0, 0)[:4] for r in rows], float)
        self.g_inner = np.array([{"s": 1, "o": 2}.get(r.get("inner"), 0) for r in rows])
        self.g_scale = np.array([r.get("scale", 0.0) for r in rows])

    def _compile_appearance(self) -> None:
        c, cs = self.config, self.cs
        rng = np.random.default_rng([c.seed, 101])
        kc, kp, kn = LATENT_DIMS
        kinds = sorted(set(cs.kinds))
        kind_code = rng.standard_normal((len(kinds), kc))
        own = rng.standard_normal((cs.num_entities, kc))
        self.prototypes = np.sqrt(0.5) * kind_code[[kinds.index(k) for k in cs.kinds]] + np.sqrt(0.5) * own
        codes = rng.standard_normal((len(cs.pose_names), 2, kp))
        codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
        strength = np.array([world_commonsense.POSE_GROUPS[n] for n in cs.pose_names])  # [G, 2]
        self.pose_codes = c.pose_signal * strength[..., None] * codes
        idle = rng.standard_normal((4, kp))
        self.idle_codes = c.idle_pose * idle / np.linalg.norm(idle, axis=-1, keepdims=True)
        projection = rng.standard_normal((kc + kp + kn, c.feature_dim)) / np.sqrt(kc + kp + kn)
        self.projection = projection.astype(np.float32)

    def _compile_names(self) -> None:
        plural_of = {}
        for plural, single in IRREGULAR_PLURALS.items():
            plural_of.setdefault(single, plural)

        def plural(n: str) -> str:
            if n in plural_of or n == "sheep":
                return plural_of.get(n, n)
            if n.endswith(("s", "x", "ch", "sh")):
                return n + "es"
            return n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "s"

        def variants(n: str, allow_plural: bool) -> list[str]:
            spaced = n.replace(" ", "  ") if " " in n else n.capitalize() + " "
            out = [n, n.title(), n.upper(), " " + n, n + " ", spaced]
            if allow_plural:
                out += [plural(n), plural(n).title()]
            return out

        self.entity_names = [variants(n, True) for n in self.cs.entities]
        self.surface_variants = [variants(n, False) for n in self.cs.surface_names]
        self.synsets = [[n.replace(" ", "_") + ".n.01"] for n in self.cs.entities]

    # -- sampling ----------------------------------------------------------------------------

    def sample_chunk(self, chunk_index: int) -> Chunk:
        """Samples images CHUNK_IMAGES * chunk_index + 1 ... (ids are 1-based)."""
        c, cs = self.config, self.cs
        rng = np.random.default_rng([c.seed, 1, chunk_index])
        first = chunk_index * CHUNK_IMAGES
        b = min(CHUNK_IMAGES, c.num_images - first)
        long_side = rng.integers(c.image_min_size, c.image_max_size + 1, b)
        short_side = np.round(long_side * rng.uniform(0.6, 0.9, b)).astype(int)
        landscape = rng.random(b) < 0.75
        width, height = np.where(landscape, long_side, short_side), np.where(landscape, short_side, long_side)
        scene = np.minimum(np.searchsorted(self.scene_cdf, rng.random(b) * self.scene_cdf[-1]), len(cs.scene_names) - 1)
        n_int = np.maximum(rng.poisson(c.interactions_per_image, b), 1)
        ent, box, deg, inter = self._grow(rng, scene, width, height, n_int)
        ent, box, deg = self._add_background(rng, scene, width, height, ent, box, deg)

        # Flatten, shuffling objects within each image so their order reveals nothing.
        slot_img, slot = np.nonzero(ent >= 0)
        order = np.lexsort((rng.random(len(slot)), slot_img))
        slot_img, slot = slot_img[order], slot[order]
        row_of = np.full(ent.shape, -1)
        row_of[slot_img, slot] = np.arange(len(slot))
        obj_entity, obj_deg = ent[slot_img, slot], deg[slot_img, slot]
        obj_box = _integer_boxes(box[slot_img, slot], width[slot_img], height[slot_img])
        i_img, i_s, i_o, i_t = inter
        inter_subj, inter_obj = row_of[i_img, i_s], row_of[i_img, i_o]
        features = self._features(rng, obj_entity, obj_deg, inter_subj, inter_obj, i_t)
        rels = self._annotate(rng, slot_img, inter_subj, inter_obj, i_t, b)
        captions = self._captions(rng, scene, slot_img, obj_entity, inter_subj, inter_obj, i_t)
        return Chunk(
            image_ids=np.arange(first + 1, first + b + 1), widths=width, heights=height, scenes=scene,
            obj_image=slot_img, obj_entity=obj_entity, obj_box=obj_box, obj_degree=obj_deg, features=features,
            inter_subj=inter_subj, inter_obj=inter_obj, inter_triplet=i_t, **rels, captions=captions,
            obj_name=self._names(rng, self.entity_names, obj_entity),
            obj_conf=np.round(0.35 + 0.64 * rng.random(len(obj_entity)) ** 0.4, 4),
            rel_predicate=self._names(rng, self.surface_variants, rels["rel_surface"]),
            rel_subj_name=self._names(rng, self.entity_names, obj_entity[rels["rel_subj"]]),
            rel_obj_name=self._names(rng, self.entity_names, obj_entity[rels["rel_obj"]]),
        )

    def true_wordings(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vocabulary wording of every true interaction of a chunk, grouped by image.

        Returns:
          subject and object rows int64 [W] (swapped for an inverse wording such as "worn by") and
          the predicate int64 [W] (vocabulary index 0..99 = relation id - 1). Out-of-vocabulary
          paraphrases are left out; entities may be out of the vocabulary.
        """
        surface = self.cs.render_surface[chunk.inter_triplet]  # [I, K], -1 pads
        interaction, k = np.nonzero((surface >= 0) & (surface < len(self.cs.predicates)))
        inverse = self.cs.render_inverse[chunk.inter_triplet][interaction, k]
        subj = np.where(inverse, chunk.inter_obj[interaction], chunk.inter_subj[interaction])
        obj = np.where(inverse, chunk.inter_subj[interaction], chunk.inter_obj[interaction])
        order = np.argsort(chunk.obj_image[subj], kind="stable")
        return subj[order], obj[order], surface[interaction, k][order]

    def _names(self, rng, variants: list[list[str]], ids: np.ndarray) -> list[str]:
        """Names as annotators write them: mostly clean, `name_variant_rate` of them varied."""
        n = len(ids)
        varied = rng.random(n) < self.config.name_variant_rate
        pick = rng.random(n)
        out = []
        for i, v, p in zip(ids.tolist(), varied.tolist(), pick.tolist(), strict=True):
            options = variants[i]
            out.append(options[1 + int(p * (len(options) - 1))] if v else options[0])
        return out

    def _grow(self, rng, scene, width, height, n_int):
        """Grows each image's scene graph: rounds of one interaction per image, vectorised."""
        c, cs = self.config, self.cs
        b, m = len(scene), 2 * int(n_int.max()) + 2
        ent = np.full((b, m), -1)
        box = np.zeros((b, m, 4))
        deg = np.zeros((b, m), int)
        owned = np.zeros((b, m), bool)
        count = np.zeros(b, int)
        records = []
        for r in range(int(n_int.max())):
            act = np.flatnonzero(n_int > r)
            za, ea = scene[act], np.maximum(ent[act], 0)
            hub = np.where(owned[act], self.hub_owned[za[:, None], ea], self.hub[za[:, None], ea])
            hub = hub * (ent[act] >= 0) * c.hub_decay ** deg[act]
            total = hub.sum(1)
            fresh = (total <= 0) | (rng.random(len(act)) < c.fresh_rate)

            # Fresh pairs: the object is placed on its own, the subject relative to it.
            f = act[fresh]
            t = self.fresh.sample(scene[f], np.zeros(len(f), int), rng.random(len(f)))
            s_slot, o_slot = count[f], count[f] + 1
            count[f] += 2
            ent[f, s_slot], ent[f, o_slot] = cs.subj[t], cs.obj[t]
            box[f, o_slot] = self._free_boxes(rng, cs.obj[t], width[f], height[f])
            box[f, s_slot] = self._place(rng, t, box[f, o_slot], np.zeros(len(f), bool), width[f], height[f])
            owned[f, o_slot] |= cs.ownership[t]
            deg[f, s_slot] += 1
            deg[f, o_slot] += 1
            records.append((f, s_slot, o_slot, t))

            # Attached: pick an object by its weight, a role, then a triplet involving it.
            a, hub, total = act[~fresh], hub[~fresh], total[~fresh]
            anchor = (np.cumsum(hub, 1) < (rng.random(len(a)) * total)[:, None]).sum(1)
            anchor = np.minimum(anchor, m - 1)
            za, ea, own = scene[a], ent[a, anchor], owned[a, anchor]
            mass_s = self.by_subj.mass[za, ea]
            mass_o = np.where(own, self.by_obj_free.mass[za, ea], self.by_obj.mass[za, ea])
            as_subj = rng.random(len(a)) * (mass_s + mass_o) < mass_s
            u = rng.random(len(a))
            t = np.where(as_subj, self.by_subj.sample(za, ea, u),
                         np.where(own, self.by_obj_free.sample(za, ea, u), self.by_obj.sample(za, ea, u)))
            new = count[a]
            count[a] += 1
            ent[a, new] = np.where(as_subj, cs.obj[t], cs.subj[t])
            box[a, new] = self._place(rng, t, box[a, anchor], as_subj, width[a], height[a])
            owned[a, new] |= cs.ownership[t] & as_subj
            owned[a, anchor] |= cs.ownership[t] & ~as_subj
            deg[a, anchor] += 1
            deg[a, new] += 1
            records.append((a, np.where(as_subj, anchor, new), np.where(as_subj, new, anchor), t))
        img, s, o, t = (np.concatenate(x) for x in zip(*records, strict=True))
        return ent, box, deg, (img, s, o, t)

    def _free_boxes(self, rng, entity, width, height):
        """Boxes of objects placed on their own: typical size, vertical position by entity."""
        cs, n = self.cs, len(entity)
        w = self.config.object_scale * cs.size[entity] * width * np.exp(0.35 * rng.standard_normal(n))
        w = np.clip(w, 3, 0.95 * width)
        h = np.clip(w * cs.aspect[entity] * np.exp(0.15 * rng.standard_normal(n)), 3, 0.95 * height)
        x = rng.random(n) * (width - w)
        v = cs.image_v[entity]
        v = np.where(np.isnan(v), rng.random(n), np.clip(v + 0.08 * rng.standard_normal(n), 0, 1))
        return np.stack([x, v * (height - h), w, h], axis=1)

    def _place(self, rng, t, anchor, anchor_is_subj, width, height):
        """Box of the partner of an interaction whose other box (`anchor`) is placed already."""
        c, cs, n = self.config, self.cs, len(t)
        g = cs.geometry[t]
        e_p = np.where(anchor_is_subj, cs.obj[t], cs.subj[t])
        e_a = np.where(anchor_is_subj, cs.subj[t], cs.obj[t])
        inner = self.g_inner[g]
        p_inner = ((inner == 1) & ~anchor_is_subj) | ((inner == 2) & anchor_is_subj)
        a_inner = (inner > 0) & ~p_inner
        aw, ah = anchor[:, 2], anchor[:, 3]

        # Partner size: at the anchor's scale; a contained box takes its share of the container.
        def contained_ratio(e_in, e_out):
            r = cs.part_scale[e_in]
            return np.where(np.isnan(r), np.minimum(cs.size[e_in] / cs.size[e_out], 0.7), r)

        ratio = np.where(p_inner, contained_ratio(e_p, e_a),
                         np.where(a_inner, 1 / contained_ratio(e_a, e_p), cs.size[e_p] / cs.size[e_a]))
        # Same depth as the anchor, pulled towards the partner's own typical size (no drift along chains).
        log_w = np.log(aw * ratio)
        typical = np.log(c.object_scale * cs.size[e_p] * width)
        log_w = np.where(inner > 0, log_w, 0.6 * log_w + 0.4 * typical)
        scale = np.where(anchor_is_subj, -1, 1) * self.g_scale[g]
        pw = np.exp(log_w + 0.25 * rng.standard_normal(n) + scale)
        ph = pw * cs.aspect[e_p] * np.exp(0.15 * rng.standard_normal(n))
        pw, ph = np.where(p_inner, np.minimum(pw, 0.95 * aw), pw), np.where(p_inner, np.minimum(ph, 0.95 * ah), ph)
        pw, ph = np.where(a_inner, np.maximum(pw, aw / 0.95), pw), np.where(a_inner, np.maximum(ph, ah / 0.95), ph)
        pw, ph = np.clip(pw, 2, 0.98 * width), np.clip(ph, 2, 0.98 * height)
        ws, hs = np.where(anchor_is_subj, aw, pw), np.where(anchor_is_subj, ah, ph)
        wo, ho = np.where(anchor_is_subj, pw, aw), np.where(anchor_is_subj, ph, ah)

        # Offset of the subject centre from the object centre.
        q = self.g_x[g, 0] + (self.g_x[g, 1] - self.g_x[g, 0]) * rng.random(n)
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        xm = self.g_xmode[g]
        dx = np.select([xm == 0, xm == 1, xm == 2], [(1 - 2 * q) * (ws - wo) / 2, sign * (1 + q) * (ws + wo) / 2,
                                                     sign * q * (ws + wo) / 2], sign * q * ws)
        gy = self.g_y[g]
        a_coef = gy[:, 0] + (gy[:, 1] - gy[:, 0]) * rng.random(n)
        b_coef = gy[:, 2] + (gy[:, 3] - gy[:, 2]) * rng.random(n)
        body_v = cs.body_v[np.where(inner == 2, cs.obj[t], cs.subj[t])]
        v = np.where(np.isnan(body_v) | (inner == 0), a_coef, np.clip(body_v + 0.07 * rng.standard_normal(n), 0, 1))
        dy = np.where(self.g_ymode[g] == 1, (1 - 2 * v) * (hs - ho) / 2, a_coef * ho + b_coef * hs)
        dx += c.geometry_jitter * rng.standard_normal(n) * (ws + wo) / 2
        dy += c.geometry_jitter * rng.standard_normal(n) * (hs + ho) / 2
        acx, acy = anchor[:, 0] + aw / 2, anchor[:, 1] + ah / 2
        pcx = np.where(anchor_is_subj, acx - dx, acx + dx)
        pcy = np.where(anchor_is_subj, acy - dy, acy + dy)
        loose = rng.random(n) < c.geometry_noise  # Placed ignoring the relation.
        pcx = np.where(loose, pw / 2 + rng.random(n) * (width - pw), pcx)
        pcy = np.where(loose, ph / 2 + rng.random(n) * (height - ph), pcy)
        return _clip_boxes(pcx - pw / 2, pcy - ph / 2, pw, ph, width, height)

    def _add_background(self, rng, scene, width, height, ent, box, deg):
        """Adds non-interacting objects (scenery, many out of the vocabulary) to every image."""
        b = len(scene)
        n_extra = rng.poisson(self.config.extra_objects_per_image, b)
        count = (ent >= 0).sum(1)
        m = int((count + n_extra).max())
        pad = m - ent.shape[1]
        if pad > 0:
            ent = np.pad(ent, ((0, 0), (0, pad)), constant_values=-1)
            box = np.pad(box, ((0, 0), (0, pad), (0, 0)))
            deg = np.pad(deg, ((0, 0), (0, pad)))
        img = np.repeat(np.arange(b), n_extra)
        slot = np.repeat(count, n_extra) + (np.arange(len(img)) - np.repeat(np.cumsum(n_extra) - n_extra, n_extra))
        e = self.background.sample(scene[img], np.zeros(len(img), int), rng.random(len(img)))
        ent[img, slot] = e
        box[img, slot] = self._free_boxes(rng, e, width[img], height[img])
        return ent, box, deg

    def _features(self, rng, entity, degree, inter_subj, inter_obj, triplet):
        """Appearance: (prototype + class noise, pose + pose noise, nuisance) projected, + pixel noise."""
        c, cs = self.config, self.cs
        n = len(entity)
        kc, kp, kn = LATENT_DIMS
        pose = np.zeros((n, kp))
        g = cs.pose[triplet]
        np.add.at(pose, inter_subj, self.pose_codes[g, 0])
        np.add.at(pose, inter_obj, self.pose_codes[g, 1])
        idle = self.idle_codes[rng.integers(0, len(self.idle_codes), n)]
        pose += np.where((degree == 0)[:, None], idle, 0.0)
        latent = np.concatenate([
            self.prototypes[entity] + c.class_noise * rng.standard_normal((n, kc)),
            pose + c.pose_noise * rng.standard_normal((n, kp)),
            rng.standard_normal((n, kn)),
        ], axis=1).astype(np.float32)
        features = latent @ self.projection
        features += c.pixel_noise * rng.standard_normal(features.shape, dtype=np.float32)
        return features

    def _annotate(self, rng, obj_image, inter_subj, inter_obj, triplet, num_images):
        """Relationship records: a fraction of interactions, variously worded, plus spurious ones."""
        c, cs = self.config, self.cs
        n = len(triplet)
        keep = np.flatnonzero(rng.random(n) < c.annotation_rate)
        t = triplet[keep]
        k = (rng.random(len(keep))[:, None] > self.render_cdf[t]).sum(1)
        k = np.minimum(k, (cs.render_surface[t] >= 0).sum(1) - 1)
        surface, inverse = cs.render_surface[t, k], cs.render_inverse[t, k]
        kind = np.where(k == 0, CANONICAL, REWORDED)
        wrong = rng.random(len(keep)) < c.predicate_noise_rate
        noise = np.minimum(np.searchsorted(self.noise_cdf, rng.random(len(keep))), len(cs.predicates) - 1)
        surface = np.where(wrong, noise, surface)
        inverse &= ~wrong
        kind = np.where(wrong, WRONG_PREDICATE, kind)
        subj = np.where(inverse, inter_obj[keep], inter_subj[keep])
        obj = np.where(inverse, inter_subj[keep], inter_obj[keep])

        # Spurious records between random (almost always non-interacting) objects of an image.
        per_image = np.bincount(obj_image[subj], minlength=num_images) if len(keep) else np.zeros(num_images, int)
        n_obj = np.bincount(obj_image, minlength=num_images)
        n_sp = rng.poisson(c.spurious_rate * per_image) * (n_obj >= 2)
        img = np.repeat(np.arange(num_images), n_sp)
        start = np.cumsum(n_obj) - n_obj
        i = rng.integers(0, n_obj[img])
        j = (i + rng.integers(1, np.maximum(n_obj[img], 2))) % n_obj[img]
        sp_surface = np.minimum(np.searchsorted(self.noise_cdf, rng.random(len(img))), len(cs.predicates) - 1)

        rel_subj = np.concatenate([subj, start[img] + i])
        rel_obj = np.concatenate([obj, start[img] + j])
        rel_image = obj_image[rel_subj]
        order = np.lexsort((rng.random(len(rel_subj)), rel_image))
        return dict(
            rel_image=rel_image[order], rel_subj=rel_subj[order], rel_obj=rel_obj[order],
            rel_surface=np.concatenate([surface, sp_surface])[order],
            rel_kind=np.concatenate([kind, np.full(len(img), SPURIOUS)])[order],
            rel_inter=np.concatenate([keep, np.full(len(img), -1)])[order],
        )

    def _captions(self, rng, scene, obj_image, entity, inter_subj, inter_obj, triplet):
        """Captions: unusual interactions are mentioned more than obvious ones (reporting bias)."""
        c, cs = self.config, self.cs
        p = np.minimum(0.9, c.caption_rate * cs.commonness[triplet] ** -c.caption_bias)
        mentioned = np.flatnonzero(rng.random(len(triplet)) < p)
        mentioned = mentioned[np.lexsort((rng.random(len(mentioned)), obj_image[inter_subj[mentioned]]))]
        by_image: dict[int, list[int]] = {}
        for i in mentioned.tolist():
            by_image.setdefault(int(obj_image[inter_subj[i]]), []).append(i)
        starts = np.searchsorted(obj_image, np.arange(len(scene) + 1))
        out = []
        for img in range(len(scene)):
            chosen = by_image.get(img, [])[: c.max_captions]
            for i in chosen:
                out.append((img, self._sentence(rng, cs.subj[triplet[i]], cs.pred[triplet[i]], cs.obj[triplet[i]],
                                                scene[img]), i))
            if (not chosen or rng.random() < c.filler_caption_rate) and starts[img + 1] > starts[img]:
                picks = entity[rng.integers(starts[img], starts[img + 1], 2)]
                out.append((img, self._filler(rng, picks, scene[img]), -1))
        return out

    def _sentence(self, rng, s, p, o, scene) -> str:
        cs = self.cs
        subj, pred, obj = cs.entities[s], cs.predicates[p], cs.entities[o]
        adjective = ("small", "large", "big", "little", "old")[rng.integers(5)]
        place = _choice(rng, world_commonsense.SCENE_PLACES[cs.scene_names[scene]])
        form = rng.integers(5)
        if form == 1:
            subj = f"{adjective} {subj}"
        if form == 2 and pred.split()[0].endswith("ing"):
            pred = f"is {pred}"
        text = f"{_a(subj)} {pred} {_a(obj)}"
        if form == 3:
            text = f"there is {text}"
        if form == 4:
            text = f"{text} in the {place}"
        return text[0].upper() + text[1:] + "."

    def _filler(self, rng, entities, scene) -> str:
        a, b = (self.cs.entities[e] for e in entities)
        place = _choice(rng, world_commonsense.SCENE_PLACES[self.cs.scene_names[scene]])
        form = rng.integers(3)
        text = (f"a picture of {_a(a)} and {_a(b)}", f"a view of the {place}", f"{_a(a)} in the {place}")[form]
        return text[0].upper() + text[1:] + "."


def _choice(rng, options):
    return options[rng.integers(len(options))]


_PLURAL_NOUNS = {"pant": "pants", "jean": "jeans", "short": "shorts", "glass": "glasses"}
_MASS_NOUNS = frozenset(("hair", "snow", "grass", "water", "sand", "dirt", "food", "hay", "wood", "metal", "plastic",
                         "stone", "brick", "ground", "sky", "ocean", "traffic"))


def _a(noun: str) -> str:
    """The noun with an article as a caption would write it: "an umbrella", "pants", "snow"."""
    last = noun.split()[-1]
    if last in _PLURAL_NOUNS:
        return noun[: -len(last)] + _PLURAL_NOUNS[last]
    if last in _MASS_NOUNS:
        return noun
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _clip_boxes(x, y, w, h, width, height):
    """Keeps most of each box in the image (shifting it in), then cuts it at the image border."""
    x = np.clip(x, -0.3 * w, width - 0.7 * w)
    y = np.clip(y, -0.3 * h, height - 0.7 * h)
    x1, y1 = np.maximum(x, 0), np.maximum(y, 0)
    x2, y2 = np.minimum(x + w, width), np.minimum(y + h, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def _integer_boxes(box, width, height):
    """Integer (x, y, w, h) boxes inside the image, at least 1 pixel wide and high."""
    x0, y0 = np.floor(box[:, 0]), np.floor(box[:, 1])
    w = np.maximum(np.minimum(np.ceil(box[:, 0] + box[:, 2]), width) - x0, 1)
    h = np.maximum(np.minimum(np.ceil(box[:, 1] + box[:, 3]), height) - y0, 1)
    x0, y0 = np.clip(x0, 0, width - w), np.clip(y0, 0, height - h)
    return np.stack([x0, y0, w, h], axis=1).astype(np.int64)


def iter_chunks(config: ml_collections.ConfigDict, world: World | None = None) -> Iterator[Chunk]:
    """The world's images, CHUNK_IMAGES at a time, with their latent structure."""
    world = world or World(config)
    for k in range(-(-config.num_images // CHUNK_IMAGES)):
        yield world.sample_chunk(k)


# ---------------------------------------------------------------------------------------------
# Writing.

_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


class _ListWriter:
    """Streams a JSON list to a file, one element at a time."""

    def __init__(self, f):
        self.f, self.first = f, True
        f.write("[")

    def add(self, item) -> None:
        self.f.write(_JSON.encode(item) if self.first else "," + _JSON.encode(item))
        self.first = False

    def close(self) -> None:
        self.f.write("]\n")


def _write_chunk(world: World, chunk: Chunk, out: dict, next_ids: list[int]) -> None:
    """Appends a chunk's images to the open world files; `next_ids` = [object id, relationship id]."""
    n_obj, n_rel = len(chunk.obj_entity), len(chunk.rel_subj)
    obj_ids = (next_ids[0] + np.arange(n_obj)).tolist()
    rel_ids = (next_ids[1] + np.arange(n_rel)).tolist()
    next_ids[0] += n_obj
    next_ids[1] += n_rel
    boxes = chunk.obj_box.tolist()
    entity = chunk.obj_entity.tolist()
    conf = chunk.obj_conf.tolist()
    feature_bytes = np.ascontiguousarray(chunk.features, dtype="<f4").tobytes()
    row_bytes = 4 * chunk.features.shape[1]
    classes, synsets = world.cs.entities, world.synsets
    num = len(chunk.image_ids)
    obj_start = np.searchsorted(chunk.obj_image, np.arange(num + 1)).tolist()
    rel_start = np.searchsorted(chunk.rel_image, np.arange(num + 1)).tolist()
    rel_subj, rel_obj = chunk.rel_subj.tolist(), chunk.rel_obj.tolist()
    captions: dict[int, list[str]] = {}
    for img, text, _ in chunk.captions:
        captions.setdefault(img, []).append(text)
    true_subj, true_obj, true_pred = world.true_wordings(chunk)
    true_start = np.searchsorted(chunk.obj_image[true_subj], np.arange(num + 1)).tolist()
    true_subj, true_obj, true_pred = true_subj.tolist(), true_obj.tolist(), true_pred.tolist()

    def ref(row: int, name: str) -> dict:
        x, y, w, h = boxes[row]
        synset = synsets[entity[row]]
        return {"object_id": obj_ids[row], "x": x, "y": y, "w": w, "h": h, "name": name, "synsets": synset}

    for i, (image_id, width, height) in enumerate(
        zip(chunk.image_ids.tolist(), chunk.widths.tolist(), chunk.heights.tolist(), strict=True)
    ):
        url = f"https://synthetic.invalid/clever_world/{image_id}.jpg"
        rows = range(obj_start[i], obj_start[i + 1])
        out["image_data.json"].add(
            {"image_id": image_id, "url": url, "width": width, "height": height, "coco_id": None, "flickr_id": None}
        )
        objects = []
        regions = []
        for r in rows:
            x, y, w, h = boxes[r]
            objects.append({"object_id": obj_ids[r], "x": x, "y": y, "w": w, "h": h, "names": [chunk.obj_name[r]],
                            "synsets": synsets[entity[r]]})
            feature = base64.b64encode(feature_bytes[r * row_bytes:(r + 1) * row_bytes]).decode("ascii")
            regions.append({"object_id": obj_ids[r], "rect": [float(x), float(y), float(x + w), float(y + h)],
                            "class": classes[entity[r]], "conf": conf[r], "feature": feature})
        out["objects.json"].add({"image_id": image_id, "image_url": url, "objects": objects})
        relationships = [
            {"relationship_id": rel_ids[k], "predicate": chunk.rel_predicate[k], "synsets": [],
             "subject": ref(rel_subj[k], chunk.rel_subj_name[k]), "object": ref(rel_obj[k], chunk.rel_obj_name[k])}
            for k in range(rel_start[i], rel_start[i + 1])
        ]
        out["relationships.json"].add({"image_id": image_id, "relationships": relationships})
        truth = [
            {"predicate": world.cs.predicates[true_pred[k]], "subject": {"object_id": obj_ids[true_subj[k]]},
             "object": {"object_id": obj_ids[true_obj[k]]}}
            for k in range(true_start[i], true_start[i + 1])
        ]
        out["interactions.json"].add({"image_id": image_id, "relationships": truth})
        record = {"image_h": height, "image_w": width, "num_boxes": len(regions), "objects": regions}
        out["features.tsv"].write(f"{image_id}\t{_JSON.encode(record)}\n")
        for text in captions.get(i, []):
            out["captions.json"].add({"image_id": image_id, "caption": text})


def commonsense_json(world: World) -> dict:
    """The ground truth: every plausible vocabulary triplet with its grade and commonness."""
    cs = world.cs
    triplets = [
        {"subject": s, "predicate": p, "object": o, "grade": 2 if c >= world_commonsense.GRADE2_THRESHOLD else 1,
         "commonness": c}
        for s, p, o, c in cs.truth
    ]
    return {"entities": list(cs.entities[:100]), "predicates": list(cs.predicates), "triplets": triplets}


def generate(config: ml_collections.ConfigDict, out_dir: str | os.PathLike) -> None:
    """Writes the world's WORLD_FILES into `out_dir`; the same config gives byte-identical files.

    Files are written under temporary names and renamed at the end; stale world files in
    `out_dir` are removed first, so an interrupted run never leaves a complete-looking world.
    Only an empty folder or one that generate() made (it holds MARKER) is written into: a folder
    with other contents, e.g. a user's Visual Genome files, is refused (ValueError), untouched.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MARKER)):
        raise ValueError(
            f"{out_dir}: not writing the generated world here: the folder has files that the world generator did "
            f"not make (e.g. {sorted(os.listdir(out_dir))[0]!r}) and the generated world would replace any of "
            f"{', '.join(WORLD_FILES)}. Point --config.data.world_dir at an empty or new folder (for your own "
            "Visual Genome files use --config.data.source=vg --config.data.vg_dir=...)")
    _write_marker(config, out_dir)
    for name in WORLD_FILES:
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    world = World(config)
    partial = {name: os.path.join(out_dir, name + ".partial") for name in WORLD_FILES}
    handles = {name: open(partial[name], "w", encoding="utf-8", newline="\n") for name in STREAMED_FILES}
    try:
        out = {name: _ListWriter(f) for name, f in handles.items() if name != "features.tsv"}
        out["features.tsv"] = handles["features.tsv"]
        next_ids = [1, 1]
        for chunk in iter_chunks(config, world):
            _write_chunk(world, chunk, out, next_ids)
        for name, writer in out.items():
            if name != "features.tsv":
                writer.close()
    finally:
        for f in handles.values():
            f.close()
    with open(partial["commonsense.json"], "w", encoding="utf-8", newline="\n") as f:
        f.write(_JSON.encode(commonsense_json(world)) + "\n")
    for name in WORLD_FILES:
        os.replace(partial[name], os.path.join(out_dir, name))


def settings_digest(config: ml_collections.ConfigDict) -> str:
    """The SHA-256 (hex) of world settings `config` (config.data.world)."""
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()


def _write_marker(config: ml_collections.ConfigDict, out_dir: str) -> None:
    """Writes MARKER into `out_dir`: a JSON object with world settings `config` and their digest."""
    files.write_json(os.path.join(out_dir, MARKER), {
        "about": "This folder holds a world generated by clever_jax.data.world; generate() may replace its files.",
        "digest": settings_digest(config), "settings": json.loads(config.to_json())})


def check_settings(config: ml_collections.ConfigDict, out_dir: str) -> None:
    """Checks that the world in `out_dir` was generated with settings `config` (config.data.world),
    as its MARKER records. A world marked before markers recorded settings (a line of text, or no
    marker) tells only its number of images (the records of image_data.json): when that matches
    config.num_images the world is reused with a log line and its marker rewritten with `config`.

    Raises:
      ConfigError: naming each setting that differs, with both values (for an old marker, the
        numbers of images), or naming a damaged marker. The world is not replaced: the records
        (fingerprinted by the world files' sizes and times), checkpoints and grades made from it
        would no longer match it.
    """
    path = os.path.join(out_dir, MARKER)
    keep = ("It is not replaced, as the records, runs and grades made from it would no longer match it: point "
            "--config.data.world_dir at a new folder, or remove this one to generate the new world there")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config.data.world_dir: cannot read the world's marker {path}: {e}") from e
    if not text or text.startswith("This folder holds a world generated by clever_jax.data.world"):
        count = sum(1 for _ in iter_json_list(os.path.join(out_dir, "image_data.json")))
        if count != config.num_images:
            raise ConfigError(f"config.data.world_dir: {out_dir} holds a world of {count} images, generated before "
                              f"its settings were recorded; {config.num_images} asked (data.world.num_images). {keep}")
        logging.info("%s: a world generated before its settings were recorded, of the %d images asked: reused as it "
                     "is, and its marker now records the current settings (remove the folder to generate the world "
                     "of the current settings there)", out_dir, count)
        _write_marker(config, out_dir)
        return
    try:
        recorded = json.loads(text)
    except ValueError:
        recorded = None
    if not (isinstance(recorded, dict) and isinstance(recorded.get("settings"), dict)
            and isinstance(recorded.get("digest"), str)):
        raise ConfigError(f"config.data.world_dir: the world's marker {path} is damaged: expected a JSON object with "
                          "'settings' (an object) and 'digest' (a string). Remove the folder to generate the world "
                          "there again, or point --config.data.world_dir at a new folder")
    if recorded["digest"] == settings_digest(config):
        return
    old, new = recorded["settings"], json.loads(config.to_json())
    differ = [f"data.world.{k}: {old.get(k, 'unset')!r} there, {new.get(k, 'unset')!r} asked"
              for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    raise ConfigError(f"config.data.world_dir: {out_dir} holds a world generated with other settings "
                      f"({'; '.join(differ)}). {keep}")


def generated_world(w, workdir: str) -> str:
    """The folder of world config `w` under `workdir` (named by its settings), generated there first
    when missing, in a child process so that its memory does not count."""
    digest = settings_digest(w)[:12]  # A changed world: a new folder.
    world_dir = os.path.join(workdir, f"world-{w.num_images}-{w.feature_dim}-{digest}")
    if not all(os.path.isfile(os.path.join(world_dir, f)) for f in WORLD_FILES):
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=generate, args=(w, world_dir))
        child.start()
        child.join()
        if child.exitcode:
            raise RuntimeError(f"world generation failed with exit code {child.exitcode}")
        logging.info("Generated the %d-image world in %.0f s", w.num_images, time.perf_counter() - start)
    return world_dir
