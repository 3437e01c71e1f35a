"""Training speed (forward, backward, SGD step) along the path `vgg train` uses, against a plain
reference loop written here, and end-to-end training from real data against synthetic tensors.

- steps: images/s of VGG16 at 224 and VGG11 at 32x32 (1 channel, 10 classes: Fashion-MNIST's shape).
  Ours is the model `vgg train` builds (``vgg.training.build_model``, channels_last as the loop
  does, ``param_groups`` for SGD) stepped by ``vgg.training.forward_backward`` + ``optimizer.step``.
  The reference is an nn.Sequential with the same layers and weights (NCHW, flatten + nn.Linear
  head), torch.optim.SGD with the same momentum and weight decay, F.cross_entropy, backward, step,
  bf16 autocast on CUDA (as ours there), fp32 on the CPU: the plain fp32 loop a user would write.
  Ours takes bf16 autocast where `vgg train` does (`distributed.training_amp`: CUDA, and CPUs with
  native bf16; `--no-amp` benchmarks the fp32 steps). A large matmul timed in the same rounds, in the
  precision of our steps, gives the model FLOP utilisation (3 x forward FLOPs).
- end to end: the same step fed by ``vgg.data.train_batches`` (decode, Sec. 3.1 augmentation,
  normalise) against the same step on one synthetic tensor: generated ImageNet-like JPEGs
  (500x375, benchmarks/data.py) for the 224 net, Fashion-MNIST in memory for the 32x32 net.

    .venv/bin/python benchmarks/training.py [--quick] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import interleaved, machine, median, print_table, ratio, write_json
from inference import eager_reference
from vgg import data, distributed
from vgg import training as vtrain
from vgg.engine import attach_cpu_inference
from vgg.models import Normalization, layer_table
from vgg.training.start import CPU_CHANNELS_LAST


def reference_net(model) -> nn.Sequential:
    """The same layers and weights as a plain NCHW nn.Sequential with torchvision's head."""
    return eager_reference(model).train()


def pixels(batch: int, channels: int, crop: int, device) -> torch.Tensor:
    """Synthetic input with the scale of real mean-subtracted pixels (Sec. 2: 0-255 minus the mean),
    not randn's: with the paper's N(0, 0.01^2) init, inputs 100x too small push the deep layers'
    activations and gradients towards denormal floats, which the CPU computes far more slowly."""
    return torch.randint(0, 256, (batch, channels, crop, crop), device=device).float() - 118.0


