"""The two kinds of failure the command line distinguishes (exit codes 2 and 1)."""


class UsageError(ValueError):
    """Bad input from the user (config, path, value): one line, exit code 2, nothing written."""


class DataError(RuntimeError):
    """Stored data is damaged or not what it claims to be: names the file, exit code 1."""
