"""sevd: simulated AMD SEV guests behind QEMU's monitor protocol.

Kept import-free on purpose: `sevd.formats` is imported by the guest owner's tools, and
nothing here may drag the daemon in with it.
"""

__version__ = "0.1.0"
