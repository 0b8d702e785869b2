"""Compiles a structured `lookalike.v1.Filter` into a Milvus boolean expression.

User metadata lives in the JSON field `metadata`; field names are checked against a strict pattern
and values are emitted only as JSON literals (strings through json.dumps, numbers checked finite),
so no user text can become expression syntax.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from lookalike.errors import InvalidArgument
from lookalike.metadata import FIELD_NAME, INT64_MAX, INT64_MIN, TYPE_NAMES, Type, column
from lookalike.v1 import types_pb2

MAX_DEPTH = 16
MAX_VALUES = 1024
MAX_STRING = 1024

Op = types_pb2.FieldCondition.Operator
_COMPARISONS = {
    Op.OPERATOR_EQ: "==",
    Op.OPERATOR_NE: "!=",
    Op.OPERATOR_LT: "<",
    Op.OPERATOR_LE: "<=",
    Op.OPERATOR_GT: ">",
    Op.OPERATOR_GE: ">=",
}
_ORDERED = {Op.OPERATOR_LT, Op.OPERATOR_LE, Op.OPERATOR_GT, Op.OPERATOR_GE}


def literal(value: types_pb2.ScalarValue, int_as_float: bool = False) -> str:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        if len(value.string_value) > MAX_STRING:
            raise InvalidArgument(f"filter value longer than {MAX_STRING} characters")
        # ensure_ascii=False: Milvus cannot parse the surrogate-pair escapes (\ud83d\ude00) that
        # json.dumps writes for characters outside the BMP; quotes, backslashes and control
        # characters are still escaped, and any other character is legal raw in a Milvus string.
        return json.dumps(value.string_value, ensure_ascii=False)
    if kind == "int_value":
        # Milvus cannot parse the int64 minimum (it negates 9223372036854775808); metadata numbers
        # are stored as doubles, so the float form selects the same rows.
        if int_as_float or value.int_value == -(2**63):
            return repr(float(value.int_value))
        return str(int(value.int_value))
    if kind == "double_value":
        if not math.isfinite(value.double_value):
            raise InvalidArgument("filter value must be a finite number")
        return repr(float(value.double_value))
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    raise InvalidArgument("filter value is empty")


def field_ref(name: str, json_field: str = "metadata") -> str:
    if not FIELD_NAME.fullmatch(name or ""):
        raise InvalidArgument(
            f"invalid filter field {name!r}: use letters, digits and underscores, not starting with a digit"
        )
    return f'{json_field}["{name}"]'


def _typed_literal(name: str, kind: int, value: types_pb2.ScalarValue) -> str:
    """A literal for a declared (typed) column: the value must be of the column's type."""
    got = value.WhichOneof("kind")
    what = f"filter on {name!r}: the field is declared {TYPE_NAMES[kind]}"
    if kind == Type.TYPE_STRING and got == "string_value":
        return literal(value)
    if kind == Type.TYPE_BOOL and got == "bool_value":
        return literal(value)
    if kind == Type.TYPE_DOUBLE and got in ("int_value", "double_value"):
        if got == "double_value" and not math.isfinite(value.double_value):
            raise InvalidArgument(f"{what}: compare it with a finite number")
        return literal(value, int_as_float=True)
    if kind == Type.TYPE_INT64:
        number = value.int_value if got == "int_value" else value.double_value if got == "double_value" else None
        if number is not None and math.isfinite(number) and float(number).is_integer() and INT64_MIN < number <= INT64_MAX:
            return str(int(number))
        if number is not None:
            raise InvalidArgument(f"{what}: compare it with a whole number between {INT64_MIN + 1} and {INT64_MAX}, not {number!r}")
    hint = " (quote it to compare as text)" if kind == Type.TYPE_STRING and got else ""
    raise InvalidArgument(f"{what}, not a {got.replace('_value', '') if got else 'missing'} value{hint}")


