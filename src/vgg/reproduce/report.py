"""``DIR/REPORT.md``: each of the paper's tables beside ours, every number linked to the JSON it came
from, the pictures (:mod:`.figures`), the commands, the machine and the time, and which of the
paper's conclusions hold on this data (:mod:`.conclusions`)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from ..files import atomic_write
from ..report import format_scale
from . import paper
from .conclusions import conclusions
from .pipeline import STEP_FILE, format_duration
from .plan import FINE_TUNED, NETS, TRAIN_SCALES, Step

REPORT = "REPORT.md"
SCALE_WORDS = {"256": "256", "384": "384", "jitter": "[256;512]"}


def load_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def pair(e) -> str:
    return "-" if e is None else f"{e[0]:.2f} / {e[1]:.2f}"


def paper_pair(e) -> str:
    return "-" if e is None else f"{e[0]:.1f} / {e[1]:.1f}"


def link(out: Path, path: Path, text: str) -> str:
    return f"[{text}]({path.relative_to(out).as_posix()})"


class Results:
    """Our numbers, read from the steps' JSON: ``cls[(net, scale)] = {"one": row, "three": row}``,
    ``protocols[(net, protocol)]`` (Table 5, three scales), ``fusion[protocol]`` (Table 6), ``loc8[(head,
    layers)]`` and ``loc9[name]`` (App. A.2); each row keeps the path of its JSON."""

    def __init__(self, out: Path, plan: list[Step]):
        self.out, self.plan = out, plan
        self.cls, self.protocols, self.fusion, self.loc8, self.loc9 = {}, {}, {}, {}, {}
        self.fusion_nets: list[Step] = []
        by_name = {s.name: s for s in plan}
        for step in plan:
            folder = out / step.name
            if step.kind != "evaluate":
                continue
            for call in step.calls:
                path = folder / f"{call['name']}.json"
                data = load_json(path)
                if data is None:
                    continue
                rows = data if isinstance(data, list) else [data]
                for r in rows:
                    r["_json"] = path
                if step.name.startswith("eval-") and call["name"] == "dense":
                    self.cls[(step.net, step.train_scale)] = {"one": rows[0], "three": rows[-1]}
                elif call["name"] == "protocols":
                    self.fusion_nets = [by_name[s] for s in step.sources]
                    self.read_protocols(rows, self.fusion_nets)
                elif step.name == "eval-loc-centre":
                    run = by_name[call["name"]]
                    self.loc8[(run.config["head"], run.config["finetune"])] = rows[0]
                elif step.name == "eval-loc-dense":
                    self.loc9[call["name"]] = rows[0]

    def read_protocols(self, rows: list[dict], sources: list[Step]) -> None:
        for row in rows:
            if len(row["nets"]) > 1:
                self.fusion[row["protocol"]] = row
                continue
            name = Path(row["nets"][0]["checkpoint"]).name
            src = next((s for s in sources if s.name == name), None)
            if src is not None and len(row["scales"]) > 1:
                self.protocols[(src.net, row["protocol"])] = row


def err(row) -> tuple[float, float] | None:
    return None if row is None else (row["top1_error"], row["top5_error"])


def cell(out: Path, row) -> str:
    return "not run" if row is None else link(out, row["_json"], pair(err(row)))


def scales_text(row) -> str:
    return "-" if row is None else ", ".join(str(q) for q in row["scales"])


def table3(r: Results, plan: list[Step]) -> str:
    lines = ["| net | train S (paper) | ours S | test Q | ours top-1 / top-5 | paper top-1 / top-5 |",
             "|---|---|---|---|---|---|"]
    for step in ordered_classifiers(plan):
        row = r.cls.get((step.net, step.train_scale), {}).get("one")
        s = format_scale(step.config["scale"], ";")
        lines.append(f"| {step.net} | {SCALE_WORDS[step.train_scale]} | {s} | {scales_text(row)} | "
                     f"{cell(r.out, row)} | {paper_pair(paper.TABLE3.get((step.net, step.train_scale)))} |")
    return "\n".join(lines)


def table4(r: Results, plan: list[Step]) -> str:
    lines = ["| net | train S (paper) | test Q | ours top-1 / top-5 | paper top-1 / top-5 |",
             "|---|---|---|---|---|"]
    for step in ordered_classifiers(plan):
        row = r.cls.get((step.net, step.train_scale), {}).get("three")
        lines.append(f"| {step.net} | {SCALE_WORDS[step.train_scale]} | {scales_text(row)} | "
                     f"{cell(r.out, row)} | {paper_pair(paper.TABLE4.get((step.net, step.train_scale)))} |")
    return "\n".join(lines)


PROTOCOL_NAMES = {"dense": "dense", "multi-crop": "multi-crop", "dense+multi-crop": "multi-crop & dense"}


def table5(r: Results) -> str:
    lines = ["| net | protocol | ours top-1 / top-5 | paper top-1 / top-5 |", "|---|---|---|---|"]
    for step in r.fusion_nets:
        for p in PROTOCOL_NAMES:
            row = r.protocols.get((step.net, p))
            mine = paper.TABLE5.get(step.net, {}).get(p) if step.train_scale == "jitter" else None
            lines.append(f"| {step.name} | {PROTOCOL_NAMES[p]} | {cell(r.out, row)} | {paper_pair(mine)} |")
    return "\n".join(lines)


def table6(r: Results) -> str:
    fused = " and ".join(s.name for s in r.fusion_nets) or "-"
    lines = [f"Fusion of {fused} (posteriors averaged, Sec. 4.4); the paper fuses D and E (jittered S, "
             "three test scales).", "",
             "| protocol | ours top-1 / top-5 | paper top-1 / top-5 |", "|---|---|---|"]
    for p in PROTOCOL_NAMES:
        lines.append(f"| {PROTOCOL_NAMES[p]} | {cell(r.out, r.fusion.get(p))} | "
                     f"{paper_pair(paper.TABLE6.get(p))} |")
    return "\n".join(lines)


def table8(r: Results) -> str:
    lines = ["| fine-tuned layers | regression | ours (% error) | paper (% error) |", "|---|---|---|---|"]
    for head, layers in (("scr", "fc"), ("pcr", "fc"), ("pcr", "all")):
        row = r.loc8.get((head, layers))
        ours = "not run" if row is None else link(r.out, row["_json"],
                                                  f"{row['localization_error_gt_class']:.2f}")
        words = "1st and 2nd FC" if layers == "fc" else "all"
        lines.append(f"| {words} | {head.upper()} | {ours} | {paper.TABLE8[(head, layers)]:.1f} |")
    return "\n".join(lines)


def table9(r: Results) -> str:
    lines = ["| localisation net | test Q | protocol | ours top-1 / top-5 (% error) |", "|---|---|---|---|"]
    for name, row in r.loc9.items():
        what = {"centre": "centre crop", "dense-1": "dense + flips, one scale",
                "dense-3": "dense + flips, three scales"}
        kind = next((v for k, v in what.items() if name.endswith(k)), name)
        net = name.rsplit("-", 1)[0].removesuffix("-dense")
        net = "fusion (union of boxes)" if name.startswith("fusion") else net
        value = link(r.out, row["_json"], f"{row['localization_error_top1']:.2f} / "
                                          f"{row['localization_error_top5']:.2f}")
        lines.append(f"| {net} | {scales_text(row)} | {kind} | {value} |")
    lines += ["", "The paper gives Table 9's findings (dense beats the centre crop by a wide margin; several "
              f"test scales help; fusing the S = 256 and S = 384 nets helps) and "
              f"{paper.TABLE9_TEST_TOP5}% top-5 localisation error on the ILSVRC-2014 test set."]
    return "\n".join(lines)


def ordered_classifiers(plan: list[Step]) -> list[Step]:
    """The classification runs of the data (not the localisation classifiers), in Table 3's order."""
    runs = [s for s in plan if s.kind == "train" and not s.name.startswith("loc") and s.tables]
    return sorted(runs, key=lambda s: (NETS.index(s.net), TRAIN_SCALES.index(s.train_scale)))


