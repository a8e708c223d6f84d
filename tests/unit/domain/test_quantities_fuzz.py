"""Kubernetes quantities under arbitrary input: a ParsedQuantity or a QuantityError naming the
field, never another exception; what we print reads back as the same amount."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.domain.errors import QuantityError
from airflow_adaptive.domain.quantities import (
    MAX_TEXT_LENGTH,
    canonicalize,
    cpu_cores,
    format_cpu,
    format_memory,
    format_quantity,
    memory_bytes,
    parse,
    parse_quantity,
)

from ...support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

SUFFIXES = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
#: Text shaped like a quantity: sign, digits, fraction, a suffix or an exponent (Go's grammar),
#: plus stray characters where a user's typo puts them.
quantity_like = st.builds(
    lambda sign, whole, frac, suffix, tail: f"{sign}{whole}{frac}{suffix}{tail}",
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", max_size=25),
    st.one_of(st.just(""), st.text("0123456789", max_size=12).map(lambda d: "." + d)),
    st.one_of(st.sampled_from(SUFFIXES), st.integers(-(2**40), 2**40).map(lambda e: f"e{e}"),
              st.text("eEinumkKMGTP+-0123456789", max_size=6)),
    st.one_of(st.just(""), st.text(max_size=3)),
)
any_text = st.one_of(quantity_like, st.text(max_size=40), st.text(max_size=MAX_TEXT_LENGTH + 20, alphabet="0123456789.eE+-"))


def _check_parsed_or_error(text, field="memory"):
    try:
        q = parse(text, field)
    except QuantityError as err:
        assert str(err).startswith(f"{field}: "), err
        assert "\n" not in str(err)
        return None
    # A parsed quantity is usable: it prints, and rounds to int64 like Go, without raising.
    assert isinstance(q.string(), str) and q.string()
    assert isinstance(q.value(), int) and isinstance(q.milli_value(), int)
    try:
        assert isinstance(q.amount, Fraction)
    except QuantityError as err:
        assert "too large" in str(err)
    return q


@given(any_text)
@example("")
@example("1e4294967296")  # the exponent wraps in int32, as in Go
@example("." * 2000)
@example("-0.000000000000000000001Ei")
@example("9" * 1000 + "Ei")
@example("0.0e2000000000")  # regression: amount built 10**2000000000 to multiply it by 0 (hung)
@example("0.0e-2000000000")
@fuzz(400)
def test_parse_any_text_is_a_quantity_or_a_quantity_error(text):
    _check_parsed_or_error(text)


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
@example(10**5000)  # regression: str() of an int past 4300 digits raised ValueError, not QuantityError
@example(float("inf"))
@fuzz()
def test_parse_non_text_values_as_yaml_gives_them(value):
    _check_parsed_or_error(value, field="resources.limits.memory")


@given(any_text)
@example("1e1000")
@example("1e1001")
@example("00e2000000000")  # regression: hung (see above)
@fuzz()
def test_cpu_and_memory_helpers_give_a_number_or_a_quantity_error(text):
    for helper, kind in ((cpu_cores, float), (memory_bytes, int)):
        try:
            amount = helper(text, "--x")
        except QuantityError as err:
            assert str(err).startswith("--x: ")
            continue
        assert isinstance(amount, kind) and amount >= 0


@given(quantity_like)
@fuzz(400)
def test_canonical_form_is_a_fixed_point(text):
    """What Go prints for a quantity prints the same again when read back."""
    try:
        once = canonicalize(text)
    except QuantityError:
        return
    assert canonicalize(canonicalize(once)) == canonicalize(once)


@given(
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", min_size=1, max_size=3),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda d: "." + d)),
    st.one_of(st.sampled_from(SUFFIXES), st.integers(-30, 18).map(lambda e: f"e{e}")),
)
@fuzz(400)
def test_printed_quantity_reads_back_as_the_same_amount(sign, whole, frac, suffix):
    """Round trip within the range Kubernetes can name (at most 999E: above it Go drops the
    suffix, see the quantities module docstring)."""
    text = f"{sign}{whole}{frac}{suffix}"
    q = parse(text)
    assert parse_quantity(q.string()) == q.amount, (text, q.string())


@given(st.integers(0, 2**62))
@example(1023)
@example(1024)
@example(2**62)
@fuzz()
def test_format_memory_round_trip(n_bytes):
    assert memory_bytes(format_memory(n_bytes)) == n_bytes


@given(st.integers(0, 10**15))
@fuzz()
def test_format_cpu_round_trip(millis):
    assert parse_quantity(format_cpu(Fraction(millis, 1000))) == Fraction(millis, 1000)


@given(st.floats(0, 1e15, allow_nan=False))
@example(1e-09)  # forgiven as noise: absolute 1e-9 too
@fuzz()
def test_format_of_a_float_covers_it(value):
    """Printed floats are rounded up to a unit, after forgiving float noise below one part in
    10^12 or 1e-9 of a unit (0.1 + 0.2 cores is 300m): never below the amount by more than that."""
    noise = max(1e-12 * value, 1e-9)
    assert value - noise <= memory_bytes(format_memory(value)) <= math.ceil(value) + 1
    assert value - noise <= cpu_cores(format_cpu(value)) <= value + 0.001 + noise


@given(st.fractions(min_value=-(10**17), max_value=10**17, max_denominator=10**12),
       st.sampled_from(["BinarySI", "DecimalSI", "DecimalExponent"]))
@fuzz()
def test_format_quantity_round_trip_to_the_nano(value, fmt):
    nanos = value * 10**9
    expected = Fraction(math.ceil(nanos) if nanos > 0 else math.floor(nanos), 10**9)
    assert parse_quantity(format_quantity(value, fmt)) == expected
