"""The GPU check (issue 14): one command that proves and measures the CUDA path on the GPU machine
(one H200) in about 8 minutes, writing one JSON and printing one table. Its parts, in order, each
guarded (a part that fails records its error and the next one runs) and each with a time budget
under one global deadline (a part that no longer fits is skipped, saying so):

- cuda_tests: ``pytest -m cuda`` over tests/ (the tests that only run on a GPU), its summary line.
- equality: a small net with outputs of order 1 (VGG11-BN at width 1/4, crop 32, He init): logits and
  one SGD step's weight update on the CPU against CUDA (channels_last), both fp32 with TF32 off.
- vgg16_speed: VGG16 at 224 in bf16 autocast + channels_last, the step `vgg train` takes (SGD momentum
  0.9, wd 5e-4, cross-entropy) eager and under torch.compile, and inference (torch.inference_mode),
  in images/s next to a bf16 8192^3 matmul timed in the same run; model FLOP utilisation =
  images/s x 92.8 GFLOP (training, 3x the forward) or 30.9 GFLOP (inference) / the matmul rate.
- jpeg_training: `vgg train` on a folder of real JPEGs made here (500x375, 10 classes) with the
  machine's cores as decoding workers: its images/s (log.jsonl, last epoch) over the synthetic rate.
- torchrun: `torchrun --nproc_per_node=1 -m vgg train` against the plain run, one deterministic step:
  train loss and last.safetensors equal; and one DDP step over NCCL against the plain step.
- fashion_mnist: recipes/fashion_mnist.toml for the minutes left (resumed when its run folder holds a
  run), stopped before the deadline with SIGINT; how far it got.

``--dry-run`` runs the same script on the CPU at tiny sizes (a tiny net at crop 32, a few steps, 64x64
JPEGs, gloo, the recipe at width 1/4 for an epoch over a few images) so that it cannot rot; only what
needs CUDA is replaced (the equality check compares fp32 with fp64, torch.compile uses aot_eager).

    PYTHONPATH=src python benchmarks/gpu.py [--out benchmarks/results/gpu.json] [--budget 480]
        [--fashion-mnist DIR] [--only PART ...]
    .venv/bin/python benchmarks/gpu.py --dry-run --out /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # the working tree's package, as PYTHONPATH=src gives the subprocesses

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# Forward FLOPs of VGG16 at 224 (2 x 15.47 G multiply-adds) and a training step's (3x: forward,
# backward to the activations, backward to the weights).
VGG16_INFERENCE_GFLOP = 30.9
VGG16_TRAINING_GFLOP = 92.8
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the dry run."""

    arch: str = "vgg16"
    width: float = 1.0
    crop: int = 224
    classes: int = 1000
    train_batch: int = 256
    infer_batch: int = 256
    warmup: int = 5
    steps: int = 10
    rounds: int = 3
    matmul_n: int = 8192
    matmul_iters: int = 50
    compile_backend: str = "inductor"
    jpeg_size: tuple[int, int] = (500, 375)
    jpeg_train: int = 4000  # per-epoch steps enough that the workers' first batches do not dominate
    jpeg_val: int = 100
    jpeg_epochs: int = 2  # the second epoch's rate: workers persist, cuDNN has tuned its algorithms
    jpeg_flags: tuple[str, ...] = ("--arch", "vgg16", "--limit", "4000", "--batch-size", "256")
    tiny_flags: tuple[str, ...] = ("--arch", "vgg11", "--width", "0.25", "--crop-size", "32")
    recipe_flags: tuple[str, ...] = ()
    recipe_min_s: float = 60.0


GPU = Sizes()
DRY = Sizes(arch="vgg11", width=1 / 16, crop=32, classes=10, train_batch=8, infer_batch=8, warmup=1,
            steps=2, rounds=1, matmul_n=512, matmul_iters=5, compile_backend="aot_eager",
            jpeg_size=(64, 64), jpeg_train=40, jpeg_val=20, jpeg_epochs=2,
            jpeg_flags=("--arch", "vgg11", "--width", "0.0625", "--crop-size", "32", "--limit", "32",
                        "--batch-size", "16", "--device", "cpu"),
            tiny_flags=("--arch", "vgg11", "--width", "0.0625", "--crop-size", "32", "--device", "cpu"),
            recipe_flags=("--epochs", "1", "--limit", "32", "--batch-size", "32", "--width", "0.25",
                          "--device", "cpu"),
            recipe_min_s=15.0)

