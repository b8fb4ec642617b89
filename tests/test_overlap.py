"""DOM's parts (mdd.overlap): similarity, detection, farthest-real replacement."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mdd.matching import Student
from mdd.nets import ConvNet, flatten_params
from mdd.overlap import class_similarity, detect, embed, farthest_real


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
