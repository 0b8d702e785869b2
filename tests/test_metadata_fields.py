"""Declared metadata fields: conversion of values to their type, and typed filter compilation.

The end-to-end behaviour on a real Milvus is in tests/test_search_service.py
(test_declared_metadata_fields_are_typed_filterable_columns) and the CLI test in tests/test_search_service.py.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike import metadata
from lookalike.errors import InvalidArgument
from lookalike.filters import compile_filter, parse_filter_text
from lookalike.v1 import types_pb2

MF = types_pb2.MetadataField
TYPED = {"price": MF.TYPE_DOUBLE, "stock": MF.TYPE_INT64, "brand": MF.TYPE_STRING, "sale": MF.TYPE_BOOL}


@pytest.mark.parametrize(("kind", "value", "want"), [
    (MF.TYPE_DOUBLE, "12.5", 12.5), (MF.TYPE_DOUBLE, 3, 3.0), (MF.TYPE_DOUBLE, " -1e3 ", -1000.0),
    (MF.TYPE_INT64, "42", 42), (MF.TYPE_INT64, 7.0, 7), (MF.TYPE_INT64, 2**63 - 1, 2**63 - 1),
    (MF.TYPE_STRING, "shoes", "shoes"), (MF.TYPE_STRING, 123.0, "123"), (MF.TYPE_STRING, 1.5, "1.5"),
    (MF.TYPE_BOOL, True, True), (MF.TYPE_BOOL, "False", False), (MF.TYPE_BOOL, " true", True),
])
def test_values_are_converted_to_the_declared_type(kind: int, value: object, want: object) -> None:
    got = metadata.convert("f", kind, value)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("kind", "value"), [
    (MF.TYPE_DOUBLE, "cheap"), (MF.TYPE_DOUBLE, "nan"), (MF.TYPE_DOUBLE, math.inf), (MF.TYPE_DOUBLE, True),
    (MF.TYPE_DOUBLE, [1.0]), (MF.TYPE_INT64, "4.5"), (MF.TYPE_INT64, 4.5), (MF.TYPE_INT64, -(2**63)),
    (MF.TYPE_INT64, 2**63), (MF.TYPE_INT64, False), (MF.TYPE_STRING, True), (MF.TYPE_STRING, {"a": 1}),
    (MF.TYPE_STRING, "x" * (metadata.MAX_STRING + 1)), (MF.TYPE_BOOL, 1), (MF.TYPE_BOOL, "yes"), (MF.TYPE_BOOL, None),
])
def test_values_of_another_type_are_invalid_argument(kind: int, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"metadata field 'f' is declared {metadata.TYPE_NAMES[kind]}"):
        metadata.convert("f", kind, value)


def test_typed_columns_convert_in_place_and_require_every_field() -> None:
    values = {"price": "9.5", "stock": "3", "brand": "acme", "sale": "false", "free": "x"}
    columns = metadata.typed_columns(TYPED, values, "record r")
    assert columns == {"m_price": 9.5, "m_stock": 3, "m_brand": "acme", "m_sale": False}
    assert values == {"price": 9.5, "stock": 3, "brand": "acme", "sale": False, "free": "x"}
    with pytest.raises(InvalidArgument, match="record r: metadata field 'sale' \\(bool\\) is declared by the collection and required"):
        metadata.typed_columns(TYPED, {"price": 1, "stock": 1, "brand": "a"}, "record r")


@pytest.mark.parametrize(("fields", "message"), [
    ([MF(name="9lives", type=MF.TYPE_INT64)], "invalid metadata field name"),
    ([MF(name='a"] or 1', type=MF.TYPE_INT64)], "invalid metadata field name"),
    ([MF(name="a")], "needs a type"),
    ([MF(name="a", type=MF.TYPE_BOOL), MF(name="a", type=MF.TYPE_INT64)], "declared twice"),
    ([MF(name=f"f{i}", type=MF.TYPE_BOOL) for i in range(metadata.MAX_FIELDS + 1)], "at most 32"),
])
def test_bad_declarations_are_invalid_argument(fields: list, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        metadata.declared(fields)


def test_cli_declarations() -> None:
    assert metadata.parse_declaration("price:double") == MF(name="price", type=MF.TYPE_DOUBLE)
    assert metadata.parse_declaration("n:INT") == MF(name="n", type=MF.TYPE_INT64)
    for bad in ("price", "price:money", ":int", "a b:int"):
        with pytest.raises(InvalidArgument):
            metadata.parse_declaration(bad)


@pytest.mark.parametrize(("text", "expr"), [
    ("price < 30", "m_price < 30.0"),
    ("stock >= 9.0", "m_stock >= 9"),
    ("brand in [acme, 'o\"mni']", 'm_brand in ["acme", "o\\"mni"]'),
    ("sale != true", "m_sale != true"),
    ("not (stock in [1, 2]) and other == 1", '((not (m_stock in [1, 2])) and (metadata["other"] == 1))'),
])
def test_declared_fields_compile_to_their_column(text: str, expr: str) -> None:
    assert compile_filter(parse_filter_text(text), TYPED) == expr


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans()))
def test_a_typed_filter_takes_only_literals_of_its_type(value: object) -> None:
    """Whatever the value, the expression holds it as one literal of the column's type, or the filter is refused."""
    scalar = (types_pb2.ScalarValue(bool_value=value) if isinstance(value, bool) else
              types_pb2.ScalarValue(int_value=value) if isinstance(value, int) and -(2**63) <= value < 2**63 else
              types_pb2.ScalarValue(double_value=value) if isinstance(value, (int, float)) and not isinstance(value, int) else
              types_pb2.ScalarValue(string_value=str(value)))
    for name, kind in TYPED.items():
        flt = types_pb2.Filter(condition=types_pb2.FieldCondition(field=name, operator=types_pb2.FieldCondition.OPERATOR_EQ, value=scalar))
        try:
            expr = compile_filter(flt, TYPED)
        except InvalidArgument as exc:
            assert f"{name!r}" in exc.message
            continue
        column, op, lit = expr.split(" ", 2)
        assert (column, op) == (metadata.column(name), "==")
        if kind == MF.TYPE_STRING:
            assert lit.startswith('"') and lit.endswith('"')
        elif kind == MF.TYPE_BOOL:
            assert lit in ("true", "false")
        elif kind == MF.TYPE_INT64:
            assert int(lit) == scalar.int_value or int(lit) == scalar.double_value
        else:
            assert math.isfinite(float(lit))
