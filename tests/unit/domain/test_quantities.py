"""Our Kubernetes quantity port against the real Go library.

quantity_vectors.json is written by tools/quantity-vectors (k8s.io/apimachinery itself); every
entry must agree: validity, String(), Value(), MilliValue(), Format, the exact amount, and
String() of the same amount in each format.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from airflow_adaptive.domain.errors import QuantityError, UserError
from airflow_adaptive.domain.quantities import (
    canonicalize,
    cpu_cores,
    format_cpu,
    format_memory,
    format_quantity,
    memory_bytes,
    parse,
    parse_quantity,
)

VECTORS = json.loads((Path(__file__).parent / "quantity_vectors.json").read_text())
QUANTITIES = VECTORS["quantities"]
VALID = [v for v in QUANTITIES if v["valid"]]
INVALID = [v for v in QUANTITIES if not v["valid"]]


def _id(vector: dict) -> str:
    return repr(vector["input"])


def test_the_table_is_big_and_covers_both_outcomes():
    assert len(QUANTITIES) >= 80
    assert len(VALID) >= 60 and len(INVALID) >= 30
    assert VECTORS["library"].startswith("k8s.io/apimachinery v0.")


@pytest.mark.parametrize("vector", VALID, ids=_id)
def test_valid_quantities_match_go(vector):
    quantity = parse(vector["input"])
    assert quantity.string() == vector["canonical"]
    assert canonicalize(vector["input"]) == vector["canonical"]
    assert quantity.format == vector["format"]
    assert quantity.value() == vector["value"]
    assert quantity.milli_value() == vector["milli"]
    if "unscaled" in vector:  # Go prints the exact amount unless its scale is enormous
        exact = Fraction(int(vector["unscaled"])) / Fraction(10) ** vector["scale"]
        assert parse_quantity(vector["input"]) == exact
        for fmt, expected in vector["as"].items():
            assert format_quantity(exact, fmt) == expected, fmt


@pytest.mark.parametrize("vector", INVALID, ids=_id)
def test_invalid_quantities_are_rejected_like_go(vector):
    with pytest.raises(QuantityError):
        parse_quantity(vector["input"])
    with pytest.raises(QuantityError):
        canonicalize(vector["input"])


@pytest.mark.parametrize("vector", VECTORS["new_quantity_binary_si"], ids=lambda v: str(v["n"]))
def test_byte_counts_print_like_new_quantity_binary_si(vector):
    assert format_quantity(vector["n"], "BinarySI") == vector["string"]
    if vector["n"] >= 0:
        assert format_memory(vector["n"]) == vector["string"]


@pytest.mark.parametrize("vector", VECTORS["new_milli_quantity_decimal_si"], ids=lambda v: str(v["n"]))
def test_millicores_print_like_new_milli_quantity(vector):
    assert format_quantity(Fraction(vector["n"], 1000), "DecimalSI") == vector["string"]
    if vector["n"] >= 0:
        assert format_cpu(Fraction(vector["n"], 1000)) == vector["string"]


# --- hand-written cases -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["1Gb", "", " 1", "1.5.5", "1 Gi", "1e", "abc"])
def test_error_names_the_field_and_the_value_and_shows_examples(text):
    with pytest.raises(QuantityError) as info:
        parse_quantity(text, "memory")
    message = str(info.value)
    assert message.startswith("memory: ")
    assert repr(text) in message
    assert "512Mi" in message and "250m" in message
    assert "\n" not in message
    assert isinstance(info.value, UserError)


def test_error_message_exactly():
    with pytest.raises(QuantityError) as info:
        parse_quantity("1Gb", "memory")
    assert str(info.value) == "memory: '1Gb' is not a Kubernetes quantity (examples: 512Mi, 4Gi, 1.5, 250m)"


def test_the_brief_examples():
    assert canonicalize("1.5") == "1500m"
    assert canonicalize("0.5Gi") == "512Mi"
    assert canonicalize("1e3") == "1e3"
    assert canonicalize("1024Mi") == "1Gi"
    assert canonicalize("1.5Gi") == "1536Mi"
    assert parse_quantity("250m") == Fraction(1, 4)
    assert parse_quantity("4Gi") == 4 * 2**30
    assert parse_quantity("512M") == 512 * 10**6


def test_finer_than_a_nano_rounds_up_not_to_zero():
    assert parse_quantity("0.0000000001") == Fraction(1, 10**9)
    assert parse_quantity("1e-100") == Fraction(1, 10**9)
    assert parse_quantity("-1.5n") == Fraction(-2, 10**9)  # away from zero


def test_go_quirks_we_copy_on_purpose():
    assert parse_quantity("-") == 0 and parse_quantity("Gi") == 0 and parse_quantity(".") == 0
    assert canonicalize("+1") == "+1" and canonicalize("1.500") == "1.500"  # echoed as typed
    assert canonicalize("1000E") == "1"  # 10^21 has no SI suffix and Go drops it
    assert canonicalize("8Ei") == "9223372036854775807"  # binary amounts are capped
    assert canonicalize("1e4294967296") == "1e4294967296" and parse_quantity("1e4294967296") == 1


def test_parse_does_not_hang_where_go_would():
    # Go never returns from ParseQuantity("1e-2147483648") (it builds 10^(2^31)); we do.
    assert parse("1e-2147483648").string()
    with pytest.raises(QuantityError, match="too large"):
        parse_quantity("1e-2147483648", "cpu")


def test_our_own_limits():
    with pytest.raises(QuantityError, match="longer than 1000"):
        parse_quantity("1" * 1001, "cpu")
    assert parse_quantity("1e1000") == 10**1000
    with pytest.raises(QuantityError, match=r"^cpu: .*too large"):
        parse_quantity("1e1001", "cpu")


def test_numbers_are_read_like_unquoted_json():
    assert parse_quantity(2) == 2
    assert parse_quantity(0.5) == Fraction(1, 2)
    with pytest.raises(QuantityError, match="^cpu: True"):
        parse_quantity(True, "cpu")


def test_cpu_and_memory_helpers():
    assert cpu_cores("250m") == 0.25
    assert cpu_cores("2") == 2.0
    assert memory_bytes("4Gi") == 4 * 2**30
    assert memory_bytes("0.5Ki") == 512
    assert memory_bytes("1m") == 1  # rounded up to a whole byte
    assert memory_bytes("1.5") == 2
    with pytest.raises(QuantityError, match=r"^memory: '-1Gi' is negative"):
        memory_bytes("-1Gi")
    with pytest.raises(QuantityError, match=r"^requests\.cpu: '1x'"):
        cpu_cores("1x", "requests.cpu")


@pytest.mark.parametrize(
    ("cores", "text"),
    [(1.5, "1500m"), (2.0, "2"), (2, "2"), (0, "0"), (0.0001, "1m"), (0.25, "250m"),
     (0.1 + 0.2, "300m"), (1.0001, "1001m"), (12.3456, "12346m"), (1000, "1k")],
)
def test_format_cpu_rounds_up_to_millicores(cores, text):
    assert format_cpu(cores) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(1073741824, "1Gi"), (1000, "1k"), (1500, "1500"), (0, "0"), (1023.2, "1Ki"), (1025.5, "1026"),
     (1.5 * 2**30, "1536Mi"), (2**30 * (0.1 + 0.2) / 0.3, "1Gi"), (0.5, "1"), (1024 * 1024, "1Mi")],
)
def test_format_memory_prints_like_new_quantity_binary_si(n, text):
    assert format_memory(n) == text


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1Gi", True])
def test_format_helpers_refuse_what_is_not_an_amount(bad):
    with pytest.raises(ValueError):
        format_memory(bad)
    with pytest.raises(ValueError):
        format_cpu(bad)


def test_format_quantity_rounds_up_to_a_nano_and_checks_the_format():
    assert format_quantity(Fraction(1, 3), "DecimalSI") == "333333334n"
    assert format_quantity(1.5, "DecimalExponent") == "1500e-3"
    assert format_quantity(1536 * 2**20, "BinarySI") == "1536Mi"
    with pytest.raises(ValueError, match="suffix_format"):
        format_quantity(1, "binary")


def test_what_we_print_reads_back_as_the_same_amount():
    for n in [0, 1, 999, 1000, 1024, 1500, 2**30, 3 * 2**40 + 1, 10**12]:
        assert parse_quantity(format_memory(n)) == n
    for m in [0, 1, 250, 1000, 1500, 123456]:
        assert parse_quantity(format_cpu(Fraction(m, 1000))) == Fraction(m, 1000)
