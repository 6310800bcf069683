import os
from pathlib import Path

import pytest

from orchestrator.worker import trial_task
from trainer.compose import compose
from trainer.identity import config_id
from trainer.lease import current_holder
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


def end_recorded_slowly(cfg, seconds: float) -> dict:
    """A trial whose end the tracker writes `seconds` after the trainer returned (a tracker
    busy with other trials' ends): the lease's holder pid and the record's ref."""
    import time

    import ray

    @ray.remote(num_cpus=0)
    def write_end(pid: int) -> int:
        time.sleep(seconds)
        return pid

    return {"status": "finished", "summary": {}, "recorded": write_end.remote(os.getpid())}


def end_members_recorded_slowly(cfgs, seconds: float) -> dict:
    return {config_id(cfg): end_recorded_slowly(cfg, seconds * (k + 1))
            for k, cfg in enumerate(cfgs)}


def test_the_lease_is_held_until_the_tracker_wrote_the_end(local_ray, tmp_path):
    """A driver that finds a trial's lease free fills the gaps of its record from its files:
    had the worker let go before its tracker wrote the end, both would write the last steps
    (a CI run saw 101 steps twice). A trial's task, and a fused group's, returns once the ends
    it sent are written, and only then gives the lease back."""
    import ray

    from orchestrator.worker import group_task

    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    task = ray.remote(trial_task(end_recorded_slowly, sweep="unit", driver_pid=os.getpid()))
    result = ray.get(task.options(num_cpus=1).remote(cfg, 2.0))
    assert ray.wait([result["recorded"]], timeout=0)[0]  # written before the task returned
    assert current_holder(RunPaths.for_config(cfg, config_id(cfg)).run_dir) is None

    cfgs = [compose(["model=tiny", "data=synthetic", f"optim.lr={lr}",
                     f"storage_root={tmp_path}"]) for lr in (0.003, 0.01)]
    task = ray.remote(group_task(end_members_recorded_slowly, sweep="unit",
                                 driver_pid=os.getpid()))
    answers = ray.get(task.options(num_cpus=1).remote(cfgs, 1.0))
    refs = [answers[config_id(c)]["recorded"] for c in cfgs]
    assert len(ray.wait(refs, num_returns=2, timeout=0)[0]) == 2
    assert all(current_holder(RunPaths.for_config(c, config_id(c)).run_dir) is None
               for c in cfgs)


def report_no_gpu_env(cfg) -> str | None:
    from trainer.distributed import NO_GPU_ENV
    return os.environ.get(NO_GPU_ENV)


def test_a_task_without_a_gpu_trains_auto_on_the_cpu(local_ray, tmp_path, monkeypatch):
    """Ray 2.60 leaves a node's GPUs visible to a task that holds none: the worker tells the
    trainer (`auto` is then the CPU), and only for that task."""
    import ray
    import torch

    from trainer.distributed import NO_GPU_ENV, resolve_device

    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    task = ray.remote(trial_task(report_no_gpu_env, sweep="unit", driver_pid=os.getpid()))
    assert ray.get(task.options(num_cpus=1, num_gpus=0).remote(cfg)) == "1"
    assert NO_GPU_ENV not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv(NO_GPU_ENV, "1")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda", 0)  # an explicit choice stands


def test_a_member_that_ended_before_its_group_failed_is_answered_as_it_ended(
        local_ray, tmp_path):
    """A searched group: one member is pruned at the first eval point, then the other's
    pruner fails (its study unreachable) and the group raises. The pruned member is answered
    `pruned` (the driver retries only the failed one; trained again, the pruned one would
    lose its study's decision), the other `failed` with the error."""
    import ray

    from orchestrator.tracking import Tracker
    from orchestrator.worker import run_group_trials

    tracker = ray.remote(Tracker).remote(f"sqlite:///{tmp_path}/m.db", "unit",
                                         code_version="test", spec_yaml="")
    cfgs = [compose(["model=tiny", "model.width=32", "model.head_dim=16",
                     "model.base_width=32", "data=synthetic", "train.tokens=16384",
                     "train.batch_size=8", "train.seq_len=64", "train.eval_every_tokens=4096",
                     "train.eval_tokens=4096", f"optim.lr={lr}", f"storage_root={tmp_path}"])
            for lr in (0.003, 0.01)]

    def unreachable(index: int, eval_loss: float) -> bool:
        if index == 2:
            raise ConnectionError("the studies' actor is gone")
        return False

    answers = run_group_trials(cfgs, tracker, {config_id(c): "x" for c in cfgs}, 1,
                               pruners=[unreachable, lambda index, loss: True])
    first, second = (answers[config_id(c)] for c in cfgs)
    assert second["status"] == "pruned" and second["summary"]["final/tokens"] == 4096
    assert first["status"] == "failed" and "the studies' actor is gone" in first["error"]
    ray.get([second["recorded"], first["recorded"]])  # both ends reached the tracker


def test_an_error_from_an_actor_call_is_its_own_one_line(local_ray):
    """A failed trial's reason was Ray's wrapper: colour codes, `ray::Studies.report()` and the
    actor's repr, with the real error last."""
    import ray

    from orchestrator.worker import describe_error

    @ray.remote
    class Failing:
        def report(self):
            return 1 / 0

    actor = Failing.remote()
    with pytest.raises(Exception) as caught:
        ray.get(actor.report.remote())
    assert "\x1b[" in str(caught.value) or "ray::" in str(caught.value)  # the wrapper's text
    assert describe_error(caught.value) == "ZeroDivisionError: division by zero"
    assert describe_error(ValueError("a\n\x1b[31mb\x1b[0m")) == "ValueError: a; b"
