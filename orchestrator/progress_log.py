"""Progress lines for a launch whose output is no terminal.

On a terminal a launch draws a live bar. Written to a file (`nohup sweep launch ... > log`, a
batch job's output, `| tee`) it printed nothing between its first line and its summary, hours
later, so a log could not tell a working sweep from a stuck one. There it prints a line
instead: at most one a minute while trials end, and one every ten minutes while none does, so
that a short sweep's log is as it was, and a long one's says how far it is and that it lives.
"""

from __future__ import annotations

import time
from collections import Counter

EVERY_S = 60.0
"""The least time between two lines."""
QUIET_S = 600.0
"""The most time without a line while the sweep runs but no trial ends."""


class LogProgress:
    """`update` it as trials end; it prints when a line is due (see the module docstring)."""

    def __init__(self, name: str):
        self.name = name
        self.start = self.last = time.monotonic()
        self.said: int | None = None  # trials ended at the last line

    def update(self, *, ended: dict[str, str], found: int, total: int, running: int,
               trunks: int = 0) -> None:
        """`ended`: trial id → status of the trials this launch ended; `found`: trials found
        ended by others; `running`: trials training now (a fused group's members each);
        `trunks`: shared prefixes training now (while they do, "0 running" read as stuck)."""
        now = time.monotonic()
        done = len(ended) + found
        due = EVERY_S if done != self.said else QUIET_S
        if now - self.last < due:
            return
        self.last, self.said = now, done
        counts = Counter(ended.values())
        how = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        # (the time first: not "sweep NAME: ...", the form of the summary line scripts read)
        print(f"[{_clock(now - self.start)}] sweep {self.name}: {done}/{total} trials ended"
              + (f" ({how})" if how else "") + f", {running} running"
              + (f", {trunks} shared trunk{'s' * (trunks != 1)} training" if trunks else ""),
              flush=True)


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}"
