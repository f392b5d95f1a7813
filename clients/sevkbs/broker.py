"""The broker's decisions: hand out launch sessions, release secrets only for a good launch.

:meth:`Broker.get_bundle` and :meth:`Broker.get_secret` take and return JSON objects with
simple-kbs's field names (reference/users.md §2.3) and raise :class:`KbsError` for anything
refused. No I/O here (the aiohttp server is :mod:`sevkbs.server`), so the rules are tested
directly.

GetBundle: the platform's certificate chain (``PDH‖PEK‖OCA‖CEK‖ASK‖ARK``, base64, as
``sevctl export --full`` writes Kata's ``sev_cert_chain``) is verified link by link and must
end in the configured root (simple-kbs only checks internal signatures; this broker also
pins the ARK unless told not to). Then a fresh session for the PDH and the policy: the GODH
certificate and the 128-byte launch blob go back, TEK and TIK stay here under a new launch id.

GetSecret: the launch id must be known and unexpired, the policy the bundle's and allowed by
every workload the request names (``SecretRequests[].Id``), the firmware API and build within
the workload's bounds; then the 48-byte measurement must verify, under this launch's TIK,
against one of the workload's expected launch digests (the client's ``FwDigest`` is only a
hint: it must itself be one of them). Only then is the OVMF secret table of the requested
GUIDs encrypted under the TEK and MACed with the TIK. A launch id serves one successful
release; a measurement that does not verify ends it too, so a host cannot keep trying.

TEK, TIK and secrets never reach a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sevowner.chain import ChainError, split_sev_chain, verify_chain
from sevowner.measurement import MeasurementMismatch, verify_launch_measurement
from sevowner.secret import MAX_SECRET_LEN, build_launch_secret
from sevowner.session import LaunchSession, create_session

from sevd.formats.measure import MEASUREMENT_LEN
from sevkbs.config import BrokerConfig, Workload

__all__ = ["Broker", "KbsError"]

log = logging.getLogger("sevkbs")


class KbsError(Exception):
    """A refused request: HTTP status, a stable code, and a message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"Code": self.code, "Message": self.message}


def _bad(message: str) -> KbsError:
    return KbsError(400, "InvalidRequest", message)


@dataclass(repr=False)
class _Launch:
    session: LaunchSession
    created: float