# (part, its budget in seconds on the GPU, in the dry run, the least time it needs to start). The dry
# run takes about 60 s on 2 idle cores; its budgets leave room for cores shared with other work.
PARTS = (("cuda_tests", 90, 60, 15), ("equality", 30, 30, 5), ("vgg16_speed", 170, 60, 30),
         ("jpeg_training", 120, 60, 30), ("torchrun", 75, 90, 15), ("fashion_mnist", None, None, None))
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1")
RESERVE_S = 10  # kept at the end for the JSON and the table


class PartTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raise PartTimeout in this (main) thread once ``seconds`` have passed."""
    def alarm(signum, frame):
        raise PartTimeout(f"ran past its {seconds:.0f} s budget")

    outer, t0 = signal.getitimer(signal.ITIMER_REAL)[0], time.monotonic()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer:  # an enclosing limit keeps running
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - t0), 0.01))


class Check:
    """The state the parts share: options, sizes, device, a scratch folder, the clock, results."""

    def __init__(self, args, scratch: Path):
        self.args, self.dry = args, args.dry_run
        self.sizes = DRY if args.dry_run else GPU
        self.cuda = torch.cuda.is_available() and not args.dry_run
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.scratch = scratch
        self.deadline = time.monotonic() + args.budget
        self.part_deadline = self.deadline
        self.results: dict = {}
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(SRC)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if args.dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""

    def left(self) -> float:
        return self.part_deadline - time.monotonic()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def run(self, cmd: list[str], timeout: float | None = None, env: dict | None = None,
            interrupt: bool = False, finished: str | None = None) -> dict:
        """Run ``cmd`` (from the repository root) until it exits or ``timeout`` (default: this part's
        time left); at the timeout send SIGINT (``interrupt``; the trainer stops on it) or kill its
        process group. ``finished``: a line that says the command's work is done; a process still
        there 2 s after printing it is killed (``exit_lag_s`` records the wait). Returns rc, seconds,
        timed_out and the output's tail."""
        timeout = self.left() if timeout is None else min(timeout, self.left())
        log = self.scratch / f"cmd-{time.monotonic_ns()}.log"
        start = time.monotonic()
        result: dict = {"timed_out": False}
        done_at = None
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=own_session)
            while proc.poll() is None:
                time.sleep(0.25)
                now = time.monotonic()
                if finished and done_at is None and finished in log.read_text(errors="replace")[-4000:]:
                    done_at = now
                if done_at is not None and now - done_at > 2:
                    result["exit_lag_s"] = now - done_at
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    result["killed_after_finishing"] = True
                    break
                if now - start > max(timeout, 1):
                    result["timed_out"] = True
                    if interrupt:
                        proc.send_signal(signal.SIGINT)
                        try:
                            proc.wait(timeout=15)
                        except subprocess.TimeoutExpired:
                            pass
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    break
            try:  # whatever it left behind in its group (decoding workers, torchrun's children)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        text = log.read_text(errors="replace")
        rc = 0 if result.get("killed_after_finishing") else proc.returncode
        return {**result, "rc": rc, "seconds": time.monotonic() - start, "tail": text[-3000:]}


