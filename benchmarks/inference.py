"""Inference speed of VGG16 at 224 along the path `vgg evaluate` and `vgg predict` use, against a
plain eager reference (fp32, NCHW, an nn.Sequential with the same layers and a Linear head), a large
matmul (for model FLOP utilisation), and the runtimes users deploy with, on our ONNX export of the
same net when they are installed: onnxruntime (CPU provider) and OpenVINO (CPU plugin, f32 precision
hint, latency mode: one stream, the same number of threads).

Ours is ``vgg.models.prepare_for_inference`` (what ``vgg evaluate`` and ``vgg predict`` load nets
with) called as ``evaluate.posterior`` calls it: channels_last weights and, on the CPU, the fused
conv+ReLU runner with prepacked weights; the FC head takes its matmul path at crop size.

    .venv/bin/python benchmarks/inference.py [--batches 1 8 32] [--rounds 5] [--bf16] [--json PATH]

``--bf16`` adds ours in bfloat16 (`vgg evaluate --bf16`: the engine's convs and FC layers in bf16, on
CPUs with native bf16), never in the fp32 comparison.
    .venv/bin/python benchmarks/inference.py --layers [--batches 8] [--bf16]  # per layer, vs onnxruntime
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vgg
from common import interleaved, machine, median, print_table, ratio, write_json
from vgg.engine import FusedConv, prepare_for_inference
from vgg.models import layer_table


def eager_reference(model: vgg.VGG) -> nn.Sequential:
    """The same layers and weights as a plain NCHW nn.Sequential with torchvision's head (flatten +
    Linear), in eval mode; the training benchmark's reference loop uses it too."""
    linears = []
    for i in (0, 3, 6):
        fc = model.classifier[i]
        linear = nn.Linear(fc.in_features, fc.out_features)
        linear.load_state_dict(fc.state_dict())
        linears.append(linear)
    net = nn.Sequential(*copy.deepcopy(model.features), nn.Flatten(), linears[0], nn.ReLU(inplace=True),
                        nn.Dropout(model.dropout), linears[1], nn.ReLU(inplace=True),
                        nn.Dropout(model.dropout), linears[2])
    return net.to(memory_format=torch.contiguous_format).eval()


def onnx_file(model: vgg.VGG, tmp: Path) -> Path | None:
    """Our ONNX export of ``model`` (what both runtimes load), or None without the onnx extra."""
    try:
        from vgg.export import export_onnx
    except ImportError:
        return None
    path = tmp / "vgg16.onnx"
    if not path.exists():
        export_onnx(model, path)
    return path


def runtime_and_graph(name: str, model: vgg.VGG, tmp: Path):
    """The runtime module ``name`` and our ONNX export of ``model``, or None when either is missing."""
    import importlib

    try:
        runtime = importlib.import_module(name)
    except ImportError:
        return None
    path = onnx_file(model, tmp)
    return None if path is None else (runtime, path)


