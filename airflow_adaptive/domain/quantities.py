"""Kubernetes resource quantities ("250m", "1.5", "4Gi"), parsed and printed as Kubernetes does.

This is a port of ``resource.ParseQuantity`` and ``Quantity.String()`` from
k8s.io/apimachinery/pkg/api/resource (quantity.go, amount.go, math.go, suffix.go). It is
checked against the Go library itself: tools/quantity-vectors prints what Go does with a
table of inputs and tests/unit/domain/test_quantities.py compares every entry.

Why a port and not a regex: a request we print must read back as the same amount in the
cluster, and Go's rules have corners a regex gets wrong:

* amounts finer than a nano are rounded *up* (away from zero) to 1n, never to zero;
* binary (Ki, Mi, ...) amounts above 2^63-1 are capped to it; decimal ones are not;
* ``"+"``, ``"-"``, ``"."``, ``"Gi"`` and ``"k"`` are valid and mean 0;
* when the input is already "nearly canonical", ``String()`` returns it verbatim, so
  ``"+1"``, ``"01"``, ``"1.500"`` and ``"1E3"`` print as typed;
* a decimal amount whose exponent has no SI suffix (1e21 as "1000E") prints *without* a
  suffix, i.e. as "1": we copy that too, so never feed such an amount back to Kubernetes;
* exponents are int32 in Go and wrap around ("1e4294967296" is 1).

Everything is exact (ints and ``Fraction``); no float is used to parse. Two limits are ours,
not Go's, and only refuse input Go would accept: strings longer than 1000 characters, and
amounts at or above 10^1001 when asked for as a number (Go can hold 10^2147483647 but we do
not build it).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal, Union

from airflow_adaptive.domain.errors import QuantityError

__all__ = [
    "Format",
    "ParsedQuantity",
    "canonicalize",
    "cpu_cores",
    "format_bandwidth",
    "format_cpu",
    "format_memory",
    "format_quantity",
    "memory_bytes",
    "parse",
    "parse_quantity",
]

Format = Literal["BinarySI", "DecimalSI", "DecimalExponent"]
BINARY_SI: Format = "BinarySI"
DECIMAL_SI: Format = "DecimalSI"
DECIMAL_EXPONENT: Format = "DecimalExponent"
_FORMATS = (BINARY_SI, DECIMAL_SI, DECIMAL_EXPONENT)

Number = Union[int, float, Fraction, Decimal]

MAX_TEXT_LENGTH = 1000
MAX_DECIMAL_EXPONENT = 1000

_EXAMPLES = "(examples: 512Mi, 4Gi, 1.5, 250m)"

# --- Go integer arithmetic --------------------------------------------------------------
# Go's int64 and int32 wrap around on overflow, and its / and % truncate toward zero.
# The library leans on both (overflow checks, MilliValue of huge amounts), so we copy them.

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64 = 1 << 64


def _wrap64(x: int) -> int:
    return ((x - _I64_MIN) % _U64) + _I64_MIN


def _wrap32(x: int) -> int:
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


def _quo(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem(a: int, b: int) -> int:
    return a - b * _quo(a, b)


def _mul_checked(a: int, b: int) -> tuple[int, bool]:
    """Go's int64MultiplyScale{,10,100,1000}: the wrapped product, and whether it is exact."""
    if a in (0, 1):
        return a * b, True
    if a == _I64_MIN and b != 1:
        return 0, False
    c = _wrap64(a * b)
    return c, _quo(c, b) == a


def _positive_scale(base: int, scale: int) -> tuple[int, bool]:
    """Go's positiveScaleInt64: base * 10**scale as int64 (scale is int32; < 0 means 0 steps)."""
    if scale == 0:
        return base, True
    if scale in (1, 2, 3, 6, 9):
        return _mul_checked(base, 10**scale)
    if base == 0:
        return 0, True
    value = base
    for _ in range(scale):  # a non-zero value overflows within 19 steps
        value, ok = _mul_checked(value, 10)
        if not ok:
            return 0, False
    return value, True


