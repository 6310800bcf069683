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
