"""Dynamic overlap mitigation (DOM, DESIGN.md §1.3): find synthetic images of a class
that have drifted onto each other and re-seed one of each pair from the real image of
that class farthest from the current synthetic ones.

Everything happens in the expert's feature space (penultimate ConvNet features,
L2-normalized) at the current target epoch; similarities are cosines within a class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