def own_session() -> None:
    """In the child before exec: its own process group (killed as one), and SIGINT's default action
    even where this script runs in the background (a shell's ``&`` ignores SIGINT, and an ignored
    signal stays ignored across exec: Python would then never raise KeyboardInterrupt)."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- shared pieces ----------------------------------------------------------------------------------

def small_net(seed: int = 0) -> nn.Module:
    """VGG11-BN at width 1/4, crop 32, 10 classes, He-initialised (outputs of order 1, not the paper
    init's ~1e-12 at this depth), no dropout (CPU and CUDA draw different masks)."""
    import vgg

    torch.manual_seed(seed)
    model = vgg.create_model("vgg11", num_classes=10, batch_norm=True, crop_size=32, width=0.25)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def sgd(model: nn.Module, lr: float = 0.01) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def train_step(net, optimizer, x, y, amp: bool) -> torch.Tensor:
    """What `vgg train` does per step: forward (bf16 autocast on CUDA), cross-entropy in fp32,
    backward, SGD step."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def rel_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude (the output's size)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@contextmanager
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def log_records(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epochs_of(records: list[dict]) -> list[dict]:
    return [r for r in records if "epoch" in r and "event" not in r]


def vgg_train(check: Check, *flags: str, torchrun: bool = False) -> list[str]:
    launcher = [sys.executable, *TORCHRUN] if torchrun else [sys.executable]
    return [*launcher, "-m", "vgg", "train", "--no-progress", *flags]


def failed(what: str, result: dict) -> RuntimeError:
    return RuntimeError(f"{what} exited with {result['rc']}"
                        f"{' (timed out)' if result['timed_out'] else ''}: ...{result['tail'][-1500:]}")


# -- a) the CUDA tests and CPU = GPU ------------------------------------------------------------------

def part_cuda_tests(check: Check) -> dict:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped", "reason": "pytest is not installed for this Python"}
    r = check.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                   str(ROOT / "tests")])
    lines = [ln.strip(" =") for ln in r["tail"].splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines)
                    if re.search(r"\b(passed|failed|skipped|deselected|error|errors|no tests ran)\b", ln)),
                   lines[-1] if lines else "")
    out = {"summary": summary, "rc": r["rc"], "seconds": r["seconds"]}
    if r["rc"] == 5:  # no test selected: nothing is marked cuda yet
        return {**out, "note": "no test is marked cuda"}
    if r["rc"] != 0:
        raise failed("pytest -m cuda", r)
    return out


def part_equality(check: Check) -> dict:
    """Logits and one training step's update, CPU fp32 against CUDA fp32 (TF32 off, channels_last)
    or, in the dry run, CPU fp32 against CPU fp64. Tolerances relative to the outputs' size."""
    rtol_logits, rtol_step = 1e-4, 1e-3
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    cpu = small_net(0)
    if check.cuda:
        other, label = small_net(0).to("cuda", memory_format=torch.channels_last), "cuda fp32 channels_last"
        ox = x.to("cuda").contiguous(memory_format=torch.channels_last)
        oy = y.to("cuda")
    else:
        other, label = small_net(0).double(), "cpu fp64 (no CUDA)"
        ox, oy = x.double(), y
    with no_tf32():
        cpu.eval(), other.eval()
        with torch.no_grad():
            ref, got = cpu(x), other(ox)
        logits_err = rel_error(got, ref)
        cpu.train(), other.train()
        before = {k: v.detach().clone() for k, v in cpu.state_dict().items()}
        loss_cpu = train_step(cpu, sgd(cpu), x, y, amp=False)
        loss_other = train_step(other, sgd(other), ox, oy, amp=False)
        check.sync()
    # Each tensor's update (weights, and BN's running statistics) against the larger of its own largest
    # update and 1% of the largest of its kind: the conv biases before BN get gradients that cancel
    # to ~0, whose relative error is noise.
    other_state, params = other.state_dict(), dict(cpu.named_parameters())
    updates = {name: (other_state[name].double().cpu() - before[name].double(),
                      v.double() - before[name].double())
               for name, v in cpu.state_dict().items() if v.is_floating_point()}
    floors = {kind: 0.01 * max(float(u.abs().max()) for name, (_, u) in updates.items()
                               if (name in params) == kind) for kind in (True, False)}
    errors = {name: float((got - ref).abs().max()) / max(float(ref.abs().max()), floors[name in params])
              for name, (got, ref) in updates.items()}
    step_err = max(errors.values())
    out = {"against": label, "logits_std": float(ref.std()), "logits_rel_error": logits_err,
           "loss_rel_error": rel_error(loss_other, loss_cpu), "update_rel_error": step_err,
           "worst_tensor": max(errors, key=errors.get), "rtol_logits": rtol_logits, "rtol_step": rtol_step}
    if not 0.1 < out["logits_std"] < 100:
        raise RuntimeError(f"the check net's logits have std {out['logits_std']:.3g}, not of order 1")
    if logits_err > rtol_logits or step_err > rtol_step or out["loss_rel_error"] > rtol_logits:
        raise RuntimeError(f"CPU and {label} differ: logits {logits_err:.2e} (tol {rtol_logits:g}), "
                           f"loss {out['loss_rel_error']:.2e}, update {step_err:.2e} (tol {rtol_step:g}) "
                           f"worst in {out['worst_tensor']}")
    return out


# -- b) VGG16 speed against the matmul --------------------------------------------------------------

def timed_rate(check: Check, fn, items: int, steps: int | None = None) -> dict:
    """items/s of ``fn`` over ``rounds`` rounds of ``steps`` calls after ``warmup`` calls (CUDA
    events on the GPU: the calls queue without a sync in between); the median round's rate, and
    every round's."""
    s = check.sizes
    steps = steps or s.steps
    for _ in range(s.warmup):
        fn()
    check.sync()
    rates = []
    for _ in range(s.rounds):
        if check.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            seconds = time.perf_counter() - t0
        rates.append(items * steps / seconds)
    return {"per_s": float(np.median(rates)), "rounds": rates}


def matmul_rate(check: Check) -> float:
    """FLOP/s of an n^3 matmul: bf16 on the GPU, fp32 on the CPU (the best round)."""
    n = check.sizes.matmul_n
    dtype = torch.bfloat16 if check.cuda else torch.float32
    a = torch.randn(n, n, device=check.device, dtype=dtype)
    b = torch.randn(n, n, device=check.device, dtype=dtype)
    r = timed_rate(check, lambda: a @ b, 1, check.sizes.matmul_iters)
    return max(r["rounds"]) * 2 * n**3


def forward_flops(model: nn.Module, check: Check) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, check.sizes.crop, check.sizes.crop, device=check.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(x)
    return float(counter.get_total_flops())


def part_vgg16_speed(check: Check) -> dict:
    import vgg

    s = check.sizes
    torch.backends.cudnn.benchmark = True  # as `vgg train` sets it (not --deterministic)
    # On the CPU the paper's N(0, 0.01^2) init makes the deep activations denormal floats, computed
    # far more slowly; the dry run measures nothing, so it flushes them.
    torch.set_flush_denormal(not check.cuda)
    out: dict = {"arch": s.arch, "crop": s.crop, "train_batch": s.train_batch, "infer_batch": s.infer_batch,
                 "dtype": "bf16 autocast" if check.cuda else "fp32", "channels_last": True,
                 "warmup": s.warmup, "steps_per_round": s.steps, "rounds": s.rounds}
    peaks = [matmul_rate(check)]
    torch.manual_seed(0)
    model = vgg.create_model(s.arch, num_classes=s.classes, crop_size=s.crop, width=s.width)
    model = model.to(check.device, memory_format=torch.channels_last)
    counted = forward_flops(model, check)
    if s.arch == "vgg16" and s.crop == 224:
        train_flop, infer_flop = VGG16_TRAINING_GFLOP * 1e9, VGG16_INFERENCE_GFLOP * 1e9
    else:
        train_flop, infer_flop = 3 * counted, counted
    out.update(counted_forward_gflop=counted / 1e9, train_gflop_per_image=train_flop / 1e9,
               infer_gflop_per_image=infer_flop / 1e9)
    out.update(training_rates(check, model))
    out["inference"] = inference_rate(check, model)
    peaks.append(matmul_rate(check))
    peak = max(peaks)
    out["matmul"] = {"n": s.matmul_n, "dtype": "bf16" if check.cuda else "fp32", "tflops": peak / 1e12,
                     "tflops_rounds": [p / 1e12 for p in peaks], "timed": "before and after the model"}
    for key, flop in (("train_eager", train_flop), ("train_compiled", train_flop), ("inference", infer_flop)):
        if "per_s" in out.get(key, {}):
            out[key]["mfu"] = out[key]["per_s"] * flop / peak
    if check.cuda:
        torch.cuda.empty_cache()
    if "error" in out["train_compiled"]:
        out["status"], out["error"] = "failed", "torch.compile failed (see train_compiled)"
    return out


def training_rates(check: Check, model: nn.Module) -> dict:
    """Training images/s of ``model``, eager and compiled (time allowing)."""
    s = check.sizes
    x = torch.randn(s.train_batch, 3, s.crop, s.crop, device=check.device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, s.classes, (s.train_batch,), device=check.device)
    optimizer = sgd(model)
    model.train()
    out = {"train_eager": timed_rate(check, lambda: train_step(model, optimizer, x, y, check.cuda),
                                     s.train_batch)}
    if check.left() < (20 if check.dry else 60):
        out["train_compiled"] = {"skipped": f"{check.left():.0f} s left, too few to compile"}
        return out
    compiled = torch.compile(model, backend=s.compile_backend)
    try:
        t0 = time.monotonic()
        with time_limit(check.left() - (5 if check.dry else 25)):
            train_step(compiled, optimizer, x, y, check.cuda)
            check.sync()
            first = time.monotonic() - t0
            rate = timed_rate(check, lambda: train_step(compiled, optimizer, x, y, check.cuda), s.train_batch)
        out["train_compiled"] = {"backend": s.compile_backend, "first_step_s": first, **rate}
    except Exception as e:  # noqa: BLE001 - recorded, the part goes on
        out["train_compiled"] = {"backend": s.compile_backend, "error": f"{type(e).__name__}: {e}"[:2000]}
    finally:
        torch._dynamo.reset()
    return out


def inference_rate(check: Check, model: nn.Module) -> dict:
    s = check.sizes
    model.eval()
    x = torch.randn(s.infer_batch, 3, s.crop, s.crop, device=check.device)
    x = x.contiguous(memory_format=torch.channels_last)

    def infer():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=check.cuda):
            return model(x)

    return timed_rate(check, infer, s.infer_batch)


