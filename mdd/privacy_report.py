"""The privacy audit's Markdown summary and the limits written beside its numbers.

Both read only the audit's JSON (:func:`mdd.privacy.audit`), so a summary can be
rewritten from a saved ``audit.json`` without retraining anything.
"""
from __future__ import annotations

import math
from typing import Any


def _ci(v: float | None, ci: list | None, fmt: str = ".3f") -> str:
    if v is None:
        return "–"
    return f"{v:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def _targets(result: dict) -> list[tuple[str, dict]]:
    out = [("distilled", result["mia"])]
    out += [(k, v["mia"]) for k, v in (result.get("references") or {}).items()]
    return out


def limits(result: dict) -> list[str]:
    """What the numbers of ``result`` can and cannot say, with the sizes they rest on."""
    mia = result["mia"]
    n_test = mia.get("nonmembers") or 0
    k = math.floor(0.01 * n_test) if n_test else 0
    seeds = mia.get("seeds_n") or 0
    out = [
        "A membership attack's success is a lower bound on leakage: the loss-threshold and the "
        "offline likelihood-ratio attacks are two attacks among many (an online LiRA with shadows "
        "trained on each candidate, or an attack on the distillation itself, may do better). An "
        "AUC near 0.5 is no proof of privacy, and nothing here is a formal guarantee (no "
        "differential privacy).",
        f"Confidence intervals are 95 % percentile bootstraps over the candidates "
        f"({result['params']['bootstrap']} resamples). With {n_test} test images as non-members, "
        f"TPR at 1 % FPR allows {k} false positive(s) (FPR resolution "
        f"{1 / n_test if n_test else float('nan'):.4f}); its CI is wide."
        if n_test else "No non-members: no attack statistic.",
        f"The `seeds` group has {seeds} member(s) (the images the synthetic ones started from or "
        "were re-seeded from): this is where a leak is expected, and its CIs are the widest. "
        "Members as a whole are the training split, most of which shaped the set only through "
        "the expert trajectories.",
        "Pixel DCR is no guarantee either: an image can be far in pixel distance and still "
        "recognisable (shifted, re-contrasted), hence SSIM and the feature space; the feature "
        "network is trained on the small val split only, so its features are weak.",
        f"The full-data reference trains {result['params']['full_models']} network(s) for "
        f"{result['params']['full_epochs']} epochs (fewer than §2, for speed); its attack "
        "numbers are therefore a lower bound for a converged network.",
    ]
    d = result["dcr"]
    p5, med = d.get("test_p5"), (d.get("test") or {}).get("median")
    if p5 is not None and med:
        near = " Some test images are near-copies of training images (p5 under a tenth of the " \
               "median): non-members then look like members to any attack, and the DCR " \
               "yardstick is strict." if p5 < 0.1 * med else ""
        out.append(f"Test→train pixel distances: p5 {p5:.3f}, median {med:.3f}.{near}")
    if result.get("lira"):
        out.append(result["lira"])
    if result["init"]["source"].startswith("manifest"):
        out.append("The artifact's manifest names the training images that seeded it "
                   "(`init_indices`, `reseeds`): meaningless without the data, but for a private "
                   "dataset strip them before sharing the artifact.")
    if result["init"]["source"].startswith("config"):
        out.append("Init indices were recomputed from the manifest's seed (the seeded random "
                   "subset), not read from a record of the run.")
    if result["init"]["source"].startswith("none"):
        out.append("The init images are unknown (noise init, or no record): nothing is flagged "
                   "and the `seeds` group is empty.")
    if "unknown" in result["init"]["source"]:
        out.append("DOM re-seeds are unknown (no run folder beside the artifact): a re-seeded "
                   "image is compared with its first init.")
    return out


def mia_rows(result: dict) -> list[dict[str, Any]]:
    """One row per target × attack × member group: AUC and TPR@1 % FPR with CIs."""
    rows = []
    for target, block in _targets(result):
        for attack, groups in block["attacks"].items():
            for group, m in groups.items():
                if m is None:
                    continue
                rows.append({"target": target, "attack": attack, "members": group,
                             "n_members": m["members"], "n_nonmembers": m["nonmembers"],
                             "auc": m["auc"], "auc_ci": m["auc_ci"],
                             "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"], "tpr_ci": m["tpr_ci"]})
    return rows


