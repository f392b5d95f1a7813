"""The simulated host: its guests (and, with the firmware, its SEV platform).

Pure domain code; it decides what may be added and keeps the guests by name.
"""

from __future__ import annotations

from collections.abc import Iterator

from sevd.domain.errors import DomainError
from sevd.domain.guest import Guest, GuestConfig


class Host:
    def __init__(self, max_guests: int = 4096) -> None:
        self.guests: dict[str, Guest] = {}
        self.max_guests = max_guests

    def __iter__(self) -> Iterator[Guest]:
        return iter(self.guests.values())

    def check_new(self, config: GuestConfig) -> None:
        if config.name in self.guests:
            raise DomainError(f"Guest '{config.name}' already exists")
        if len(self.guests) >= self.max_guests:
            raise DomainError(f"Too many guests (limit {self.max_guests})")

    def add(self, guest: Guest) -> None:
        self.check_new(guest.config)
        self.guests[guest.name] = guest

    def get(self, name: str) -> Guest:
        try:
            return self.guests[name]
        except KeyError:
            raise DomainError(f"Guest '{name}' not found") from None

    def remove(self, name: str) -> Guest:
        guest = self.get(name)
        guest.destroy()
        del self.guests[name]
        return guest
