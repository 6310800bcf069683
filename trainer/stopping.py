"""A stop that waits for the step: the first Ctrl-C or SIGTERM while a run trains ends it
after the step it is in, with a checkpoint of that step, so that a resume trains
nothing twice (stopped where the signal landed, a run went back to its last cadence
checkpoint: up to 128 steps at the default cadence, trained again). A second signal stops at
once, as the first did before.

A sweep's driver asks its running trials to stop the same way: Ray's `ray.cancel(ref,
force=False)` runs the SIGINT handler on the task's main thread (`_thread.interrupt_main`),
and the driver kills what has not ended after a grace (`orchestrator.driver.cancel_gently`).

The ranks of a run of several processes agree on the step by a sum at each step they all
settle (`TrainingRun._stop_asked`: every `log_every_steps` at most), so they stop together,
all saved, a few steps after the signal rather than at once. Off the main thread no handler
can be installed: such a run stops where the signal lands, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from trainer.errors import Terminated

_asked: int | None = None
"""The signal that asked for the stop (None: none yet)."""


@contextlib.contextmanager
def between_steps(*, enabled: bool) -> Iterator[None]:
    """While this lasts, SIGINT and SIGTERM (in a Ray worker SIGINT only) ask for a stop
    (`requested`) rather than raise; a second one raises at once. The handlers before it come
    back after it."""
    global _asked
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    # In a Ray worker only SIGINT (the driver's cancel): a SIGTERM there is Ray stopping the
    # worker (its node shut down), which the driver takes as a lost worker and Ray re-runs;
    # ended on a step instead, the task would read as one that raised, and use a retry.
    signals = (signal.SIGINT,) if _in_ray_worker() else (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in signals}

    def ask(signum, frame) -> None:
        global _asked
        if _asked is not None:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        _asked = signum
        # (a sweep's trials: the driver says it once for all; ranks: rank 0 for them all)
        if not _in_ray_worker() and os.environ.get("RANK", "0") == "0":
            print(f"{'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'}: stopping after "
                  "this step, with a checkpoint of it (again to stop at once)",
                  file=sys.stderr, flush=True)

    _asked = None
    for s in before:
        signal.signal(s, ask)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        _asked = None


def requested() -> bool:
    """Has a signal asked the run to stop after its step?"""
    return _asked is not None


def stop_now() -> None:
    """Raise what the asking signal raises unhandled (its checkpoint is saved)."""
    raise Terminated if _asked == signal.SIGTERM else KeyboardInterrupt


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
