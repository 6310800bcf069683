"""The one exception type for mistakes a user can fix."""


class ConfigError(ValueError):
    """A user-fixable problem: its message is one sentence per problem, naming the key and the fix.

    Args:
        problems: one sentence per problem found.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataUnavailable(ConfigError):
    """Data that could not be fetched now (a hub dataset behind a network that failed): said
    in one sentence like a ConfigError, but a sweep retries it, as it may be transient."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`) in `python -m trainer` and in a sweep's driver
    (`orchestrator.driver.stop_on_sigterm`): raised by its handler so that the run unwinds
    as it does on Ctrl-C (a KeyboardInterrupt to every handler that lets one through), while
    the command tells the two apart. Here, not in `__main__`, so
    that another rank can unpickle it when DCP passes it on."""


def stopped_by(err: BaseException) -> type | None:
    """Terminated or KeyboardInterrupt when `err` is one, or wraps one: a stop that lands
    inside DCP comes back wrapped in its CheckpointException, whose `failures` hold each
    rank's exception; None for anything else."""
    for kind in (Terminated, KeyboardInterrupt):
        if isinstance(err, kind):
            return kind
    failures = getattr(err, "failures", None)
    if isinstance(failures, dict):
        for failure in failures.values():
            cause = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(cause, BaseException) and (kind := stopped_by(cause)):
                return kind
    return None
