"""Resource names: `namespaces/{ns}`, `namespaces/{ns}/{kind}/{id}`, object names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike import names
from lookalike.errors import InvalidArgument

SHA = "0123456789abcdef" * 4
VALID_IDS = ["a", "abc", "a1", "a-b", "shoes-2024", "a" * 63, "z9-"]
INVALID_IDS = [
    "",
    "A",
    "Abc",
    "1abc",
    "-abc",
    "a_b",
    "a.b",
    "a b",
    "a/b",
    "a" * 64,
    "ünï",
    "abc\n",
    "\nabc",
    "a\x00",
    "..",
    "*",
    "a%2Fb",
]


# ---- validate_id ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", VALID_IDS)
def test_validate_id_accepts(value: str) -> None:
    assert names.validate_id("collection", value) == value


@pytest.mark.parametrize("value", INVALID_IDS)
def test_validate_id_rejects(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        names.validate_id("collection", value)
    assert "collection" in info.value.message


def test_validate_id_rejects_none() -> None:
    with pytest.raises(InvalidArgument):
        names.validate_id("namespace", None)  # type: ignore[arg-type]


@given(st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True))
def test_validate_id_property_valid(value: str) -> None:
    assert names.validate_id("bucket", value) == value


@given(st.text(max_size=80))
def test_validate_id_property_never_crashes(value: str) -> None:
    try:
        names.validate_id("bucket", value)
    except InvalidArgument:
        return
    # accepted: must really be a resource id
    assert 1 <= len(value) <= 63 and value[0].isascii() and value[0].islower()
    assert all(ch in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in value)


# ---- parse ----------------------------------------------------------------------------------------

def test_parse_namespace() -> None:
    name = names.parse("namespaces/shop")
    assert name == names.Name("shop")
    assert str(name) == "namespaces/shop"
    assert name.parent == "namespaces/shop"
    assert name.kind == "" and name.id == ""


@pytest.mark.parametrize("kind", ["collections", "buckets", "retrievers"])
def test_parse_child(kind: str) -> None:
    text = f"namespaces/shop/{kind}/photos-1"
    name = names.parse(text, kind)
    assert name == names.Name("shop", kind, "photos-1")
    assert str(name) == text
    assert name.parent == "namespaces/shop"


def test_parse_job() -> None:
    name = names.parse("namespaces/shop/jobs/0f3a-1b", "jobs")
    assert name == names.Name("shop", "jobs", "0f3a-1b")
    # job ids may start with a digit and be 64 characters (a uuid hex + dashes)
    assert names.parse("namespaces/shop/jobs/" + "1" * 64, "jobs").id == "1" * 64


@pytest.mark.parametrize(
    "text,kind",
    [
        ("", ""),
        ("namespaces", ""),
        ("namespaces/", ""),
        ("namespaces/shop/", ""),
        ("/namespaces/shop", ""),
        ("namespace/shop", ""),
        ("Namespaces/shop", ""),
        ("namespaces/Shop", ""),
        ("namespaces/1shop", ""),
        ("namespaces/sh op", ""),
        ("namespaces/shop/collections/c", ""),  # a child where the namespace is expected
        ("namespaces/shop", "collections"),  # the namespace where a child is expected
        ("namespaces/shop/collections", "collections"),
        ("namespaces/shop/collections/", "collections"),
        ("namespaces/shop/collections/c/", "collections"),
        ("namespaces/shop/collections/c/x", "collections"),
        ("namespaces/shop/buckets/c", "collections"),  # wrong kind
        ("namespaces/shop/collections/C", "collections"),
        ("namespaces/shop/collections/1c", "collections"),
        ("namespaces/shop/collections/c_d", "collections"),
        ("namespaces/shop/collections/" + "c" * 64, "collections"),
        ("namespaces/shop/collections/..", "collections"),
        ("namespaces/../collections/c", "collections"),
        ("namespaces//collections/c", "collections"),
        ("namespaces/shop/collections/c\n", "collections"),
        ("namespaces/shop/jobs/J1", "jobs"),
        ("namespaces/shop/jobs/", "jobs"),
        ("namespaces/shop/jobs/a_b", "jobs"),
        ("namespaces/shop/jobs/" + "1" * 65, "jobs"),
        ("namespaces/Shop/jobs/abc", "jobs"),
        ("namespaces/shop/collections/abc", "jobs"),
    ],
)
def test_parse_rejects(text: str, kind: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse(text, kind)


def test_parse_rejects_none() -> None:
    with pytest.raises(InvalidArgument):
        names.parse(None)  # type: ignore[arg-type]


def test_parse_error_names_expected_form() -> None:
    with pytest.raises(InvalidArgument) as info:
        names.parse("nope", "collections")
    assert "namespaces/{namespace}/collections/{id}" in info.value.message


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True),
    st.sampled_from(["collections", "buckets", "retrievers"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True),
)
def test_parse_format_roundtrip(namespace: str, kind: str, ident: str) -> None:
    name = names.Name(namespace, kind, ident)
    assert names.parse(str(name), kind) == name
    assert names.parse(name.parent) == names.Name(namespace)


@given(st.text(max_size=120), st.sampled_from(["", "collections", "buckets", "retrievers", "jobs"]))
def test_parse_only_invalid_argument(text: str, kind: str) -> None:
    try:
        name = names.parse(text, kind)
    except InvalidArgument:
        return
    assert str(name) == text


# ---- objects --------------------------------------------------------------------------------------

def test_object_name_roundtrip() -> None:
    bucket = names.parse("namespaces/shop/buckets/photos", "buckets")
    text = names.object_name(bucket, SHA)
    assert text == f"namespaces/shop/buckets/photos/objects/{SHA}"
    assert names.parse_object(text) == (bucket, SHA)


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"namespaces/shop/buckets/photos/objects/{SHA.upper()}",
        f"namespaces/shop/buckets/photos/objects/{SHA[:-1]}",
        f"namespaces/shop/buckets/photos/objects/{SHA}0",
        f"namespaces/shop/buckets/photos/objects/{SHA[:-1]}g",
        f"namespaces/shop/buckets/photos/objects/{SHA}/",
        f"namespaces/shop/buckets/photos/object/{SHA}",
        f"namespaces/shop/collections/photos/objects/{SHA}",
        f"namespaces/Shop/buckets/photos/objects/{SHA}",
        f"namespaces/shop/buckets/Photos/objects/{SHA}",
        f"namespaces/shop/buckets/../objects/{SHA}",
        f"namespace/shop/buckets/photos/objects/{SHA}",
        f"namespaces/shop/buckets/photos/objects/../{SHA}",
        "namespaces/shop/buckets/photos/objects/",
        "namespaces/shop/buckets/photos",
    ],
)
def test_parse_object_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse_object(text)


def test_parse_object_rejects_none() -> None:
    with pytest.raises(InvalidArgument):
        names.parse_object(None)  # type: ignore[arg-type]
