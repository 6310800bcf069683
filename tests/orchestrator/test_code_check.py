"""A cluster whose nodes run other proxysweep code than the driver is refused before a launch
submits anything (its trials failed as "changed data", or were recorded under ids the driver
did not know)."""

import shutil
from pathlib import Path

import pytest

from orchestrator.code_check import cluster_code_problems, source_digest

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ray_with_code(tmp_path, monkeypatch):
    """A local Ray whose workers import the packages from `tmp_path/code` (a copy of this
    checkout, which the test may change) ahead of the installed ones. The launch runs in an
    empty folder: Ray puts the driver's folder first on its workers' path (the repository,
    under pytest, would win)."""
    import ray

    (tmp_path / "launch").mkdir()
    monkeypatch.chdir(tmp_path / "launch")
    copy = tmp_path / "code"
    for package in ("trainer", "orchestrator"):
        shutil.copytree(REPO / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))

    def start():
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": str(copy)}})
    yield copy, start
    ray.shutdown()


def test_workers_on_the_drivers_code_pass(ray_with_code):
    _, start = ray_with_code
    start()
    assert cluster_code_problems() == []


def test_a_node_on_other_code_is_named_with_both_digests(ray_with_code):
    import socket

    copy, start = ray_with_code
    with open(copy / "trainer" / "identity.py", "a") as f:
        f.write("\n# a worker a commit behind\n")
    start()
    found = cluster_code_problems()
    assert len(found) == 1
    assert found[0].startswith(f"the Ray cluster's node {socket.gethostname()} (")
    assert found[0].endswith(
        f") runs other proxysweep code than this driver (source digest "
        f"{found[0].split('source digest ')[1][:12]} there, imported from {copy}; "
        f"{source_digest()} here, from {REPO}), so it would compute other trial ids and data "
        "fingerprints: install this checkout on every node (`pip install -e .` at its "
        "commit), or launch from where the cluster's own is installed")
    assert found[0].split("source digest ")[1][:12] != source_digest()


def test_other_code_in_the_launch_s_own_folder_is_named_with_the_fix(ray_with_code,
                                                                     monkeypatch):
    """A `trainer/` where the launch runs shadows proxysweep on the workers: the fix said was
    to install this checkout, or launch from where the cluster's own is installed, which was
    this very folder."""
    copy, start = ray_with_code
    monkeypatch.chdir(copy)
    with open(copy / "trainer" / "identity.py", "a") as f:
        f.write("\n# a stray copy\n")
    start()
    (found,) = cluster_code_problems()
    assert found.endswith(
        f"imports proxysweep from {copy}, the folder this launch runs in, which holds other "
        "code under trainer/ or orchestrator/ (Ray puts the launch's folder first on its "
        "workers' path): launch from another folder, or move that code out of this one")


def test_a_launch_says_what_it_does_before_ray_starts(tmp_path, monkeypatch, capsys):
    """Ray takes 10-20 s to start, and a launch said nothing until its trials ended (nothing
    at all in a log file)."""
    import ray

    from orchestrator import commands
    from orchestrator.spec_file import spec_from_dict

    monkeypatch.setenv("RAY_ADDRESS", "local")
    spec = spec_from_dict({"name": "unit", "overrides": ["model=tiny"],
                           "grid": {"optim.lr": "choice(1e-3, 1e-2)"},
                           "storage_root": str(tmp_path / "runs")})
    try:
        marked = commands._start(spec, f"sqlite:///{tmp_path}/m.db", None,
                                 work="2 of its 2 trials to run")
        assert capsys.readouterr().out == (
            "launching sweep unit: 2 of its 2 trials to run; starting Ray on this machine ...\n")
        assert not marked.cancelled and ray.is_initialized()
        marked.undo()
    finally:
        ray.shutdown()
