"""Dynamic overlap mitigation (DOM, DESIGN.md §1.3): find synthetic images of a class
that have drifted onto each other and re-seed one of each pair from a real image of
that class.

v1 (``embed``, ``class_similarity``, ``detect``, ``farthest_real``): post-ReLU pooled
penultimate features, L2-normalized, a fixed τ, re-seed from the farthest real image.
Non-negative features squash cosines toward 1 and the farthest real image is an
outlier that gets picked again and again.

v2 (``features``/``embed_space``, ``class_centers``, ``class_similarity_centered``,
``real_threshold``, ``detect_per_class``, ``choose_reseeds``, ``diversity_penalty``):
features in a space that can separate (pre-activation, and/or centred by the class's
real mean), τ_c a percentile of real–real similarity of class c in that same space,
and re-seeds drawn from typical, never-used real images far from the kept ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .matching import Student


@torch.no_grad()
def embed(student: Student, theta: torch.Tensor, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """L2-normalized penultimate features N×D of images x N×C×H×W at parameters θ (P)."""
    out = [F.normalize(student.embed(theta, x[i:i + batch]), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0)


def class_similarity(feats: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per class: (indices into the set M_c, cosine similarity matrix M_c×M_c).

    ``feats`` must be L2-normalized (N×D); labels N.
    """
    out = {}
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        f = feats[idx]
        out[c] = (idx, f @ f.T)
    return out


@dataclass
class OverlapReport:
    """What one DOM check found."""

    overlap_ratio: float              # overlapping pairs / all within-class pairs
    mean_similarity: float            # mean off-diagonal within-class cosine
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (i, j, cos), set indices
    replace: list[int] = field(default_factory=list)                   # set indices to re-seed
    per_class: dict[int, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"overlap_ratio": self.overlap_ratio, "mean_similarity": self.mean_similarity,
                "pairs": [[i, j, s] for i, j, s in self.pairs], "replace": list(self.replace),
                "per_class": {str(k): v for k, v in self.per_class.items()}}


def detect(sims: dict[int, tuple[torch.Tensor, torch.Tensor]], tau: float) -> OverlapReport:
    """Pairs above τ within each class, and one image per pair to replace.

    Pairs are taken from the most similar down; a pair whose images are both still
    kept marks for replacement the one more similar, on average, to the rest of its
    class (ties: the later index). A pair that already lost an image needs nothing
    more: its other image is no longer duplicated by it.
    """
    n_pairs = n_over = 0
    sim_sum = 0.0
    pairs, replace, per_class = [], [], {}
    for c, (idx, s) in sims.items():
        m = len(idx)
        if m < 2:
            per_class[c] = {"pairs": 0, "overlaps": 0, "mean_similarity": None}
            continue
        iu = torch.triu_indices(m, m, offset=1)
        vals = s[iu[0], iu[1]]
        n_pairs += len(vals)
        sim_sum += float(vals.sum())
        over = (vals > tau).nonzero().flatten()
        n_over += len(over)
        per_class[c] = {"pairs": len(vals), "overlaps": len(over),
                        "mean_similarity": float(vals.mean())}
        mean_to_rest = (s.sum(1) - s.diagonal()) / (m - 1)
        gone: set[int] = set()
        for k in over[vals[over].argsort(descending=True)].tolist():
            a, b = int(iu[0, k]), int(iu[1, k])
            pairs.append((int(idx[a]), int(idx[b]), float(vals[k])))
            if a in gone or b in gone:
                continue
            drop = a if mean_to_rest[a] > mean_to_rest[b] else b
            gone.add(drop)
            replace.append(int(idx[drop]))
    return OverlapReport(overlap_ratio=n_over / n_pairs if n_pairs else 0.0,
                         mean_similarity=sim_sum / n_pairs if n_pairs else 0.0,
                         pairs=pairs, replace=sorted(replace), per_class=per_class)