def _check_operands(cond: types_pb2.FieldCondition) -> None:
    """The value, or the list of values, that the condition's operator needs, within limits."""
    if cond.operator in _COMPARISONS and not cond.HasField("value"):
        raise InvalidArgument(f"filter on {cond.field!r}: operator needs a value")
    if cond.operator in (Op.OPERATOR_IN, Op.OPERATOR_NOT_IN):
        if not cond.values:
            raise InvalidArgument(f"filter on {cond.field!r}: IN needs at least one value")
        if len(cond.values) > MAX_VALUES:
            raise InvalidArgument(f"filter on {cond.field!r}: more than {MAX_VALUES} values")


def _typed_condition(cond: types_pb2.FieldCondition, kind: int) -> str:
    ref = column(cond.field)
    op = cond.operator
    if op in _COMPARISONS:
        if op in _ORDERED and kind == Type.TYPE_BOOL:
            raise InvalidArgument(f"filter on {cond.field!r}: cannot order booleans")
        return f"{ref} {_COMPARISONS[op]} {_typed_literal(cond.field, kind, cond.value)}"
    if op in (Op.OPERATOR_IN, Op.OPERATOR_NOT_IN):
        items = ", ".join(_typed_literal(cond.field, kind, v) for v in cond.values)
        return f"{ref} {'in' if op == Op.OPERATOR_IN else 'not in'} [{items}]"
    if op == Op.OPERATOR_CONTAINS:
        raise InvalidArgument(f"filter on {cond.field!r}: contains needs a list, and the field is declared {TYPE_NAMES[kind]}")
    raise InvalidArgument(f"filter on {cond.field!r}: operator is missing or unknown")


def _condition(cond: types_pb2.FieldCondition, typed: Mapping[str, int] | None = None) -> str:
    ref = field_ref(cond.field)
    _check_operands(cond)
    if typed and cond.field in typed:
        return _typed_condition(cond, typed[cond.field])
    op = cond.operator
    if op in _COMPARISONS:
        if op in _ORDERED and cond.value.WhichOneof("kind") in ("string_value", "bool_value"):
            if cond.value.WhichOneof("kind") == "bool_value":
                raise InvalidArgument(f"filter on {cond.field!r}: cannot order booleans")
        return f"{ref} {_COMPARISONS[op]} {literal(cond.value)}"
    if op in (Op.OPERATOR_IN, Op.OPERATOR_NOT_IN):
        # Milvus fails on an IN list that mixes types (even ints with doubles): one list per type,
        # ints written as doubles when doubles are present.
        # (the int64 minimum is always written as a double, so it counts as one)
        mixed_numbers = any(
            v.WhichOneof("kind") == "double_value" or (v.WhichOneof("kind") == "int_value" and v.int_value == -(2**63))
            for v in cond.values
        )
        lists: dict[str, list[str]] = {}
        for v in cond.values:
            item = literal(v, int_as_float=mixed_numbers)
            kind = v.WhichOneof("kind")
            lists.setdefault("number" if kind in ("int_value", "double_value") else kind, []).append(item)
        keyword, joiner = ("in", " or ") if op == Op.OPERATOR_IN else ("not in", " and ")
        parts = [f"{ref} {keyword} [{', '.join(items)}]" for items in lists.values()]
        return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    if op == Op.OPERATOR_CONTAINS:
        if not cond.HasField("value"):
            raise InvalidArgument(f"filter on {cond.field!r}: CONTAINS needs a value")
        # json_contains compares an int literal only with ints, and metadata numbers are stored as
        # doubles (protobuf Struct): a double literal matches both.
        return f"json_contains({ref}, {literal(cond.value, int_as_float=True)})"
    raise InvalidArgument(f"filter on {cond.field!r}: operator is missing or unknown")


