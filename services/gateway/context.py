"""What every gateway servicer shares: the control-plane records, the internal service clients, the
object store (for presigned preview URLs only) and the URL fetcher."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.objectstore import MinioObjectStore
from services.gateway.resources import Resources
from services.gateway.urlfetch import UrlFetcher


@dataclass
class GatewayContext:
    settings: Settings
    resources: Resources
    clients: ServiceClients
    store: MinioObjectStore
    fetcher: UrlFetcher