def headline_rows(result: dict) -> list[dict[str, Any]]:
    """One row per target (distilled, random, full): what it was trained on, the headline
    attack's AUC and TPR@1 % FPR with CIs, the same on the ``seeds`` members, the
    released-image (distance) attack on the seeds, and the networks' test accuracy."""
    rows = []
    for target, b in _targets(result):
        s = b.get("seeds") or {}
        dist = (b["attacks"].get("distance") or {}).get("seeds") or {}
        rows.append({"flag": result["flag"], "ipc": result["ipc"], "method": result["method"],
                     "target": target, "n_train": b["n_train"], "attack": b["attack"],
                     "auc": b.get("auc"), "auc_lo": (b.get("auc_ci") or [None, None])[0],
                     "auc_hi": (b.get("auc_ci") or [None, None])[1],
                     "tpr_at_1pct_fpr": b.get("tpr_at_1pct_fpr"),
                     "tpr_lo": (b.get("tpr_ci") or [None, None])[0],
                     "tpr_hi": (b.get("tpr_ci") or [None, None])[1],
                     "seeds_auc": s.get("auc"), "seeds_tpr_at_1pct_fpr": s.get("tpr_at_1pct_fpr"),
                     "seeds_distance_auc": dist.get("auc"),
                     "test_acc": b.get("test_acc_mean"), "members": b.get("members"),
                     "nonmembers": b.get("nonmembers")})
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_markdown(result: dict) -> str:
    """The audit as Markdown: setup, nearest images, DCR, membership inference, threat
    model and limits."""
    near, dcr = result["nearest"], result["dcr"]
    names = result.get("class_names") or []
    title = f"{result['flag']} ipc {result['ipc']} {result['method']}"
    parts = [f"# Privacy audit: {title}\n",
             f"Artifact `{result['artifact']}` (selected iteration {result['selected_iteration']}, "
             f"α = {result['alpha']:.4g}, {result['n_images']} images). Init images from: "
             f"{result['init']['source']}. Target networks: {result['mia']['models']} × "
             f"{result['mia']['epochs']} epochs (§2, lr = α), test accuracy "
             f"{100 * (result['mia']['test_acc_mean'] or 0):.1f} %.\n",
             "## Nearest training images\n",
             f"{near['n_flagged']} of {near['n_init_known']} synthetic images have their own init "
             f"as the nearest training image in at least one space (pixel "
             f"{near['nearest_is_init_counts']['pixel']}, SSIM {near['nearest_is_init_counts']['ssim']}, "
             f"feature {near['nearest_is_init_counts']['feature']}).\n"]
    rows = []
    for r in near["images"]:
        mv = r["moved"] or {}
        lab = names[r["label"]] if r["label"] < len(names) else str(r["label"])
        rows.append([r["index"], lab, "–" if r["init"] is None else r["init"],
                     f"{r['pixel']['nearest'][0]} ({r['pixel']['distance'][0]:.3f})",
                     f"{r['ssim']['nearest'][0]} ({r['ssim']['ssim'][0]:.3f})",
                     f"{r['feature']['nearest'][0]} ({r['feature']['cosine'][0]:.3f})",
                     "–" if not mv else f"{mv['pixel']:.3f}",
                     "–" if not mv else f"{mv['ssim']:.3f}",
                     "–" if not mv else mv["init_rank_pixel"],
                     "yes" if r["flagged"] else ("–" if r["flagged"] is None else "no")])
    parts.append(_table(["image", "class", "init", "nearest: pixel (d)", "SSIM (s)", "feature (cos)",
                         "moved d", "SSIM to init", "init rank", "flagged"], rows))
    parts.append("\n`d`: RMS difference per pixel value in normalised units; `init rank`: 1 = the "
                 "init is the nearest training image by pixels.\n")
    parts.append("## Distance to closest record\n")
    parts.append(_table(["space", "synthetic min", "synthetic median", "test p5", "test median",
                         "synthetic below test p5", "exact copies"],
                        [[sp, f"{d['synthetic'].get('min', float('nan')):.4f}",
                          f"{d['synthetic'].get('median', float('nan')):.4f}",
                          "–" if d["test_p5"] is None else f"{d['test_p5']:.4f}",
                          f"{d['test'].get('median', float('nan')):.4f}",
                          f"{d['n_below_test_p5']} / {d['synthetic']['n']}", d["n_exact_copies"]]
                         for sp, d in (("pixel", dcr), ("feature (1 − cos)", dcr["feature"]))]))
    parts.append("\n## Membership inference\n")
    head = []
    for target, b in _targets(result):
        s = b.get("seeds") or {}
        head.append([target, b["n_train"], b["attack"] or "–",
                     _ci(b.get("auc"), b.get("auc_ci")), _ci(b.get("tpr_at_1pct_fpr"), b.get("tpr_ci")),
                     _ci(s.get("auc"), s.get("auc_ci")), _ci(s.get("tpr_at_1pct_fpr"), s.get("tpr_ci")),
                     f"{100 * (b.get('test_acc_mean') or 0):.1f}"])
    parts.append(_table(["trained on", "images", "attack", "AUC [95 % CI]", "TPR @ 1 % FPR",
                         "seeds: AUC", "seeds: TPR @ 1 % FPR", "test acc %"], head))
    parts.append("\nHeadline: the strongest network attack (loss or LiRA) on all members. Every "
                 "attack and group:\n")
    parts.append(_table(["target", "attack", "members", "n", "AUC [95 % CI]", "TPR @ 1 % FPR [95 % CI]"],
                        [[r["target"], r["attack"], r["members"], f"{r['n_members']} / {r['n_nonmembers']}",
                          _ci(r["auc"], r["auc_ci"]), _ci(r["tpr_at_1pct_fpr"], r["tpr_ci"])]
                         for r in mia_rows(result)]))
    parts.append("\n`distance`: the attack on the released images themselves (a candidate's pixel "
                 "distance to the nearest released image), not on networks.\n")
    parts.append("\n## Threat model\n\n" + result["threat_model"] + "\n")
    parts.append("\n## Limits\n\n" + "".join(f"- {t}\n" for t in result["limits"]))
    return "\n".join(parts)