def farthest_real(student: Student, theta: torch.Tensor, syn_x: torch.Tensor, syn_y: torch.Tensor,
                  replace: list[int], real_x: torch.Tensor, real_y: torch.Tensor,
                  gen: torch.Generator, pool: int = 512) -> dict[int, int]:
    """For each set index in ``replace``, the train index of the real image to seed it with.

    Candidates: up to ``pool`` random real images of the class (seeded by ``gen``).
    Chosen greedily: the candidate whose highest cosine to the class's kept synthetic
    images (and to the real images already chosen) is the lowest — the farthest point.
    Returns {set index: train index}.
    """
    chosen: dict[int, int] = {}
    if not replace:
        return chosen
    feats = embed(student, theta, syn_x)
    for c in sorted({int(syn_y[i]) for i in replace}):
        targets = [i for i in replace if int(syn_y[i]) == c]
        cls = (syn_y == c).nonzero().flatten().tolist()
        kept = [i for i in cls if i not in replace]
        cand = (real_y == c).nonzero().flatten()
        if len(cand) == 0:
            raise ValueError(f"class {c} has no real training image to re-seed from")
        cand = cand[torch.randperm(len(cand), generator=gen)[:pool]]
        # real images live on the CPU (the data layer's tensors); θ may be on a GPU
        cf = embed(student, theta, real_x[cand].to(theta.device))
        anchors = feats[kept] if kept else cf[:0]
        used = torch.zeros(len(cand), dtype=torch.bool, device=theta.device)
        for i in targets:
            if len(anchors):
                closeness = (cf @ anchors.T).max(1).values
            else:   # nothing kept in the class: any candidate is as far as another
                closeness = torch.zeros(len(cand), device=theta.device)
            closeness[used] = float("inf")
            k = int(closeness.argmin())
            used[k] = True
            chosen[i] = int(cand[k])
            anchors = torch.cat([anchors, cf[k:k + 1]])
    return chosen


# ------------------------------------------------------------------ DOM v2
def _default_gen(gen: torch.Generator | None) -> torch.Generator:
    # subsampling must be reproducible even when the caller passes no generator
    return gen if gen is not None else torch.Generator().manual_seed(0)


