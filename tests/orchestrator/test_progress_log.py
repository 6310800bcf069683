"""A launch whose output is a file printed nothing between its start and its summary."""

from orchestrator import progress_log
from orchestrator.progress_log import LogProgress


def test_lines_come_at_most_a_minute_apart_and_every_ten_minutes_when_nothing_ends(
        monkeypatch, capsys):
    now = [1000.0]
    monkeypatch.setattr(progress_log.time, "monotonic", lambda: now[0])
    lines = LogProgress("lr")

    def at(seconds, ended, running=2):
        now[0] = 1000.0 + seconds
        lines.update(ended=ended, found=1, total=10, running=running)
        return capsys.readouterr().out

    assert at(30, {"a": "finished"}) == ""  # (a short sweep's log is as it was)
    assert at(61, {"a": "finished"}) == ("[0:01:01] sweep lr: 2/10 trials ended (1 finished), "
                                         "2 running\n")
    assert at(100, {"a": "finished", "b": "diverged"}) == ""  # (within the minute)
    assert at(125, {"a": "finished", "b": "diverged"}) == (
        "[0:02:05] sweep lr: 3/10 trials ended (1 diverged, 1 finished), 2 running\n")
    assert at(600, {"a": "finished", "b": "diverged"}) == ""  # nothing ended: quiet ten minutes
    assert at(726, {"a": "finished", "b": "diverged"}, running=1) == (
        "[0:12:06] sweep lr: 3/10 trials ended (1 diverged, 1 finished), 1 running\n")


def test_shared_trunks_training_are_said(monkeypatch, capsys):
    """While a token-budget sweep trained its trunks, its log said "0 running" for minutes."""
    now = [1000.0]
    monkeypatch.setattr(progress_log.time, "monotonic", lambda: now[0])
    lines = LogProgress("demo")
    now[0] = 1061.0
    lines.update(ended={}, found=0, total=15, running=0, trunks=5)
    now[0] = 1722.0
    lines.update(ended={}, found=0, total=15, running=2, trunks=1)
    assert capsys.readouterr().out.splitlines() == [
        "[0:01:01] sweep demo: 0/15 trials ended, 0 running, 5 shared trunks training",
        "[0:12:02] sweep demo: 0/15 trials ended, 2 running, 1 shared trunk training"]
