"""Inference speed of VGG16 at 224 along the path `vgg evaluate` and `vgg predict` use, against a
plain eager reference (fp32, NCHW, an nn.Sequential with the same layers and a Linear head), a large
matmul (for model FLOP utilisation) and onnxruntime on the exported model when it is installed.

    .venv/bin/python benchmarks/inference.py [--batches 1 8 32] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vgg
from common import interleaved, machine, median, print_table, ratio, write_json
from vgg.models import layer_table, prepare_for_inference


def eager_reference(model: vgg.VGG) -> nn.Sequential:
    """The same layers as a plain NCHW nn.Sequential with the torchvision head (flatten + Linear)."""
    linears = []
    for i in (0, 3, 6):
        fc = model.classifier[i]
        linear = nn.Linear(fc.in_features, fc.out_features)
        linear.load_state_dict(fc.state_dict())
        linears.append(linear)
    return nn.Sequential(*copy.deepcopy(model.features), nn.Flatten(), linears[0], nn.ReLU(),
                         nn.Dropout(), linears[1], nn.ReLU(), nn.Dropout(), linears[2]).eval()


def onnx_session(model: vgg.VGG, tmp: Path):
    try:
        import onnxruntime as ort

        from vgg.weights import export_onnx
    except ImportError:
        return None
    path = tmp / "vgg16.onnx"
    export_onnx(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default="benchmarks/results/inference.json")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    base = vgg.create_model(args.arch, crop_size=args.size).eval()
    ref = eager_reference(base).to(device)
    ours = prepare_for_inference(vgg.create_model(args.arch, crop_size=args.size), device)
    ours.load_state_dict(base.state_dict())
    macs = sum(r["macs"] for r in layer_table(base, args.size))
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        session = onnx_session(base, Path(tmp)) if device == "cpu" else None
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size, device=device)
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-3, atol=1e-4)
            contenders = {"ours": lambda x=x: ours(x), "reference": lambda x=x: ref(x),
                          "matmul": lambda: a @ b}
            if session is not None:
                xn = x.cpu().numpy()
                contenders["onnxruntime"] = lambda xn=xn: session.run(None, {"images": xn})
            times = interleaved(contenders, args.rounds)
            ips = {k: batch / median(v) for k, v in times.items() if k != "matmul"}
            peak = 2 * n**3 / median(times["matmul"])
            mfu = 2 * macs * ips["ours"] / peak
            r, lo, hi = ratio(times, "ours", "reference")
            row = {"batch": batch, "images_per_s": ips, "vs_reference": [r, lo, hi], "mfu": mfu,
                   "matmul_gflops": peak / 1e9}
            ort_cell = "-"
            if "onnxruntime" in times:
                row["vs_onnxruntime"] = list(ratio(times, "ours", "onnxruntime"))
                ort_cell = f"{row['vs_onnxruntime'][0]:.2f}x ({row['vs_onnxruntime'][1]:.2f}-" \
                           f"{row['vs_onnxruntime'][2]:.2f})"
            results.append(row)
            rows.append([batch, f"{ips['ours']:.2f}", f"{ips['reference']:.2f}",
                         f"{ips.get('onnxruntime', float('nan')):.2f}", f"{r:.2f}x ({lo:.2f}-{hi:.2f})",
                         ort_cell, f"{100 * mfu:.0f}%"])
        # The head at crop size: the matmul path against the same weights as 7x7 + 1x1 convolutions.
        feats = torch.randn(8, 512, args.size // 32, args.size // 32, device=device)
        head = ours.classifier.eval()

        def conv_head():
            h = F.relu(F.conv2d(feats, head[0].conv_weight(), head[0].bias))
            h = F.relu(F.conv2d(h, head[3].conv_weight(), head[3].bias))
            return F.conv2d(h, head[6].conv_weight(), head[6].bias)

        head_times = interleaved({"ours": lambda: head(feats), "conv": conv_head}, args.rounds)
        hr = ratio(head_times, "ours", "conv")
    print(f"{args.arch} at {args.size}, {machine()}")
    print_table("inference (images/s; ratio = median over rounds, (min-max))",
                ["batch", "ours", "eager NCHW", "onnxruntime", "vs eager", "vs onnxruntime", "MFU"],
                rows)
    print(f"\nhead at crop size, batch 8: ours {1e3 * median(head_times['ours']):.1f} ms, "
          f"as convolutions {1e3 * median(head_times['conv']):.1f} ms ({hr[0]:.2f}x)")
    write_json(args.json, {"arch": args.arch, "size": args.size, "inference": results,
                           "head_vs_conv": list(hr)})


if __name__ == "__main__":
    main()
