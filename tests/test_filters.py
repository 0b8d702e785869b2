"""Metadata filters: Filter proto → Milvus expression (`compile_filter`), the CLI text syntax
(`parse_filter_text`) and the Python evaluation (`matches`).

The property tests parse every compiled expression back with an independent tokenizer and parser
of the little grammar compile_filter emits, and check that the parse rebuilds exactly the filter
that went in: user text can then only have landed inside string literals, never as syntax.
The integration test runs compiled expressions on a real Milvus and compares with `matches`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lookalike.errors import InvalidArgument
from lookalike.filters import FIELD_NAME, MAX_DEPTH, MAX_STRING, MAX_VALUES, compile_filter, matches, parse_filter_text
from lookalike.v1 import types_pb2

Op = types_pb2.FieldCondition.Operator
Filter = types_pb2.Filter


# ---- builders ------------------------------------------------------------------------------------

def sv(value: Any) -> types_pb2.ScalarValue:
    if isinstance(value, bool):
        return types_pb2.ScalarValue(bool_value=value)
    if isinstance(value, int):
        return types_pb2.ScalarValue(int_value=value)
    if isinstance(value, float):
        return types_pb2.ScalarValue(double_value=value)
    if isinstance(value, str):
        return types_pb2.ScalarValue(string_value=value)
    raise TypeError(value)


def cond(field: str, op: int, value: Any = None, values: list[Any] | None = None) -> Filter:
    c = types_pb2.FieldCondition(field=field, operator=op)
    if value is not None:
        c.value.CopyFrom(sv(value))
    for v in values or []:
        c.values.append(sv(v))
    return Filter(condition=c)


def eq(field: str, value: Any) -> Filter:
    return cond(field, Op.OPERATOR_EQ, value)


def all_of(*filters: Filter) -> Filter:
    return Filter(all_of=types_pb2.FilterGroup(filters=list(filters)))


def any_of(*filters: Filter) -> Filter:
    return Filter(any_of=types_pb2.FilterGroup(filters=list(filters)))


def not_(inner: Filter) -> Filter:
    return Filter(negation=inner)


# ---- an independent reader of the compiled expressions ---------------------------------------------

_EXPR_TOKEN = re.compile(
    r"""(?P<space>\s+)"""
    r"""|(?P<str>"(?:[^"\\\r\n]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")"""
    r"""|(?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"""
    r"""|(?P<op>==|!=|<=|>=|<|>)"""
    r"""|(?P<punct>[()\[\],])"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"""
)
KEYWORDS = {"metadata", "and", "or", "not", "in", "json_contains", "true", "false"}


def tokenize(expr: str) -> list[tuple[str, str]]:
    """Tokens outside string literals may only be syntax the compiler writes itself."""
    tokens = []
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        assert m, f"untokenizable text at {pos}: {expr[pos:pos + 30]!r} in {expr!r}"
        pos = m.end()
        kind = m.lastgroup
        if kind == "space":
            assert m.group() == " ", f"whitespace other than one space outside a literal: {expr!r}"
            continue
        if kind == "word":
            assert m.group() in KEYWORDS, f"unexpected word {m.group()!r} outside a literal: {expr!r}"
        tokens.append((kind, m.group()))
    return tokens


def balanced(tokens: list[tuple[str, str]]) -> bool:
    stack = []
    for kind, text in tokens:
        if kind != "punct" or text == ",":
            continue
        if text in "([":
            stack.append(text)
        elif not stack or stack.pop() != {")": "(", "]": "["}[text]:
            return False
    return not stack


def _lit_key(kind: str, value: Any) -> tuple[str, Any]:
    if kind == "bool":
        return ("b", value)
    if kind == "num":
        return ("n", value)
    return ("s", value)


def norm_value(value: types_pb2.ScalarValue) -> tuple[str, Any]:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return ("s", value.string_value)
    if kind == "bool_value":
        return ("b", value.bool_value)
    # ints and doubles are both numbers (5 == 5.0), compared as the doubles metadata holds (an IN
    # list mixing ints and doubles is written with doubles only)
    return ("n", float(getattr(value, kind)))


OP_NAMES = {
    Op.OPERATOR_EQ: "==", Op.OPERATOR_NE: "!=", Op.OPERATOR_LT: "<", Op.OPERATOR_LE: "<=",
    Op.OPERATOR_GT: ">", Op.OPERATOR_GE: ">=", Op.OPERATOR_IN: "in", Op.OPERATOR_NOT_IN: "not in",
    Op.OPERATOR_CONTAINS: "contains",
}


