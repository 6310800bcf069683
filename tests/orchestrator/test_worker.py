import os
from pathlib import Path

from orchestrator.lease import current_holder
from orchestrator.worker import trial_task
from trainer.compose import compose
from trainer.identity import config_id
from trainer.paths import RunPaths


def report_title_and_lease(cfg, tag: str) -> tuple[str, int, int | None, str]:
    """This process's title and pid, the pid holding the trial's lease, `tag`."""
    holder = current_holder(RunPaths.for_config(cfg, config_id(cfg)).run_dir)
    return (Path("/proc/self/cmdline").read_text().split("\0")[0], os.getpid(),
            holder.pid if holder else None, tag)


def test_trials_run_under_their_lease_and_their_own_name(local_ray, tmp_path):
    """What the driver hands to Ray holds the trial's lease while it runs, in the worker's
    own process, and keeps its name (the worker's process title); the lease is given back."""
    import ray

    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    task = ray.remote(trial_task(report_title_and_lease, sweep="unit", driver_pid=os.getpid()))
    title, pid, holder_pid, tag = ray.get(task.options(num_cpus=1).remote(cfg, "x"))
    assert title == "ray::report_title_and_lease" and tag == "x"
    assert holder_pid == pid != os.getpid()
    assert current_holder(RunPaths.for_config(cfg, config_id(cfg)).run_dir) is None