def compile_filter(flt: types_pb2.Filter | None, typed: Mapping[str, int] | None = None, depth: int = 0) -> str:
    """Milvus expression for flt; "" when flt is empty (matches everything). Fields in `typed`
    (declared metadata fields: name → MetadataField.Type) use their typed column."""
    if flt is None:
        return ""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"filter nested deeper than {MAX_DEPTH} levels")
    kind = flt.WhichOneof("kind")
    if kind is None:
        return ""
    if kind == "condition":
        return _condition(flt.condition, typed)
    if kind == "negation":
        inner = compile_filter(flt.negation, typed, depth + 1)
        if not inner:
            raise InvalidArgument("NOT of an empty filter")
        return f"not ({inner})"
    group = flt.all_of if kind == "all_of" else flt.any_of
    parts = [compile_filter(f, typed, depth + 1) for f in group.filters]
    if kind == "any_of" and parts and not all(parts):
        return ""  # an empty filter matches everything, and so does any OR containing one
    parts = [p for p in parts if p]
    if not parts:
        raise InvalidArgument(f"{kind} filter group is empty")
    joiner = " and " if kind == "all_of" else " or "
    return "(" + joiner.join(f"({p})" for p in parts) + ")"


# ---- a small text syntax for humans (CLI): `category == shoes and price < 50` ----------------

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>==|!=|<=|>=|<|>)|(?P<paren>[()\[\],])|(?P<word>[^\s()\[\],=!<>"']+))"""
)

_TEXT_OPS = {"==": Op.OPERATOR_EQ, "!=": Op.OPERATOR_NE, "<": Op.OPERATOR_LT, "<=": Op.OPERATOR_LE, ">": Op.OPERATOR_GT, ">=": Op.OPERATOR_GE}


def _scalar(token: str, quoted: bool) -> types_pb2.ScalarValue:
    if quoted:
        try:
            text = json.loads(token) if token.startswith('"') else re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.S)
            return types_pb2.ScalarValue(string_value=text)
        except ValueError as exc:  # a bad escape, a raw control character, a lone surrogate
            raise InvalidArgument(f"filter: bad string {token!r}: {exc}") from exc
    lowered = token.lower()
    if lowered in ("true", "false"):
        return types_pb2.ScalarValue(bool_value=lowered == "true")
    try:
        return types_pb2.ScalarValue(int_value=int(token))
    except ValueError:
        pass
    try:
        number = float(token)
        if math.isfinite(number):
            return types_pb2.ScalarValue(double_value=number)
    except ValueError:
        pass
    return types_pb2.ScalarValue(string_value=token)


def parse_filter_text(text: str) -> types_pb2.Filter:
    """Parses `a == b`, `a in [x, y]`, `tags contains red`, with and/or/not and parentheses."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidArgument(f"cannot parse filter near {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
    index = 0

    def peek() -> tuple[str, str]:
        return tokens[index] if index < len(tokens) else ("end", "")

    def take() -> tuple[str, str]:
        nonlocal index
        tok = peek()
        index += 1
        return tok

    def expr_or() -> types_pb2.Filter:
        items = [expr_and()]
        while peek()[0] == "word" and peek()[1].lower() == "or":
            take()
            items.append(expr_and())
        return items[0] if len(items) == 1 else types_pb2.Filter(any_of=types_pb2.FilterGroup(filters=items))

    def expr_and() -> types_pb2.Filter:
        items = [expr_not()]
        while peek()[0] == "word" and peek()[1].lower() == "and":
            take()
            items.append(expr_not())
        return items[0] if len(items) == 1 else types_pb2.Filter(all_of=types_pb2.FilterGroup(filters=items))

    def expr_not() -> types_pb2.Filter:
        if peek()[0] == "word" and peek()[1].lower() == "not":
            take()
            return types_pb2.Filter(negation=expr_not())
        if peek() == ("paren", "("):
            take()
            inner = expr_or()
            if take() != ("paren", ")"):
                raise InvalidArgument("filter: missing ')'")
            return inner
        return condition()

    def value() -> types_pb2.ScalarValue:
        kind, tok = take()
        if kind not in ("word", "str"):
            raise InvalidArgument(f"filter: expected a value, got {tok!r}")
        return _scalar(tok, kind == "str")

    def condition() -> types_pb2.Filter:
        kind, field = take()
        if kind != "word":
            raise InvalidArgument(f"filter: expected a field name, got {field!r}")
        field_ref(field)
        kind, op = take()
        cond = types_pb2.FieldCondition(field=field)
        if kind == "op":
            cond.operator = _TEXT_OPS[op]
            cond.value.CopyFrom(value())
        elif kind == "word" and op.lower() in ("in", "contains", "not"):
            lowered = op.lower()
            if lowered == "not":
                if take()[1].lower() != "in":
                    raise InvalidArgument("filter: expected 'not in'")
                lowered = "not in"
            if lowered == "contains":
                cond.operator = Op.OPERATOR_CONTAINS
                cond.value.CopyFrom(value())
            else:
                cond.operator = Op.OPERATOR_IN if lowered == "in" else Op.OPERATOR_NOT_IN
                if take() != ("paren", "["):
                    raise InvalidArgument("filter: expected '[' after in")
                while True:
                    cond.values.append(value())
                    sep = take()
                    if sep == ("paren", "]"):
                        break
                    if sep != ("paren", ","):
                        raise InvalidArgument("filter: expected ',' or ']' in list")
        else:
            raise InvalidArgument(f"filter: expected an operator after {field!r}, got {op!r}")
        return types_pb2.Filter(condition=cond)

    if not tokens:
        return types_pb2.Filter()
    result = expr_or()
    if index != len(tokens):
        raise InvalidArgument(f"filter: unexpected {peek()[1]!r}")
    return result


# ---- evaluation in Python (the retriever's filter stage, over candidates already fetched) -------

def _py(value: types_pb2.ScalarValue) -> object:
    return getattr(value, value.WhichOneof("kind") or "string_value")


def _type(value: object) -> str:
    """Milvus compares JSON values only within one type: bool, number (int or double), string."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "other"  # null, list, object: equal to no literal