def norm_filter(flt: Filter) -> Any:
    """The tree compile_filter should produce, in the shape `ExprParser` reads back."""
    kind = flt.WhichOneof("kind")
    if kind == "condition":
        c = flt.condition
        op = OP_NAMES[c.operator]
        if op in ("in", "not in"):
            return ("cond", c.field, op, Counter(norm_value(v) for v in c.values))
        return ("cond", c.field, op, norm_value(c.value))
    if kind == "negation":
        return ("not", norm_filter(flt.negation))
    group = flt.all_of if kind == "all_of" else flt.any_of
    children = [norm_filter(f) for f in group.filters]
    return ("group", ("and" if kind == "all_of" else "or") if len(children) > 1 else None, children)


class ExprParser:
    """Recursive descent over exactly the grammar compile_filter writes."""

    def __init__(self, expr: str) -> None:
        self.tokens = tokenize(expr)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", "")

    def take(self, kind: str | None = None, text: str | None = None) -> str:
        tok = self.peek()
        assert kind is None or tok[0] == kind, f"expected {kind} {text}, got {tok}"
        assert text is None or tok[1] == text, f"expected {text!r}, got {tok}"
        self.i += 1
        return tok[1]

    def parse(self) -> Any:
        tree = self.expr()
        assert self.peek() == ("end", ""), f"trailing tokens: {self.tokens[self.i:]}"
        return tree

    def expr(self) -> Any:
        tok = self.peek()
        if tok == ("punct", "(") and self.peek(1) == ("punct", "("):
            return self.group()
        if tok == ("punct", "("):  # an IN split into one list per value type
            self.take()
            first = self.ref_in()
            joiner = self.peek()[1]
            assert (first[2], joiner) in (("in", "or"), ("not in", "and")), (first, joiner)
            values = Counter(first[3])
            while self.peek() == ("word", joiner):
                self.take()
                more = self.ref_in()
                assert more[1:3] == first[1:3]
                values.update(more[3])
            self.take("punct", ")")
            return ("cond", first[1], first[2], values)
        if tok == ("word", "not"):
            self.take()
            self.take("punct", "(")
            inner = self.expr()
            self.take("punct", ")")
            return ("not", inner)
        if tok == ("word", "json_contains"):
            self.take()
            self.take("punct", "(")
            field = self.ref()
            self.take("punct", ",")
            value = self.literal()
            self.take("punct", ")")
            return ("cond", field, "contains", value)
        field = self.ref()
        if self.peek()[0] == "op":
            return ("cond", field, self.take(), self.literal())
        return self.in_list(field)

    def group(self) -> Any:
        self.take("punct", "(")
        children = [self.paren()]
        joiner = None
        while self.peek()[0] == "word" and self.peek()[1] in ("and", "or"):
            word = self.take()
            assert joiner in (None, word), "mixed and/or in one group"
            joiner = word
            children.append(self.paren())
        self.take("punct", ")")
        return ("group", joiner, children)

    def paren(self) -> Any:
        self.take("punct", "(")
        inner = self.expr()
        self.take("punct", ")")
        return inner

    def ref(self) -> str:
        self.take("word", "metadata")
        self.take("punct", "[")
        field = json.loads(self.take("str"))
        self.take("punct", "]")
        assert FIELD_NAME.fullmatch(field)
        return field

    def ref_in(self) -> Any:
        return self.in_list(self.ref())

    def in_list(self, field: str) -> Any:
        if self.peek() == ("word", "not"):
            self.take()
            op = "not in"
        else:
            op = "in"
        self.take("word", "in")
        self.take("punct", "[")
        values = [self.literal()]
        while self.peek() == ("punct", ","):
            self.take()
            values.append(self.literal())
        self.take("punct", "]")
        kinds = {v[0] for v in values}
        assert len(kinds) == 1, f"IN list mixes types: {values}"
        return ("cond", field, op, Counter(values))

    def literal(self) -> tuple[str, Any]:
        kind, text = self.peek()
        self.i += 1
        if kind == "str":
            return ("s", json.loads(text))
        if kind == "num":
            return ("n", float(text))
        assert (kind, text) in (("word", "true"), ("word", "false")), f"not a literal: {(kind, text)}"
        return ("b", text == "true")


def read_back(expr: str) -> Any:
    tokens = tokenize(expr)
    assert balanced(tokens), f"unbalanced: {expr!r}"
    return ExprParser(expr).parse()


def depth(flt: Filter) -> int:
    kind = flt.WhichOneof("kind")
    if kind == "negation":
        return 1 + depth(flt.negation)
    if kind in ("all_of", "any_of"):
        return 1 + max((depth(f) for f in getattr(flt, kind).filters), default=0)
    return 0


# ---- strategies ------------------------------------------------------------------------------------