def _subsample(idx: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """At most k of the indices ``idx`` (random, seeded; all of them, permuted, if fewer)."""
    return idx[torch.randperm(len(idx), generator=gen)[:k]]


@torch.no_grad()
def features(student: Student, theta: torch.Tensor, x: torch.Tensor, space: str,
             batch: int = 512) -> torch.Tensor:
    """Raw (not normalized) features N×D of images x N×C×H×W in ``space`` at θ (P).

    Images are moved to θ's device batch by batch (real images stay on the CPU).
    """
    out = [student.features(theta, x[i:i + batch].to(theta.device), space)
           for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0, device=theta.device)


def embed_space(student: Student, theta: torch.Tensor, x: torch.Tensor, space: str,
                center: torch.Tensor | None = None, batch: int = 512) -> torch.Tensor:
    """L2-normalized features N×D of x N×C×H×W in ``space``, minus ``center`` (D) first."""
    f = features(student, theta, x, space, batch)
    return F.normalize(f - center if center is not None else f, dim=1)


def class_centers(student: Student, theta: torch.Tensor, real_x: torch.Tensor,
                  real_y: torch.Tensor, num_classes: int, space: str, max_per_class: int = 512,
                  gen: torch.Generator | None = None) -> dict[int, torch.Tensor]:
    """{class: mean raw feature D} over ≤ ``max_per_class`` seeded-random real images of it.

    Classes without a real image get no entry.
    """
    gen, out = _default_gen(gen), {}
    for c in range(num_classes):
        idx = (real_y == c).nonzero().flatten()
        if len(idx):
            out[c] = features(student, theta, real_x[_subsample(idx, max_per_class, gen)],
                              space).mean(0)
    return out


def _centred(feats_raw: torch.Tensor, labels: torch.Tensor,
             centers: dict[int, torch.Tensor]) -> torch.Tensor:
    """Each row of feats_raw N×D minus its class's centre, L2-normalized (N×D)."""
    out, labels = torch.empty_like(feats_raw), labels.to(feats_raw.device)
    for c in labels.unique().tolist():
        if c not in centers:
            raise ValueError(f"class {c} has no centre (no real image of it?)")
        m = labels == c
        out[m] = F.normalize(feats_raw[m] - centers[c].to(feats_raw), dim=1)
    return out


def class_similarity_centered(feats_raw: torch.Tensor, labels: torch.Tensor,
                              centers: dict[int, torch.Tensor]
                              ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Like :func:`class_similarity`, on raw features N×D centred by their class's real mean.

    Covers every class in ``centers`` (empty ones too, as class_similarity does for all
    classes); a labelled class missing from ``centers`` is a ValueError.
    """
    feats, out = _centred(feats_raw, labels, centers), {}
    for c in sorted(set(centers) | set(labels.unique().tolist())):
        idx = (labels == c).nonzero().flatten()
        out[c] = (idx, feats[idx.to(feats.device)] @ feats[idx.to(feats.device)].T)
    return out


def real_threshold(student: Student, theta: torch.Tensor, real_x: torch.Tensor,
                   real_y: torch.Tensor, num_classes: int, space: str,
                   centers: dict[int, torch.Tensor] | None, percentile: float = 95.0,
                   max_per_class: int = 256, gen: torch.Generator | None = None
                   ) -> tuple[dict[int, float], dict]:
    """τ_c = ``percentile`` of the real–real within-class cosines of class c.

    Cosines are taken in the same space DOM compares synthetic images in: ``space``,
    centred by ``centers[c]`` (None: not centred), L2-normalized, over ≤ ``max_per_class``
    seeded-random real images of c. Interpolation is numpy's default (linear). A class
    with fewer than 2 real images gets τ = 1.0 (no pair can exceed it).
    Returns (τ_by_class, summary) — the summary is JSON-able, for the run log.
    """
    gen, taus, per_class = _default_gen(gen), {}, {}
    for c in range(num_classes):
        idx = _subsample((real_y == c).nonzero().flatten(), max_per_class, gen)
        m = len(idx)
        if m < 2:
            taus[c] = 1.0
            per_class[str(c)] = {"n": m, "tau": 1.0, "mean": None}
            continue
        f = embed_space(student, theta, real_x[idx], space,
                        centers[c] if centers is not None else None)
        iu = torch.triu_indices(m, m, offset=1, device=f.device)
        # numpy itself: its percentile is the reference, and torch.quantile caps at 2^24 values
        vals = (f @ f.T)[iu[0], iu[1]].double().cpu().numpy()
        taus[c] = float(np.percentile(vals, percentile))
        per_class[str(c)] = {"n": m, "tau": taus[c], "mean": float(vals.mean())}
    summary = {"space": space, "centred": centers is not None, "percentile": percentile,
               "tau_mean": sum(taus.values()) / len(taus) if taus else None,
               "per_class": per_class}
    return taus, summary


def detect_per_class(sims: dict[int, tuple[torch.Tensor, torch.Tensor]],
                     tau_by_class: dict[int, float]) -> OverlapReport:
    """:func:`detect` with its own τ per class (same pairs, same replacement rule).

    Each class is detected alone and the reports merged; per_class entries gain "tau".
    A class with ≥ 2 images and no τ is a ValueError.
    """
    pairs, replace, per_class = [], [], {}
    n_pairs = n_over = 0
    sim_sum = 0.0
    for c, entry in sims.items():
        if len(entry[0]) >= 2 and c not in tau_by_class:
            raise ValueError(f"no τ for class {c}")
        tau = float(tau_by_class.get(c, 1.0))
        r = detect({c: entry}, tau)
        pc = r.per_class[c]
        pairs += r.pairs
        replace += r.replace
        per_class[c] = {**pc, "tau": tau}
        n_pairs += pc["pairs"]
        n_over += pc["overlaps"]
        sim_sum += (pc["mean_similarity"] or 0.0) * pc["pairs"]
    return OverlapReport(overlap_ratio=n_over / n_pairs if n_pairs else 0.0,
                         mean_similarity=sim_sum / n_pairs if n_pairs else 0.0,
                         pairs=pairs, replace=sorted(replace), per_class=per_class)


def choose_reseeds(student: Student, theta: torch.Tensor, syn_x: torch.Tensor,
                   syn_y: torch.Tensor, replace: list[int], real_x: torch.Tensor,
                   real_y: torch.Tensor, gen: torch.Generator, used: set[int], space: str,
                   centers: dict[int, torch.Tensor], typical_quantile: float = 0.5,
                   pool: int = 512) -> dict[int, int]:
    """For each set index in ``replace``, a train index to re-seed it from: {set idx: train idx}.

    syn_x M×C×H×W, syn_y M; real_x N×C×H×W, real_y N. Candidates of class c: real images
    of c not in ``used`` (init indices and earlier re-seeds; not modified here — the
    caller adds the result), ≤ ``pool`` of them at random (``gen``). Of those, the
    typical ones: raw-feature distance to ``centers[c]`` at most the ``typical_quantile``
    quantile of the candidates' distances (widened to the nearest ones if fewer than
    the images to re-seed) — an outlier would be picked again and again and drift back.
    Then greedily the farthest: lowest max centred cosine to the class's kept synthetic
    images and to the candidates already chosen. No index twice; ValueError if a class
    has too few unused real images.
    """
    chosen: dict[int, int] = {}
    if not replace:
        return chosen
    syn_raw = features(student, theta, syn_x, space)
    rep = set(replace)
    for c in sorted({int(syn_y[i]) for i in replace}):
        targets = sorted(i for i in replace if int(syn_y[i]) == c)
        kept = [i for i in (syn_y == c).nonzero().flatten().tolist() if i not in rep]
        cand = torch.tensor([i for i in (real_y == c).nonzero().flatten().tolist()
                             if i not in used], dtype=torch.long)
        if len(cand) < len(targets):
            raise ValueError(f"class {c}: {len(cand)} unused real images, "
                             f"{len(targets)} to re-seed")
        cand = _subsample(cand, pool, gen)
        center = centers[c].to(syn_raw)
        raw = features(student, theta, real_x[cand], space)
        dist = (raw - center).norm(dim=1)
        k = max(len(targets), int((dist <= torch.quantile(dist, typical_quantile)).sum()))
        typ = dist.argsort()[:k]                   # the k candidates nearest the centre
        cand, cf = cand[typ.cpu()], F.normalize(raw[typ] - center, dim=1)
        anchors = F.normalize(syn_raw[kept] - center, dim=1) if kept else cf[:0]
        taken = torch.zeros(len(cand), dtype=torch.bool, device=cf.device)
        for i in targets:
            closeness = ((cf @ anchors.T).max(1).values if len(anchors)
                         else torch.zeros(len(cand), device=cf.device))
            closeness[taken] = float("inf")
            j = int(closeness.argmin())
            taken[j] = True
            chosen[i] = int(cand[j])
            anchors = torch.cat([anchors, cf[j:j + 1]])
    return chosen


def diversity_penalty(feats: torch.Tensor, labels: torch.Tensor,
                      tau: float | dict[int, float]) -> torch.Tensor:
    """Differentiable scalar: mean over within-class pairs of relu(cos − τ_c)².

    ``feats`` N×D (normalized here, so raw or centred features both work, with their
    graph back to the images); labels N; τ a float or {class: τ_c}. 0 without pairs.
    """
    f = F.normalize(feats, dim=1)
    total, n = feats.sum() * 0.0, 0                # keeps the graph even with no pair
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        m = len(idx)
        if m < 2:
            continue
        t = float(tau[c] if isinstance(tau, dict) else tau)
        iu = torch.triu_indices(m, m, offset=1, device=f.device)
        cos = (f[idx] @ f[idx].T)[iu[0], iu[1]]
        total = total + F.relu(cos - t).pow(2).sum()
        n += len(cos)
    return total / n if n else total
