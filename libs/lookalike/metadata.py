"""Declared metadata fields: names, types and the conversion of an image's values to them.

A collection may declare some metadata fields with a type (`price: double`, `category: string`).
Each becomes a typed Milvus column (`m_<name>`) beside the free-form JSON `metadata`, so filters on it
are type-checked and run on a column instead of parsing JSON per row. Milvus 2.3 has no nullable
fields, so a declared field is required: an image without it is refused with a message naming the
field, rather than stored with a made-up value that filters would then match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from lookalike.errors import InvalidArgument
from lookalike.v1 import types_pb2

# A metadata field name (declared or in a filter): an identifier, never expression syntax.
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
Type = types_pb2.MetadataField.Type
MAX_FIELDS = 32
MAX_STRING = 512
COLUMN_PREFIX = "m_"
TYPE_NAMES = {Type.TYPE_STRING: "string", Type.TYPE_INT64: "int64", Type.TYPE_DOUBLE: "double", Type.TYPE_BOOL: "bool"}
TYPES_BY_NAME = {name: kind for kind, name in TYPE_NAMES.items()} | {"str": Type.TYPE_STRING, "int": Type.TYPE_INT64,
                                                                    "float": Type.TYPE_DOUBLE, "boolean": Type.TYPE_BOOL}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def column(name: str) -> str:
    return COLUMN_PREFIX + name


def declared(fields: Iterable[types_pb2.MetadataField]) -> dict[str, int]:
    """{name: type} of a request's fields, validated: names as in filters, unique, a known type."""
    out: dict[str, int] = {}
    for f in fields:
        if not FIELD_NAME.fullmatch(f.name or ""):
            raise InvalidArgument(f"invalid metadata field name {f.name[:80]!r}: use letters, digits and underscores, not starting with a digit")
        if f.type not in TYPE_NAMES:
            raise InvalidArgument(f"metadata field {f.name!r} needs a type: {', '.join(TYPE_NAMES.values())}")
        if f.name in out:
            raise InvalidArgument(f"metadata field {f.name!r} is declared twice")
        out[f.name] = f.type
    if len(out) > MAX_FIELDS:
        raise InvalidArgument(f"at most {MAX_FIELDS} declared metadata fields, got {len(out)}")
    return out


def parse_declaration(text: str) -> types_pb2.MetadataField:
    """`price:double` (CLI) → MetadataField."""
    name, sep, kind = text.partition(":")
    if not sep or kind.strip().lower() not in TYPES_BY_NAME:
        raise InvalidArgument(f"metadata field {text!r}: write NAME:TYPE with TYPE one of {', '.join(TYPE_NAMES.values())}")
    field = types_pb2.MetadataField(name=name.strip(), type=TYPES_BY_NAME[kind.strip().lower()])
    declared([field])
    return field


def describe(fields: Mapping[str, int]) -> str:
    return ", ".join(f"{name}:{TYPE_NAMES[kind]}" for name, kind in fields.items())


def convert(name: str, kind: int, value: Any) -> Any:
    """value as the declared type; strings are parsed ("12", "2.5", "true"), since S3 object metadata
    and command-line metadata are always strings."""
    what = f"metadata field {name!r} is declared {TYPE_NAMES[kind]}"
    if kind == Type.TYPE_STRING:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidArgument(f"{what}, got {value!r}")
        text = value if isinstance(value, str) else (str(int(value)) if float(value).is_integer() else repr(float(value)))
        if len(text) > MAX_STRING:
            raise InvalidArgument(f"{what} of at most {MAX_STRING} characters, got {len(text)}")
        return text
    if kind == Type.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise InvalidArgument(f"{what} (true or false), got {value!r}")
    if isinstance(value, bool):
        raise InvalidArgument(f"{what}, got {value!r}")
    number: float | int
    if isinstance(value, str):
        try:
            number = int(value.strip()) if kind == Type.TYPE_INT64 else float(value.strip())
        except ValueError:
            raise InvalidArgument(f"{what}, got {value!r}") from None
    elif isinstance(value, (int, float)):
        number = value
    else:
        raise InvalidArgument(f"{what}, got {value!r}")
    if not math.isfinite(number):
        raise InvalidArgument(f"{what}, got {value!r} (not finite)")
    if kind == Type.TYPE_DOUBLE:
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise InvalidArgument(f"{what} (a whole number), got {value!r}")
    number = int(number)
    # the int64 minimum cannot be written in a Milvus expression (it negates 2**63)
    if not INT64_MIN < number <= INT64_MAX:
        raise InvalidArgument(f"{what} between {INT64_MIN + 1} and {INT64_MAX}, got {value!r}")
    return number


def typed_columns(fields: Mapping[str, int], metadata: dict[str, Any], what: str) -> dict[str, Any]:
    """{column: value} of the declared fields; the converted values also replace the JSON ones, so
    results and the retriever's filter stage see what the columns hold."""
    columns = {}
    for name, kind in fields.items():
        if name not in metadata or metadata[name] is None:
            raise InvalidArgument(f"{what}: metadata field {name!r} ({TYPE_NAMES[kind]}) is declared by the collection and required")
        try:
            metadata[name] = convert(name, kind, metadata[name])
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what}: {exc.message}") from None
        columns[column(name)] = metadata[name]
    return columns
