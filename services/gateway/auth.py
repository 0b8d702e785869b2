"""API keys per namespace, checked on every public call.

A key is `lk_<id>_<secret>`; only its SHA-256 is stored (the secret is 256 random bits, so a plain
hash is enough — no password stretching needed). A key for namespace A gets PERMISSION_DENIED on
namespace B; no key or an unknown one gets UNAUTHENTICATED. The operator's admin key (a Secret,
`LOOKALIKE_ADMIN_API_KEY`) may also create namespaces and keys.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from lookalike import names
from lookalike.config import Settings
from lookalike.errors import NotFound, PermissionDenied, Unauthenticated
from lookalike.queue import RecordStore
from lookalike.v1 import namespace_service_pb2 as pb

KEY_INDEX = "apikeys"
CACHE_SECONDS = 30.0
# Calls only the operator may make.
ADMIN_ONLY = {"CreateNamespace", "DeleteNamespace", "CreateApiKey", "ListApiKeys", "DeleteApiKey"}


@dataclass(frozen=True)
class Principal:
    admin: bool
    namespace: str = ""


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated("malformed authorization header: expected 'Bearer <key>'")
    return ""


def namespace_of(request: Any) -> str:
    """The namespace a request addresses, from its `name` or `parent` resource name ("" if none)."""
    for field in ("name", "parent"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value.startswith("namespaces/"):
            return value.split("/")[1]
    return ""


class ApiKeys:
    def __init__(self, settings: Settings, store: RecordStore) -> None:
        self.enabled = settings.auth_enabled
        self.admin_digest = digest(settings.admin_api_key) if settings.admin_api_key else ""
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(self, namespace: str, display_name: str) -> tuple[pb.ApiKey, str]:
        key_id = "k" + secrets.token_hex(8)
        key = f"lk_{key_id}_{secrets.token_urlsafe(32)}"
        api_key = pb.ApiKey(name=f"namespaces/{namespace}/apiKeys/{key_id}", display_name=display_name, key_prefix=key[:12])
        api_key.create_time.GetCurrentTime()
        await self.store.put(f"{KEY_INDEX}/{key_id}", {"namespace": namespace, "sha256": digest(key), "name": api_key.name})
        await self.store.put(api_key.name, json_format.MessageToDict(api_key))
        return api_key, key

    async def list(self, namespace: str) -> list[pb.ApiKey]:
        records = await self.store.list(f"namespaces/{namespace}/apiKeys/")
        return [json_format.ParseDict(r, pb.ApiKey(), ignore_unknown_fields=True) for r in records]

    async def delete(self, name: str) -> None:
        parsed = names.parse(name, "apiKeys")
        if await self.store.get(name) is None:
            raise NotFound(f"{name} not found")
        await self.store.delete(f"{KEY_INDEX}/{parsed.id}")
        await self.store.delete(name)
        self._cache.clear()  # revocation takes effect at once on this replica

    async def _lookup(self, token: str) -> Principal | None:
        if self.admin_digest and hmac.compare_digest(digest(token), self.admin_digest):
            return Principal(admin=True)
        parts = token.split("_")
        if len(parts) < 3 or parts[0] != "lk" or not names.RESOURCE_ID.fullmatch(parts[1]):
            return None
        record = await self.store.get(f"{KEY_INDEX}/{parts[1]}")
        if record is None or not hmac.compare_digest(record.value["sha256"], digest(token)):
            return None
        return Principal(admin=False, namespace=record.value["namespace"])

    async def authenticate(self, token: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        principal = await self._lookup(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now, principal)
        return principal

    async def authorize(self, method: str, request: Any, context: Any) -> None:
        """Raises unless the caller may make this call; records who they are for the handler."""
        if not self.enabled:
            principal_var.set(Principal(admin=True))
            return
        token = bearer_token(context)
        if not token:
            raise Unauthenticated("missing API key: send metadata 'authorization: Bearer <key>'")
        principal = await self.authenticate(token)
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        principal_var.set(principal)
        if principal.admin:
            return
        if method in ADMIN_ONLY:
            raise PermissionDenied(f"{method} needs the admin key")
        check_namespace(namespace_of(request))


def check_namespace(namespace: str) -> None:
    """PERMISSION_DENIED when the caller's key belongs to another namespace."""
    principal = principal_var.get()
    if principal is None or principal.admin or not namespace:
        return
    if namespace != principal.namespace:
        raise PermissionDenied(f"this API key is for namespaces/{principal.namespace}, not namespaces/{namespace}")
