"""The whole benchmark suite (`make bench`, `vgg bench`): inference, training, end-to-end training
and the data pipeline, printed as one table of ratios against their references and goals, with each
part's detail, and written as JSON (benchmarks/results/all.json).

Every ratio comes from contenders interleaved in one process (benchmarks/common.py): each round times
each contender once, in turn; the table gives the median over rounds and the min-max.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only inference training data] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, from any folder

import torch  # noqa: E402

import data as data_bench  # noqa: E402
import inference  # noqa: E402
import training  # noqa: E402
from common import machine, print_table, write_json  # noqa: E402

PARTS = ("inference", "training", "data")

# Each figure: (description, goal or None). The goals of the performance issue on a 2-core CPU.
GOALS = {"inference vs eager NCHW, batch 8": 1.3,
         # issue 15: ahead of the runtimes users deploy with, on the same ONNX graph
         "inference vs onnxruntime, batch 8": 1.2, "inference vs openvino, batch 8": 1.2,
         "bf16 inference vs ours fp32, batch 8": 1.6,
         # issue 15: the training step along `vgg train`'s path against the plain fp32 loop
         "training step vs reference loop, VGG16 @ 224": 1.2, "training step vs reference loop, 32x32": 1.4,
         "real data / synthetic": 0.9,
         "data train pipeline vs Pillow": 1.5, "data eval pipeline vs Pillow, 2048x1536": 2.0}


def summary_rows(results: dict) -> list[list]:
    """One row per ratio: figure, median, (min-max), goal, met."""
    rows = []

    def add(name: str, r, goal_key: str | None = None):
        goal = GOALS.get(goal_key) if goal_key else None
        met = "-" if goal is None else ("yes" if r[0] >= goal else "NO")
        rows.append([name, f"{r[0]:.2f}x", f"{r[1]:.2f}-{r[2]:.2f}",
                     "-" if goal is None else f">= {goal}x", met])

    if "inference" in results:
        inf = results["inference"]
        for row in inf["inference"]:
            b = row["batch"]
            add(f"{inf['arch']}@{inf['size']} inference b{b} vs eager NCHW", row["vs_reference"],
                "inference vs eager NCHW, batch 8" if b == 8 else None)
            for runtime in ("onnxruntime", "openvino"):
                if f"vs_{runtime}" in row:
                    add(f"{inf['arch']}@{inf['size']} inference b{b} vs {runtime}", row[f"vs_{runtime}"],
                        f"inference vs {runtime}, batch 8" if b == 8 else None)
            if "bf16_vs_ours" in row:
                add(f"{inf['arch']}@{inf['size']} bf16 inference b{b} vs ours fp32", row["bf16_vs_ours"],
                    "bf16 inference vs ours fp32, batch 8" if b == 8 else None)
        add("head at crop size: 7x7+1x1 conv time / matmul time", inf["head"]["conv_vs_matmul"])
    if "training" in results:
        for s in results["training"]["steps"]:
            add(f"train step {s['name']} b{s['batch']} ({s.get('precision', 'fp32')}) vs reference loop",
                s["vs_reference"], "training step vs reference loop, "
                + ("VGG16 @ 224" if s["crop"] == 224 else "32x32"))
            if "fp32_vs_reference" in s:
                add(f"train step {s['name']} b{s['batch']} (fp32, --no-amp) vs reference loop",
                    s["fp32_vs_reference"])
        for e in results["training"]["end_to_end"]:
            add(f"train end-to-end {e['name']} real / synthetic", e["real_vs_synthetic"],
                "real data / synthetic")
    if "data" in results:
        for name, d in results["data"]["results"].items():
            size, kind = name.split()
            key = ("data train pipeline vs Pillow" if kind == "train" else
                   "data eval pipeline vs Pillow, 2048x1536" if size == "2048x1536" else None)
            add(f"data {kind} {size} vs Pillow (1 thread)",
                (d["speedup_median"], d["speedup_min"], d["speedup_max"]), key)
    return rows


def run(quick: bool = False, parts=PARTS, bf16: bool = False) -> dict:
    results: dict = {}
    seconds: dict = {}
    if "inference" in parts:
        t = time.perf_counter()
        results["inference"] = inference.run(batches=(1, 8) if quick else (1, 8, 32),
                                             rounds=2 if quick else 3, bf16=bf16)
        seconds["inference"] = time.perf_counter() - t
        inference.print_results(results["inference"])
    if "training" in parts:
        t = time.perf_counter()
        results["training"] = training.run(quick)
        seconds["training"] = time.perf_counter() - t
        training.print_results(results["training"])
    if "data" in parts:
        t = time.perf_counter()
        rows, res = data_bench.run(*((60, 12, 3) if quick else (200, 40, 5)))
        results["data"] = {"results": res}
        seconds["data"] = time.perf_counter() - t
        print_table(data_bench.TITLE, data_bench.HEADER, rows)
    results["seconds"] = seconds
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short run: fewer rounds, batches and images")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    p.add_argument("--bf16", action="store_true",
                   help="also time the opt-in bfloat16 inference (never the fp32 comparison)")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "all.json"))
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = run(args.quick, args.only, args.bf16)
    print(f"\n{machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{'quick' if args.quick else 'full'} run, {time.perf_counter() - start:.0f} s")
    print_table("summary: speed ratios (median over interleaved rounds, min-max) against the goals",
                ["figure", "median", "min-max", "goal", "met"], summary_rows(results))
    write_json(args.json, {"benchmark": "all", "quick": args.quick, "torch_threads": torch.get_num_threads(),
                           **results, "summary": summary_rows(results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