# -- c) training from JPEG folders ------------------------------------------------------------------

def make_jpegs(root: Path, size: tuple[int, int], train: int, val: int, classes: int = 10,
               seed: int = 0) -> Path:
    """root/{train,val}/class<k>/<i>.jpg: crops of a colour 1/f-noise picture (the spectrum of natural
    images, hence photographs' JPEG size and decoding cost), shifted in colour per image."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    side = 2 * max(w, h)
    fy, fx = np.fft.fftfreq(side)[:, None], np.fft.rfftfreq(side)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / side)
    base = np.stack([np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)),
                                   s=(side, side)) for _ in range(3)], -1)
    base = np.clip(118 + 55 * (base - base.mean()) / base.std(), 0, 255)
    jobs = []
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            y0, x0 = rng.integers(0, side - h), rng.integers(0, side - w)
            jobs.append((folder / f"{i}.jpg", y0, x0, rng.integers(-30, 30, 3)))

    def save(job):
        path, y0, x0, shift = job
        tile = np.clip(base[y0:y0 + h, x0:x0 + w] + shift, 0, 255).astype(np.uint8)
        Image.fromarray(tile).save(path, quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow's encoder releases the GIL
        list(pool.map(save, jobs))
    return root


def jpeg_root(check: Check) -> Path:
    root = check.scratch / "jpegs"
    if not (root / "val").is_dir():
        s = check.sizes
        make_jpegs(root, s.jpeg_size, s.jpeg_train, s.jpeg_val)
    return root


def part_jpeg_training(check: Check) -> dict:
    s = check.sizes
    t0 = time.monotonic()
    root = jpeg_root(check)
    made = time.monotonic() - t0
    workers = 2 if check.dry else (os.cpu_count() or 1)
    flags = list(s.jpeg_flags)
    run_dir = check.scratch / "jpeg-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    flags += ["--data", str(root), "--epochs", str(s.jpeg_epochs), "--workers", str(workers), "--output",
              str(run_dir), "--no-test", "--seed", "0", "--save-minutes", "0"]
    # The trainer's last line; the process can take long to exit after it (DataLoader workers' shutdown)
    r = check.run(vgg_train(check, *flags), finished="best val accuracy")
    if r["rc"] != 0:
        raise failed("vgg train on JPEGs", r)
    epochs = epochs_of(log_records(run_dir))
    if not epochs:
        raise RuntimeError(f"no epoch record in {run_dir / 'log.jsonl'}: ...{r['tail'][-1500:]}")
    ips = epochs[-1]["images_per_second"]
    out = {"images": s.jpeg_train, "size": list(s.jpeg_size), "workers": workers, "generate_s": made,
           "flags": flags, "images_per_s": ips, "run_s": r["seconds"],
           "epoch_images_per_s": [e["images_per_second"] for e in epochs]}
    if "exit_lag_s" in r:
        out["exit_lag_s"] = r["exit_lag_s"]
        out["exit_note"] = (f"vgg train had not exited {r['exit_lag_s']:.0f} s after its last line "
                            "(persistent DataLoader workers shutting down); killed")
    synthetic = check.results.get("vgg16_speed", {}).get("train_eager", {}).get("per_s")
    if synthetic and not check.dry:
        out["synthetic_images_per_s"] = synthetic
        out["real_vs_synthetic"] = ips / synthetic
    elif synthetic:
        out["note"] = "dry run: the JPEG net differs from the speed part's tiny net; no ratio"
    return out


# -- d) torchrun against the plain run ----------------------------------------------------------------

def part_torchrun(check: Check) -> dict:
    from safetensors.torch import load_file

    root = jpeg_root(check)
    flags = [*check.sizes.tiny_flags, "--data", str(root), "--epochs", "1", "--limit", "32", "--batch-size",
             "32", "--workers", "0", "--deterministic", "--seed", "0", "--no-test", "--save-minutes", "0"]
    out: dict = {"flags": flags}
    runs = {}
    for name, torchrun in (("plain", False), ("torchrun", True)):
        folder = check.scratch / f"tiny-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        r = check.run(vgg_train(check, *flags, "--output", str(folder), torchrun=torchrun))
        if r["rc"] != 0:
            raise failed(f"{name} vgg train", r)
        records = log_records(folder)
        start = next((x for x in records if x.get("event") == "start"), {})
        runs[name] = {"loss": epochs_of(records)[0]["train_loss"], "s": r["seconds"],
                      "weights": load_file(folder / "last.safetensors"),
                      "world_size": start.get("world_size"), "device": start.get("device")}
    a, b = runs["plain"], runs["torchrun"]
    diffs = {k: rel_error(b["weights"][k], v) for k, v in a["weights"].items() if v.is_floating_point()}
    out.update(train_loss=[a["loss"], b["loss"]], loss_rel_error=abs(a["loss"] - b["loss"]) / abs(a["loss"]),
               weights_rel_error=max(diffs.values()), bitwise=all(torch.equal(v, b["weights"][k])
                                                                  for k, v in a["weights"].items()),
               world_size=b["world_size"], device=b["device"])
    problems = []
    if out["loss_rel_error"] > 1e-5 or out["weights_rel_error"] > 1e-5:
        problems.append(f"torchrun's step differs from the plain run's: loss {out['loss_rel_error']:.2e}, "
                        f"weights {out['weights_rel_error']:.2e}")
    # DDP over the backend torchrun's run would use, one step against the plain step (same process).
    result = check.scratch / "ddp.json"
    worker = [str(Path(__file__).resolve()), "--ddp-worker", str(result), *(["--dry-run"] * check.dry)]
    r = check.run([sys.executable, *TORCHRUN, *worker],
                  env=dict(check.env, CUBLAS_WORKSPACE_CONFIG=":4096:8"))
    if r["rc"] != 0 or not result.is_file():
        problems.append(str(failed("the DDP worker", r)))
    else:
        out["ddp"] = json.loads(result.read_text())
        if out["ddp"]["weights_rel_error"] > 1e-5:
            problems.append(f"a DDP step over {out['ddp']['backend']} differs from the plain step: "
                            f"{out['ddp']['weights_rel_error']:.2e}")
    if problems:
        out["status"], out["error"] = "failed", "; ".join(problems)
    return out


def ddp_worker(result: Path, dry: bool) -> int:
    """Under torchrun: one DDP step of the small net against the plain step, deterministic."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, device_id=device if cuda else None)
    try:
        torch.manual_seed(1)
        x, y = torch.randn(16, 3, 32, 32, device=device), torch.randint(0, 10, (16,), device=device)
        plain, wrapped = small_net(0).to(device).train(), small_net(0).to(device).train()
        ddp = DistributedDataParallel(wrapped, device_ids=[device] if cuda else None)
        loss_plain = train_step(plain, sgd(plain), x, y, amp=cuda)
        loss_ddp = train_step(ddp, sgd(wrapped), x, y, amp=cuda)
        ws = wrapped.state_dict()
        errors = [rel_error(ws[k], v) for k, v in plain.state_dict().items() if v.is_floating_point()]
        out = {"backend": backend, "world_size": dist.get_world_size(), "device": str(device),
               "amp": cuda, "loss": [float(loss_plain), float(loss_ddp)], "weights_rel_error": max(errors),
               "bitwise": all(torch.equal(ws[k], v) for k, v in plain.state_dict().items())}
        if dist.get_rank() == 0:
            result.write_text(json.dumps(out))
        del ddp
    finally:
        dist.destroy_process_group()
    return 0