NASTY = [
    '"', "'", "\\", '\\"', '" or 1==1', '" or "1"=="1', '"] or metadata["x', "]", "[", ")", "((", ") or (true",
    "\n", "\r\n", "\t", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "é", "日本", "😀", "a😀b\U0010ffff",
    "not", "and", "or", "true", "metadata", 'json_contains(metadata["x"], 1)', "\\u0022", "\\x22", "${x}", "%s",
    "/*", "--", ";", "", " ", "a" * MAX_STRING,
]
texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=30), st.text(alphabet='"\\\'[]() \n', max_size=12))
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(texts, numbers, st.booleans())
field_names = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True),
    st.sampled_from(["and", "or", "not", "in", "metadata", "json_contains", "true", "_", "x" * 64]),
)


@st.composite
def conditions(draw: st.DrawFn) -> Filter:
    field = draw(field_names)
    op = draw(st.sampled_from(list(OP_NAMES)))
    if op in (Op.OPERATOR_IN, Op.OPERATOR_NOT_IN):
        return cond(field, op, values=draw(st.lists(scalars, min_size=1, max_size=5)))
    if op in (Op.OPERATOR_LT, Op.OPERATOR_LE, Op.OPERATOR_GT, Op.OPERATOR_GE):
        return cond(field, op, draw(st.one_of(texts, numbers)))
    return cond(field, op, draw(scalars))


filters = st.recursive(
    conditions(),
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=4).map(lambda fs: all_of(*fs)),
        st.lists(kids, min_size=1, max_size=4).map(lambda fs: any_of(*fs)),
        kids.map(not_),
    ),
    max_leaves=16,
)


# ---- property tests ------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filters)
@example(eq("name", '" or 1==1 or metadata["x"] == "'))
@example(eq("x", '\\" or true or \\"'))
@example(cond("x", Op.OPERATOR_IN, values=["]", 1, 2.5, True, "😀"]))
@example(not_(any_of(eq("a", "\n) or (true"), cond("tags", Op.OPERATOR_CONTAINS, '"]) or (metadata["a"'))))
def test_compiled_expression_is_user_text_only_inside_literals(flt: Filter) -> None:
    if depth(flt) > MAX_DEPTH:
        with pytest.raises(InvalidArgument):
            compile_filter(flt)
        return
    expr = compile_filter(flt)
    assert expr
    tokens = tokenize(expr)
    assert balanced(tokens), expr
    # every string literal decodes to a field name or to one of the user's strings
    user_strings = set(_strings(flt))
    for kind, text in tokens:
        if kind == "str":
            assert json.loads(text) in user_strings, (text, expr)
    # the expression means exactly the filter that went in
    assert read_back(expr) == norm_filter(flt), expr


def _strings(flt: Filter) -> list[str]:
    kind = flt.WhichOneof("kind")
    if kind == "condition":
        c = flt.condition
        values = [c.value, *c.values]
        return [c.field] + [v.string_value for v in values if v.WhichOneof("kind") == "string_value"]
    if kind == "negation":
        return _strings(flt.negation)
    return [s for f in getattr(flt, kind).filters for s in _strings(f)]


@settings(max_examples=200, deadline=None)
@given(filters, st.dictionaries(field_names, scalars | st.lists(scalars, max_size=3) | st.none(), max_size=4))
def test_matches_never_crashes_on_valid_filters(flt: Filter, metadata: dict) -> None:
    assume(depth(flt) <= MAX_DEPTH)
    assert matches(flt, metadata) in (True, False)
    assert matches(not_(flt), metadata) is not matches(flt, metadata)


@settings(max_examples=300, deadline=None)
@given(texts.filter(lambda s: len(s) <= MAX_STRING))
def test_any_string_value_is_one_json_literal(value: str) -> None:
    expr = compile_filter(eq("field", value))
    tokens = tokenize(expr)
    assert tokens == [
        ("word", "metadata"), ("punct", "["), ("str", '"field"'), ("punct", "]"), ("op", "=="), ("str", tokens[-1][1]),
    ]
    assert json.loads(tokens[-1][1]) == value
    # text syntax: a double-quoted JSON string round-trips through parse_filter_text too
    parsed = parse_filter_text(f"field == {json.dumps(value)}")
    assert parsed == eq("field", value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.lists(st.sampled_from(
    ["a", "b", "==", "!=", "<", ">=", "in", "not", "and", "or", "contains", "[", "]", ",", "(", ")", '"x"', "'y'", "1", "2.5", "true", '"', "\\"]
), max_size=12).map(" ".join))
def test_parse_filter_text_fuzz(text: str) -> None:
    """Any text gives a Filter or InvalidArgument, and a parsed filter compiles to a readable expression."""
    try:
        flt = parse_filter_text(text)
    except InvalidArgument:
        return
    try:
        expr = compile_filter(flt)
    except InvalidArgument:
        return
    if expr:
        assert read_back(expr) == norm_filter(flt)


# ---- compile_filter: examples ------------------------------------------------------------------------

def test_compile_empty() -> None:
    assert compile_filter(None) == ""
    assert compile_filter(Filter()) == ""


