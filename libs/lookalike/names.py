"""Resource names (`namespaces/{namespace}/collections/{collection}` …): parse, validate, format."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lookalike.errors import InvalidArgument

RESOURCE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
CONTENT_ID = re.compile(r"^[0-9a-f]{64}$")


def validate_id(kind: str, value: str) -> str:
    if not RESOURCE_ID.fullmatch(value or ""):
        raise InvalidArgument(
            f"invalid {kind} id {value!r}: use 1-63 lower-case letters, digits and dashes, starting with a letter"
        )
    return value


@dataclass(frozen=True)
class Name:
    namespace: str
    kind: str = ""  # "collections", "buckets", "retrievers", "jobs" or "" for the namespace itself
    id: str = ""

    def __str__(self) -> str:
        base = f"namespaces/{self.namespace}"
        return f"{base}/{self.kind}/{self.id}" if self.kind else base

    @property
    def parent(self) -> str:
        return f"namespaces/{self.namespace}"


def parse(name: str, kind: str = "") -> Name:
    """Parses `namespaces/{ns}` (kind "") or `namespaces/{ns}/{kind}/{id}`."""
    parts = (name or "").split("/")
    expected = f"namespaces/{{namespace}}/{kind}/{{id}}" if kind else "namespaces/{namespace}"
    if kind == "jobs" and len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "jobs":
        if re.fullmatch(r"[0-9a-z-]{1,64}", parts[3]):
            return Name(validate_id("namespace", parts[1]), kind, parts[3])
    elif kind and len(parts) == 4 and parts[0] == "namespaces" and parts[2] == kind:
        return Name(validate_id("namespace", parts[1]), kind, validate_id(kind.rstrip("s"), parts[3]))
    elif not kind and len(parts) == 2 and parts[0] == "namespaces":
        return Name(validate_id("namespace", parts[1]))
    raise InvalidArgument(f"invalid resource name {name!r}: expected {expected}")


def object_name(bucket: Name, content_id: str) -> str:
    """The object's resource name, which is also its key in the object store (content addressed)."""
    return f"{bucket}/objects/{content_id}"


def parse_object(name: str) -> tuple[Name, str]:
    parts = (name or "").split("/")
    if len(parts) == 6 and parts[4] == "objects" and CONTENT_ID.fullmatch(parts[5]):
        return parse("/".join(parts[:4]), "buckets"), parts[5]
    raise InvalidArgument(f"invalid object name {name!r}: expected namespaces/{{namespace}}/buckets/{{bucket}}/objects/{{sha256}}")
