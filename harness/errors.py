"""Errors the harness reports to the user as one line and a nonzero exit."""


class UserInputError(Exception):
    """A bad flag value, a missing dataset or a malformed file: the message says what to do."""


class DataMissingError(UserInputError):
    """A dataset could not be found locally nor fetched."""
