"""The simulated AMD Secure Processor running SEV firmware: :class:`SevFirmware`.

One method per SEV firmware command, named after the AMD API (``init``, ``launch_start``,
``dbg_decrypt``, …), each in the mixin of its family:

* ``platform.py``   — INIT, SHUTDOWN, PLATFORM_RESET, PLATFORM_STATUS, PEK_GEN, PEK_CSR,
  PEK_CERT_IMPORT, PDH_GEN, PDH_CERT_EXPORT, GET_ID, DF_FLUSH (+ host WBINVD)
* ``activation.py`` — ACTIVATE, DEACTIVATE, DECOMMISSION, GUEST_STATUS
* ``launch.py``     — LAUNCH_START … LAUNCH_FINISH, ATTESTATION
* ``debug.py``      — DBG_DECRYPT, DBG_ENCRYPT (+ the running guest's own memory access)
* ``migration.py``  — SEND_*, RECEIVE_*

Every failing command raises :class:`~sevd.domain.psp.status.SevError` carrying AMD's
status; guest keys never leave the object. ``faults`` arms injected failures and ``stats``
counts calls, failures and bytes (see ``commands.py``).

Domain code: pure and synchronous; no asyncio, json, QMP names or file paths. Must not
import anything from ``sevd`` outside ``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from sevd.domain.psp.activation import ActivationCommands
from sevd.domain.psp.debug import DebugCommands
from sevd.domain.psp.launch import LaunchCommands
from sevd.domain.psp.migration import MigrationCommands
from sevd.domain.psp.platform import PlatformCommands

__all__ = ["SevFirmware"]


class SevFirmware(
    PlatformCommands, ActivationCommands, LaunchCommands, DebugCommands, MigrationCommands
):
    """A software SEV firmware for one simulated host.

    ``SevFirmware(identity, seed=None, profile=None, host=None)``: ``identity`` is copied
    (the caller's object is never mutated; read the current one back with
    ``export_identity()``); ``seed`` makes VEKs, TEK/TIK, nonces, IVs and regenerated keys
    reproducible; ``profile`` defaults to the identity's; ``host`` holds hardware
    conditions a test may break. The platform starts in UNINIT, as after power-on.
    """