def _field(req: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    if name not in req:
        if required:
            raise _bad(f"missing field {name}")
        return None
    value = req[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _bad(f"field {name} must be {'a string' if kind is str else 'an integer'}")
    return value


def _b64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"field {name} is not base64") from None


def _u(name: str, value: int, bits: int) -> int:
    if not 0 <= value < 1 << bits:
        raise _bad(f"field {name} must be an unsigned {bits}-bit integer")
    return value


class Broker:
    """Launch sessions and secret releases for the configured workloads."""

    def __init__(self, config: BrokerConfig, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.config = config
        self.clock = clock
        self._launches: collections.OrderedDict[str, _Launch] = collections.OrderedDict()
        self.released = 0
        self.refused = 0

    # -- GetBundle ----------------------------------------------------------------------------

    def get_bundle(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._bundle(req)
        except KbsError as e:
            self.refused += 1
            log.warning("bundle refused: %s", e.message)
            raise

    def _bundle(self, req: dict[str, Any]) -> dict[str, Any]:
        chain_bytes = _b64("CertificateChain", _field(req, "CertificateChain", str))
        policy = _u("Policy", _field(req, "Policy", int), 32)
        if not any(policy in w.policies for w in self.config.workloads.values()):
            raise KbsError(403, "PolicyNotAllowed", f"Policy validation failed: policy "
                           f"0x{policy:x} is not allowed for any workload")
        try:
            chain, ca = split_sev_chain(chain_bytes)
        except ValueError as e:
            raise KbsError(400, "InvalidCertificateChain",
                           f"Certificate chain is malformed: {e}") from None
        ca = ca or self.config.ca  # a chain without ASK‖ARK: the configured ones
        pinned = None if self.config.allow_unpinned else self.config.ark
        try:
            pdh = verify_chain(chain, ca, pinned_ark=pinned)
        except ChainError as e:
            raise KbsError(403, "CertificateChainRejected",
                           f"Certificate chain verification failed: {e}") from None
        try:
            session = create_session(pdh, policy)
        except ValueError as e:
            raise KbsError(400, "InvalidCertificateChain", f"unusable PDH: {e}") from None
        launch_id = str(uuid.uuid4())
        self._expire()
        self._launches[launch_id] = _Launch(session, self.clock())
        while len(self._launches) > self.config.max_launches:
            old, _ = self._launches.popitem(last=False)
            log.info("launch %s dropped (more than %d open launches)", old,
                     self.config.max_launches)
        log.info("bundle: launch %s, policy 0x%x, platform PDH sha256 %s", launch_id, policy,
                 hashlib.sha256(pdh.to_bytes()).hexdigest()[:16])
        return {"GuestOwnerPublicKey": session.godh_b64, "LaunchBlob": session.session_b64,
                "LaunchId": launch_id}

    def _expire(self) -> None:
        now = self.clock()
        while self._launches:
            lid, launch = next(iter(self._launches.items()))
            if now - launch.created <= self.config.launch_ttl:
                break
            del self._launches[lid]
            log.info("launch %s expired", lid)

    @property
    def open_launches(self) -> int:
        return len(self._launches)

    # -- GetSecret ----------------------------------------------------------------------------

    def get_secret(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            result = self._secret(req)
        except KbsError as e:
            self.refused += 1
            log.warning("secret refused (launch %s): %s", req.get("LaunchId", "?")
                        if isinstance(req.get("LaunchId"), str) else "?", e.message)
            raise
        self.released += 1
        return result

    def _secret(self, req: dict[str, Any]) -> dict[str, Any]:
        launch_id = _field(req, "LaunchId", str)
        blob = _b64("LaunchMeasurement", _field(req, "LaunchMeasurement", str))
        if len(blob) != MEASUREMENT_LEN:
            raise _bad(f"LaunchMeasurement must be {MEASUREMENT_LEN} bytes (MEASURE ‖ "
                       f"MNONCE), got {len(blob)}")
        policy = _u("Policy", _field(req, "Policy", int), 32)
        api_major = _u("ApiMajor", _field(req, "ApiMajor", int), 8)
        api_minor = _u("ApiMinor", _field(req, "ApiMinor", int), 8)
        build_id = _u("BuildId", _field(req, "BuildId", int), 8)
        fw_text = _field(req, "FwDigest", str, required=False) or ""
        fw_digest = _b64("FwDigest", fw_text) if fw_text else None
        requests = _field(req, "SecretRequests", list)
        if not requests:
            raise _bad("SecretRequests is empty: nothing to release")
        wanted: list[tuple[Workload, uuid.UUID]] = []
        for i, r in enumerate(requests):
            if not isinstance(r, dict):
                raise _bad(f"SecretRequests[{i}] must be an object")
            guid_text = _field(r, "Guid", str)
            wid = _field(r, "Id", str)
            try:
                guid = uuid.UUID(guid_text)
            except ValueError:
                raise _bad(f"SecretRequests[{i}].Guid is not a GUID") from None
            workload = self.config.workloads.get(wid)
            if workload is None:
                raise KbsError(404, "UnknownWorkload", f"SecretRequests[{i}].Id: no "
                               f"workload '{wid}'")
            if guid not in workload.secrets:
                raise KbsError(404, "UnknownSecret", f"SecretRequests[{i}]: workload "
                               f"'{wid}' has no secret {guid}")
            wanted.append((workload, guid))

        self._expire()
        launch = self._launches.get(launch_id)
        if launch is None:
            raise KbsError(404, "LaunchNotFound", f"Launch ID not found. UUID: {launch_id}")
        session = launch.session
        if policy != session.policy:
            raise KbsError(403, "PolicyMismatch", f"Policy validation failed: policy "
                           f"0x{policy:x} is not the bundle's 0x{session.policy:x}")
        measure = b""
        for workload in {id(w): w for w, _ in wanted}.values():
            self._check_workload(workload, policy, api_major, api_minor, build_id)
            digests = workload.digests
            if fw_digest is not None:
                if fw_digest not in digests:
                    raise KbsError(403, "DigestNotAllowed", "Policy validation failed: "
                                   f"FwDigest {fw_digest.hex()} is not an expected launch "
                                   f"digest of workload '{workload.id}'")
                digests = [fw_digest]
            measure = self._verify(launch_id, session, blob, digests, workload, policy,
                                   api_major, api_minor, build_id)
        secrets = {guid: workload.secrets[guid] for workload, guid in wanted}
        try:
            packet = build_launch_secret(session.tek, session.tik, measure, secrets)
        except ValueError as e:
            raise KbsError(400, "SecretTooLarge", f"cannot package the secrets: {e} "
                           f"(at most {MAX_SECRET_LEN} bytes)") from None
        # One release per launch: the guest is past LAUNCH_SECRET once it has this.
        del self._launches[launch_id]
        log.info("secret released: launch %s, workloads %s, GUIDs %s", launch_id,
                 sorted({w.id for w, _ in wanted}), sorted(str(g) for _, g in wanted))
        return {"LaunchSecretHeader": packet.header_b64, "LaunchSecretData": packet.payload_b64}

    @staticmethod
    def _check_workload(w: Workload, policy: int, major: int, minor: int, build: int) -> None:
        if policy not in w.policies:
            raise KbsError(403, "PolicyNotAllowed", f"Policy validation failed: policy "
                           f"0x{policy:x} is not allowed for workload '{w.id}'")
        if w.min_api is not None and (major, minor) < w.min_api:
            raise KbsError(403, "FirmwareTooOld", f"Policy validation failed: firmware API "
                           f"{major}.{minor} is below workload '{w.id}''s minimum "
                           f"{w.min_api[0]}.{w.min_api[1]}")
        if w.build_ids is not None and build not in w.build_ids:
            raise KbsError(403, "FirmwareBuildNotAllowed", f"Policy validation failed: "
                           f"firmware build {build} is not allowed for workload '{w.id}'")

    def _verify(self, launch_id: str, session: LaunchSession, blob: bytes,
                digests: list[bytes], w: Workload, policy: int, major: int, minor: int,
                build: int) -> bytes:
        for digest in digests:
            try:
                return verify_launch_measurement(blob, session.tik, api_major=major,
                                                 api_minor=minor, build_id=build,
                                                 policy=policy, digest=digest)
            except MeasurementMismatch:
                continue
        # The guest is not what the owner expects: end this launch, so that a host cannot
        # go on guessing with the same session.
        self._launches.pop(launch_id, None)
        raise KbsError(403, "MeasurementMismatch", "Measurement Verification Failed: the "
                       f"launch measurement matches none of the {len(digests)} expected "
                       f"launch digest(s) of workload '{w.id}' (API {major}.{minor} build "
                       f"{build}, policy 0x{policy:x}); launch {launch_id} is closed")
