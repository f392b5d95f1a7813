"""sevkbs: a guest owner's key broker for SEV pre-attestation, in the role simple-kbs plays
for Kata / Confidential Containers (reference/users.md §2.3), over HTTP with JSON.

The request and response members are simple-kbs's protobuf field names, so a Kata-style
client maps 1:1:

* ``POST /v1/bundle`` (alias ``/keybroker.KeyBrokerService/GetBundle``):
  ``{CertificateChain, Policy}`` → ``{GuestOwnerPublicKey, LaunchBlob, LaunchId}``;
* ``POST /v1/secret`` (alias ``/keybroker.KeyBrokerService/GetSecret``):
  ``{LaunchMeasurement, LaunchId, Policy, ApiMajor, ApiMinor, BuildId, FwDigest,
  LaunchDescription, SecretRequests: [{Guid, Format, SecretType, Id}]}`` →
  ``{LaunchSecretHeader, LaunchSecretData}``;
* errors: ``{"Code": …, "Message": …}`` with a 4xx status, and nothing released.

Modules: :mod:`sevkbs.config` (the TOML workloads file), :mod:`sevkbs.broker` (the checks and
the launch store, no I/O), :mod:`sevkbs.server` (aiohttp), :mod:`sevkbs.client` (an aiohttp
client), :mod:`sevkbs.cli` (``sevkbs serve`` and ``sevctl owner serve``).

Built on :mod:`sevowner` (sessions, chain verification, measurement check, secret packets)
and :mod:`sevd.formats`; like them it must not import daemon code — the broker trusts
nothing that runs on the host. TEK, TIK and secret payloads are never logged.
"""
