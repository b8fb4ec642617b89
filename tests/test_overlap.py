"""DOM's parts (mdd.overlap): similarity, detection, farthest-real replacement (v1), and
v2's separating feature spaces, data-relative τ, typical unused re-seeds, diversity term."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdd.matching import Student
from mdd.nets import ConvNet, flatten_params
from mdd.overlap import (choose_reseeds, class_centers, class_similarity,
                         class_similarity_centered, detect, detect_per_class, diversity_penalty,
                         embed, embed_space, farthest_real, features, real_threshold)


def student(seed: int = 0):
    torch.manual_seed(seed)
    net = ConvNet(1, 2, 28, width=16)
    return Student(net), flatten_params(net)


def test_similarity_is_within_class_cosine() -> None:
    feats = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 2.0]]), dim=1)
    sims = class_similarity(feats, torch.tensor([0, 0, 1, 1]), 2)
    idx0, s0 = sims[0]
    assert idx0.tolist() == [0, 1] and torch.allclose(s0, torch.tensor([[1.0, 0.7071], [0.7071, 1.0]]),
                                                     atol=1e-4)
    rep = detect(sims, tau=0.9)
    assert rep.replace == [3] or rep.replace == [2]         # class 1 are the same direction
    assert rep.overlap_ratio == 0.5 and abs(rep.mean_similarity - (0.7071 + 1.0) / 2) < 1e-4
    assert detect(sims, tau=1.01).replace == []


def test_detect_marks_one_image_per_pair_and_the_most_redundant() -> None:
    # class 0: a, a, a (three copies) and one different image b
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    feats = torch.stack([a, a, b, a])
    rep = detect(class_similarity(feats, torch.zeros(4, dtype=torch.long), 1), tau=0.99)
    assert len(rep.pairs) == 3                               # (0,1), (0,3), (1,3)
    assert sorted(rep.replace) in ([0, 1], [0, 3], [1, 3])   # two of the three copies go
    assert 2 not in rep.replace


def test_planted_duplicate_is_found_and_distinct_images_left_alone() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 28, 28, generator=g)
    x[1] = x[0]                                              # planted duplicate in class 0
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    sims = class_similarity(embed(st, theta, x), y, 2)
    tau = float(max(s[~torch.eye(3, dtype=torch.bool)].max() for c, (_, s) in sims.items()
                    if c == 1)) + 1e-3                       # above every distinct pair
    rep = detect(sims, tau)
    assert rep.replace in ([0], [1])
    assert [tuple(p[:2]) for p in rep.pairs] == [(0, 1)]


def test_farthest_real_picks_the_least_similar_candidate_of_the_class() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(1)
    syn = torch.randn(4, 1, 28, 28, generator=g)
    syn_y = torch.tensor([0, 0, 1, 1])
    real = torch.randn(30, 1, 28, 28, generator=g)
    real_y = torch.arange(30) % 2
    chosen = farthest_real(st, theta, syn, syn_y, [1], real, real_y, torch.Generator().manual_seed(0))
    assert list(chosen) == [1] and int(real_y[chosen[1]]) == 0
    # brute force: the class-0 real image whose cosine to the kept image 0 is lowest
    f_real = embed(st, theta, real)
    f0 = embed(st, theta, syn[:1])
    cand = (real_y == 0).nonzero().flatten()
    best = int(cand[(f_real[cand] @ f0.T).squeeze(1).argmin()])
    assert chosen[1] == best


def test_farthest_real_spreads_several_replacements() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(2)
    syn = torch.randn(3, 1, 28, 28, generator=g)
    real = torch.randn(20, 1, 28, 28, generator=g)
    chosen = farthest_real(st, theta, syn, torch.zeros(3, dtype=torch.long), [0, 1, 2], real,
                           torch.zeros(20, dtype=torch.long), torch.Generator().manual_seed(0))
    assert sorted(chosen) == [0, 1, 2] and len(set(chosen.values())) == 3   # no real image twice


# ------------------------------------------------------------------ DOM v2
class Identity:
    """A stand-in student whose features are the inputs themselves (x N×D → N×D): lets a
    test put points exactly where it wants them in feature space."""

    def features(self, flat: torch.Tensor, x: torch.Tensor, space: str) -> torch.Tensor:
        return x.flatten(1).to(flat.dtype)


def near_identical(g: torch.Generator, n: int, base: torch.Tensor) -> torch.Tensor:
    """n images that are ``base`` plus a little noise (n×1×28×28)."""
    return base + 0.3 * torch.randn(n, 1, 28, 28, generator=g)


def test_preact_features_are_signed_and_pooled_is_todays_embed() -> None:
    st, theta = student()
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pooled, pre = st.features(theta, x, "pooled"), st.features(theta, x, "preact")
    assert torch.equal(pooled, st.embed(theta, x)) and (pooled >= 0).all()
    assert pre.shape == pooled.shape and (pre < 0).any()
    # ReLU and average pooling commute only where all four inputs are ≥ 0: pooled ≥ relu(preact)
    assert (pooled >= F.relu(pre) - 1e-6).all()
    with pytest.raises(ValueError):
        st.features(theta, x, "logits")


def test_centring_separates_a_duplicate_that_pooled_cosines_hide() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 28, 28, generator=g)
    x = near_identical(g, 8, base)
    x[1] = x[0] + 1e-3 * torch.randn(1, 28, 28, generator=g)       # the duplicated pair
    real = near_identical(g, 64, base)
    off = ~torch.eye(8, dtype=torch.bool)
    rest = off.clone()
    rest[0, 1] = rest[1, 0] = False
    for space in ("pooled", "preact"):
        p = embed_space(st, theta, x, space)
        assert (p @ p.T)[off].min() > 0.85                       # everything looks alike
        center = class_centers(st, theta, real, torch.zeros(64, dtype=torch.long), 1, space)[0]
        f = embed_space(st, theta, x, space, center)
        s = f @ f.T
        assert s[0, 1] > 0.99 and s[rest].max() < 0.6 and s[rest].min() < 0.0   # now spread
        # the per-class helper gives the same matrix from raw features
        idx, s2 = class_similarity_centered(features(st, theta, x, space),
                                            torch.zeros(8, dtype=torch.long), {0: center})[0]
        assert idx.tolist() == list(range(8)) and torch.allclose(s, s2, atol=1e-5)


def test_real_threshold_is_numpy_percentile_of_centred_within_class_cosines() -> None:
    real = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0],    # class 0
                         [5.0, 5.0], [-1.0, 0.0],                            # class 1
                         [7.0, 7.0]], dtype=torch.float64)                   # class 2: one image
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    theta = torch.zeros(1, dtype=torch.float64)
    centers = class_centers(Identity(), theta, real, y, 3, "pooled")
    assert torch.allclose(centers[0], torch.tensor([1.5, 1.0], dtype=torch.float64))
    taus, summary = real_threshold(Identity(), theta, real, y, 3, "pooled", centers, percentile=80)
    c0 = real[:4].numpy() - np.array([1.5, 1.0])
    c0 /= np.linalg.norm(c0, axis=1, keepdims=True)
    cos0 = [c0[i] @ c0[j] for i in range(4) for j in range(i + 1, 4)]
    assert taus[0] == pytest.approx(np.percentile(cos0, 80), abs=1e-12)
    assert taus[1] == pytest.approx(-1.0)            # two images, centred: opposite directions
    assert taus[2] == 1.0 and summary["per_class"]["2"]["n"] == 1
    assert summary["percentile"] == 80 and summary["centred"]
    # uncentred: cosines of the raw points
    taus_raw, _ = real_threshold(Identity(), theta, real, y, 3, "pooled", None, percentile=50)
    r0 = real[:4].numpy() / np.linalg.norm(real[:4].numpy(), axis=1, keepdims=True)
    assert taus_raw[0] == pytest.approx(
        np.percentile([r0[i] @ r0[j] for i in range(4) for j in range(i + 1, 4)], 50), abs=1e-12)


def test_data_relative_tau_flags_a_planted_duplicate_and_nothing_else() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(4)
    bases = torch.randn(2, 1, 1, 28, 28, generator=g)
    real = torch.cat([near_identical(g, 64, bases[0]), near_identical(g, 64, bases[1])])
    real_y = torch.arange(128) // 64
    syn = torch.cat([near_identical(g, 4, bases[0]), near_identical(g, 4, bases[1])])
    syn_y = torch.arange(8) // 4
    syn[6] = syn[5] + 1e-3 * torch.randn(1, 28, 28, generator=g)          # class 1 duplicate
    for space in ("pooled", "preact"):
        centers = class_centers(st, theta, real, real_y, 2, space)
        taus, _ = real_threshold(st, theta, real, real_y, 2, space, centers, percentile=99.5)
        assert all(t < 0.9 for t in taus.values())
        rep = detect_per_class(class_similarity_centered(features(st, theta, syn, space), syn_y,
                                                         centers), taus)
        assert [tuple(p[:2]) for p in rep.pairs] == [(5, 6)] and rep.replace in ([5], [6])
        assert rep.per_class[1]["tau"] == taus[1] and rep.overlap_ratio == pytest.approx(1 / 12)
        # the fixed τ = 0.9 in the old, uncentred space flags every pair or none (no spread)
        old = detect(class_similarity(embed(st, theta, syn), syn_y, 2), 0.9)
        assert old.overlap_ratio in (0.0, 1.0)


def test_detect_per_class_with_one_tau_everywhere_is_detect() -> None:
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(9, 3, generator=g), dim=1)
    sims = class_similarity(feats, torch.arange(9) % 3, 3)
    for tau in (0.0, 0.5, 0.9):
        a, b = detect(sims, tau), detect_per_class(sims, {0: tau, 1: tau, 2: tau})
        assert (a.pairs, a.replace) == (b.pairs, b.replace)
        assert a.overlap_ratio == pytest.approx(b.overlap_ratio)
        assert a.mean_similarity == pytest.approx(b.mean_similarity)
    with pytest.raises(ValueError, match="class 2"):
        detect_per_class(sims, {0: 0.5, 1: 0.5})


def test_choose_reseeds_takes_unused_typical_far_candidates() -> None:
    g = torch.Generator().manual_seed(5)
    # class 0 around the origin (centre ≈ 0) plus far outliers, class 1 elsewhere
    real = torch.cat([torch.randn(40, 2, generator=g), torch.tensor([[9.0, 0.0], [0.0, -9.0]]),
                      torch.randn(10, 2, generator=g) + 20]).double()
    real_y = torch.tensor([0] * 42 + [1] * 10)
    theta = torch.zeros(1, dtype=torch.float64)
    centers = class_centers(Identity(), theta, real, real_y, 2, "pooled")
    syn = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-0.5, 0.2]], dtype=torch.float64)
    syn_y = torch.zeros(3, dtype=torch.long)
    used = set(range(0, 40, 3))                      # the inits and earlier re-seeds
    args = (Identity(), theta, syn, syn_y)
    chosen = choose_reseeds(*args, [1], real, real_y, torch.Generator().manual_seed(0), used,
                            "pooled", centers)
    assert list(chosen) == [1]
    free = [i for i in range(42) if i not in used]
    d = (real[free] - centers[0]).norm(dim=1)
    assert chosen[1] in free and float((real[chosen[1]] - centers[0]).norm()) <= float(d.median())
    # brute force: among the typical free candidates, the lowest max centred cosine to the kept
    f = lambda v: F.normalize(v - centers[0], dim=-1)
    typical = [i for i, di in zip(free, d) if di <= torch.quantile(d, 0.5)]
    best = min(typical, key=lambda i: float((f(syn[[0, 2]]) @ f(real[i])).max()))
    assert chosen[1] == best
    # several at once: distinct, unused, typical, never the outliers 40 and 41
    many = choose_reseeds(Identity(), theta, syn, syn_y, [0, 1, 2], real, real_y,
                          torch.Generator().manual_seed(0), used, "pooled", centers)
    assert sorted(many) == [0, 1, 2] and len(set(many.values())) == 3
    assert not set(many.values()) & (used | {40, 41})


def test_choose_reseeds_is_deterministic_and_raises_when_a_class_is_used_up() -> None:
    st, theta = student()
    g = torch.Generator().manual_seed(6)
    syn = torch.randn(4, 1, 28, 28, generator=g)
    syn_y = torch.tensor([0, 0, 1, 1])
    real = torch.randn(30, 1, 28, 28, generator=g)
    real_y = torch.arange(30) % 2
    centers = class_centers(st, theta, real, real_y, 2, "preact")
    run = lambda used, replace=(1, 3), pool=8: choose_reseeds(
        st, theta, syn, syn_y, list(replace), real, real_y, torch.Generator().manual_seed(7),
        used, "preact", centers, pool=pool)
    a = run({0, 1})
    assert a == run({0, 1}) and sorted(a) == [1, 3]
    assert int(real_y[a[1]]) == 0 and int(real_y[a[3]]) == 1 and not set(a.values()) & {0, 1}
    class0 = set(range(0, 30, 2))
    with pytest.raises(ValueError, match="class 0"):
        run(class0)
    with pytest.raises(ValueError, match="class 0"):
        run(class0 - {4}, replace=(0, 1))               # one unused image, two to re-seed
    assert run(class0 - {4})[1] == 4                     # the last unused one is still taken
    assert choose_reseeds(st, theta, syn, syn_y, [], real, real_y, g, set(), "preact",
                          centers) == {}


def test_diversity_penalty_is_zero_below_tau_and_pushes_duplicates_apart() -> None:
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 4, generator=g)
    x[1] = x[0] + 0.01
    x.requires_grad_(True)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    pen = diversity_penalty(x, y, {0: 0.9, 1: 0.9})
    pen.backward()
    assert pen > 0 and x.grad[:2].abs().sum() > 0 and x.grad[2:].abs().sum() == 0
    cos01 = float(F.cosine_similarity(x[0].detach(), x[1].detach(), dim=0))
    assert float(pen.detach()) == pytest.approx((cos01 - 0.9) ** 2 / 6, rel=1e-5)   # 6 within-class pairs
    # a step down the gradient makes the pair less alike
    with torch.no_grad():
        z = x - 10.0 * x.grad
    assert float(F.cosine_similarity(z[0], z[1], dim=0)) < cos01
    assert float(diversity_penalty(x.detach(), y, 1.0)) == 0.0
    single = diversity_penalty(x[:1], y[:1], 0.0)
    assert float(single.detach()) == 0.0 and single.requires_grad
