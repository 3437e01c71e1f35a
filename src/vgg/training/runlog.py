"""What a run tells: ``log.jsonl`` (one JSON record per epoch and event, echoed to TensorBoard when it
is installed), the progress bar, and the one-line summary of each epoch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..files import atomic_write

LOG_FILE = "log.jsonl"


class RunLog:
    """log.jsonl (append one JSON object per line), echoed to TensorBoard when it is installed."""

    def __init__(self, folder: Path, keep_until_step: int | None):
        self.path = folder / LOG_FILE
        next_epoch = None
        if keep_until_step is not None and self.path.is_file():
            # A resumed run continues the log of its checkpoint: later lines are replayed anyway.
            records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in records if r.get("step", 0) <= keep_until_step]
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
            next_epoch = 1 + max((r.get("epoch", 0) for r in kept), default=0)
        elif keep_until_step is None:
            self.path.unlink(missing_ok=True)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the points a killed run wrote after its checkpoint, as the log does.
            self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=next_epoch)
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "epoch" in record and "event" not in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()



def progress_bar(show: bool, epoch: int, epochs: int, step: int, total: int):
    """The epoch's progress bar (None where it is not shown: other processes, --no-progress)."""
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                leave=False, dynamic_ncols=True, disable=None)



def summary_line(r: dict, epochs: int, improved: bool, dropped: bool, plateau, label: str = "acc",
                 metric: str = "accuracy") -> str:
    line = (f"epoch {r['epoch']:>3}/{epochs}  train loss {r['train_loss']:.4f} "
            f"{label} {r['train_' + metric]:6.2f}%"
            f"  val loss {r['val_loss']:.4f} {label} {r['val_' + metric]:6.2f}%  lr {r['lr']:.1e}"
            f"  {r['images_per_second']:,.0f} img/s  {r['epoch_seconds']:.0f}s")
    if improved:
        line += "  *best*"
    if dropped:
        line += f"  (val plateau: lr / {1 / plateau.drop:g}, drop {plateau.drops}/{plateau.max_drops})"
    return line


def diverged_message(epoch: int, step: int, optimizer, last: Path) -> str:
    lrs = ", ".join(f"{g['name']} {g['lr']:.2e}" for g in optimizer.param_groups)
    saved = (f"the last good checkpoint is {last}" if last.is_file()
             else "no checkpoint had been written yet")
    return (f"the training loss became NaN or infinite at epoch {epoch + 1}, batch {step} (learning rates: "
            f"{lrs}); stopped without saving anything from this point; {saved}. Lower --lr, or use "
            "--batch-norm or --init-from-shallow for deep nets")


# A net at the paper's crop of 224 takes hours per epoch on a CPU: after its first batches the run
# says how long an epoch will take, and how to get a quick one.
SLOW_EPOCH_SECONDS = 3600.0
ESTIMATE_BATCHES = 3  # timed after a first batch that warms up


def format_duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class EpochEstimate:
    """The expected time of an epoch, from the first batches a process runs: on the CPU, told once
    with a hint for a quick run when the net is full-size (crop 224 and more) or an epoch would
    take over :data:`SLOW_EPOCH_SECONDS`. ``step()`` after every batch returns the note, or None."""

    def __init__(self, show: bool, crop_size: int, batches: int, clock=time.monotonic):
        self.show, self.crop_size, self.batches, self.clock = show, crop_size, batches, clock
        self.steps, self.start = 0, 0.0

    def step(self) -> str | None:
        if not self.show:
            return None
        self.steps += 1
        if self.steps == 1:
            self.start = self.clock()
            return None
        if self.steps < 1 + ESTIMATE_BATCHES:
            return None
        self.show = False
        per_batch = (self.clock() - self.start) / ESTIMATE_BATCHES
        epoch = per_batch * self.batches
        if self.crop_size < 224 and epoch < SLOW_EPOCH_SECONDS:
            return None
        return (f"note: about {format_duration(epoch)} per epoch on the CPU ({per_batch:.2f} s per batch "
                f"over the first batches, {self.batches} batches); for a quick run take a small net, "
                "e.g. --crop-size 32 --width 0.25 (as recipes/demo.toml), or a GPU")
