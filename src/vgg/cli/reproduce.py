"""`vgg reproduce`: the paper's experiments (Tables 3-6, 8-9) as one resumable pipeline and a report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

OPTION_FLAGS = ("data", "loc_data", "scale_factor", "crop_size", "width", "batch_norm", "init", "epochs",
                "finetune_epochs", "loc_epochs", "batch_size", "lr", "loc_lr", "limit", "loc_limit",
                "eval_limit", "loc_eval_limit", "split", "eval_batch_size", "nets", "tables", "seed",
                "device", "workers", "floor_pooling")


def reproduce_args(p: argparse.ArgumentParser) -> None:
    from ..reproduce import NETS, PRESETS, TABLES, parse_factor

    p.add_argument("--data", help="fashion-mnist or a folder with train/ val/ [test/] (ImageNet's layout); "
                   "default: the preset's")
    p.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="one run folder per step, and REPORT.md")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="paper (ImageNet, crop 224, 74 epochs), fashion-mnist (about 2 hours on a 2-core "
                   "CPU), tiny (seconds a step); default fashion-mnist for --data fashion-mnist, else paper")
    p.add_argument("--plan", action="store_true",
                   help="print the steps, what each starts from and its time (from a few timed batches); "
                   "run nothing")
    p.add_argument("--no-estimate", action="store_true", help="with --plan: no timing")
    p.add_argument("--report", action="store_true",
                   help="only write REPORT.md from the steps that have finished")
    p.add_argument("--nets", nargs="+", metavar="NET", help=f"of {' '.join(NETS)} (default all)")
    p.add_argument("--tables", nargs="+", choices=list(TABLES), metavar="T",
                   help=f"of {' '.join(TABLES)} (default all); the runs they need come along")
    p.add_argument("--scale-factor", type=parse_factor, metavar="F",
                   help="the paper's S (256, 384, [256, 512]) times F, e.g. 32/224 (default crop / 224)")
    p.add_argument("--crop-size", type=int, help="training crop (the paper's 224)")
    p.add_argument("--width", type=float, help="channel multiplier of every net")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm after every conv (not the paper's; trains in fewer epochs)")
    p.add_argument("--init", choices=["normal", "glorot"], help="random init of nets A and A-LRN")
    p.add_argument("--epochs", type=int, help="epochs of the nets from random weights or from A")
    p.add_argument("--finetune-epochs", type=int, help="epochs of the nets fine-tuned from another "
                   "(S = 384, jittered S, the localisation classifiers)")
    p.add_argument("--loc-epochs", type=int, help="epochs of the localisation nets")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="initial rate from scratch (fine-tuned nets: a tenth)")
    p.add_argument("--loc-lr", type=float, help="the localisation nets' rate (App. A.1: 1e-3)")
    p.add_argument("--limit", type=int, help="the first N images of each split for training")
    p.add_argument("--loc-limit", type=int, help="the same for the localisation data")
    p.add_argument("--loc-data",
                   help="data with boxes (default fashion-mnist-loc for fashion-mnist, else --data)")
    p.add_argument("--eval-limit", type=int, help="the first N images of each evaluation")
    p.add_argument("--loc-eval-limit", type=int, help="the same for the localisation evaluations")
    p.add_argument("--split", choices=["val", "test"],
                   help="evaluations' split (default test where there is one)")
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--floor-pooling", action=argparse.BooleanOptionalAction, default=None,
                   help="dense views (validation, evaluation) pool with PyTorch's rounding down instead "
                   "of Caffe's rounding up (the fashion-mnist preset's default: at crop 32 the extra "
                   "positions see 2-5 px strips)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda (default auto)")
    p.add_argument("--workers", "-j", type=int, help="image decoding processes")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="training processes per step: each training step runs under torchrun with N "
                   "processes (Sec. 3.3; one per GPU); default 1")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_of(args):
    from ..reproduce import preset_options

    flags = {k: getattr(args, k) for k in OPTION_FLAGS}
    preset = args.preset
    if preset is None:
        data = (args.data or "").lower().replace("_", "-")
        preset = "fashion-mnist" if data in ("fashion-mnist", "fashionmnist") else "paper"
    if flags["nets"] is not None:
        flags["nets"] = tuple(flags["nets"])
    if flags["tables"] is not None:
        flags["tables"] = tuple(flags["tables"])
    if args.no_progress:
        flags["progress"] = False
    return preset, preset_options(preset, **flags)


def command_line(args, preset: str) -> str:
    words = ["vgg", "reproduce", "--output", args.output, "--preset", preset]
    for k in OPTION_FLAGS:
        v = getattr(args, k)
        if v is None:
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, (list, tuple)):
            words += [flag, *map(str, v)]
        else:
            words += [flag, str(v)]
    return shlex.join(words)


def reproduce_run(args) -> None:
    from ..reproduce import estimate, make_plan, plan_text, run_plan, write_report
    from ..training import NonFiniteLoss, Stopped

    preset, options = options_of(args)
    plan = make_plan(options, args.output)
    if (args.plan or args.report) and int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 prints the plan or writes the report
    if args.plan:
        seconds = None if args.no_estimate else estimate(plan, options)
        print(f"vgg reproduce: preset {preset}, {len(plan)} steps in {args.output}")
        print(plan_text(plan, args.output, seconds, options.device))
        return
    if args.report:
        from ..reproduce.pipeline import finished

        records = {s.name: r for s in plan if (r := finished(args.output, s)) is not None}
        print(f"wrote {write_report(args.output, plan, records)}")
        return
    try:
        run_plan(plan, args.output, command=command_line(args, preset), report=write_report,
                 processes=args.nproc_per_node)
    except NonFiniteLoss as e:
        print(f"vgg reproduce: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except Stopped as e:  # Ctrl-C or SIGTERM: the step checkpointed; the same command continues it
        print(f"vgg reproduce: {e}; the same command continues", file=sys.stderr)
        raise SystemExit(e.code) from None