def overview_row(result: dict) -> dict[str, Any]:
    """One audit in one row: how many synthetic images have their own init as nearest
    training image (pixel / SSIM / feature), the pixel DCR against the test yardstick,
    the headline attack on the distilled set and on the two real references."""
    near, dcr = result["nearest"], result["dcr"]
    refs = {k: v["mia"] for k, v in (result.get("references") or {}).items()}
    counts = near["nearest_is_init_counts"]
    row = {"flag": result["flag"], "ipc": result["ipc"], "method": result["method"],
           "selected_iteration": result.get("selected_iteration"),
           "n_images": result["n_images"],
           "own_init_nearest": f"{counts['pixel']} / {counts['ssim']} / {counts['feature']}",
           "dcr_min": dcr["synthetic"]["min"], "dcr_test_p5": dcr["test_p5"],
           "below_test_p5": dcr["n_below_test_p5"], "exact_copies": dcr["n_exact_copies"],
           "mia_attack": result["mia"]["attack"], "mia_auc": _ci(result["mia"].get("auc"), result["mia"].get("auc_ci")),
           "mia_tpr_at_1pct_fpr": result["mia"].get("tpr_at_1pct_fpr"),
           "mia_auc_seeds": (result["mia"].get("seeds") or {}).get("auc"),
           "test_acc": result["mia"].get("test_acc_mean")}
    row["distance_auc_seeds"] = _distance_auc_seeds(result["mia"])
    for name, m in refs.items():
        row[f"{name}_auc"] = m.get("auc")
        row[f"{name}_auc_seeds"] = (m.get("seeds") or {}).get("auc")
        row[f"{name}_distance_auc_seeds"] = _distance_auc_seeds(m)
    return row


def _distance_auc_seeds(mia: dict) -> float | None:
    """AUC of the attack on the released images themselves (pixel distance to the nearest
    one), against the set's seed images: does the set give its seeds away without any network?"""
    return (((mia.get("attacks") or {}).get("distance") or {}).get("seeds") or {}).get("auc")


def overview_markdown(results: list[dict]) -> str:
    """:func:`overview_row` of several audits as one Markdown table (the README's)."""
    f = lambda v, fmt=".3f": "n/a" if v is None else format(v, fmt)   # noqa: E731
    rows = [overview_row(r) for r in results]
    header = ["dataset", "ipc", "distilled set", "own init nearest (pixel / SSIM / feature)",
              "synthetic → train DCR min (test → train p5)", "below test p5 (exact copies)",
              "MIA AUC [95 % CI]", "TPR @ 1 % FPR", "MIA AUC on its seed images (networks / pixel distance)",
              "random subset: MIA AUC, on its images (networks / pixel distance)", "full data: MIA AUC"]
    body = [[r["flag"], r["ipc"], r["method"], f"{r['own_init_nearest']} of {r['n_images']}",
             f"{f(r['dcr_min'])} ({f(r['dcr_test_p5'])})",
             f"{r['below_test_p5']} ({r['exact_copies']})", f"{r['mia_auc']} ({r['mia_attack']})",
             f(r["mia_tpr_at_1pct_fpr"]), f"{f(r['mia_auc_seeds'])} / {f(r['distance_auc_seeds'])}",
             f"{f(r.get('random_auc'))}, {f(r.get('random_auc_seeds'))} / "
             f"{f(r.get('random_distance_auc_seeds'))}", f(r.get("full_auc"))]
            for r in rows]
    return _table(header, body)
