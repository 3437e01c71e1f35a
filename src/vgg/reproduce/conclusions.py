"""The paper's conclusions, each checked on our numbers: holds, does not hold, or not measured (a
step it needs did not run). A comparison is on top-1 error (localisation: the error of Table 8 and
top-5 of Table 9); the text gives the numbers and one number's standard error, so that a reader
can tell a difference from noise."""

from __future__ import annotations

import math

from .plan import FINE_TUNED


def top1(row) -> float | None:
    return None if row is None else row["top1_error"]


def std_error(rows) -> str:
    """The standard error of one error rate (binomial), in points, for the largest rate among ``rows``."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return ""
    n = min(r["images"] for r in rows)
    p = max(r.get("top1_error", r.get("localization_error_gt_class", 0.0)) or 0.0 for r in rows) / 100
    return f"; one number's standard error ~{100 * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1)):.1f} points"


def verdict(ok: bool | None, text: str, evidence: str, margin: float | None = None,
            noise: float | None = None) -> str:
    """``margin``: the smallest difference, in points, in the direction the paper found; ``noise``: the
    standard error of such a difference. Within two standard errors either way the data cannot tell."""
    word = {True: "**holds**", False: "**does not hold**", None: "**not measured**"}[ok]
    if ok is not None and margin is not None and noise and abs(margin) < 2 * noise:
        word += " (within noise)"
    return f"{word}: {text}" + (f" ({evidence})" if evidence else "")


def difference_noise(rows, key: str = "top1_error") -> float | None:
    """The standard error, in points, of the difference of two error rates measured on the images of
    ``rows`` (binomial, unpaired: an upper bound for the paired differences of one test set)."""
    rows = [r for r in rows if r is not None and r.get(key) is not None]
    if len(rows) < 2:
        return None
    n = min(r["images"] for r in rows)
    p = max(min(max(r[key] for r in rows) / 100, 0.99), 0.01)
    return 100 * math.sqrt(2 * p * (1 - p) / max(n, 1))


def chain(values: list[tuple[str, float | None]]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in values if v is not None)


def conclusions(r) -> list[str]:
    """One line per conclusion of the paper (Sec. 4.1-4.4, App. A.2), on ``r`` (report.Results)."""
    one = {k: v["one"] for k, v in r.cls.items()}
    three = {k: v["three"] for k, v in r.cls.items()}
    lines = []

    a, lrn = one.get(("A", "256")), one.get(("A-LRN", "256"))
    ok = None if a is None or lrn is None else top1(lrn) >= top1(a)
    lines.append(verdict(ok, "LRN does not help (A-LRN is not better than A, Table 3)",
                         chain([("A", top1(a)), ("A-LRN", top1(lrn))]) + std_error([a, lrn]),
                         None if ok is None else top1(lrn) - top1(a), difference_noise([a, lrn])))

    depth = [(n, top1(one.get((n, "256")))) for n in ("A", "B", "D", "E")]
    known = [(n, e) for n, e in depth if e is not None]
    ok = None if len(known) < 2 else all(x[1] > y[1] for x, y in zip(known, known[1:]))
    rows = [one.get((n, "256")) for n, _ in known]
    lines.append(verdict(ok, "error falls with depth (A, B, D, E at S = 256, Table 3; the paper's E "
                         "saturates)", chain(known) + std_error(rows),
                         None if ok is None else min(x[1] - y[1] for x, y in zip(known, known[1:])),
                         difference_noise(rows)))

    pairs = [(s, one.get(("C", s)), one.get(("D", s))) for s in ("256", "384", "jitter")]
    pairs = [(s, c, d) for s, c, d in pairs if c is not None and d is not None]
    ok = None if not pairs else all(top1(c) > top1(d) for _, c, d in pairs)
    lines.append(verdict(ok, "C (1x1 convs) is worse than D (3x3) at every training scale (Table 3)",
                         "; ".join(f"S {s}: C {top1(c):.2f}, D {top1(d):.2f}" for s, c, d in pairs),
                         None if ok is None else min(top1(c) - top1(d) for _, c, d in pairs),
                         difference_noise([x for _, c, d in pairs for x in (c, d)])))

    jit = []
    for n in FINE_TUNED:
        j, fixed = one.get((n, "jitter")), [one.get((n, s)) for s in ("256", "384")]
        fixed = [f for f in fixed if f is not None]
        if j is not None and fixed:
            jit.append((n, top1(j), min(top1(f) for f in fixed)))
    ok = None if not jit else all(j < f for _, j, f in jit)
    lines.append(verdict(ok, "scale jittering helps, even at one test scale (Table 3)",
                         "; ".join(f"{n}: jittered {j:.2f}, best fixed S {f:.2f}" for n, j, f in jit),
                         None if ok is None else min(f - j for _, j, f in jit),
                         difference_noise(list(one.values()))))

    multi = [(k, top1(one[k]), top1(three[k])) for k in one if k in three and k[1] == "jitter"]
    ok = None if not multi else all(m < s for _, s, m in multi)
    lines.append(verdict(ok, "several test scales help the jittered nets (Table 4 against Table 3)",
                         "; ".join(f"{n} {s}: one scale {a:.2f}, three {b:.2f}"
                                   for (n, s), a, b in multi),
                         None if ok is None else min(a - b for _, a, b in multi),
                         difference_noise(list(three.values()))))

    best = []
    for step in r.fusion_nets:
        rows = {p: r.protocols.get((step.net, p)) for p in ("dense", "multi-crop", "dense+multi-crop")}
        if all(rows.values()):
            best.append((step.name, *(top1(rows[p]) for p in ("dense", "multi-crop", "dense+multi-crop"))))
    ok = None if not best else all(b < min(d, m) for _, d, m, b in best)
    lines.append(verdict(ok, "dense + multi-crop is better than either alone (Table 5)",
                         "; ".join(f"{n}: dense {d:.2f}, multi-crop {m:.2f}, both {b:.2f}"
                                   for n, d, m, b in best),
                         None if ok is None else min(min(d, m) - b for _, d, m, b in best),
                         difference_noise(list(r.protocols.values()))))

    fused, alone = r.fusion.get("dense+multi-crop"), [r.protocols.get((s.net, "dense+multi-crop"))
                                                     for s in r.fusion_nets]
    ok = None if fused is None or not all(alone) else top1(fused) < min(top1(x) for x in alone)
    lines.append(verdict(ok, "fusing the two best nets helps (Table 6, dense + multi-crop)",
                         "" if fused is None or not all(alone) else
                         f"fusion {top1(fused):.2f}, alone {', '.join(f'{top1(x):.2f}' for x in alone)}",
                         None if ok is None else min(top1(x) for x in alone) - top1(fused),
                         difference_noise([fused, *alone])))

    loc = {k: v["localization_error_gt_class"] for k, v in r.loc8.items()}
    loc_noise = difference_noise(list(r.loc8.values()), "localization_error_gt_class")
    scr, pcr, pcr_all = loc.get(("scr", "fc")), loc.get(("pcr", "fc")), loc.get(("pcr", "all"))
    ok = None if scr is None or pcr is None else pcr < scr
    lines.append(verdict(ok, "PCR beats SCR (Table 8, FC layers fine-tuned)",
                         "" if ok is None else f"PCR {pcr:.2f}, SCR {scr:.2f}",
                         None if ok is None else scr - pcr, loc_noise))
    ok = None if pcr_all is None or pcr is None else pcr_all < pcr
    lines.append(verdict(ok, "fine-tuning all layers beats the FC layers only (Table 8, PCR)",
                         "" if ok is None else f"all {pcr_all:.2f}, FC only {pcr:.2f}",
                         None if ok is None else pcr - pcr_all, loc_noise))

    nine = {k: v["localization_error_top5"] for k, v in r.loc9.items()}
    nine_noise = difference_noise(list(r.loc9.values()), "localization_error_top5")
    centre = [(k[:-len("-centre")], v) for k, v in nine.items() if k.endswith("-centre")]
    dense = [(n, c, nine.get(f"{n}-dense-1")) for n, c in centre if f"{n}-dense-1" in nine]
    ok = None if not dense else all(d < c for _, c, d in dense)
    lines.append(verdict(ok, "dense localisation beats the centre crop (Table 9, top-5)",
                         "; ".join(f"{n}: centre {c:.2f}, dense {d:.2f}" for n, c, d in dense),
                         None if ok is None else min(c - d for _, c, d in dense), nine_noise))
    scales = [(n, nine[f"{n}-dense-1"], nine[f"{n}-dense-3"]) for n, _ in centre
              if f"{n}-dense-1" in nine and f"{n}-dense-3" in nine]
    ok = None if not scales else all(b < a for _, a, b in scales)
    lines.append(verdict(ok, "several test scales help localisation (Table 9, top-5)",
                         "; ".join(f"{n}: one {a:.2f}, three {b:.2f}" for n, a, b in scales),
                         None if ok is None else min(a - b for _, a, b in scales), nine_noise))
    alone = [nine[f"{n}-dense-3"] for n, _ in centre if f"{n}-dense-3" in nine]
    fusion = nine.get("fusion-dense-3")
    ok = None if fusion is None or len(alone) < 2 else fusion < min(alone)
    lines.append(verdict(ok, "fusing the S = 256 and S = 384 localisation nets helps (Table 9, top-5)",
                         "" if ok is None else
                         f"fusion {fusion:.2f}, alone {', '.join(f'{a:.2f}' for a in alone)}",
                         None if ok is None else min(alone) - fusion, nine_noise))
    return lines
