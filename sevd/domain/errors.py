"""Domain errors: a refusal by the simulated machine, with the text a user should read.

The commands layer turns every `DomainError` into a QMP `GenericError` carrying `str(e)`;
the firmware's own failures (`SevError`, sevd.domain.psp) carry an AMD status as well.
"""


class DomainError(Exception):
    """The simulated host or guest refused an operation; `str(self)` is the QMP desc."""