def _negative_scale(base: int, scale: int) -> tuple[int, bool]:
    """Go's negativeScaleInt64: base / 10**scale, rounded away from zero; exact or not."""
    if scale == 0:
        return base, True
    value, fraction = base, False
    for _ in range(scale):
        if not fraction and _rem(value, 10) != 0:
            fraction = True
        value = _quo(value, 10)
        if value == 0:
            if fraction:
                return (1 if base > 0 else -1), False
            return 0, True
    if fraction:
        value += 1 if base > 0 else -1
    return value, not fraction


def _strip_zeros(n: int) -> tuple[int, int]:
    """n without its trailing decimal zeros, and how many there were."""
    if n == 0:
        return 0, 0
    digits = str(abs(n))
    stripped = digits.rstrip("0")
    times = len(digits) - len(stripped)
    return (int(stripped) if n > 0 else -int(stripped)), times


# --- suffixes ---------------------------------------------------------------------------

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_EXPONENT = {e: s for s, e in _BINARY_SUFFIXES.items()}
_GO_INT = re.compile(r"[+-]?[0-9]+\Z")  # strconv.ParseInt(s, 10, 64) before the range check
_DIGITS = frozenset("0123456789")
_SUFFIX_LETTERS = frozenset("eEinumkKMGTP")


