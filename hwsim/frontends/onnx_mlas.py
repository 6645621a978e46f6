"""onnxruntime's MLAS float kernels that its quantized lookup-table ops build their tables with:
com.microsoft ``QLinearSigmoid`` and ``QLinearLeakyRelu`` (uint8 / int8), for
:mod:`hwsim.frontends.onnx_qop`. Checked bit for bit against onnxruntime 1.32 on x86-64 with AVX2, FMA3 and
AVX-512F (every code of 392 quantizations per type; tests/test_onnx_qop.py).

* ``qlinear_activations.cc`` builds a 256-entry table per node with ``QlinearBuildLookupTable<T>``
  (``qlinear_lookup_table.cc``): ``in[i] = f32(X_scale * ((int)code_i - X_zp))``, the float transform of the
  whole array, then ``MlasQuantizeLinear`` into the output type.
* Sigmoid's transform is ``MlasComputeLogistic`` (``mlas/lib/logistic.cpp``), which on x86-64 with AVX2 and
  FMA3 runs ``MlasComputeLogisticF32KernelFma3`` (``mlas/lib/x86_64/LogisticKernelFma3.S``): the input
  clamped to [-18, 18] (``vmaxps`` / ``vminps``: NaN passes), the odd numerator and even denominator
  polynomials in ``x**2`` by fused multiply-adds (each rounded once; :func:`fma32`), ``r = f32(f32(v * p) /
  q) + 0.5``, clamped below at 0 only (so 1.0000001 can come out). The constants are ``MlasLogisticConstants``.
  On an x86-64 CPU without AVX2 / FMA3 onnxruntime runs a C kernel with separate roundings and a clamp at 1:
  not emulated (this project's machines all have FMA3).
* LeakyRelu's transform is ``v >= 0 ? v : f32(alpha * v)``.
* ``MlasQuantizeLinear{U8,S8}Kernel`` (AVX-512F; the SSE2 kernel computes the same): ``t = f32(y / Y_scale)``
  clamped to ``[qmin - zp, qmax - zp]`` (NaN to the lower end), rounded half to even, ``+ zp``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

def _f32_literal(s):
    """Correctly rounded decimal -> float32 (as a C compiler does for a 'f' literal)."""
    fr = Fraction(s)
    cand = np.float32(float(fr))
    # check neighbours: pick the float32 closest to the exact decimal (ties to even)
    best = None
    for c in (np.nextafter(cand, np.float32(-np.inf)), cand, np.nextafter(cand, np.float32(np.inf))):
        d = abs(Fraction(float(c)) - fr)
        key = (d, int(np.array(c).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, c)
    return np.float32(best[1])


_CONST_TEXT = dict(
    lower="-18.0", upper="18.0",
    a9="4.37031012579801e-11", a7="1.15627324459942e-07", a5="6.08574864600143e-05",
    a3="8.51377133304701e-03", a1="2.48287947061529e-01",
    b10="6.10247389755681e-13", b8="5.76102136993427e-09", b6="6.29106785017040e-06",
    b4="1.70198817374094e-03", b2="1.16817656904453e-01", b0="9.93151921023180e-01",
    half="0.5",
)
LOGISTIC_CONSTANTS = {k: _f32_literal(v) for k, v in _CONST_TEXT.items()}


def fma32(a, b, c):
    """Exact float32 fused multiply-add round(a*b+c) (one rounding, round-to-nearest-even).

    a*b of two float32 values is exact in float64 (48 significant bits).  The float64 sum is then
    formed with round-to-odd (TwoSum error term decides the sticky bit), and rounding a round-to-odd
    float64 (53 >= 24+2 bits) to float32 gives the correctly rounded single result.
    """
    a = np.asarray(a, np.float32).astype(np.float64)
    b = np.asarray(b, np.float32).astype(np.float64)
    c = np.asarray(c, np.float32).astype(np.float64)
    p = a * b                      # exact
    with np.errstate(invalid="ignore", over="ignore"):
        s = p + c
        bb = s - p
        e = (p - (s - bb)) + (c - bb)  # exact rounding error of s (TwoSum)
        bits = s.view(np.int64) if s.ndim else np.array(s).view(np.int64)
        even = (bits & 1) == 0
        fix = np.isfinite(s) & (e != 0) & even
        if np.any(fix):
            s = np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


def _maxps(a, b):
    """x86 MAXPS semantics: (a > b) ? a : b  (returns b when either is NaN)."""
    return np.where(a > b, a, b)


def _minps(a, b):
    """x86 MINPS semantics: (a < b) ? a : b  (returns b when either is NaN)."""
    return np.where(a < b, a, b)


def mlas_logistic(x):
    """MlasComputeLogisticF32KernelFma3 (x86_64/LogisticKernelFma3.S), element-wise, float32 in/out."""
    K = LOGISTIC_CONSTANTS
    x = np.asarray(x, np.float32)
    f = np.float32
    with np.errstate(all="ignore"):
        v = _maxps(K["lower"], x).astype(f)
        v = _minps(K["upper"], v).astype(f)
        x2 = (v * v).astype(f)
        p = fma32(x2, K["a9"], K["a7"])
        p = fma32(x2, p, K["a5"])
        p = fma32(x2, p, K["a3"])
        p = fma32(x2, p, K["a1"])
        q = fma32(x2, K["b10"], K["b8"])
        q = fma32(x2, q, K["b6"])
        q = fma32(x2, q, K["b4"])
        q = fma32(x2, q, K["b2"])
        q = fma32(x2, q, K["b0"])
        p = (v * p).astype(f)
        r = (p / q).astype(f)
        r = (r + K["half"]).astype(f)
        return _maxps(f(0.0), r).astype(f)


def _qrange(dtype):
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return 0, 255
    if dt == np.int8:
        return -128, 127
    raise ValueError("dtype must be uint8 or int8")


def mlas_quantize_linear(y, y_scale, y_zp, dtype):
    """MlasQuantizeLinear{U8,S8}KernelAvx512F: divide, clamp (NaN -> qmin), round-half-even, + zp."""
    qmin, qmax = _qrange(dtype)
    y = np.asarray(y, np.float32)
    s = np.float32(y_scale)
    zp = int(y_zp)
    lo = np.float32(qmin - zp)
    hi = np.float32(qmax - zp)
    with np.errstate(all="ignore"):
        t = (y / s).astype(np.float32)
        t = _maxps(t, lo)
        t = _minps(t, hi)
    return np.rint(t).astype(np.int64) + zp


def _dequant_inputs(x_scale, x_zp, dtype):
    qmin, qmax = _qrange(dtype)
    codes = np.arange(qmin, qmax + 1, dtype=np.int64)
    d = (codes - int(x_zp)).astype(np.float32)      # exact (|d| <= 255)
    with np.errstate(all="ignore"):
        return (np.float32(x_scale) * d).astype(np.float32)


def qlinear_sigmoid_table(x_scale, x_zp, y_scale, y_zp, dtype):
    """Output code (int64) for every input code of com.microsoft QLinearSigmoid, indexed by code - min.

    table[k] = MlasQuantizeLinear( MlasComputeLogistic( X_scale * (code_k - X_zp) ), Y_scale, Y_zp )
    with the float32 operation order documented in the module docstring (FMA3 logistic kernel, AVX-512F
    quantizer). x_scale, y_scale are float32 scalars, zero points are ints in dtype's range.
    """
    return mlas_quantize_linear(mlas_logistic(_dequant_inputs(x_scale, x_zp, dtype)), y_scale, y_zp, dtype)


def qlinear_leaky_relu_table(x_scale, x_zp, y_scale, y_zp, dtype, alpha=0.01):
    """Output code (int64) for every input code of com.microsoft QLinearLeakyRelu, indexed by code - min.

    v = X_scale*(code - X_zp) (f32);  w = v >= 0 ? v : alpha*v (f32 multiply; alpha = float32(attr));
    then MlasQuantizeLinear as above.  NaN v (e.g. inf*0) takes the alpha branch (alpha*NaN = NaN -> qmin).
    """
    v = _dequant_inputs(x_scale, x_zp, dtype)
    a = np.float32(alpha)
    with np.errstate(all="ignore"):
        w = np.where(v >= np.float32(0), v, (a * v).astype(np.float32)).astype(np.float32)
    return mlas_quantize_linear(w, y_scale, y_zp, dtype)