@pytest.mark.parametrize(
    "flt,expected",
    [
        (eq("category", "shoes"), 'metadata["category"] == "shoes"'),
        (cond("price", Op.OPERATOR_NE, 5), 'metadata["price"] != 5'),
        (cond("price", Op.OPERATOR_LT, 5), 'metadata["price"] < 5'),
        (cond("price", Op.OPERATOR_LE, 2.5), 'metadata["price"] <= 2.5'),
        (cond("price", Op.OPERATOR_GT, -1), 'metadata["price"] > -1'),
        (cond("price", Op.OPERATOR_GE, 1e20), 'metadata["price"] >= 1e+20'),
        (eq("in_stock", True), 'metadata["in_stock"] == true'),
        (eq("in_stock", False), 'metadata["in_stock"] == false'),
        (cond("c", Op.OPERATOR_IN, values=["a", "b"]), 'metadata["c"] in ["a", "b"]'),
        (cond("c", Op.OPERATOR_NOT_IN, values=[1, 2]), 'metadata["c"] not in [1, 2]'),
        (cond("c", Op.OPERATOR_IN, values=[1, 2.5]), 'metadata["c"] in [1.0, 2.5]'),
        (cond("c", Op.OPERATOR_IN, values=["a", 1, True, "b"]), '(metadata["c"] in ["a", "b"] or metadata["c"] in [1] or metadata["c"] in [true])'),
        (cond("c", Op.OPERATOR_NOT_IN, values=["a", 1]), '(metadata["c"] not in ["a"] and metadata["c"] not in [1])'),
        (cond("tags", Op.OPERATOR_CONTAINS, "red"), 'json_contains(metadata["tags"], "red")'),
        (cond("sizes", Op.OPERATOR_CONTAINS, 42), 'json_contains(metadata["sizes"], 42.0)'),
        (not_(eq("a", 1)), 'not (metadata["a"] == 1)'),
        (all_of(eq("a", 1), eq("b", 2)), '((metadata["a"] == 1) and (metadata["b"] == 2))'),
        (any_of(eq("a", 1), eq("b", 2)), '((metadata["a"] == 1) or (metadata["b"] == 2))'),
        (all_of(eq("a", 1)), "((metadata[\"a\"] == 1))"),
        (all_of(Filter(), eq("a", 1)), '((metadata["a"] == 1))'),  # an empty filter is TRUE: dropped from AND
        (eq("q", 'say "hi"\\'), r'metadata["q"] == "say \"hi\"\\"'),
        (eq("u", "é😀\n"), 'metadata["u"] == "é😀\\n"'),  # non-ASCII raw: Milvus rejects \ud83d\ude00
        (eq("big", -(2**63)), 'metadata["big"] == -9.223372036854776e+18'),  # Milvus cannot parse the int64 minimum
        (eq("big", 2**63 - 1), 'metadata["big"] == 9223372036854775807'),
    ],
)
def test_compile_examples(flt: Filter, expected: str) -> None:
    assert compile_filter(flt) == expected
    read_back(expected)


def test_any_of_with_an_empty_filter_matches_everything() -> None:
    flt = any_of(Filter(), eq("a", 1))
    assert compile_filter(flt) == ""
    assert compile_filter(all_of(eq("b", 2), flt)) == '((metadata["b"] == 2))'
    assert matches(flt, {}) and matches(flt, {"a": 2})


@pytest.mark.parametrize(
    "field",
    ["a b", 'x"]', "1x", 'metadata["a"]', "", "a" * 65, "a-b", "a.b", "é", "a\n", "\na", "a\x00", "a]", 'a"', "a\\", " a", "a;", "${a}"],
)
def test_invalid_field_names(field: str) -> None:
    with pytest.raises(InvalidArgument):
        compile_filter(eq(field, 1))
    with pytest.raises(InvalidArgument):
        matches(eq(field, 1), {field: 1})


def test_longest_field_name() -> None:
    assert compile_filter(eq("a" * 64, 1)) == f'metadata["{"a" * 64}"] == 1'


@given(st.text(max_size=70))
def test_field_names_are_identifiers_or_refused(field: str) -> None:
    try:
        expr = compile_filter(eq(field, 1))
    except InvalidArgument:
        assert not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", field)
        return
    assert expr == f'metadata["{field}"] == 1'


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers(number: float) -> None:
    with pytest.raises(InvalidArgument):
        compile_filter(eq("x", number))
    with pytest.raises(InvalidArgument):
        compile_filter(cond("x", Op.OPERATOR_IN, values=[1.0, number]))
    with pytest.raises(InvalidArgument):
        compile_filter(cond("x", Op.OPERATOR_CONTAINS, number))


