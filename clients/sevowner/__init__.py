"""sevowner: the guest owner's side of SEV — what runs on the owner's trusted machine.

* :mod:`sevowner.session` — a launch session for a platform's PDH: GODH certificate,
  128-byte session blob, TEK/TIK, and virtee-compatible ``NAME_*`` files.
* :mod:`sevowner.chain` — verification of a platform's certificate chain
  (ARK → ASK → CEK → PEK ← OCA, PEK → PDH) against roots the owner chooses.
* :mod:`sevowner.measurement` — the expected launch digest and the check of a 48-byte
  launch measurement.
* :mod:`sevowner.secret` — a LAUNCH_SECRET packet (OVMF secret table, header, payload).
* :mod:`sevowner.attestation` — the check of a legacy attestation report.

It builds only on :mod:`sevd.formats` (the shared, pure byte formats) and ``cryptography``:
it must not import ``sevd.domain`` or any other daemon code — the guest owner trusts nothing
that runs on the host. TEK and TIK are secrets: nothing here prints or logs them.
"""
