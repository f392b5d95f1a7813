"""The one error type that crosses from command handling into the protocol layer.

Commands raise `QmpError(cls, desc)`; the session writes it as
`{"error": {"class": cls, "desc": desc}, "id": …}`. Classes are QEMU's `QapiErrorClass`.
"""

from __future__ import annotations

from typing import Final

GENERIC: Final = "GenericError"
COMMAND_NOT_FOUND: Final = "CommandNotFound"
DEVICE_NOT_ACTIVE: Final = "DeviceNotActive"
DEVICE_NOT_FOUND: Final = "DeviceNotFound"
KVM_MISSING_CAP: Final = "KVMMissingCap"


class QmpError(Exception):
    """A QMP error reply: QEMU's error class and its exact description."""

    def __init__(self, desc: str, cls: str = GENERIC) -> None:
        super().__init__(desc)
        self.cls = cls
        self.desc = desc

    def __repr__(self) -> str:
        return f"QmpError({self.cls}: {self.desc!r})"