def machine() -> str:
    from ..distributed import cpu_has_native_bf16, cpu_name

    cpu = cpu_name() or platform.processor() or platform.machine()
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {platform.machine()}{bf16}, {os.cpu_count()} CPU cores, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def write_report(out: str | Path, plan: list[Step], records: dict[str, dict], pictures: bool = True) -> Path:
    """Write ``out/REPORT.md`` from whatever steps have finished (the others show as not run)."""
    from .figures import make_figures

    out = Path(out)
    r = Results(out, plan)
    figures = make_figures(out, plan, r) if pictures else {}
    tables = {t for s in plan for t in s.tables}
    total = sum(rec.get("seconds", 0.0) for rec in records.values())
    command = next((rec.get("command") for rec in records.values() if rec.get("command")), "")
    parts = [f"# The paper's experiments on {plan[0].config.get('data', '?') if plan else '?'}", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `vgg reproduce`. "
             f"{len(records)} of {len(plan)} steps finished; their time: {format_duration(total)} "
             f"(the sum of the steps' wall-clock times).", "",
             f"- Command: `{command}`" if command else "- Command: (not recorded)",
             f"- Machine: {machine()}",
             f"- The paper's numbers: {paper.SOURCE}, ILSVRC-2012 val. Ours: top-1 / top-5 error (%) on the "
             "split named in each JSON; every figure links to the JSON it came from.", ""]
    parts += ["## What holds", ""] + [f"- {line}" for line in conclusions(r)] + [""]
    sections = [("3", "Table 3: one test scale (dense)", lambda: table3(r, plan)),
                ("4", "Table 4: three test scales (dense)", lambda: table4(r, plan)),
                ("5", "Table 5: dense, multi-crop and both (three test scales)", lambda: table5(r)),
                ("6", "Table 6: fusion", lambda: table6(r)),
                ("8", "Table 8: localisation, centre crop, true class (App. A.2, protocol 1)",
                 lambda: table8(r)),
                ("9", "Table 9: localisation, the full protocol (App. A.2, protocol 2)", lambda: table9(r))]
    for t, title, body in sections:
        if t in tables:
            parts += [f"## {title}", "", body(), ""]
            for caption, path in figures.get(t, []):
                parts += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    parts += ["## Training runs", "", "| step | from | what | best val (%) | epochs | time | curves |",
              "|---|---|---|---|---|---|---|"]
    for step in plan:
        if step.kind != "train":
            continue
        rec = records.get(step.name)
        curves = out / step.name / "curves.png"
        parts.append(f"| {step.name} | {', '.join(step.sources) or 'random'} | {step.label} | "
                     f"{'-' if rec is None else format(rec['best_val'], '.2f')} | "
                     f"{'-' if rec is None else rec['epochs']} | "
                     f"{'-' if rec is None else format_duration(rec['seconds'])} | "
                     f"{link(out, curves, 'curves') if curves.is_file() else '-'} |")
    for caption, path in figures.get("curves", []):
        parts += ["", f"![{caption}]({path})", "", f"*{caption}*"]
    parts += ["", "## Evaluations", "", "| step | what | JSON | time |", "|---|---|---|---|"]
    for step in plan:
        if step.kind != "evaluate":
            continue
        rec = records.get(step.name)
        files = [link(out, out / step.name / f"{c['name']}.json", c["name"]) for c in step.calls
                 if (out / step.name / f"{c['name']}.json").is_file()]
        parts.append(f"| {step.name} | {step.label} | {', '.join(files) or '-'} | "
                     f"{'-' if rec is None else format_duration(rec['seconds'])} |")
    parts += ["", "Each step is an ordinary run folder: `vgg evaluate DIR/<step>` or `vgg train --resume "
              "DIR/<step>` work on it alone; `DIR/plan.json` holds every step's settings and `DIR/<step>/"
              f"{STEP_FILE}` its record.", ""]
    path = out / REPORT
    text = "\n".join(parts)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


__all__ = ["FINE_TUNED", "REPORT", "Results", "write_report"]
