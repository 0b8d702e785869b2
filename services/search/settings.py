"""Settings of the search service alone (LOOKALIKE_SEARCH_*), beside the mesh-wide lookalike.config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.search.indexing import DEFAULT_REFINE_FACTOR


class SearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_SEARCH_", extra="ignore")

    # Read consistency. Session (default) + fenced writes: an upsert returns once searches see it,
    # and searches never wait for a time tick. Strong makes every search wait for the next time tick
    # (~200 ms) — needed only with several Milvus query-node replicas of a collection, where the
    # fence reaches one of them.
    consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = "Session"
    # IVF-PQ searches fetch limit × this many candidates and re-score them exactly; 1 turns it off.
    ivf_pq_refine: int = Field(DEFAULT_REFINE_FACTOR, ge=1, le=100)
    # Seconds a replica trusts what it read about a collection (dimension, index, ef/nprobe).
    info_ttl_s: float = 60.0