@pytest.mark.parametrize(
    "flt",
    [
        all_of(),
        any_of(),
        all_of(Filter()),
        all_of(Filter(), Filter()),
        not_(Filter()),
        not_(all_of()),
        all_of(eq("a", 1), any_of()),
        any_of(eq("a", 1), not_(Filter())),
    ],
    ids=["all_of", "any_of", "all_of-empty", "all_of-empties", "not-empty", "not-all_of", "nested-any_of", "nested-not"],
)
def test_empty_groups_and_negations(flt: Filter) -> None:
    with pytest.raises(InvalidArgument):
        compile_filter(flt)


@pytest.mark.parametrize(
    "flt",
    [
        Filter(condition=types_pb2.FieldCondition(field="a")),  # no operator
        Filter(condition=types_pb2.FieldCondition(field="a", operator=99)),  # unknown operator
        cond("a", Op.OPERATOR_EQ),  # no value
        cond("a", Op.OPERATOR_EQ, values=[1]),  # values instead of value
        cond("a", Op.OPERATOR_IN),  # no values
        cond("a", Op.OPERATOR_NOT_IN, value=1),
        cond("a", Op.OPERATOR_CONTAINS),
        cond("a", Op.OPERATOR_LT, True),  # booleans have no order
        cond("a", Op.OPERATOR_GE, False),
        Filter(condition=types_pb2.FieldCondition(field="a", operator=Op.OPERATOR_EQ, value=types_pb2.ScalarValue())),
        cond("a", Op.OPERATOR_IN, values=["x" * (MAX_STRING + 1)]),
        eq("a", "x" * (MAX_STRING + 1)),
        cond("a", Op.OPERATOR_IN, values=list(range(MAX_VALUES + 1))),
    ],
)
def test_invalid_conditions(flt: Filter) -> None:
    with pytest.raises(InvalidArgument):
        compile_filter(flt)


def test_limits_inclusive() -> None:
    assert compile_filter(eq("a", "x" * MAX_STRING))
    assert compile_filter(cond("a", Op.OPERATOR_IN, values=list(range(MAX_VALUES))))


def _nested(levels: int, kind: str) -> Filter:
    flt = eq("a", 1)
    for _ in range(levels):
        flt = not_(flt) if kind == "not" else all_of(flt) if kind == "all_of" else any_of(eq("b", 2), flt)
    return flt


@pytest.mark.parametrize("kind", ["not", "all_of", "any_of"])
def test_depth_limit(kind: str) -> None:
    ok = _nested(MAX_DEPTH, kind)
    expr = compile_filter(ok)
    read_back(expr)
    matches(ok, {"a": 1})
    too_deep = _nested(MAX_DEPTH + 1, kind)
    with pytest.raises(InvalidArgument):
        compile_filter(too_deep)
    with pytest.raises(InvalidArgument):
        matches(too_deep, {"a": 1})


# ---- matches ----------------------------------------------------------------------------------------

ROW = {"category": "shoes", "price": 5.0, "qty": 3, "tags": ["red", "blue", 1.0], "in_stock": True, "flag": 1.0, "nothing": None}


@pytest.mark.parametrize(
    "flt,expected",
    [
        (Filter(), True),
        (eq("category", "shoes"), True),
        (eq("category", "Shoes"), False),
        (eq("price", 5), True),  # Struct numbers are doubles: 5 == 5.0
        (eq("qty", 3.0), True),
        (cond("category", Op.OPERATOR_NE, "shoes"), False),
        (cond("category", Op.OPERATOR_NE, "hats"), True),
        (cond("price", Op.OPERATOR_LT, 6), True),
        (cond("price", Op.OPERATOR_LT, 5), False),
        (cond("price", Op.OPERATOR_LE, 5), True),
        (cond("price", Op.OPERATOR_GT, 4.5), True),
        (cond("price", Op.OPERATOR_GE, 5.5), False),
        (cond("category", Op.OPERATOR_GT, "a"), True),  # strings order
        (cond("category", Op.OPERATOR_LT, 3), False),  # string vs number: never ordered
        (cond("price", Op.OPERATOR_LT, "z"), False),
        (cond("category", Op.OPERATOR_IN, values=["hats", "shoes"]), True),
        (cond("category", Op.OPERATOR_IN, values=["hats"]), False),
        (cond("category", Op.OPERATOR_NOT_IN, values=["hats"]), True),
        (cond("price", Op.OPERATOR_IN, values=[1, 5]), True),
        (cond("tags", Op.OPERATOR_CONTAINS, "red"), True),
        (cond("tags", Op.OPERATOR_CONTAINS, "green"), False),
        (cond("tags", Op.OPERATOR_CONTAINS, 1), True),
        (cond("category", Op.OPERATOR_CONTAINS, "s"), False),  # not a list
        # a missing field: comparisons fail, != and NOT IN hold
        (eq("missing", 1), False),
        (cond("missing", Op.OPERATOR_LT, 1), False),
        (cond("missing", Op.OPERATOR_NE, 1), True),
        (cond("missing", Op.OPERATOR_IN, values=[1]), False),
        (cond("missing", Op.OPERATOR_NOT_IN, values=[1]), True),
        (cond("missing", Op.OPERATOR_CONTAINS, 1), False),
        (not_(eq("missing", 1)), True),
        # null compares equal to nothing
        (eq("nothing", "None"), False),
        (cond("nothing", Op.OPERATOR_NE, 1), True),
        # booleans are not numbers (Milvus: true != 1, and true is not < 2)
        (eq("in_stock", True), True),
        (eq("in_stock", 1), False),
        (eq("flag", True), False),
        (cond("flag", Op.OPERATOR_NE, True), True),
        (cond("in_stock", Op.OPERATOR_LT, 2), False),
        (cond("in_stock", Op.OPERATOR_IN, values=[1]), False),
        (cond("flag", Op.OPERATOR_IN, values=[True]), False),
        (cond("tags", Op.OPERATOR_CONTAINS, True), False),
        # a list equals no scalar
        (eq("tags", "red"), False),
        (cond("tags", Op.OPERATOR_NE, "red"), True),
        # combinations
        (all_of(eq("category", "shoes"), cond("price", Op.OPERATOR_LT, 10)), True),
        (all_of(eq("category", "shoes"), cond("price", Op.OPERATOR_LT, 1)), False),
        (any_of(eq("category", "hats"), cond("price", Op.OPERATOR_LT, 10)), True),
        (any_of(eq("category", "hats"), eq("price", 1)), False),
        (not_(any_of(eq("category", "hats"), eq("price", 1))), True),
        (all_of(Filter(), eq("category", "shoes")), True),
    ],
)
def test_matches_examples(flt: Filter, expected: bool) -> None:
    assert matches(flt, ROW) is expected