# -- e) the Fashion-MNIST recipe for the minutes left -----------------------------------------------

def find_fashion_mnist(given: str | None) -> Path | None:
    candidates = []
    for root in (given, os.environ.get("VGG_DATA")):
        if root:
            candidates += [Path(root).expanduser(), Path(root).expanduser() / "fashion-mnist"]
    if not given:
        candidates += [Path("/usr/share/datasets/fashion-mnist"),
                       Path(os.environ.get("VGG_HOME", "~/.cache/vgg")).expanduser() / "fashion-mnist"]
    found = (c for c in candidates if all((c / f).is_file() for f in FASHION_MNIST_FILES))
    return next((c.resolve() for c in found), None)


def checkpoint_position(path: Path) -> dict | None:
    """Epoch, step and global step of a run's training state (its safetensors metadata)."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("state", "{}"))
        return {k: meta[k] for k in ("epoch", "step", "global_step") if k in meta}
    except Exception as e:  # noqa: BLE001 - a note, not a failure
        return {"error": f"{type(e).__name__}: {e}"}


def part_fashion_mnist(check: Check) -> dict:
    s = check.sizes
    folder = find_fashion_mnist(check.args.fashion_mnist)
    if folder is None:
        return {"status": "skipped", "reason": "Fashion-MNIST's four files not found "
                f"(--fashion-mnist {check.args.fashion_mnist or 'DIR'}; no network on the GPU machine)"}
    if check.left() < s.recipe_min_s:
        return {"status": "skipped", "reason": f"out of time: {check.left():.0f} s left, "
                f"needs {s.recipe_min_s:.0f}"}
    output = check.scratch / "fashion-mnist" if check.dry else Path(check.args.fashion_output).resolve()
    resumed = (output / "state.safetensors").is_file()
    before = len(epochs_of(log_records(output))) if resumed else 0
    at_start = checkpoint_position(output / "state.safetensors") if resumed else None
    # A resumed run takes its saved config: the recipe again would "change" its arch (D -> vgg16_bn).
    flags = ["--resume", str(output)] if resumed else \
        ["--config", str(ROOT / "recipes" / "fashion_mnist.toml"), "--output", str(output), *s.recipe_flags]
    if not check.dry:
        flags += ["--save-minutes", "1"]  # a checkpoint at least every minute before the stop
    # SIGINT 20 s before the part's deadline: the trainer stops, the process group goes.
    env = dict(check.env, VGG_DATA=str(folder))
    r = check.run(vgg_train(check, *flags), timeout=check.left() - 20, env=env, interrupt=True)
    records = log_records(output)
    epochs = epochs_of(records)
    out = {"output": str(output), "data": str(folder), "flags": flags, "resumed": resumed,
           "epochs_before": before, "epochs_done": len(epochs), "rc": r["rc"],
           "stopped_by_deadline": r["timed_out"], "run_s": r["seconds"],
           "checkpoint_at_start": at_start,
           "checkpoint_at_end": checkpoint_position(output / "state.safetensors"),
           "epochs": epochs, "test": next((x for x in records if x.get("event") == "test"), None),
           "tail": r["tail"][-800:]}
    if epochs:
        out["images_per_s"] = epochs[-1]["images_per_second"]
        out["val_accuracy"] = epochs[-1]["val_accuracy"]
        per_epoch = epochs[-1]["seconds"] / len(epochs)  # run time, checkpoints and validation included
        planned = int(flags[flags.index("--epochs") + 1]) if "--epochs" in flags else 60  # the recipe's
        out["seconds_per_epoch"] = per_epoch
        out["eta_s"] = max(planned - len(epochs), 0) * per_epoch
    if r["rc"] != 0 and not r["timed_out"]:
        raise failed("the Fashion-MNIST run", r)
    return out


# -- the whole check -------------------------------------------------------------------------------

def machine_facts() -> dict:
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
             "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            facts["nvidia_smi"] = q.stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            facts["nvidia_smi"] = f"failed: {e}"
    versions = {}
    for name in ("numpy", "pillow", "safetensors", "tqdm", "matplotlib", "pytest", "torchvision", "timm",
                 "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    facts["packages"] = versions
    return facts


def figures(parts: dict) -> list[list[str]]:
    """The table's rows: figure, value."""
    rows = []

    def get(*keys):
        d = parts
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    def add(name, value, fmt="{:.3g}"):
        if value is not None:
            rows.append([name, fmt.format(value) if not isinstance(value, str) else value])

    add("pytest -m cuda", get("cuda_tests", "summary"))
    add("CPU vs other: logits rel. error", get("equality", "logits_rel_error"), "{:.1e}")
    add("CPU vs other: one step's update rel. error", get("equality", "update_rel_error"), "{:.1e}")
    sp = parts.get("vgg16_speed", {})
    add(f"matmul {get('vgg16_speed', 'matmul', 'dtype')} {get('vgg16_speed', 'matmul', 'n')}^3 TFLOP/s",
        get("vgg16_speed", "matmul", "tflops"), "{:.3g}")
    for key, what, batch in (("train_eager", "training, eager", "train_batch"),
                             ("train_compiled", "training, torch.compile", "train_batch"),
                             ("inference", "inference", "infer_batch")):
        r = sp.get(key, {})
        if "per_s" in r:
            rows.append([f"{sp['arch']}@{sp['crop']} {what}, batch {sp[batch]}: images/s (MFU)",
                         f"{r['per_s']:,.0f} ({100 * r['mfu']:.0f}%)"])
        elif r:
            rows.append([f"{sp['arch']}@{sp['crop']} {what}", r.get("skipped") or "error"])
    add("JPEG folder training images/s", get("jpeg_training", "images_per_s"), "{:,.0f}")
    add("JPEG / synthetic", get("jpeg_training", "real_vs_synthetic"), "{:.2f}x")
    add("torchrun vs plain: weights rel. error", get("torchrun", "weights_rel_error"), "{:.1e}")
    ddp = get("torchrun", "ddp")
    if ddp:
        add(f"DDP ({ddp['backend']}) vs plain step: weights rel. error", ddp["weights_rel_error"], "{:.1e}")
    fm = parts.get("fashion_mnist", {})
    if "epochs_done" in fm:
        add("Fashion-MNIST recipe: epochs done (val acc.)",
            f"{fm['epochs_done']} ({fm.get('val_accuracy', float('nan')):.2f}%)"
            f"{', stopped at the deadline' if fm['stopped_by_deadline'] else ''}")
    return rows