def ours_setup(arch: str, crop: int, channels: int, classes: int, batch: int, width: float = 1.0,
               amp: bool = True, batch_norm: bool = False):
    """The model and optimizer as `vgg train` prepares them (vgg.training.start)."""
    config = vtrain.TrainConfig(arch=arch, crop_size=crop, width=width, batch_size=batch, progress=False,
                                amp=amp, batch_norm=batch_norm)
    stats = {"mean": [118.0] * channels}
    model = vtrain.build_model(config, [str(k) for k in range(classes)], channels, stats)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device)
    channels_last = cuda or CPU_CHANNELS_LAST
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        # As `vgg train` does: validation's fused path, and freed memory kept for the next step
        # (vgg.engine.keep_freed_memory: process-wide, so the reference loop runs with it too).
        attach_cpu_inference(model)
    optimizer = torch.optim.SGD(vtrain.param_groups(model), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    net, no_sync = vtrain.wrap(model, distributed.Context(device=device), False)
    model.train()
    amp = distributed.training_amp(device, config.amp)

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        out = vtrain.forward_backward(net, vtrain.CLASSIFICATION, images, labels, len(labels), amp, no_sync)
        # The loop's per-step sync on CPU (loss check) before the update.
        out.tolist()
        optimizer.step()

    return model, step, device, channels_last, config, amp


def reference_setup(model, config, device):
    ref = reference_net(model).to(device)
    opt = torch.optim.SGD(ref.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    # Like with like: ours trains in bf16 autocast on CUDA (`vgg train --amp`, the default), so does
    # the reference; both fp32 on the CPU.
    amp = device.type == "cuda" and config.amp

    def step(images, labels):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
            logits = ref(images)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()

    return step


def step_benchmark(name: str, arch: str, crop: int, channels: int, classes: int, batch: int,
                   rounds: int, width: float = 1.0, batch_norm: bool = False) -> dict:
    """Ours as `vgg train` steps (bf16 where the run takes it), ours with `--no-amp` (fp32), the
    plain reference loop, and the peak matmul, interleaved in each round."""
    torch.manual_seed(0)
    model, ours, device, channels_last, config, amp = ours_setup(arch, crop, channels, classes, batch,
                                                                 width, batch_norm=batch_norm)
    ref = reference_setup(model, config, device)
    contenders = {"ours": ours, "reference": ref}
    if amp:
        torch.manual_seed(0)
        contenders["ours fp32"] = ours_setup(arch, crop, channels, classes, batch, width, amp=False,
                                             batch_norm=batch_norm)[1]
    x = pixels(batch, channels, crop, device)
    y = torch.randint(0, classes, (batch,), device=device)
    x_ours = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    n = 4096 if device.type == "cpu" else 8192  # about as long as a step, under the same load
    # The peak in the steps' precision (an fp32 peak would let a bf16 step's MFU pass 100%).
    dtype = torch.bfloat16 if amp else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    calls = {k: (lambda f=f, k=k: f(x if k == "reference" else x_ours, y)) for k, f in contenders.items()}
    times = interleaved({**calls, "matmul": lambda: a @ b}, rounds)
    macs = sum(r["macs"] for r in layer_table(model, crop))
    peak = 2 * n**3 / median(times["matmul"])
    ips = {k: batch / median(v) for k, v in times.items() if k != "matmul"}
    out = {"name": name, "arch": arch, "crop": crop, "batch": batch, "width": width, "batch_norm": batch_norm,
           "precision": "bf16 autocast" if amp else "fp32", "images_per_s": ips,
           "vs_reference": list(ratio(times, "ours", "reference")),
           "mfu": 3 * 2 * macs * ips["ours"] / peak, "matmul_gflops": peak / 1e9,
           "matmul_dtype": str(dtype).removeprefix("torch."), "rounds_s": times}
    if amp:
        out["fp32_vs_reference"] = list(ratio(times, "ours fp32", "reference"))
    return out


def forever(make_epoch):
    for epoch in itertools.count():
        yield from make_epoch(epoch)


def end_to_end(name: str, arch: str, crop: int, batch: int, rounds: int, dataset, scale) -> dict:
    """Steps fed by train_batches (real data) against steps on one synthetic batch."""
    torch.manual_seed(0)
    channels, classes = dataset.channels, len(dataset.classes)
    model, step, device, channels_last, _, _ = ours_setup(arch, crop, channels, classes, batch)
    augment = data.Augment(crop_size=crop, scale=scale, flip=True, pca=None)
    norm = Normalization((118.0,) * channels, (1.0,) * channels)
    batches = forever(lambda e: data.train_batches(dataset, augment=augment, normalization=norm,
                                                   batch_size=batch, seed=0, epoch=e, device=device,
                                                   channels_last=channels_last))
    x = pixels(batch, channels, crop, device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, classes, (batch,), device=device)

    def real():
        images, labels = next(batches)
        step(images, labels)

    times = interleaved({"real": real, "synthetic": lambda: step(x, y)}, rounds)
    r = ratio(times, "real", "synthetic")
    return {"name": name, "arch": arch, "crop": crop, "batch": batch, "data": dataset.name,
            "images_per_s": {k: batch / median(v) for k, v in times.items()}, "real_vs_synthetic": list(r),
            "rounds_s": times}


def run(quick: bool = False, rounds: int | None = None) -> dict:
    """Every training figure; returns the JSON-able results (and prints nothing)."""
    rounds = rounds or (2 if quick else 3)
    big_batch = 4 if quick else 8
    small_batch = 32 if quick else 64
    steps = [step_benchmark("VGG16 @ 224", "vgg16", 224, 3, 1000, big_batch, rounds),
             step_benchmark("VGG11 @ 32x32", "vgg11", 32, 1, 10, small_batch, rounds),
             # make demo's net: B with BN at width 0.25, crop 32 (recipes/demo.toml)
             step_benchmark("demo net (B-BN x0.25) @ 32x32", "vgg13", 32, 1, 10, 2 * small_batch, rounds,
                            width=0.25, batch_norm=True)]
    with tempfile.TemporaryDirectory() as tmp:
        from data import make_images

        make_images(Path(tmp), {"500x375": big_batch * (rounds + 2)})
        jpegs = data.open_dataset(str(Path(tmp) / "500x375"), "train")
        e2e = [end_to_end("VGG11 @ 224, JPEG folder", "vgg11", 224, big_batch, rounds, jpegs, (256, 512))]
    fmnist = data.open_dataset("fashion-mnist", "train", limit=small_batch * (rounds + 2) * 2)
    e2e.append(end_to_end("VGG11 @ 32x32, Fashion-MNIST", "vgg11", 32, small_batch, rounds, fmnist, (32, 64)))
    return {"steps": steps, "end_to_end": e2e}


def print_results(results: dict) -> None:
    def fp32(s, key):
        return "-" if "ours fp32" not in s["images_per_s"] else key(s)

    rows = [[s["name"], s["batch"], s["precision"], f"{s['images_per_s']['ours']:.2f}",
             fp32(s, lambda s: f"{s['images_per_s']['ours fp32']:.2f}"),
             f"{s['images_per_s']['reference']:.2f}",
             "{:.2f}x ({:.2f}-{:.2f})".format(*s["vs_reference"]),
             fp32(s, lambda s: "{:.2f}x ({:.2f}-{:.2f})".format(*s["fp32_vs_reference"])),
             f"{100 * s['mfu']:.0f}%"]
            for s in results["steps"]]
    print_table("training step (forward, backward, SGD), images/s; ratio = median over rounds (min-max); "
                "the reference loop is fp32 on the CPU",
                ["net", "batch", "ours' precision", "ours", "ours fp32", "reference loop",
                 "ours vs reference", "ours fp32 vs reference", "MFU"], rows)
    rows = [[e["name"], e["batch"], f"{e['images_per_s']['real']:.2f}",
             f"{e['images_per_s']['synthetic']:.2f}",
             "{:.2f}x ({:.2f}-{:.2f})".format(*e["real_vs_synthetic"])]
            for e in results["end_to_end"]]
    print_table("end-to-end training, images/s", ["net and data", "batch", "real data", "synthetic",
                                                  "real / synthetic"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, 2 rounds")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--json", default="benchmarks/results/training.json")
    args = p.parse_args()
    results = run(args.quick, args.rounds)
    print(machine())
    print_results(results)
    write_json(args.json, {"benchmark": "training", **results})


if __name__ == "__main__":
    main()
