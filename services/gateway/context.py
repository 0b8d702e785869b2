"""What every gateway servicer shares: the control-plane records, the internal service clients, the
object store (for presigned preview URLs only) and the URL fetcher."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.objectstore import MinioObjectStore
from services.gateway.auth import ApiKeys
from services.gateway.resources import Resources
from services.gateway.urlfetch import UrlFetcher


@dataclass
class GatewayContext:
    settings: Settings
    resources: Resources
    clients: ServiceClients
    store: MinioObjectStore
    fetcher: UrlFetcher
    auth: ApiKeys


class GatewayServicer:
    """Base of the public servicers: shared context, and every call authorized before it runs."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    async def authorize(self, method: str, request: object, context: object) -> None:
        await self.ctx.auth.authorize(method, request, context)