def print_report(payload: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import print_table

    m = payload["machine"]
    print(f"\nmachine: {m['gpu'] or 'no GPU'} ({m.get('nvidia_smi', 'no nvidia-smi')}), {m['cpus']} CPUs "
          f"({m['cpu']}), Python {m['python']}, torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}")
    rows = []
    for name, p in payload["parts"].items():
        note = p.get("reason") or p.get("error") or p.get("note") or p.get("exit_note") or ""
        note = note.splitlines()[0][:90] if note else ""
        rows.append([name, p["status"], f"{p.get('seconds', 0):.0f}", note])
    print_table(f"GPU check{' (dry run, CPU)' if payload['dry_run'] else ''}: "
                f"{payload['wall_s']:.0f} s of a {payload['budget_s']:.0f} s budget",
                ["part", "status", "s", "note"], rows)
    print_table("figures", ["figure", "value"], figures(payload["parts"]))


def write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    p.add_argument("--dry-run", action="store_true", help="the same on the CPU at tiny sizes")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole check (480; dry run 300)")
    p.add_argument("--fashion-mnist", metavar="DIR", help="the folder of Fashion-MNIST's four .gz files")
    p.add_argument("--fashion-output", default="runs/gpu-fashion-mnist", help="the recipe's run folder")
    p.add_argument("--only", nargs="+", choices=[name for name, *_ in PARTS], help="run these parts only")
    p.add_argument("--ddp-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(Path(args.ddp_worker), args.dry_run)
    args.budget = args.budget or (300.0 if args.dry_run else 480.0)
    out_path = Path(args.out)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vgg-gpu-check-") as scratch:
        check = Check(args, Path(scratch))
        payload = {"benchmark": "gpu", "date": time.strftime("%Y-%m-%d %H:%M"), "dry_run": args.dry_run,
                   "budget_s": args.budget, "wall_s": 0.0, "machine": machine_facts(), "parts": check.results}
        if not check.cuda and not args.dry_run:
            print("no CUDA device: the parts that need one will fail (use --dry-run on a CPU)",
                  file=sys.stderr)
        for name, gpu_budget, dry_budget, least in PARTS:
            t0 = time.monotonic()
            total_left = check.deadline - RESERVE_S - t0
            budget = dry_budget if args.dry_run else gpu_budget
            check.part_deadline = t0 + (total_left if budget is None else min(budget, total_left))
            print(f"[{t0 - started:5.0f} s] {name} ...", flush=True)
            if args.only and name not in args.only:
                result = {"status": "skipped", "reason": "not selected (--only)"}
            elif least is not None and total_left < least:
                result = {"status": "skipped",
                          "reason": f"out of time: {total_left:.0f} s left, needs {least}"}
            else:
                try:
                    with time_limit(check.left() + 45) if name in ("equality", "vgg16_speed") else _nothing():
                        result = {"status": "ok", **globals()[f"part_{name}"](check)}
                except Exception as e:  # noqa: BLE001 - a part's failure is recorded, the next runs
                    result = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-3000:],
                              "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = time.monotonic() - t0
            check.results[name] = result
            why = result.get("error") or result.get("reason") or ""
            print(f"[{time.monotonic() - started:5.0f} s] {name}: {result['status']}"
                  f"{' - ' + why[:300] if why else ''}", flush=True)
            payload["wall_s"] = time.monotonic() - started
            write(out_path, payload)
    print_report(payload)
    print(f"\nwrote {out_path}")
    return 1 if any(p["status"] == "failed" for p in check.results.values()) else 0


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    sys.exit(main())