def _interpret(suffix: str) -> tuple[int, int, Format] | None:
    """Go's quantitySuffixer.interpret: (base, exponent, format) or None."""
    if suffix in _DECIMAL_SUFFIXES:
        return 10, _DECIMAL_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BINARY_SUFFIXES:
        return 2, _BINARY_SUFFIXES[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE" and _GO_INT.match(suffix[1:]):
        parsed = int(suffix[1:])
        if _I64_MIN <= parsed <= _I64_MAX:
            return 10, _wrap32(parsed), DECIMAL_EXPONENT  # Go: int32(parsed)
    return None


class _Malformed(Exception):
    pass


def _scan(s: str) -> tuple[bool, str, str, str, str]:
    """Go's parseQuantityString: (positive, value, num, denom, suffix); _Malformed if bad."""
    positive, pos, end = True, 0, len(s)
    if pos < end and s[0] in "+-":
        positive = s[0] == "+"
        pos += 1
    while True:  # leading zeros
        if pos >= end:
            return positive, "0", "0", "", ""
        if s[pos] != "0":
            break
        pos += 1
    i = pos
    while i < end and s[i] in _DIGITS:
        i += 1
    if i >= end:
        return positive, s, s[pos:], "", ""
    num, pos = s[pos:i] or "0", i
    denom = ""
    if s[pos] == ".":
        pos += 1
        i = pos
        while i < end and s[i] in _DIGITS:
            i += 1
        if i >= end:
            return positive, s, num, s[pos:], ""
        denom, pos = s[pos:i], i
    value, start = s[:pos], pos
    while pos < end and s[pos] in _SUFFIX_LETTERS:
        pos += 1
    if pos < end and s[pos] in "+-":
        pos += 1
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise _Malformed
    return positive, value, num, denom, s[start:]


def _inf_dec(value: str) -> tuple[int, int] | None:
    """inf.Dec.SetString on the scanner's number part: (unscaled, scale) or None."""
    sign = -1 if value[:1] == "-" else 1
    body = value[1:] if value[:1] in "+-" else value
    whole, _, frac = body.partition(".")
    if not (whole + frac):
        return None
    return sign * int(whole + frac), len(frac)


# --- the quantity -----------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedQuantity:
    """A parsed Kubernetes quantity, held the way Go holds it.

    Go keeps small amounts as an int64 times 10^scale and the rest as an arbitrary-precision
    decimal; ``value()`` and ``milli_value()`` round differently in the two (a negative
    amount rounds toward -inf in one and toward +inf in the other), so we keep the same split.
    """

    text: str
    format: Format
    mantissa: int  # amount = mantissa * 10**exponent
    exponent: int
    small: bool = False  # Go's int64Amount (mantissa is an int64, exponent an int32 scale)
    capped: bool = False  # a binary amount cut to 2^63-1 (Go then holds it at scale 0)
    verbatim: str | None = None  # the input, when Go prints it back as typed

    @property
    def amount(self) -> Fraction:
        """The exact amount. Raises QuantityError past 10^1000 (see the module docstring)."""
        if self.mantissa == 0:
            return Fraction(0)  # "0e2000000000" is 0: never build 10**2000000000 to multiply it by 0
        mantissa, exponent = _strip_zeros(self.mantissa)
        if exponent + self.exponent > MAX_DECIMAL_EXPONENT:
            raise QuantityError(
                f"{self.text!r} is too large to use (more than 10^{MAX_DECIMAL_EXPONENT})"
            )
        return Fraction(self.mantissa) * Fraction(10) ** self.exponent

    def string(self) -> str:
        """Go's Quantity.String()."""
        if self.verbatim is not None:
            return self.verbatim
        if self.mantissa == 0:
            return "0"
        fmt = self.format
        if fmt == BINARY_SI:
            amount = Fraction(self.mantissa) * Fraction(10) ** self.exponent
            if -1024 < amount < 1024 or amount.denominator != 1:
                fmt = DECIMAL_SI  # Go won't round a binary amount; it switches to decimal
            else:
                number, times = amount.numerator, 0
                while number % 1024 == 0:
                    number //= 1024
                    times += 1
                return str(number) + _BINARY_BY_EXPONENT.get(times * 10, "")
        number, exponent = self._canonical_decimal()
        if fmt == DECIMAL_EXPONENT:
            return str(number) + (f"e{exponent}" if exponent else "")
        return str(number) + _DECIMAL_BY_EXPONENT.get(exponent, "")  # Go drops unknown suffixes

    __str__ = string

    def _canonical_decimal(self) -> tuple[int, int]:
        """Go's AsCanonicalBytes: no trailing zeros, exponent lowered to a multiple of 3."""
        if self.small:  # int64Amount.AsCanonicalBytes
            amount, times = (self.mantissa, 0) if self.mantissa == _I64_MIN else _strip_zeros(self.mantissa)
            exponent = _wrap32(self.exponent + times)
            step = {1: 1, -2: 1, 2: 2, -1: 2}.get(_rem(exponent, 3), 0)
            if step:
                amount, ok = _mul_checked(amount, 10**step)
                if ok:
                    return amount, _wrap32(exponent - step)
                # on overflow Go starts again with a big decimal; int32 wrap included
                amount, times = _strip_zeros(self.mantissa)
                exponent = _wrap32(_wrap32(-_wrap32(-self.exponent)) + times)
            else:
                return amount, exponent
        else:
            amount, times = _strip_zeros(self.mantissa)
            exponent = _wrap32(self.exponent + times)
        while _rem(exponent, 3) != 0:
            amount *= 10
            exponent = _wrap32(exponent - 1)
        return amount, exponent

    def value(self) -> int:
        """Go's Quantity.Value(): the amount rounded up to an int64.

        Past the int64 range Go's answer is meaningless (it wraps or returns 0) and so is
        ours, deliberately the same; use ``amount`` for anything that large.
        """
        return self._scaled_value(0)

    def milli_value(self) -> int:
        """Go's Quantity.MilliValue(): thousandths, rounded up to an int64 (see ``value``)."""
        return self._scaled_value(-3)

    def _scaled_value(self, scale: int) -> int:
        if self.small:  # int64Amount.AsScaledInt64
            if self.exponent < scale:
                return _negative_scale(self.mantissa, _wrap32(scale - self.exponent))[0]
            return _positive_scale(self.mantissa, _wrap32(self.exponent - scale))[0]
        # inf.Dec: Go holds the rounded amount as unscaled * 10^-9 (or at scale 0 if capped)
        # and calls scaledValue(unscaled, 9, -scale).
        if self.mantissa == 0:
            return 0
        if self.capped:
            return _wrap64(_wrap64(self.mantissa) * 10 ** (-scale)) if scale else self.mantissa
        m, k = self.mantissa, self.exponent + 9  # unscaled = m * 10**k, k >= 0
        dif = 9 + scale
        divisor = 10**dif
        if m < 0 or (k < 19 and m * 10**k < _I64_MAX):
            low = _wrap64(m * pow(10, k, _U64))  # big.Int.Int64(): the low 64 bits
            return _quo(low, divisor) + (1 if _rem(low, divisor) else 0)
        if k >= dif:
            return _wrap64(m * pow(10, k - dif, _U64))
        q, r = divmod(m * 10**k, divisor)
        return _wrap64(_wrap64(q) + (1 if r else 0))


def _coerce_text(text: object, field: str) -> str:
    if isinstance(text, str):
        return text
    # Kubernetes reads an unquoted JSON/YAML number as the quantity it spells.
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        if abs(int(text)).bit_length() > 4 * MAX_TEXT_LENGTH:  # str() refuses past 4300 digits (ValueError)
            raise QuantityError(f"{field}: an integer of more than {MAX_TEXT_LENGTH} digits is not a Kubernetes quantity")
        return str(int(text))
    if isinstance(text, float) and math.isfinite(text):
        return repr(text)
    raise QuantityError(f"{field}: {text!r} is not a Kubernetes quantity {_EXAMPLES}")


def parse(text: str, field: str = "quantity") -> ParsedQuantity:
    """Go's resource.ParseQuantity. Raises QuantityError naming ``field`` and the text."""
    text = _coerce_text(text, field)
    if len(text) > MAX_TEXT_LENGTH:
        raise QuantityError(
            f"{field}: {text[:40]!r}... is not a Kubernetes quantity "
            f"(longer than {MAX_TEXT_LENGTH} characters)"
        )
    try:
        return _parse(text)
    except _Malformed:
        raise QuantityError(f"{field}: {text!r} is not a Kubernetes quantity {_EXAMPLES}") from None


def _parse(s: str) -> ParsedQuantity:
    if s == "":
        raise _Malformed
    if s == "0":
        return ParsedQuantity(s, DECIMAL_SI, 0, 0, small=True, verbatim=s)
    positive, value, num, denom, suffix = _scan(s)
    interpreted = _interpret(suffix)
    if interpreted is None:
        raise _Malformed
    base, exponent, fmt = interpreted

    # The int64 fast path, with Go's estimate of whether the digits fit.
    multiplier = 1
    if fmt == BINARY_SI:
        scale = 0
        if denom:
            precision = -1
        else:
            multiplier = 1 << exponent
            precision = 15 - len(num) - exponent * 3 // 10 - 1
    else:
        scale = exponent
        precision = 18 - (len(num) + len(denom))
    if precision >= 0:
        scale = _wrap32(scale - len(denom))
        if scale >= -9:
            shifted = num + denom
            digits = int(shifted)
            if digits * multiplier <= _I64_MAX:
                result = digits * multiplier if positive else -digits * multiplier
                if fmt == BINARY_SI:
                    keep = digits & 7 != 0
                else:
                    keep = scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"
                return ParsedQuantity(s, fmt, result, scale, small=True, verbatim=s if keep else None)

    # The arbitrary-precision path.
    dec = _inf_dec(value)
    if dec is None:
        raise _Malformed
    unscaled, inf_scale = dec
    if base == 10:
        inf_scale = _wrap32(inf_scale + _wrap32(-exponent))
    else:
        unscaled <<= exponent
    sign = -1 if unscaled < 0 else 1
    unscaled, exp = abs(unscaled), -inf_scale
    if unscaled and exp < -9:
        # Round up to a whole nano: "if you want some resources, you should get some".
        drop = -9 - exp
        if drop >= len(str(unscaled)):
            unscaled = 1
        else:
            q, r = divmod(unscaled, 10**drop)
            unscaled = q + (1 if r else 0)
        exp = -9
    capped = False
    if fmt == BINARY_SI and Fraction(unscaled) * Fraction(10) ** exp > _I64_MAX:
        unscaled, exp, capped = _I64_MAX, 0, True
    if fmt == BINARY_SI and 0 < Fraction(unscaled) * Fraction(10) ** exp < 1:
        fmt = DECIMAL_SI
    return ParsedQuantity(s, fmt, sign * unscaled, exp, capped=capped)


# --- the public helpers -----------------------------------------------------------------


def parse_quantity(text: str, field: str = "quantity") -> Fraction:
    """The exact amount a Kubernetes quantity string stands for, as ``ParseQuantity`` reads it."""
    quantity = parse(text, field)
    try:
        return quantity.amount
    except QuantityError as err:
        raise QuantityError(f"{field}: {err}") from None


def canonicalize(text: str, field: str = "quantity") -> str:
    """What Go prints for ``ParseQuantity(text).String()``."""
    return parse(text, field).string()


def _exact(value: Number, what: str) -> Fraction:
    """A number as an exact Fraction; floats by their shortest repr (0.1 is 1/10)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a number")
    if isinstance(value, numbers.Rational):
        return Fraction(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{what}: {value!r} is not a finite number")
        return Fraction(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {value!r} is not a finite number")
        return Fraction(repr(float(value)))
    raise ValueError(f"{what}: {value!r} is not a number")


def _nano_quantity(amount: Fraction, fmt: str) -> ParsedQuantity:
    """A Quantity built from an amount (no remembered text), rounded up to a nano like Go."""
    if fmt not in _FORMATS:
        raise ValueError(f"suffix_format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    nanos = amount * 10**9
    whole = math.ceil(nanos) if nanos > 0 else math.floor(nanos)
    return ParsedQuantity("", fmt, whole, -9)


def format_quantity(value: Number, suffix_format: Format) -> str:
    """Go's String() for a Quantity of ``value`` in ``suffix_format``.

    Binary amounts that are not whole, or are under 1024, print as DecimalSI like Go.
    Amounts finer than a nano are rounded up to one, as the parser does.
    """
    return _nano_quantity(_exact(value, "value"), suffix_format).string()


def _ceil_counting_noise(amount: Fraction, from_float: bool) -> int:
    """Round up to a whole unit; for floats, first forgive noise below one part in 10^12
    (0.1 + 0.2 cores is 300m, not 301m)."""
    if from_float:
        nearest = round(amount)
        if abs(amount - nearest) <= max(abs(amount) * Fraction(1, 10**12), Fraction(1, 10**9)):
            return int(nearest)
    return math.ceil(amount)


def _non_negative(value: Number, what: str) -> Fraction:
    amount = _exact(value, what)
    if amount < 0:
        raise ValueError(f"{what}: {value!r} is negative; resource amounts are >= 0")
    return amount


def _resource_amount(text: str, field: str) -> Fraction:
    amount = parse_quantity(text, field)
    if amount < 0:
        raise QuantityError(f"{field}: {text!r} is negative; Kubernetes resources are >= 0")
    return amount


def cpu_cores(text: str, field: str = "cpu") -> float:
    """Cores in a CPU quantity ("250m" -> 0.25). Negative quantities are refused."""
    amount = _resource_amount(text, field)
    try:
        return float(amount)
    except OverflowError:
        raise QuantityError(f"{field}: {text!r} is too large to be a CPU amount") from None


def memory_bytes(text: str, field: str = "memory") -> int:
    """Bytes in a memory quantity, rounded up to a whole byte ("0.5Ki" -> 512, "1m" -> 1)."""
    return math.ceil(_resource_amount(text, field))


def format_bandwidth(bytes_per_s: float) -> str:
    """A bandwidth for people (logs, reasons, the task log): "12.5 MiB/s", "800 KiB/s", "12 B/s"
    (3 significant digits; not a Kubernetes quantity)."""
    def digits(v: float) -> str:
        return f"{v:.0f}" if v >= 100 else f"{v:.3g}"

    for unit, scale in (("GiB/s", 2**30), ("MiB/s", 2**20), ("KiB/s", 2**10)):
        if bytes_per_s >= scale:
            return f"{digits(bytes_per_s / scale)} {unit}"
    return f"{digits(bytes_per_s)} B/s"


def format_cpu(cores: Number) -> str:
    """A CPU quantity for ``cores``, rounded up to whole millicores (1.5 -> "1500m", 2 -> "2").

    This is what ``NewMilliQuantity(m, DecimalSI).String()`` prints.
    """
    amount = _non_negative(cores, "cpu")
    millis = _ceil_counting_noise(amount * 1000, isinstance(cores, float))
    return ParsedQuantity("", DECIMAL_SI, millis, -3).string()


def format_memory(n_bytes: Number) -> str:
    """A memory quantity for ``n_bytes``, rounded up to a whole byte (1073741824 -> "1Gi").

    This is what ``NewQuantity(n, BinarySI).String()`` prints, so amounts under 1024 and
    amounts that are not a whole number of Ki print in decimal (1000 -> "1k", 1500 -> "1500").
    """
    amount = _non_negative(n_bytes, "memory")
    whole = _ceil_counting_noise(amount, isinstance(n_bytes, float))
    return ParsedQuantity("", BINARY_SI, whole, 0).string()
