"""Errors that the CLI reports as one clear line (no traceback)."""


class OrdclipError(Exception):
    """A problem with the user's input: names the file, key or row at fault."""


class ConfigError(OrdclipError):
    """A bad key or value in the parameter files."""


class DataError(OrdclipError):
    """A missing or malformed dataset file, row or image."""
