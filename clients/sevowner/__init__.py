"""sevowner: the guest owner side of SEV (sessions, measurement and chain checks, secrets)."""