def openvino_model(model: vgg.VGG, tmp: Path):
    """OpenVINO's CPU plugin on the ONNX export, fp32, one stream on our threads; None if absent."""
    found = runtime_and_graph("openvino", model, tmp)
    if found is None:
        return None
    ov, path = found
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY"}
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def onnx_session(model: vgg.VGG, tmp: Path, profile: bool = False):
    found = runtime_and_graph("onnxruntime", model, tmp)
    if found is None:
        return None
    ort, path = found
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp / "ort_profile")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextmanager
def exact_fp32():
    """fp32 as written, for the equality checks: cuDNN convolutions and CUDA matmuls take TF32 by
    default (max error 6e-4 on VGG16's layers), which no fp32 tolerance should have to absorb."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def assert_close_relative(got, ref, rtol: float, what: str) -> float:
    """The largest difference, relative to the reference's largest magnitude (the output's size),
    is at most ``rtol``; returns it."""
    got, ref = torch.as_tensor(got).double().cpu(), torch.as_tensor(ref).double().cpu()
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    if err > rtol:
        raise AssertionError(f"{what}: largest difference {err:.2e} of the output's size "
                             f"(tolerance {rtol:g})")
    return err


def he_init(model: nn.Module) -> nn.Module:
    """He-initialised convs and FC layers: outputs of order 1, so that an equality check tests
    something (a random VGG16 with the paper's N(0, 0.01^2) init gives outputs of ~1e-7)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def run(arch: str = "vgg16", size: int = 224, batches=(1, 8, 32), rounds: int = 5,
        bf16: bool = False) -> dict:
    """Every inference figure; returns the JSON-able results. ``bf16``: also time ours in bfloat16
    (opt-in; on the CPU the engine in bf16, on CUDA autocast), never in the fp32 comparison."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    base = he_init(vgg.create_model(arch, crop_size=size)).eval()
    ref = eager_reference(base).to(device)
    ours = prepare_for_inference(vgg.create_model(arch, crop_size=size), device)
    ours.load_state_dict(base.state_dict())
    macs = sum(r["macs"] for r in layer_table(base, size))
    n = 4096 if device == "cpu" else 8192  # a matmul about as long as a model call, under the same load
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    autocast_bf16 = torch.autocast(device, dtype=torch.bfloat16)
    if bf16 and device == "cpu":
        half = prepare_for_inference(copy.deepcopy(ours), device, bf16=True)

        def ours_bf16(x):
            return half(x)
    else:
        def ours_bf16(x):
            with autocast_bf16:
                return ours(x)

    results = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        session = onnx_session(base, Path(tmp)) if device == "cpu" else None
        openvino = openvino_model(base, Path(tmp)) if device == "cpu" else None
        for batch in batches:
            x = torch.randn(batch, 3, size, size, device=device)
            # evaluate.posterior's call: the normalised NCHW float batch straight into model(x)
            with exact_fp32():
                assert_close_relative(ours(x), ref(x), 1e-4, f"ours against eager, batch {batch}")
            contenders = {"ours": lambda x=x: ours(x), "reference": lambda x=x: ref(x),
                          "matmul": lambda: a @ b}
            if session is not None:
                xn = x.cpu().numpy()
                np_ref = session.run(None, {"images": xn})[0]
                assert_close_relative(torch.from_numpy(np_ref), ref(x), 1e-4, f"onnxruntime, batch {batch}")
                contenders["onnxruntime"] = lambda xn=xn: session.run(None, {"images": xn})
            if openvino is not None:
                xn = x.cpu().numpy()
                assert_close_relative(torch.from_numpy(openvino(xn)[0]), ref(x), 1e-4,
                                      f"OpenVINO, batch {batch}")
                contenders["openvino"] = lambda xn=xn: openvino(xn)
            if bf16:
                assert_close_relative(ours_bf16(x), ref(x), 5e-2, f"ours bf16, batch {batch}")
                contenders["ours bf16"] = lambda x=x: ours_bf16(x)
            times = interleaved(contenders, rounds)
            ips = {k: batch / median(v) for k, v in times.items() if k != "matmul"}
            peak = 2 * n**3 / median(times["matmul"])
            row = {"batch": batch, "images_per_s": ips,
                   "vs_reference": list(ratio(times, "ours", "reference")),
                   "mfu": 2 * macs * ips["ours"] / peak, "matmul_gflops": peak / 1e9, "rounds_s": times}
            for runtime in ("onnxruntime", "openvino"):
                if runtime in times:
                    row[f"vs_{runtime}"] = list(ratio(times, "ours", runtime))
            if bf16:
                row["bf16_vs_ours"] = list(ratio(times, "ours bf16", "ours"))
            results.append(row)
        # The head at crop size: the matmul path against the same weights as 7x7 + 1x1 convolutions.
        feats = torch.randn(8, 512, size // 32, size // 32, device=device)
        feats = feats.contiguous(memory_format=torch.channels_last)  # what the features produce
        head = ours.classifier.eval()

        def conv_head():
            h = F.relu(F.conv2d(feats, head[0].conv_weight(), head[0].bias))
            h = F.relu(F.conv2d(h, head[3].conv_weight(), head[3].bias))
            return F.conv2d(h, head[6].conv_weight(), head[6].bias)

        with exact_fp32():
            assert_close_relative(head(feats), conv_head(), 1e-4, "the matmul head against 7x7 + 1x1 convs")
        x8 = torch.randn(8, 3, size, size, device=device)
        head_times = interleaved({"ours": lambda: head(feats), "conv": conv_head,
                                  "model": lambda: ours(x8)}, rounds)
    return {"arch": arch, "size": size, "inference": results,
            "head": {"matmul_s": median(head_times["ours"]), "conv_s": median(head_times["conv"]),
                     "model_s": median(head_times["model"]),
                     "conv_vs_matmul": list(ratio(head_times, "ours", "conv")), "rounds_s": head_times}}


def layer_times(arch: str = "vgg16", size: int = 224, batch: int = 8, rounds: int = 5,
                bf16: bool = False) -> list[list]:
    """Milliseconds per layer (median over rounds) of ours (the CPU runner's steps: each conv with its
    ReLU, Winograd or direct, and each pool; then the head), of ours in bf16 with ``bf16``, and of
    onnxruntime's nodes (its profiler), the models called in turn in every round. Rows: layer, path,
    ours ms, onnxruntime ms[, ours bf16 ms]."""
    import json

    torch.manual_seed(0)
    base = vgg.create_model(arch, crop_size=size).eval()
    engines = {"fp32": prepare_for_inference(copy.deepcopy(base))}
    if bf16:
        engines["bf16"] = prepare_for_inference(copy.deepcopy(base), bf16=True)
    x = torch.randn(batch, 3, size, size)
    ms: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        session = onnx_session(base, Path(tmp), profile=True)
        if session is None:
            raise SystemExit("--layers needs onnxruntime (pip install -e '.[onnx]')")
        for net in engines.values():
            net(x)  # packs the weights
        for _ in range(rounds + 1):
            for name, net in engines.items():
                h, head = x.to(net.features.dtype), lambda h, net=net: net.forward_head(h.float())
                for i, step in enumerate([*net.features._plan, head]):
                    start = time.perf_counter()
                    h = step(h)
                    ms.setdefault((name, i), []).append(1e3 * (time.perf_counter() - start))
            session.run(None, {"images": x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, tuple[str, list[float]]] = {}  # node -> (op, per-run ms), in graph order
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes.setdefault(e["name"], (e["args"]["op_name"], []))[1].append(e["dur"] / 1e3)
    ort_convs = [median(t[1:]) for op, t in nodes.values() if "Conv" in op]
    ort_pools = [median(t[1:]) for op, t in nodes.values() if "Pool" in op]
    ort_rest = sum(median(t[1:]) for op, t in nodes.values() if "Conv" not in op and "Pool" not in op)

    def ours(i: int) -> list[float]:
        return [median(ms[name, i][1:]) for name in engines]

    steps = engines["fp32"].features._plan
    rows, conv, pool, shape = [], 0, 0, tuple(x.shape)
    for i, step in enumerate(steps):
        fp32, *half = ours(i)
        if isinstance(step, FusedConv):
            k, c = step.weight_shape
            path = "Winograd" if step.takes_winograd(shape) else "direct"
            rows.append([f"conv {c}->{k} at {shape[2]}x{shape[3]}", path, fp32, ort_convs[conv], *half])
            shape, conv = (shape[0], k, *shape[2:]), conv + 1
        else:
            rows.append([f"max-pool at {shape[2]}x{shape[3]}", "", fp32, ort_pools[pool], *half])
            shape, pool = (*shape[:2], shape[2] // 2, shape[3] // 2), pool + 1
    # onnxruntime's head is its remaining conv nodes (the FC layers as convolutions) and the mean
    fp32, *half = ours(len(steps))
    rows.append(["head (FC layers)", "matmul", fp32, sum(ort_convs[conv:]) + ort_rest, *half])
    rows.append(["total", "", *(sum(r[j] for r in rows) for j in range(2, len(rows[0])))])
    return rows


def print_results(res: dict) -> None:
    def cell(r):
        return f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})"

    rows = []
    for row in res["inference"]:
        ips = row["images_per_s"]
        rows.append([row["batch"], f"{ips['ours']:.2f}", f"{ips['reference']:.2f}",
                     f"{ips.get('onnxruntime', float('nan')):.2f}",
                     f"{ips.get('openvino', float('nan')):.2f}",
                     cell(row["vs_reference"]),
                     cell(row["vs_onnxruntime"]) if "vs_onnxruntime" in row else "-",
                     cell(row["vs_openvino"]) if "vs_openvino" in row else "-",
                     f"{100 * row['mfu']:.0f}%"]
                    + ([f"{ips['ours bf16']:.2f}", cell(row["bf16_vs_ours"])] if "ours bf16" in ips else []))
    bf16 = any("ours bf16" in r["images_per_s"] for r in res["inference"])
    print_table(f"{res['arch']} at {res['size']}: inference images/s; ratio = median over rounds (min-max)",
                ["batch", "ours", "eager NCHW", "onnxruntime", "OpenVINO", "vs eager", "vs onnxruntime",
                 "vs OpenVINO", "MFU"]
                + (["ours bf16 (opt-in)", "bf16 vs ours fp32"] if bf16 else []), rows)
    h = res["head"]
    print(f"\nhead at crop size, batch 8: matmul path {1e3 * h['matmul_s']:.1f} ms, as 7x7 + 1x1 "
          f"convolutions {1e3 * h['conv_s']:.1f} ms ({cell(h['conv_vs_matmul'])} slower), "
          f"{100 * h['matmul_s'] / h['model_s']:.1f}% of the whole model's {1e3 * h['model_s']:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="also time the opt-in bfloat16 autocast path")
    p.add_argument("--json", default="benchmarks/results/inference.json")
    p.add_argument("--layers", action="store_true", help="time each layer, ours against onnxruntime's nodes")
    args = p.parse_args()
    if args.layers:
        for batch in args.batches:
            rows = layer_times(args.arch, args.size, batch, args.rounds, args.bf16)
            head = ["layer", "ours", "ours ms", "onnxruntime ms", *(["ours bf16 ms"] if args.bf16 else [])]
            print_table(f"{args.arch} at {args.size}, batch {batch}: ms per layer, median of {args.rounds}",
                        head,
                        [[a, b, *(f"{t:.1f}" for t in times)] for a, b, *times in rows])
        print(machine())
        return
    res = run(args.arch, args.size, args.batches, args.rounds, args.bf16)
    print(machine())
    print_results(res)
    write_json(args.json, {"benchmark": "inference", **res})


if __name__ == "__main__":
    main()
