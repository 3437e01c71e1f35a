"""Stopping a run cleanly: Ctrl-C (SIGINT) and SIGTERM (what ``kill`` and a cluster scheduler send,
often shortly before a pre-emption) both ask the loop to stop at the next step boundary, where it
writes a resumable checkpoint and ends with :class:`Stopped`; ``vgg train`` then exits with
128 + the signal's number (:func:`exit_code`: 130 for Ctrl-C, 143 for SIGTERM), as a shell reports
a process ended by that signal. A second signal of either kind acts at once, as without this
module. Temporary files that an interrupted write left in a run folder are removed when the run
(re)starts (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import torch

from .. import distributed

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class Stopped(Exception):
    """The run stopped on a signal after writing a resumable checkpoint; ``code`` is the exit status
    ``vgg train`` ends with."""

    def __init__(self, signum: int, message: str):
        self.signum, self.code = int(signum), exit_code(signum)
        super().__init__(message)


class StopRequests:
    """While entered (on the main thread), SIGINT and SIGTERM set :attr:`signum` instead of
    interrupting; the loop looks at :attr:`requested` at its step boundaries. The first signal puts
    the previous handlers back, so a second one interrupts (Ctrl-C) or terminates (SIGTERM) at once;
    leaving restores them in any case. Elsewhere than on the main thread nothing is installed."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        self._restore()
        print(f"\n{signal.Signals(signum).name}: stopping after this step with a resumable checkpoint "
              "(send it again to stop at once, without one)", file=sys.stderr, flush=True)


def stop_agreed(stop: StopRequests | None, device: torch.device) -> bool:
    """Whether any process was asked to stop: every process learns it, so that all stop together."""
    asked = torch.tensor([float(stop is not None and stop.requested)], dtype=torch.float64, device=device)
    return distributed.all_reduce_sum(asked).item() > 0


def stopped(run) -> Stopped:
    """The :class:`Stopped` of a run (the loop's ``Run``) whose checkpoint was just written, logged
    as an event of its log."""
    signum = run.stop.signum if run.stop is not None and run.stop.signum else signal.SIGTERM
    name = signal.Signals(signum).name
    where = f"epoch {run.epoch + 1}, step {run.step}" if run.step else f"the end of epoch {run.epoch}"
    if run.log is not None:
        run.log.write({"event": "stopped", "signal": name, "step": run.global_step,
                       "epoch": run.epoch + (1 if run.step else 0), "time": time.time()})
    return Stopped(signum, f"stopped by {name} at {where} (global step {run.global_step}); its checkpoint "
                   f"is in {run.out}: `vgg train --resume {run.out}` continues exactly")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files that an interrupted atomic write left in ``folder`` (a
    killed checkpoint write leaves one as large as the training state); returns them."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
