"""The numbers of the privacy audit (DESIGN.md §6): nearest real images in three spaces,
distances to the closest record, per-example attack scores and ROC statistics.

Everything here is a pure function of tensors or arrays, so the tests can build cases
whose answer is known (an image that *is* a training image, perfectly separated scores).
The audit itself (:mod:`mdd.privacy`) trains the networks and calls these.

Units:

* **pixel** distance: root-mean-square difference per pixel value in the normalised
  space the networks see, ‖a − b‖₂ / √(C·H·W) — the unit of notebook 04's ``d``.
* **SSIM**: Wang et al. (2004) with an 11×11 Gaussian window, σ 1.5, on pixels in
  [0, 1] (``pytorch_msssim.ssim``); 1 = identical, higher = nearer.
* **cosine** between L2-normalised penultimate features of a network.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: The false-positive rate at which the audit reports the true-positive rate.
FPR = 0.01

Images = torch.Tensor   # N×C×H×W, or anything that slices like it (mdd.data.MappedImages)


# ====================================================================== search
def _topk(score: Callable[[int, int], torch.Tensor], n_query: int, n_ref: int, k: int,
          batch: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` reference indices per query; ``score(s, e)`` gives the N×(e−s) scores
    of every query against references s…e−1 (read in blocks: the references may be a
    memory-mapped split far larger than memory)."""
    if n_ref == 0:
        raise ValueError("no reference images to search")
    k = min(k, n_ref)
    fill = -math.inf if largest else math.inf
    best_v = torch.full((n_query, 0), fill, dtype=torch.float64)
    best_i = torch.zeros((n_query, 0), dtype=torch.long)
    for s in range(0, n_ref, batch):
        e = min(n_ref, s + batch)
        v = score(s, e).double().cpu()
        i = torch.arange(s, e).expand(n_query, -1)
        v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
        # a stable sort keeps the lower index first among ties (an exact duplicate of
        # the init in the training set then still reports the init)
        order = torch.sort(v, dim=1, descending=largest, stable=True).indices[:, :k]
        best_v, best_i = v.gather(1, order), i.gather(1, order)
    return best_i.numpy(), best_v.numpy()


