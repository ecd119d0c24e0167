"""Leases: who may do a job (send an issue, run the scheduler) right now."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from ._base import (
    _ROWCOUNT,
    StoreBase,
    _aware,
    _insert_if_absent,
    _one,
    locks_t,
)


class LeaseStore(StoreBase):
    # --- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl_seconds: float, now: datetime) -> bool:
        """Take the lease ``name`` until now + ttl if it is free, expired or already ``owner``'s
        (then it is renewed). Atomic across processes; True if ``owner`` holds it now."""
        _aware(now)
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        expires = now + timedelta(seconds=ttl_seconds)
        k = locks_t
        with self._tx() as conn:
            taken = conn.execute(
                sa.update(k)
                .where(k.c.name == name, sa.or_(k.c.owner == owner, k.c.expires_at <= now))
                .values(owner=owner, expires_at=expires)
            ).rowcount
            if taken:
                return True
            values = {"name": name, "owner": owner, "expires_at": expires}
            return _insert_if_absent(conn, k, values, ["name"])

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """(owner, expires_at) of the lease, or None when nobody ever took it."""
        k = locks_t
        with self._tx(write=False) as conn:
            row = _one(conn, sa.select(k.c.owner, k.c.expires_at).where(k.c.name == name))
        return None if row is None else (row["owner"], row["expires_at"])

    def take_over_lease(
        self, name: str, dead_owner: str, owner: str, ttl_seconds: float, now: datetime
    ) -> bool:
        """Take a lease from an owner the caller KNOWS is dead (e.g. a killed process on this
        host), whatever its expiry; only if ``dead_owner`` still holds it (compare and set)."""
        _aware(now)
        k = locks_t
        with self._tx() as conn:
            taken = conn.execute(
                sa.update(k)
                .where(k.c.name == name, k.c.owner == dead_owner)
                .values(owner=owner, expires_at=now + timedelta(seconds=ttl_seconds)),
                execution_options=_ROWCOUNT,
            ).rowcount
        return bool(taken)

    def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up; True if ``owner`` held it (an expired or foreign lease is untouched)."""
        k = locks_t
        with self._tx() as conn:
            gone = conn.execute(sa.delete(k).where(k.c.name == name, k.c.owner == owner)).rowcount
        return bool(gone)
