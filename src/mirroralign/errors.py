"""The kinds of failure the command line reports in one line (exit code 2 for bad input, 1 otherwise)."""


class UsageError(ValueError):
    """Bad input from the user (config, path, value): one line, exit code 2, nothing written."""


class DataError(RuntimeError):
    """Stored data is damaged or not what it claims to be: names the file, exit code 1."""


class SimulatorError(RuntimeError):
    """The simulator failed again and again on one episode (names it): exit code 1."""