def test_matches_injection_strings_are_plain_values() -> None:
    evil = '" or 1==1 or metadata["x"] == "'
    assert not matches(eq("category", evil), ROW)
    assert matches(eq("category", evil), {"category": evil})


# ---- parse_filter_text ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text,expected",
    [
        ("", Filter()),
        ("   ", Filter()),
        ("category == shoes", eq("category", "shoes")),
        ("category==shoes", eq("category", "shoes")),
        ('category == "red shoes"', eq("category", "red shoes")),
        ("category == 'red shoes'", eq("category", "red shoes")),
        (r"q == 'it\'s'", eq("q", "it's")),
        (r"q == 'a\\b'", eq("q", "a\\b")),
        (r'q == "say \"hi\""', eq("q", 'say "hi"')),
        (r'q == "\u00e9\n"', eq("q", "é\n")),
        ('q == "1"', eq("q", "1")),
        ("price < 50", cond("price", Op.OPERATOR_LT, 50)),
        ("price <= 2.5", cond("price", Op.OPERATOR_LE, 2.5)),
        ("price > -3", cond("price", Op.OPERATOR_GT, -3)),
        ("price >= 1e3", cond("price", Op.OPERATOR_GE, 1000.0)),
        ("price != 0", cond("price", Op.OPERATOR_NE, 0)),
        ("flag == TRUE", eq("flag", True)),
        ("flag == false", eq("flag", False)),
        ("x == nan", eq("x", "nan")),  # not a finite number: a word
        ("x == inf", eq("x", "inf")),
        ("x == 99999999999999999999", eq("x", 1e20)),  # past int64: a double
        ("c in [a, 'b c', 3]", cond("c", Op.OPERATOR_IN, values=["a", "b c", 3])),
        ("c not in [a]", cond("c", Op.OPERATOR_NOT_IN, values=["a"])),
        ("c NOT IN [a]", cond("c", Op.OPERATOR_NOT_IN, values=["a"])),
        ("tags contains red", cond("tags", Op.OPERATOR_CONTAINS, "red")),
        ("not a == 1", not_(eq("a", 1))),
        ("not not a == 1", not_(not_(eq("a", 1)))),
        ("a == 1 and b == 2", all_of(eq("a", 1), eq("b", 2))),
        ("a == 1 AND b == 2 and c == 3", all_of(eq("a", 1), eq("b", 2), eq("c", 3))),
        ("a == 1 or b == 2 and c == 3", any_of(eq("a", 1), all_of(eq("b", 2), eq("c", 3)))),
        ("(a == 1 or b == 2) and c == 3", all_of(any_of(eq("a", 1), eq("b", 2)), eq("c", 3))),
        ("not (a == 1 or b == 2)", not_(any_of(eq("a", 1), eq("b", 2)))),
        ("((a == 1))", eq("a", 1)),
    ],
)
def test_parse_filter_text(text: str, expected: Filter) -> None:
    assert parse_filter_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a ==",
        "== 1",
        "a = 1",
        "a 1",
        "a",
        "a == 1 b == 2",
        "a == 1 and",
        "a == 1 or or b == 2",
        "(a == 1",
        "a == 1)",
        "()",
        "a in x",
        "a in [",
        "a in []",
        "a in [1,",
        "a in [1 2]",
        "a in [1,]",
        "a not x [1]",
        "a contains",
        '"a" == 1',
        "1x == 2",
        "a-b == 2",
        'a == "unterminated',
        r'a == "\q"',  # not a JSON escape
        'a == "raw\nnewline"',  # a raw control character in a JSON string
        r'a == "\ud800"',  # a lone surrogate
        "a == ==",
        "a == (",
        "a == [",
        "!",
        "a !== 1",
    ],
)
def test_parse_filter_text_errors(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_filter_text(text)


def test_parse_then_compile() -> None:
    flt = parse_filter_text('category == "shoes" and price < 50 and tags contains red')
    assert compile_filter(flt) == (
        '((metadata["category"] == "shoes") and (metadata["price"] < 50) and (json_contains(metadata["tags"], "red")))'
    )


def test_parse_injection_attempts_stay_values() -> None:
    flt = parse_filter_text("""a == '" or 1==1 or metadata["b"] == "'""")
    assert flt == eq("a", '" or 1==1 or metadata["b"] == "')
    expr = compile_filter(flt)
    assert read_back(expr) == norm_filter(flt)
    with pytest.raises(InvalidArgument):
        parse_filter_text('a == 1 or 1==1')  # 1 is not a field name
    with pytest.raises(InvalidArgument):
        parse_filter_text('metadata["a"] == 1')


# ---- against a real Milvus ---------------------------------------------------------------------------

MILVUS_ROWS: dict[str, dict[str, Any]] = {
    "shoes": {"category": "shoes", "price": 5.0, "tags": ["red", "blue"], "in_stock": True},
    "hats": {"category": "hats", "price": 50.5, "tags": ["green", 1.0], "in_stock": False},
    "quote": {"category": 'say "hi"', "price": 1.0, "flag": 1.0},
    "backslash": {"category": "back\\slash", "note": "line\nbreak"},
    "unicode": {"category": "é😀日本", "price": 0.0},
    "inject": {"category": '" or 1==1', "price": -2.5},
    "inject2": {"category": 'shoes" or metadata["price"] > 0 or "', "tags": []},
    "bracket": {"category": '"] or metadata["x', "price": "5"},
    "empty": {},
    "null": {"category": None, "flag": True},
    "big": {"price": 1e20, "category": "Shoes"},
}

MILVUS_FILTERS = [
    eq("category", "shoes"),
    eq("category", 'say "hi"'),
    eq("category", "back\\slash"),
    eq("note", "line\nbreak"),
    eq("category", "é😀日本"),
    eq("category", '" or 1==1'),
    eq("category", 'shoes" or metadata["price"] > 0 or "'),
    eq("category", '"] or metadata["x'),
    eq("category", '" or 1==1 or metadata["category"] == "'),  # matches no row at all
    eq("category", 'shoes" or "1"=="1'),
    eq("category", "\\"),
    eq("category", '\\" or true or \\"'),
    cond("category", Op.OPERATOR_NE, "shoes"),
    cond("category", Op.OPERATOR_GT, "i"),
    eq("price", 5),
    eq("price", 5.0),
    cond("price", Op.OPERATOR_LT, 5),
    cond("price", Op.OPERATOR_LE, 5),
    cond("price", Op.OPERATOR_GE, 0),
    cond("price", Op.OPERATOR_GT, -3),
    cond("price", Op.OPERATOR_NE, 5),
    cond("price", Op.OPERATOR_IN, values=[5, 1]),
    cond("price", Op.OPERATOR_IN, values=[5, 50.5]),
    cond("price", Op.OPERATOR_IN, values=[5, "5"]),
    cond("category", Op.OPERATOR_IN, values=["shoes", '" or 1==1', True, 0]),
    cond("category", Op.OPERATOR_NOT_IN, values=["shoes", "hats", 1]),
    cond("tags", Op.OPERATOR_CONTAINS, "red"),
    cond("tags", Op.OPERATOR_CONTAINS, 1),
    cond("tags", Op.OPERATOR_CONTAINS, '"red"'),
    eq("in_stock", True),
    eq("flag", True),
    eq("flag", 1),
    cond("flag", Op.OPERATOR_NE, True),
    cond("in_stock", Op.OPERATOR_LT, 2),
    eq("price", -(2**63)),
    not_(eq("category", "shoes")),
    all_of(eq("category", "shoes"), cond("price", Op.OPERATOR_LT, 10)),
    any_of(eq("category", "hats"), cond("tags", Op.OPERATOR_CONTAINS, "red"), eq("note", "line\nbreak")),
    not_(any_of(eq("category", '" or 1==1'), all_of(cond("price", Op.OPERATOR_GT, 1), not_(eq("in_stock", False))))),
    parse_filter_text("""category == 'shoes" or 1==1 or "' or price > 100"""),
]


@pytest.fixture(scope="module")
def milvus_rows(milvus_uri: str) -> Any:
    """A Milvus collection shaped like vectorindex's, holding MILVUS_ROWS; yields (client, name)."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=milvus_uri, timeout=30)
    name = "lk_test_filters"
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("namespace", DataType.VARCHAR, max_length=64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index("vector", index_type="FLAT", metric_type="L2", params={})
        client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")
        rows = [
            {"id": key, "namespace": "ns", "metadata": meta, "vector": [float(i), 0.0]}
            for i, (key, meta) in enumerate(MILVUS_ROWS.items())
        ]
        client.insert(name, rows)
        # one strong read sees every row; later reads need not wait for a fresh timestamp each
        assert len(client.query(name, filter='namespace == "ns"', output_fields=["id"], consistency_level="Strong")) == len(rows)
        yield client, name
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()


def _milvus_select(milvus_rows: Any, flt: Filter) -> tuple[str, set[str], set[str]]:
    client, name = milvus_rows
    expr = compile_filter(flt)
    got = {
        r["id"]
        for r in client.query(name, filter=f'(namespace == "ns") and ({expr})', output_fields=["id"], consistency_level="Eventually")
    }
    want = {key for key, meta in MILVUS_ROWS.items() if matches(flt, meta)}
    return expr, got, want


@pytest.mark.integration
def test_compiled_filters_on_real_milvus(milvus_rows: Any) -> None:
    failures = []
    for flt in MILVUS_FILTERS:
        expr, got, want = _milvus_select(milvus_rows, flt)
        if got != want:
            failures.append(f"{expr}\n  milvus: {sorted(got)}\n  python: {sorted(want)}")
    assert not failures, "\n".join(failures)
    # the injection attempts select only the row holding that literal string
    for key in ("inject", "inject2", "bracket", "quote", "backslash"):
        _, got, _ = _milvus_select(milvus_rows, eq("category", MILVUS_ROWS[key]["category"]))
        assert got == {key}
    _, got, _ = _milvus_select(milvus_rows, eq("category", 'shoes" or "1"=="1'))
    assert got == set()


_row_fields = sorted({k for meta in MILVUS_ROWS.values() for k in meta})
_row_scalars = sorted(
    {repr(v) for meta in MILVUS_ROWS.values() for v in meta.values() if isinstance(v, (str, int, float))}
    | {repr(v) for meta in MILVUS_ROWS.values() for vs in meta.values() if isinstance(vs, list) for v in vs}
)


@st.composite
def row_conditions(draw: st.DrawFn) -> Filter:
    field = draw(st.sampled_from(_row_fields))
    value_strategy = st.one_of(st.sampled_from(_row_scalars).map(eval), scalars)
    op = draw(st.sampled_from(list(OP_NAMES)))
    if op in (Op.OPERATOR_IN, Op.OPERATOR_NOT_IN):
        return cond(field, op, values=draw(st.lists(value_strategy, min_size=1, max_size=4)))
    value = draw(value_strategy)
    if op in (Op.OPERATOR_LT, Op.OPERATOR_LE, Op.OPERATOR_GT, Op.OPERATOR_GE) and isinstance(value, bool):
        op = Op.OPERATOR_EQ
    return cond(field, op, value)


row_filters = st.recursive(
    row_conditions(),
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3).map(lambda fs: all_of(*fs)),
        st.lists(kids, min_size=1, max_size=3).map(lambda fs: any_of(*fs)),
        kids.map(not_),
    ),
    max_leaves=6,
)


@pytest.mark.integration
def test_random_filters_on_real_milvus_agree_with_matches(milvus_rows: Any) -> None:
    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(row_filters)
    def check(flt: Filter) -> None:
        assume(depth(flt) <= MAX_DEPTH)
        expr, got, want = _milvus_select(milvus_rows, flt)
        assert got == want, f"{expr}\n  milvus: {sorted(got)}\n  python: {sorted(want)}"

    check()


def test_in_list_with_int64_minimum_is_all_doubles() -> None:
    """Found by the Milvus property test: the int64 minimum is written as a double, so the whole IN
    list must be doubles (Milvus asserts on mixed int/double lists)."""
    from lookalike.v1 import types_pb2 as t

    flt = t.Filter(condition=t.FieldCondition(
        field="category", operator=t.FieldCondition.OPERATOR_IN,
        values=[t.ScalarValue(int_value=0), t.ScalarValue(int_value=-(2**63))]))
    assert compile_filter(flt) == 'metadata["category"] in [0.0, -9.223372036854776e+18]'
