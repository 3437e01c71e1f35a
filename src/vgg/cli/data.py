"""`vgg data` (a data set described, checked, drawn) and `vgg bench` (the benchmark suite)."""

from __future__ import annotations

import argparse
import sys

from ..report import table

# -- vgg data ------------------------------------------------------------------------------------------

def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA",
                   help="'fashion-mnist', 'fashion-mnist-loc' or a folder root with train/ val/ [test/]")
    p.add_argument("--check", action="store_true", help="decode every image; list the unreadable ones")
    p.add_argument("--stats", action="store_true",
                   help="the training set's mean and PCA colour components (0-255 scale)")
    p.add_argument("--val-size", type=int, default=5000, help="Fashion-MNIST's held-out val (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split and of --stats' sample")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("--draw", metavar="PNG", help="a grid of training images with their boxes (App. A)")
    p.add_argument("--boxes", nargs="+", metavar="[SPLIT=]PATH", help="a folder's box annotations for --draw")


def data_run(args) -> None:
    import json

    from ..data import describe_dataset

    info = describe_dataset(args.data, check=args.check, stats=args.stats, val_size=args.val_size,
                            seed=args.seed)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    splits = list(info["splits"])
    where = f" (files: {info['files']})" if info.get("files") else ""
    print(f"{info['name']}: {len(info['classes'])} classes, {info['channels']} channel(s){where}")
    counts = {s: info["splits"][s]["per_class"] for s in splits}
    if len(info["classes"]) <= 30:
        rows = [[c] + [counts[s][i] for s in splits] for i, c in enumerate(info["classes"])]
    else:
        rows = [["fewest per class"] + [min(counts[s]) for s in splits],
                ["most per class"] + [max(counts[s]) for s in splits]]
    rows.append(["total"] + [info["splits"][s]["images"] for s in splits])
    print(table(rows, ["class"] + splits))
    if args.check:
        bad = [(s, p, r) for s in splits for p, r in info["splits"][s].get("bad", [])]
        for s, p, r in bad:
            print(f"{s}: unreadable {p}: {r}")
        print(f"{len(bad)} unreadable file(s)")
    if args.stats:
        st = info["statistics"]
        print("mean (0-255): " + ", ".join(f"{v:.3f}" for v in st["mean"]))
        print("PCA eigval: " + ", ".join(f"{v:.4f}" for v in st["eigval"]))
        print("PCA eigvec (columns): " + json.dumps([[round(v, 4) for v in row] for row in st["eigvec"]]))
    if args.draw:
        from ..data import open_box_dataset, sample_picture

        boxed = open_box_dataset(args.data, "train", limit=16, val_size=args.val_size, boxes=args.boxes)
        sample_picture(boxed, args.draw)
        for where, reason in boxed.problems:
            print(f"skipped {where}: {reason}")
        print(f"wrote {args.draw}: {min(16, len(boxed))} training images with their boxes")


# -- vgg bench -----------------------------------------------------------------------------------------

BENCH_PARTS = ("inference", "training", "data")


def bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short run: fewer rounds, batches and images")
    p.add_argument("--only", nargs="+", choices=BENCH_PARTS, metavar="PART",
                   help=f"run only these parts ({', '.join(BENCH_PARTS)})")
    p.add_argument("--bf16", action="store_true",
                   help="also time the opt-in bfloat16 inference (never the fp32 comparison)")
    p.add_argument("--json", metavar="PATH", help="results JSON (default benchmarks/results/all.json)")


def bench_run(args) -> None:
    import subprocess
    from pathlib import Path

    # The suite lives beside the package in a source checkout (make bench runs the same script).
    script = Path(__file__).resolve().parents[3] / "benchmarks" / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(f"vgg bench runs the repository's benchmarks/run_all.py, not found at "
                                f"{script}; install from a source checkout (pip install -e .)")
    argv = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + \
        (["--only", *args.only] if args.only else []) + (["--bf16"] if args.bf16 else []) + \
        (["--json", args.json] if args.json else [])
    code = subprocess.call(argv)
    if code:
        raise SystemExit(code)
