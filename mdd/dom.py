"""Dynamic overlap mitigation inside a run (DESIGN.md §1.3): which feature space and
threshold a check uses, which real images may re-seed an overlapping synthetic one,
and the record of every real image the set has used.

Two versions, every part a parameter of :class:`mdd.distill_config.DistillConfig`:

- v1 (the first engine): post-ReLU pooled features of expert 0 at the current stage's
  target, a fixed τ, re-seeds from the class's farthest real image (used ones included).
- v2 (the default): features that can separate (``dom_space="preact"``, centred by the
  class's real mean with ``dom_center``), from a trained expert (``dom_theta="trained"``:
  expert 0 at its last position), τ per class at a percentile of real–real
  within-class similarity in the same space (``tau_rule="percentile"``), re-seeds among
  typical real images of the class that the set never used (``reseed="typical"``).

The functions that measure live in :mod:`mdd.overlap`; this module decides which of
them a run uses and keeps the state a checkpoint must carry (``used``).
"""
from __future__ import annotations

import torch

from .overlap import (OverlapReport, choose_reseeds, class_centers, class_similarity,
                      class_similarity_centered, detect, detect_per_class, embed, farthest_real,
                      features, real_threshold)


class DomSpace:
    """The feature space, threshold and re-seeding rule of one run's DOM checks."""

    def __init__(self, cfg, student, traj, experts, data):
        self.cfg, self.student, self.traj, self.data = cfg, student, traj, data
        self.last = experts.positions
        self.used: set[int] = set()
        self._refs: dict[int, tuple[dict | None, dict[int, float] | None, dict]] = {}

    def position(self, stage_target: int) -> int:
        """The expert position whose network embeds the images."""
        return self.last if self.cfg.dom_theta == "trained" else stage_target

    def reference(self, pos: int) -> tuple[dict | None, dict[int, float] | None, dict]:
        """(class centres or None, τ per class or None, a JSON summary) at ``pos``,
        computed once per position from the real training images."""
        if pos not in self._refs:
            cfg, theta = self.cfg, self.traj.get(0, pos)
            x, y, k = self.data.train.x, self.data.train.y, self.data.num_classes
            gen = torch.Generator().manual_seed(cfg.seed)
            centers = class_centers(self.student, theta, x, y, k, cfg.dom_space, gen=gen) \
                if cfg.dom_center else None
            if cfg.tau_rule == "percentile":
                taus, summary = real_threshold(self.student, theta, x, y, k, cfg.dom_space, centers,
                                               cfg.tau_percentile, gen=gen)
            else:
                taus, summary = None, {"space": cfg.dom_space, "centred": cfg.dom_center,
                                       "tau": cfg.tau}
            self._refs[pos] = (centers, taus, summary)
        return self._refs[pos]

    def similarities(self, images: torch.Tensor, labels: torch.Tensor, pos: int) -> dict:
        """Within-class cosine matrices of the synthetic images at ``pos``."""
        cfg, theta = self.cfg, self.traj.get(0, pos)
        if cfg.dom_space == "pooled" and not cfg.dom_center:
            return class_similarity(embed(self.student, theta, images), labels,
                                    self.data.num_classes)
        centers = self.reference(pos)[0]
        raw = features(self.student, theta, images, cfg.dom_space)
        if centers is None:
            feats = torch.nn.functional.normalize(raw, dim=1)
            return class_similarity(feats, labels, self.data.num_classes)
        return class_similarity_centered(raw, labels, centers)

    def detect(self, sims: dict, pos: int) -> OverlapReport:
        taus = self.reference(pos)[1] if self.cfg.tau_rule == "percentile" else None
        return detect(sims, self.cfg.tau) if taus is None else detect_per_class(sims, taus)

    def reseed(self, images: torch.Tensor, labels: torch.Tensor, replace: list[int], pos: int,
               gen: torch.Generator) -> dict[int, int]:
        """{set index: train index} for the images to replace; records them as used."""
        cfg, theta = self.cfg, self.traj.get(0, pos)
        x, y = self.data.train.x, self.data.train.y
        if cfg.reseed == "typical":
            # a class whose real images are all used already (tiny sets) keeps its images
            free = {c: int((y == c).sum()) - sum(int(y[i]) == c for i in self.used)
                    for c in {int(labels[i]) for i in replace}}
            need: dict[int, int] = {}
            for i in replace:
                need[int(labels[i])] = need.get(int(labels[i]), 0) + 1
            replace = [i for i in replace if free[int(labels[i])] >= need[int(labels[i])]]
            if not replace:
                return {}
            centers = self.reference(pos)[0]
            if centers is None:   # typicality needs a centre even where cosines are uncentred
                centers = class_centers(self.student, theta, x, y, self.data.num_classes,
                                        cfg.dom_space, gen=torch.Generator().manual_seed(cfg.seed))
            chosen = choose_reseeds(self.student, theta, images, labels, replace, x, y, gen,
                                    self.used, cfg.dom_space, centers, cfg.typical_quantile,
                                    cfg.dom_pool)
        else:
            chosen = farthest_real(self.student, theta, images, labels, replace, x, y, gen,
                                   cfg.dom_pool)
        self.used.update(chosen.values())
        return chosen