def _equal(actual: object, expected: object) -> bool:
    return _type(actual) != "other" and _type(actual) == _type(expected) and actual == expected


def _ordered(actual: object, expected: object) -> bool:
    return _type(actual) in ("number", "string") and _type(actual) == _type(expected)


def matches(flt: types_pb2.Filter, metadata: dict, depth: int = 0) -> bool:
    """Same semantics as the compiled expression; a missing field never matches a comparison."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"filter nested deeper than {MAX_DEPTH} levels")
    kind = flt.WhichOneof("kind")
    if kind is None:
        return True
    if kind == "negation":
        return not matches(flt.negation, metadata, depth + 1)
    if kind == "all_of":
        return all(matches(f, metadata, depth + 1) for f in flt.all_of.filters)
    if kind == "any_of":
        return any(matches(f, metadata, depth + 1) for f in flt.any_of.filters)
    cond = flt.condition
    field_ref(cond.field)
    if cond.field not in metadata:
        return cond.operator in (Op.OPERATOR_NE, Op.OPERATOR_NOT_IN)
    actual = metadata[cond.field]
    op = cond.operator
    # Python's True == 1 and True < 2 are not Milvus's: values of different types never compare
    # equal (so != holds) and never order (so <, > fail).
    if op == Op.OPERATOR_EQ:
        return _equal(actual, _py(cond.value))
    if op == Op.OPERATOR_NE:
        return not _equal(actual, _py(cond.value))
    if op in _ORDERED:
        expected = _py(cond.value)
        if not _ordered(actual, expected):
            return False
        if op == Op.OPERATOR_LT:
            return actual < expected
        if op == Op.OPERATOR_LE:
            return actual <= expected
        if op == Op.OPERATOR_GT:
            return actual > expected
        return actual >= expected
    if op == Op.OPERATOR_IN:
        return any(_equal(actual, _py(v)) for v in cond.values)
    if op == Op.OPERATOR_NOT_IN:
        return not any(_equal(actual, _py(v)) for v in cond.values)
    if op == Op.OPERATOR_CONTAINS:
        return isinstance(actual, list) and any(_equal(item, _py(cond.value)) for item in actual)
    raise InvalidArgument(f"filter on {cond.field!r}: operator is missing or unknown")