def _flat(x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    x = torch.as_tensor(x).float()
    return x.reshape(len(x), -1).to(device) if device is not None else x.reshape(len(x), -1)


def topk_pixel(query: torch.Tensor, ref: Images, k: int = 3, batch: int = 2048,
               device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``ref`` images of each ``query`` image (both normalised N×C×H×W) by pixel
    RMS distance: (indices N×k, distances N×k), nearest first."""
    q = _flat(query, device).double()
    d = math.sqrt(max(1, q.shape[1]))
    return _topk(lambda s, e: torch.cdist(q, _flat(ref[s:e], device).double()) / d,
                 len(q), len(ref), k, batch, largest=False)


def nearest_pixel_distance(query: Images, ref: Images, batch: int = 2048,
                           device: torch.device | None = None) -> np.ndarray:
    """For every ``query`` image the pixel RMS distance to its nearest ``ref`` image, N.
    Queries are read in blocks too (the test split can be large)."""
    out = []
    for s in range(0, len(query), batch):
        out.append(topk_pixel(query[s:s + batch], ref, 1, batch, device)[1][:, 0])
    return np.concatenate(out) if out else np.zeros(0)


def pixel_distances(query: torch.Tensor, ref: Images, batch: int = 4096,
                    device: torch.device | None = None) -> np.ndarray:
    """Pixel RMS distance of one image (1×C×H×W) to every ``ref`` image, M."""
    q = _flat(query, device).double()
    d = math.sqrt(max(1, q.shape[1]))
    return np.concatenate([(torch.cdist(q, _flat(ref[s:s + batch], device).double())[0] / d).cpu().numpy()
                           for s in range(0, len(ref), batch)])


def to_unit_pixels(x: torch.Tensor, norm) -> torch.Tensor:
    """Normalised images N×C×H×W → pixels in [0, 1] (clipped: what a viewer or a
    MedMNIST loader of the shared uint8 arrays sees)."""
    return norm.denormalize(torch.as_tensor(x).float()).clamp(0, 1)


def ssim_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair (a_i, b_i), pixels in [0, 1], N×C×H×W each → N."""
    from pytorch_msssim import ssim
    return ssim(a.float(), b.float(), data_range=1.0, size_average=False)


def topk_ssim(query_pixels: torch.Tensor, ref: Images, norm, k: int = 3, batch: int = 1024,
              device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Most similar ``ref`` images by SSIM for each query: ``query_pixels`` in [0, 1]
    N×C×H×W, ``ref`` normalised M×C×H×W (converted with ``norm``). Returns (indices N×k,
    SSIM N×k), most similar first."""
    q = torch.as_tensor(query_pixels).float()
    q = q.to(device) if device is not None else q

    def score(s: int, e: int) -> torch.Tensor:
        r = to_unit_pixels(ref[s:e], norm)
        r = r.to(device) if device is not None else r
        # one query against a block of references: expand is a view, no copy
        return torch.stack([ssim_pairs(qi.expand_as(r), r) for qi in q])

    return _topk(score, len(q), len(ref), k, batch, largest=True)


@torch.no_grad()
def embed(net: torch.nn.Module, x: Images, batch: int = 512) -> torch.Tensor:
    """L2-normalised penultimate features N×D of ``net`` (a ConvNet: ``net.embed``), on CPU."""
    net.eval()
    device = next(net.parameters()).device
    out = [F.normalize(net.embed(torch.as_tensor(x[s:s + batch]).float().to(device)), dim=1).cpu()
           for s in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros(0)


def topk_cosine(query: torch.Tensor, ref: torch.Tensor, k: int = 3,
                batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Most similar rows of ``ref`` (M×D) for each row of ``query`` (N×D), both
    L2-normalised: (indices N×k, cosine N×k), most similar first."""
    return _topk(lambda s, e: query.double() @ ref[s:e].double().T, len(query), len(ref), k,
                 batch, largest=True)


# ====================================================================== distributions
def quantiles(values: np.ndarray) -> dict:
    """Summary of a distance distribution: n, min, p5, median, mean, p95, max."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "min": float(v.min()), "p5": float(p5), "median": float(p50),
            "mean": float(v.mean()), "p95": float(p95), "max": float(v.max())}


def dcr_summary(synthetic: np.ndarray, test: np.ndarray) -> dict:
    """Distance to closest record: synthetic→train against test→train nearest distances.

    ``share_below_test_p5``: the share of synthetic images closer to a training image
    than the 5th percentile of test→train distances (a held-out real image is that
    close to a training image only 5 % of the time)."""
    syn, tst = np.asarray(synthetic, float), np.asarray(test, float)
    p5 = float(np.percentile(tst, 5)) if tst.size else math.nan
    below = int((syn < p5).sum()) if tst.size else 0
    return {"synthetic": quantiles(syn), "test": quantiles(tst), "test_p5": p5,
            "n_below_test_p5": below,
            "share_below_test_p5": below / syn.size if syn.size else math.nan,
            "n_exact_copies": int((syn <= 1e-6).sum())}


# ====================================================================== attack scores
@torch.no_grad()
def example_scores(net: torch.nn.Module, x: Images, y: torch.Tensor,
                   batch: int = 1024) -> dict[str, np.ndarray]:
    """Per-example outputs of ``net`` on (x N×C×H×W, y N): ``phi`` = log(p_y / (1 − p_y))
    (the logit-scaled confidence of LiRA, computed from logits so that it stays finite
    where p_y rounds to 1), ``loss`` = cross-entropy, ``correct`` = argmax is y."""
    net.eval()
    device = next(net.parameters()).device
    phi, loss, correct = [], [], []
    for s in range(0, len(y), batch):
        z = net(torch.as_tensor(x[s:s + batch]).float().to(device)).double().cpu()
        t = torch.as_tensor(y[s:s + batch]).long().reshape(-1, 1)
        zy = z.gather(1, t).squeeze(1)
        others = z.scatter(1, t, -math.inf).logsumexp(1)
        phi.append(zy - others)
        loss.append(z.logsumexp(1) - zy)
        correct.append(z.argmax(1) == t.squeeze(1))
    cat = (lambda v: torch.cat(v).numpy()) if phi else (lambda v: np.zeros(0))
    return {"phi": cat(phi), "loss": cat(loss), "correct": cat(correct).astype(bool)}


def finite_scores(s: np.ndarray) -> tuple[np.ndarray, int]:
    """Scores with non-finite values made comparable (a diverged network outputs NaN:
    it says nothing, so NaN ties at the median; ±inf clip to the finite range);
    returns (scores, how many were not finite)."""
    s = np.asarray(s, dtype=float)
    bad = ~np.isfinite(s)
    if not bad.any():
        return s, 0
    good = s[~bad]
    lo, hi, mid = (good.min(), good.max(), float(np.median(good))) if good.size else (0.0, 0.0, 0.0)
    return np.nan_to_num(s, nan=mid, posinf=hi, neginf=lo), int(bad.sum())


def loss_attack(loss: np.ndarray) -> np.ndarray:
    """Loss-threshold attack (Yeom et al. 2018): score = −mean over the K target
    networks of the example's loss (K×N → N); higher = more likely a member."""
    return -np.asarray(loss, float).reshape(-1, np.shape(loss)[-1]).mean(0)


def lira_offline(target_phi: np.ndarray, shadow_phi: np.ndarray,
                 per_example_min: int = 16) -> tuple[np.ndarray, str]:
    """Offline likelihood-ratio attack (Carlini et al., S&P 2022): how far each example's
    confidence φ under the target networks (K×N) sits above its distribution under
    shadow networks that did *not* train on it (S×N): mean over k of (φ_k − μ_out) / σ_out. With fewer than ``per_example_min`` shadows σ is one global
    estimate (the paper's advice for few shadows). Returns (scores N, "global" or
    "per-example")."""
    t = np.asarray(target_phi, float).reshape(-1, np.shape(target_phi)[-1])
    sh = np.asarray(shadow_phi, float).reshape(-1, np.shape(shadow_phi)[-1])
    if len(sh) < 2:
        raise ValueError(f"the likelihood-ratio attack needs at least 2 shadow networks, got {len(sh)}")
    mu = sh.mean(0)
    var = sh.var(0, ddof=1)
    kind = "per-example" if len(sh) >= per_example_min else "global"
    sd = np.sqrt(var) if kind == "per-example" else np.full_like(mu, math.sqrt(float(np.mean(var))))
    sd = np.maximum(sd, 1e-6)   # a shadow set that agrees exactly would divide by zero
    return ((t - mu) / sd).mean(0), kind


def distance_attack(distance: np.ndarray) -> np.ndarray:
    """Attack on the released images themselves: score = −(pixel distance of the
    candidate to the nearest released image); a candidate that is (nearly) one of them
    scores highest."""
    return -np.asarray(distance, float)


# ====================================================================== ROC statistics
def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float = FPR) -> float:
    """TPR at the largest threshold whose FPR is ≤ ``fpr`` (scikit-learn's roc_curve,
    a member predicted when score ≥ threshold)."""
    from sklearn.metrics import roc_curve
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    f, t, _ = roc_curve(y, np.r_[members, nonmembers], drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def _boot_stats(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator, b: int,
                fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR@fpr of ``b`` bootstrap resamples (members and non-members resampled
    separately), vectorised: AUC by the Mann–Whitney rank sum (ties at mid-rank, as
    roc_auc_score), TPR as the share of members above the (k+1)-th largest non-member,
    k = ⌊fpr·n⌋ (roc_curve's operating point)."""
    from scipy.stats import rankdata
    n_p, n_n = len(pos), len(neg)
    p = pos[rng.integers(0, n_p, (b, n_p))]
    n = neg[rng.integers(0, n_n, (b, n_n))]
    ranks = rankdata(np.concatenate([p, n], 1), axis=1)
    auc = (ranks[:, :n_p].sum(1) - n_p * (n_p + 1) / 2) / (n_p * n_n)
    k = int(math.floor(fpr * n_n + 1e-12))
    thr = -np.sort(-n, axis=1)[:, k] if k < n_n else np.full(b, -np.inf)
    tpr = (p > thr[:, None]).mean(1)
    return auc, tpr


def roc_metrics(members: np.ndarray, nonmembers: np.ndarray, bootstrap: int = 1000,
                seed: int = 0, fpr: float = FPR, block: int = 250) -> dict | None:
    """Attack AUC and TPR at ``fpr`` (1 %) with 95 % percentile-bootstrap CIs.

    ``members``/``nonmembers``: attack scores (higher = member). None when either side
    is empty. ``fpr_resolution`` is 1/n non-members: below it "TPR at 1 % FPR" means
    "TPR with no false positive at all".
    """
    from sklearn.metrics import roc_auc_score
    pos, neg = np.asarray(members, float), np.asarray(nonmembers, float)
    if pos.size == 0 or neg.size == 0:
        return None
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    out = {"auc": float(roc_auc_score(y, np.r_[pos, neg])), "auc_ci": None,
           "tpr_at_1pct_fpr": tpr_at_fpr(pos, neg, fpr), "tpr_ci": None,
           "members": int(pos.size), "nonmembers": int(neg.size),
           "fpr_resolution": 1.0 / neg.size, "bootstrap": int(bootstrap)}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        aucs, tprs = [], []
        for s in range(0, bootstrap, block):   # blocks bound the rank matrix's memory
            a, t = _boot_stats(pos, neg, rng, min(block, bootstrap - s), fpr)
            aucs.append(a)
            tprs.append(t)
        aucs, tprs = np.concatenate(aucs), np.concatenate(tprs)
        out["auc_ci"] = [float(v) for v in np.percentile(aucs, [2.5, 97.5])]
        out["tpr_ci"] = [float(v) for v in np.percentile(tprs, [2.5, 97.5])]
    return out


def roc_curve_points(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve, for plotting."""
    from sklearn.metrics import roc_curve
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    f, t, _ = roc_curve(y, np.r_[members, nonmembers])
    return f, t
