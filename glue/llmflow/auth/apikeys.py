"""LLMFlow API keys: bound to one tenant and a set of knowledge bases, stored as hashes.

Dify's External Knowledge API sends one static Bearer key per registration and no end-user
identity, so the key *is* the identity: the tenant of a request comes from the key only.
Format: ``llmf_<prefix>_<secret>``; we store the prefix (for lookup) and SHA-256 of the whole
key (the secret has 256 bits of entropy, so a slow hash buys nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.auth.principal import API_KEY_ROLES, Principal
from llmflow.errors import InvalidRequest, NotFound, Unauthorized
from llmflow.knowledge import validate_name
from llmflow.storage.models import ApiKey, utcnow

KEY_SCHEME = "llmf"
ROLES = API_KEY_ROLES

__all__ = ["KEY_SCHEME", "ROLES", "ApiKeys", "IssuedKey", "Principal", "parse_key"]


@dataclass(frozen=True, slots=True)
class IssuedKey:
    id: str
    key: str
    tenant_id: str
    knowledge_bases: list[str]
    roles: list[str]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_SCHEME or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKeys:
    """API keys in PostgreSQL, with a short in-process cache of verified keys.

    The LLM gateway authenticates every call, and a lookup plus the ``last_used_at`` write
    is two database round trips; a verified key is therefore remembered for ``cache_ttl_s``
    seconds (a revocation made through this process applies at once, one made elsewhere
    within that time).
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache_ttl_s: float = 10.0
    ) -> None:
        self.sessions = sessions
        self.cache_ttl_s = cache_ttl_s
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._pending: dict[str, asyncio.Lock] = {}
        """One lookup per key at a time: when a cached key expires under load, the requests
        in flight wait for one lookup instead of each updating the same row."""

    async def create(
        self,
        tenant_id: str,
        knowledge_bases: list[str] | None = None,
        name: str = "",
        roles: list[str] | None = None,
    ) -> IssuedKey:
        validate_name("tenant", tenant_id)
        roles = sorted(set(roles or ["reader"]))
        unknown = set(roles) - ROLES
        if unknown:
            raise InvalidRequest(f"unknown role(s) {sorted(unknown)}; use {sorted(ROLES)}")
        kbs = sorted({validate_name("knowledge base name", k) for k in knowledge_bases or []})
        prefix = secrets.token_hex(6)
        key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32).replace('_', '-')}"
        row = ApiKey(
            key_prefix=prefix,
            key_hash=_hash(key),
            tenant_id=tenant_id,
            name=name,
            knowledge_bases=kbs,
            roles=roles,
        )
        async with self.sessions() as session:
            session.add(row)
            await session.commit()
        return IssuedKey(row.id, key, tenant_id, kbs, roles)

    async def authenticate(self, key: str) -> Principal:
        parsed = parse_key(key)
        if parsed is None:
            raise Unauthorized("not an LLMFlow API key")
        digest = _hash(key)
        cached = self._verified.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1]
        async with self._pending.setdefault(digest, asyncio.Lock()):
            cached = self._verified.get(digest)  # another request may just have looked it up
            if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
                return cached[1]
            principal = await self._lookup(parsed[0], key)
            if len(self._verified) > 10_000:
                self._verified.clear()
                self._pending = {d: lock for d, lock in self._pending.items() if lock.locked()}
            self._verified[digest] = (time.monotonic(), principal)
            return principal

    async def _lookup(self, prefix: str, key: str) -> Principal:
        parsed = (prefix,)
        async with self.sessions() as session:
            row = (
                await session.execute(select(ApiKey).where(ApiKey.key_prefix == parsed[0]))
            ).scalar_one_or_none()
            if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
                raise Unauthorized("unknown API key")
            if row.revoked_at is not None:
                raise Unauthorized("API key revoked")
            await session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow())
            )
            await session.commit()
            return Principal(
                tenant_id=row.tenant_id,
                subject=f"apikey:{row.id}",
                knowledge_bases=frozenset(row.knowledge_bases or []),
                roles=frozenset(row.roles or []),
                kind="api_key",
            )

    async def revoke(self, key_id: str) -> None:
        async with self.sessions() as session:
            row = await session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"API key {key_id!r} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                await session.commit()
        self._verified = {
            d: v for d, v in self._verified.items() if v[1].subject != f"apikey:{key_id}"
        }

    async def list(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            stmt = select(ApiKey).order_by(ApiKey.created_at)
            if tenant_id:
                stmt = stmt.where(ApiKey.tenant_id == tenant_id)
            rows = (await session.execute(stmt)).scalars().all()
            return [
                {
                    "id": r.id,
                    "prefix": r.key_prefix,
                    "tenant_id": r.tenant_id,
                    "name": r.name,
                    "knowledge_bases": r.knowledge_bases,
                    "roles": r.roles,
                    "created_at": _iso(r.created_at),
                    "revoked_at": _iso(r.revoked_at),
                    "last_used_at": _iso(r.last_used_at),
                }
                for r in rows
            ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
