"""A client of the broker, as a Kata-style runtime uses it (aiohttp).

``KbsClient("http://127.0.0.1:44444")`` or ``KbsClient("unix:/run/sevkbs.sock")``;
:meth:`KbsClient.get_bundle` and :meth:`KbsClient.get_secret` take and return simple-kbs's
fields and raise :class:`KbsRefused` (with the broker's Code and Message) when refused.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

__all__ = ["KbsClient", "KbsRefused"]


class KbsRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class KbsClient:
    def __init__(self, address: str) -> None:
        if address.startswith("unix:"):
            self._connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=address[5:])
            self.base = "http://sevkbs"
        else:
            self._connector = aiohttp.TCPConnector()
            self.base = address.rstrip("/")
        self._session = aiohttp.ClientSession(connector=self._connector)

    async def __aenter__(self) -> KbsClient:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._session.post(self.base + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise KbsRefused(resp.status, str(data.get("Code", "")),
                                 str(data.get("Message", "")))
            if not isinstance(data, dict):
                raise KbsRefused(resp.status, "InvalidResponse", "not a JSON object")
            return data

    async def get_bundle(self, certificate_chain: str, policy: int) -> dict[str, Any]:
        """GetBundle: base64 chain (PDH‖PEK‖OCA‖CEK‖ASK‖ARK) and policy."""
        return await self._post("/v1/bundle", {"CertificateChain": certificate_chain,
                                               "Policy": policy})

    async def get_secret(self, request: dict[str, Any]) -> dict[str, Any]:
        """GetSecret with simple-kbs's SecretRequest fields."""
        return await self._post("/v1/secret", request)
