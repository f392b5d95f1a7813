"""Fixtures for the simulated firmware: pre-generated identities and ready platforms.

RSA-4096 key generation costs seconds, so the simulated AMD roots are generated once per
key size and kept in pytest's cache directory (``.pytest_cache``; ``--cache-clear`` makes
new ones). Identities are derived from them with fixed seeds, once per session. Each test
gets its own :class:`SevFirmware` (which copies the identity it is given).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from psp_helpers import Guests, ready

from sevd.domain.psp import (
    HostProfile,
    PlatformIdentity,
    SevFirmware,
    get_profile,
)
from sevd.domain.psp.identity import AmdRoots, generate, generate_roots

TEST_SEED = b"sevd domain tests"


@pytest.fixture(scope="session")
def amd_roots(request: pytest.FixtureRequest) -> Callable[[int], AmdRoots]:
    """``amd_roots(bits)``: simulated ARK/ASK of ``bits``, cached across test runs."""
    memo: dict[int, AmdRoots] = {}

    def get(bits: int) -> AmdRoots:
        if bits not in memo:
            # pytest's cache plugin may be disabled (-p no:cacheprovider): then generate.
            cache = getattr(request.config, "cache", None)
            key = f"sevd/psp/amd-roots-{bits}"
            cached = cache.get(key, None) if cache is not None else None
            roots = None
            if isinstance(cached, str):
                try:
                    roots = AmdRoots.from_bytes(base64.b64decode(cached))
                except ValueError:
                    roots = None
            if roots is None:
                roots = generate_roots(bits, TEST_SEED)
                if cache is not None:
                    cache.set(key, base64.b64encode(roots.to_bytes()).decode())
            memo[bits] = roots
        return memo[bits]

    return get


@pytest.fixture(scope="session")
def identity_for(
    amd_roots: Callable[[int], AmdRoots],
) -> Callable[[str], PlatformIdentity]:
    """``identity_for("milan")``: the session's identity for a profile (do not mutate)."""
    memo: dict[str, PlatformIdentity] = {}

    def get(profile: str) -> PlatformIdentity:
        if profile not in memo:
            prof = get_profile(profile)
            memo[profile] = generate(
                prof, TEST_SEED + profile.encode(), amd_roots(prof.amd_root_bits)
            )
        return memo[profile]

    return get


@pytest.fixture(scope="session")
def identity(identity_for: Callable[[str], PlatformIdentity]) -> PlatformIdentity:
    """The Milan identity (the default profile)."""
    return identity_for("milan")


@pytest.fixture
def make_fw(
    identity_for: Callable[[str], PlatformIdentity],
) -> Callable[..., SevFirmware]:
    """``make_fw(profile="milan", init=True, es=False, seed=..., **profile_overrides)``."""

    def make(
        profile: str = "milan",
        *,
        init: bool = True,
        es: bool = False,
        seed: bytes | None = b"fw",
        prof: HostProfile | None = None,
    ) -> SevFirmware:
        fw = SevFirmware(identity_for(profile), seed=seed, profile=prof)
        return ready(fw, 1 if es else 0) if init else fw

    return make


@pytest.fixture
def fw(make_fw: Callable[..., SevFirmware]) -> SevFirmware:
    """A Milan platform in INIT with every ASID clean."""
    return make_fw()


@pytest.fixture
def guests(fw: SevFirmware) -> Guests:
    return Guests(fw)
