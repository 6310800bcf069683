"""The one exception type for fitting problems a user can fix."""


class FitError(ValueError):
    """A user-fixable problem with the fitter's input, stated in one sentence.

    The sentence names the law, key or column involved and what to do about it; the `sweep`
    command prints it and exits with status 2, without a traceback.
    """
