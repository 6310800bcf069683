import os
from pathlib import Path

from orchestrator.worker import TRIAL_NICENESS, trial_task


def report_priority_and_title(tag: str) -> tuple[set[int], str, str]:
    """The niceness of each thread of this process (Ray's included), its title, `tag`."""
    threads = [int(t.name) for t in Path("/proc/self/task").iterdir()]
    return ({os.getpriority(os.PRIO_PROCESS, t) for t in threads},
            Path("/proc/self/cmdline").read_text().split("\0")[0], tag)


def test_trials_run_at_trial_niceness_under_their_own_name(local_ray):
    """What the driver hands to Ray runs below Ray's workers (the tracking actor is one), in
    every thread of its process, and keeps its name (the worker's process title)."""
    import ray

    niceness, title, tag = ray.get(ray.remote(trial_task(report_priority_and_title))
                                   .options(num_cpus=1).remote("x"))
    assert (niceness, tag) == ({TRIAL_NICENESS}, "x")
    assert title == "ray::report_priority_and_title"

    @ray.remote(num_cpus=0)
    class TrackerLike:  # the tracking actor: its own process, at Ray's worker niceness
        def niceness(self) -> int:
            return os.nice(0)

    assert ray.get(TrackerLike.remote().niceness.remote()) < TRIAL_NICENESS
