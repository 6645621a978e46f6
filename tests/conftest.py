"""Shared fixtures for the test suite (keep minimal)."""

import sys

import numpy as np
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """torch's global generator seeded before every test's setup (its module- and session-scoped fixtures
    included): torch seeds it differently in every process, so the weights of a model a test builds with
    torch's default initialisation would change from run to run, and a test that fails once in many draws
    would fail at random, on CI."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture
def rng():
    """A seeded NumPy generator: every randomized test is reproducible."""
    return np.random.default_rng(20240611)


def _describe(mask, inputs, got, want, limit=8):
    idx = np.flatnonzero(mask)[:limit]
    rows = []
    for i in idx:
        x = "" if inputs is None else f"x={np.asarray(inputs).ravel()[i]!r} "
        rows.append(f"  [{i}] {x}got={got[i]!r} want={want[i]!r}")
    return f"{int(mask.sum())} of {mask.size} differ:\n" + "\n".join(rows)


def same_values(got, want, *, zero_sign=True):
    """Boolean mask: equal as real values, NaN matches NaN (any sign), and (if ``zero_sign``) the
    sign of zero must agree. Compares in float64, which holds every value of the formats here."""
    got = np.asarray(got, dtype=np.float64).ravel()
    want = np.asarray(want, dtype=np.float64).ravel()
    eq = (got == want) | (np.isnan(got) & np.isnan(want))
    if zero_sign:
        eq &= ~((got == 0) & (want == 0) & (np.signbit(got) != np.signbit(want)))
    return eq


@pytest.fixture
def assert_same():
    """``assert_same(got, want, inputs=None, zero_sign=True, what="")``: bit-level equality of two
    arrays of format values (NaN as NaN-ness, the sign of zero counted), with the first mismatches
    and their inputs in the failure message."""

    def check(got, want, inputs=None, zero_sign=True, what=""):
        got = np.asarray(got)
        want = np.asarray(want)
        assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
        g = got.astype(np.float64).ravel()
        w = want.astype(np.float64).ravel()
        eq = same_values(g, w, zero_sign=zero_sign)
        assert eq.all(), f"{what}: " + _describe(~eq, inputs, g, w)

    return check


def decode_all_codes(fmt):
    """Every code of a FloatFormat or FixedFormat of at most 16 bits, decoded from the format's
    defining fields (exp, man, bias, subnormals, specials, signed, has_zero / bits, frac, signed)
    -- independently of the quantizer. Returns ``(codes, values, mag_codes)``: int64 codes, float64
    values (NaN codes -> nan, infinities -> +-inf, negative zero -> -0.0) and, for floats, the
    code with the sign bit cleared (its parity decides ties-to-even); for fixed point the integer k."""
    if hasattr(fmt, "frac"):  # FixedFormat: values k * 2**-frac
        lo = -(1 << (fmt.bits - 1)) if fmt.signed else 0
        hi = (1 << (fmt.bits - 1)) - 1 if fmt.signed else (1 << fmt.bits) - 1
        k = np.arange(lo, hi + 1, dtype=np.int64)
        return k, np.ldexp(k.astype(np.float64), -fmt.frac), k
    E, M = fmt.exp, fmt.man
    nbits = int(fmt.signed) + E + M
    assert nbits <= 16
    code = np.arange(1 << nbits, dtype=np.int64)
    s = (code >> (E + M)) & 1 if fmt.signed else np.zeros_like(code)
    e = (code >> M) & ((1 << E) - 1)
    m = code & ((1 << M) - 1)
    top = (1 << E) - 1
    frac = m.astype(np.float64) / float(1 << M)
    if not fmt.has_zero:  # E8M0: 2**(e - bias), no zero, no sign
        val = np.ldexp(1.0, (e - fmt.bias).astype(np.int64))
    else:
        normal = np.ldexp(1.0 + frac, (e - fmt.bias).astype(np.int64))
        sub = np.ldexp(frac, 1 - fmt.bias) if fmt.subnormals else np.zeros_like(frac)
        val = np.where(e == 0, sub, normal)
    val = np.where(s == 1, -val, val)
    if fmt.specials == "ieee":
        val = np.where(e == top, np.where(m == 0, np.where(s == 1, -np.inf, np.inf), np.nan), val)
    elif fmt.specials == "fn":
        val = np.where((e == top) & (m == (1 << M) - 1), np.nan, val)
    elif fmt.specials == "fnuz":  # no negative zero: that code is the NaN; other zeros are +0
        val = np.where((s == 1) & (e == 0) & (m == 0), np.nan, np.where(val == 0, 0.0, val))
    return code, val, code & ((1 << (E + M)) - 1)


@pytest.fixture
def all_codes():
    """The function :func:`decode_all_codes`."""
    return decode_all_codes


# the MAC implementations held to the same oracles: the literal reference and the fast kernels
def _mac_impls():
    import kernels
    from kernels import reference as R

    return {
        "reference": (R.ref_matmul, R.ref_conv2d, R.ref_depthwise_conv2d),
        "fast": (kernels.matmul, kernels.conv2d, kernels.depthwise_conv2d),
    }


@pytest.fixture(params=["reference", "fast"])
def impl(request):
    """(matmul, conv2d, depthwise_conv2d) of one MAC implementation."""
    return _mac_impls()[request.param]
