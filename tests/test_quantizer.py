"""quant.quantize_model: quantized networks against hand-written integer / fp8 computations that do
not use quant's code, per-layer overrides, immutability, errors, and the zoo accuracy gates."""

import math

import numpy as np
import pytest

import hwsim
from hwsim import zoo
from hwsim.graph import ir
from kernels import MacSpec, parse_format
from quant import quantize_model

I8 = (-128, 127)


def _tiny(rng, act1="relu"):
    """pixels (6, 6, 2) -> /255 -> conv 3x3 same (3 ch) -> maxpool 2 -> flatten -> dense 4."""
    layers = [
        ir.Affine("rescale", ("input",), scale=np.float32(1 / 255), offset=np.float32(0)),
        ir.Conv2D("conv", ("rescale",), kernel=(rng.normal(size=(3, 3, 2, 3)) * [0.5, 0.1, 2.0]).astype(np.float32),
                  bias=rng.normal(size=3).astype(np.float32) * 0.2, padding="same", activation=act1),
        ir.Pool2D("pool", ("conv",), op="max"),
        ir.Reshape("flat", ("pool",), target=(-1,)),
        ir.Dense("fc", ("flat",), kernel=(rng.normal(size=(27, 4)) * 0.3).astype(np.float32),
                 bias=rng.normal(size=4).astype(np.float32) * 0.1),
    ]
    return ir.Network("tiny", (6, 6, 2), layers)


def _float_tensor(net, x, name):
    """A float32 intermediate tensor by the runner on a truncated network (no quant code involved)."""
    i = [l.name for l in net.layers].index(name)
    sub = ir.Network(net.name, net.input_shape, net.layers[:i + 1], output=name)
    return hwsim.run(sub, x, mac="fp32")


def _asym_int8(t):
    lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
    s = (hi - lo) / 255
    return s, -128 - float(np.rint(lo / s))


def _sym_int8_per_channel(w2d):
    s = np.abs(w2d).max(axis=0) / 127
    return s, np.clip(np.rint(w2d / s), -127, 127)


def _conv_same_int(xq, wq):
    """Integer 'same' 3x3 stride-1 convolution, zero padding in the (x - zp) domain, int64."""
    n, H, W, _ = xq.shape
    xp = np.pad(xq.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, H, W, wq.shape[-1]), dtype=np.int64)
    for dh in range(3):
        for dw in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, dh:dh + H, dw:dw + W, :], wq[dh, dw].astype(np.int64))
    return out


def _maxpool2(y):
    n, H, W, C = y.shape
    return y.reshape(n, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


@pytest.fixture
def tiny(rng):
    net = _tiny(rng)
    cal = rng.integers(0, 256, size=(16, 6, 6, 2)).astype(np.uint8)
    x = rng.integers(0, 256, size=(8, 6, 6, 2)).astype(np.uint8)
    return net, cal, x


# ---------------------------------------------------------------------------------------------
# hand-written integer pipelines
# ---------------------------------------------------------------------------------------------

def test_int8_float_requant_equals_hand_integer_computation(tiny):
    net, cal, x = tiny
    q = quantize_model(net, calibration=cal)  # int8, per-channel, min-max, requant="float"
    got = hwsim.run(q, x)

    s1, z1 = _asym_int8(_float_tensor(net, cal, "rescale"))
    sw1, w1q = _sym_int8_per_channel(net["conv"].kernel.astype(np.float64).reshape(-1, 3))
    w1q = w1q.reshape(3, 3, 2, 3)
    xin = _float_tensor(net, x, "rescale").astype(np.float64)
    xq = np.clip(np.rint(xin / s1 + z1), *I8) - z1
    M1 = s1 * sw1
    acc = _conv_same_int(xq, w1q) + np.rint(net["conv"].bias.astype(np.float64) / M1)
    y1 = np.maximum(acc * M1, 0).astype(np.float32)
    flat = _maxpool2(y1).reshape(len(x), -1)

    s2, z2 = _asym_int8(_float_tensor(net, cal, "flat"))
    sw2, w2q = _sym_int8_per_channel(net["fc"].kernel.astype(np.float64))
    xq2 = np.clip(np.rint(flat.astype(np.float64) / s2 + z2), *I8) - z2
    M2 = s2 * sw2
    acc2 = xq2.astype(np.int64) @ w2q.astype(np.int64) + np.rint(net["fc"].bias.astype(np.float64) / M2)
    want = (acc2 * M2).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    # and the recorded parameters are the hand-computed ones
    assert float(q["conv"].quant.act.scale) == s1 and float(q["conv"].quant.act.zero_point) == z1
    np.testing.assert_array_equal(q["fc"].quant.wq.scale, sw2)
    assert q["conv"].quant.spec.a.name == "int9" and q["conv"].quant.spec.accum.name == "int32"


def _tfl_quantize_multiplier(m):
    """TF-Lite QuantizeMultiplier, written from quantization_util.cc."""
    if m == 0:
        return 0, 0
    frac, e = math.frexp(m)
    v = frac * (1 << 31)
    qf = int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)  # std::round
    if qf == 1 << 31:
        qf //= 2
        e += 1
    if e < -31:
        return 0, 0
    return qf, e


def _tfl_mbqm(x, m, shift):
    """MultiplyByQuantizedMultiplier (double rounding) on Python ints, from gemmlowp's C code."""
    left, right = max(shift, 0), max(-shift, 0)
    ab = (x * (1 << left)) * m
    t = ab + ((1 << 30) if ab >= 0 else (1 - (1 << 30)))
    hi = t >> 31 if t >= 0 else -((-t) >> 31)  # C division truncates toward zero
    mask = (1 << right) - 1
    rem = hi & mask
    thr = (mask >> 1) + (1 if hi < 0 else 0)
    return (hi >> right) + (1 if rem > thr else 0)


def _tfl_requant(acc, real, zp, lo, hi):
    out = np.empty(acc.shape, dtype=np.int64)
    for c in range(acc.shape[-1]):
        m, sh = _tfl_quantize_multiplier(float(real[c]))
        col = [_tfl_mbqm(int(v), m, sh) for v in acc[..., c].ravel()]
        out[..., c] = np.clip(np.array(col).reshape(acc.shape[:-1]) + int(zp), lo, hi)
    return out


def _int8_params(t, scheme):
    """(scale, zero point, code min, code max) of int8 per tensor, by the module's formulas."""
    if scheme == "asymmetric":
        return (*_asym_int8(t), -128, 127)
    return max(abs(float(t.min())), abs(float(t.max()))) / 127, 0.0, -127, 127


@pytest.mark.parametrize("fc_scheme", ["asymmetric", "symmetric"])
def test_int8_tflite_requant_equals_hand_integer_computation(tiny, fc_scheme):
    """With a symmetric fc input (zero point 0), the conv's ReLU is the clamp at code 0."""
    net, cal, x = tiny
    q = quantize_model(net, calibration=cal, requant="tflite", overrides={"fc": {"act_scheme": fc_scheme}})
    got = hwsim.run(q, x)

    s1, z1 = _asym_int8(_float_tensor(net, cal, "rescale"))
    sw1, w1q = _sym_int8_per_channel(net["conv"].kernel.astype(np.float64).reshape(-1, 3))
    w1q = w1q.reshape(3, 3, 2, 3)
    s2, z2, lo2, hi2 = _int8_params(_float_tensor(net, cal, "flat"), fc_scheme)  # conv's output = fc's input
    s3, z3, lo3, hi3 = _int8_params(_float_tensor(net, cal, "fc"), fc_scheme)  # fc's own output
    xin = _float_tensor(net, x, "rescale").astype(np.float64)
    xq = np.clip(np.rint(xin / s1 + z1), *I8) - z1
    acc = _conv_same_int(xq, w1q) + np.rint(net["conv"].bias.astype(np.float64) / (s1 * sw1)).astype(np.int64)
    q1 = _tfl_requant(acc, (s1 * sw1) / s2, z2, max(lo2, int(z2)), hi2)  # ReLU folded into the clamp
    if fc_scheme == "symmetric":
        assert (q1 == 0).sum() > (acc <= 0).sum() // 2  # the clamp at 0 did the ReLU's work
    # integer max pooling on codes (TF-Lite's int8 MAX_POOL_2D), then the fc layer on codes
    xq2 = _maxpool2(q1).reshape(len(x), -1) - int(z2)
    sw2, w2q = _sym_int8_per_channel(net["fc"].kernel.astype(np.float64))
    acc2 = xq2 @ w2q.astype(np.int64) + np.rint(net["fc"].bias.astype(np.float64) / (s2 * sw2)).astype(np.int64)
    q2 = _tfl_requant(acc2, (s2 * sw2) / s3, z3, lo3, hi3)
    want = ((q2 - z3) * s3).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_tflite_output_round_trips_through_the_next_layers_input_quantization(tiny):
    net, cal, x = tiny
    q = quantize_model(net, calibration=cal, requant="tflite")
    conv, fc = q["conv"].quant, q["fc"].quant
    assert conv.out is fc.act  # linked through pool + flatten
    y = conv.run(q["conv"], [_float_tensor(net, x, "rescale")])
    v = fc.act.quantize(y)  # what the next layer's input quantization makes of the float32 values
    s, zp = float(conv.out.scale), float(conv.out.zero_point)
    assert np.array_equal(v, np.rint(v)) and v.min() >= zp  # integer codes; ReLU: nothing below zp
    # ... whose dequantization is exactly the value passed on: the round trip loses nothing
    np.testing.assert_array_equal(((v - zp) * s).astype(np.float32), y)


def _fp8_table(decode_all_codes):
    _, vals, mag = decode_all_codes(parse_format("fp8_e4m3"))
    ok = np.isfinite(vals) & (vals >= 0)
    o = np.argsort(vals[ok])
    return vals[ok][o], mag[ok][o]


def _fp8_round(t, table, tmag):
    """Nearest e4m3fn value (ties to the even code), saturating at 448: from the decoded code table."""
    a = np.minimum(np.abs(t), 448.0)
    j = np.clip(np.searchsorted(table, a), 1, len(table) - 1)
    lo, hi = table[j - 1], table[j]
    pick = (hi - a < a - lo) | ((hi - a == a - lo) & (tmag[j] % 2 == 0))
    return np.copysign(np.where(pick, hi, lo), t)


def test_fp8_scaled_dense_equals_hand_float32_accumulation(rng, all_codes):
    K, N = 24, 5
    net = ir.Network("d", (K,), [ir.Dense("fc", ("input",), kernel=rng.normal(size=(K, N)).astype(np.float32),
                                          bias=rng.normal(size=N).astype(np.float32), activation="relu")])
    cal = rng.normal(size=(32, K)).astype(np.float32) * 3
    x = rng.normal(size=(16, K)).astype(np.float32) * 3
    q = quantize_model(net, weights="fp8_e4m3", activations="fp8_e4m3", calibration=cal)
    got = hwsim.run(q, x)

    table, tmag = _fp8_table(all_codes)
    s_in = float(np.abs(cal).max()) / 448.0  # per-tensor: amax -> the format max
    s_w = np.abs(net["fc"].kernel.astype(np.float64)).max(axis=0) / 448.0
    xq = _fp8_round(x.astype(np.float64) / s_in, table, tmag)
    wq = _fp8_round(net["fc"].kernel.astype(np.float64) / s_w, table, tmag)
    acc = np.zeros((len(x), N), dtype=np.float32)
    for k in range(K):  # fp32 accumulator, exact products, one rounding per addition, k in order
        acc = (acc + (xq[:, k:k + 1] * wq[k]).astype(np.float32)).astype(np.float32)
    M = s_in * s_w
    acc = acc + (net["fc"].bias.astype(np.float64) / M).astype(np.float32)  # float32 add: one rounding
    want = np.maximum(acc.astype(np.float64) * M, 0).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert q["fc"].quant.spec.a.name == "float8_e4m3fn" and q["fc"].quant.spec.fma


def test_unscaled_fp8_and_mx_equal_the_float_network_on_that_mac(tiny):
    """scale 'none' / MX: no scales, so the quantized layer is the runner's float rule on the MAC
    spec whose operands are those formats (bias added in float32, as the runner does)."""
    net, cal, x = tiny
    for fmt in ("fp8_e4m3", "mxfp8_e4m3", "mxfp4_e2m1"):
        scale = "none" if fmt == "fp8_e4m3" else None
        q = quantize_model(net, weights=fmt, activations=fmt, scale=scale)  # no calibration needed
        want = hwsim.run(net, x, mac=MacSpec(fmt, "fp32", fma=True))
        np.testing.assert_array_equal(hwsim.run(q, x), want, err_msg=fmt)


def test_stochastic_mac_results_do_not_depend_on_the_batch_size(tiny):
    net, cal, x = tiny
    spec = MacSpec("fp8_e4m3", "fp32", fma=True, rounding="stochastic")
    q = quantize_model(net, weights="fp8_e4m3", activations="fp8_e4m3", mac=spec, calibration=cal)
    assert q["conv"].quant.spec.accum_rounding == "stochastic"
    a = hwsim.run(q, x, seed=5, batch_size=8)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(hwsim.run(q, x, seed=5, batch_size=3), a)
    np.testing.assert_array_equal(hwsim.run(q, x[5:], seed=5, batch_size=8)[0], a[5])  # counters keyed by image index
    assert not np.array_equal(hwsim.run(q, x, seed=6, batch_size=8), a)


def test_lower_precision_weights_use_narrow_operands(tiny):
    net, cal, x = tiny
    for bits in (8, 6, 4):
        q = quantize_model(net, weights=f"int{bits}", calibration=cal)
        ql = q["conv"].quant
        assert ql.spec.b.name == f"int{bits}"
        w = ql.weights
        assert np.array_equal(w, np.rint(w)) and np.abs(w).max() == 2 ** (bits - 1) - 1


def test_asymmetric_weights_widen_the_weight_operand(tiny):
    net, cal, x = tiny
    q = quantize_model(net, weight_scheme="asymmetric", per_channel=False, calibration=cal)
    ql = q["fc"].quant
    assert ql.spec.b.name == "int9" and ql.wq.scale.shape == ()
    stored = ql.weights + float(ql.wq.zero_point)  # the int8 codes
    assert stored.min() == -128 and stored.max() == 127
    ref = hwsim.run(net, x, mac="fp32")
    assert np.abs(hwsim.run(q, x) - ref).max() < 0.05 * np.abs(ref).max()


def test_pow2_scales_are_powers_of_two(tiny):
    net, cal, x = tiny
    q = quantize_model(net, scale="pow2", calibration=cal)
    for name in ("conv", "fc"):
        ql = q[name].quant
        for s in (np.atleast_1d(ql.act.scale), ql.wq.scale):
            m, _ = np.frexp(s)
            assert np.all(m == 0.5)


# ---------------------------------------------------------------------------------------------
# overrides, immutability
# ---------------------------------------------------------------------------------------------

def test_overrides_apply_per_layer(tiny):
    net, cal, x = tiny
    q = quantize_model(net, weights="int4", calibration=cal,
                       overrides={"conv": dict(weights="int8", activations="int8"),
                                  "fc": dict(activations="fp8_e4m3", weights="fp8_e4m3")})
    assert q["conv"].quant.config.weights.name == "int8"
    assert q["fc"].quant.config.activations.name == "float8_e4m3fn"
    assert q["fc"].quant.config.act_scheme == "symmetric"  # re-derived for the float format
    q2 = quantize_model(net, calibration=cal, overrides=lambda l: {"weights": "int4"} if l.kind == "dense" else None)
    assert q2["fc"].quant.config.weights.name == "int4" and q2["conv"].quant.config.weights.name == "int8"
    assert q2["fc"].quant.spec.b.name == "int4"
    q3 = quantize_model(net, calibration=cal, overrides={"fc": {"scale": "pow2"}})
    assert q3["fc"].quant.config.act_scale == "pow2" and q3["conv"].quant.config.act_scale == "real"


def test_input_network_is_not_modified(tiny):
    net, cal, x = tiny
    kernels_before = [np.array(l.kernel, copy=True) for l in net.mac_layers]
    meta_before = dict(net.meta)
    ref = hwsim.run(net, x, mac="fp32")
    q = quantize_model(net, calibration=cal, requant="tflite")
    assert q is not net and all(l.quant is None for l in net.layers)
    assert all(np.array_equal(a, l.kernel) for a, l in zip(kernels_before, net.mac_layers))
    assert net.meta == meta_before and "quant" in q.meta
    np.testing.assert_array_equal(hwsim.run(net, x, mac="fp32"), ref)
    assert [l.name for l in q.layers] == [l.name for l in net.layers]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def _nan_net(rng, where):
    net = _tiny(rng)
    layer = net["conv"] if where == "kernel" else net["fc"]
    arr = np.array(getattr(layer, where), copy=True)
    arr.flat[1] = np.nan if where == "kernel" else np.inf
    import dataclasses
    return dataclasses.replace(net, layers=tuple(dataclasses.replace(l, **{where: arr}) if l is layer else l
                                                 for l in net.layers))


@pytest.mark.parametrize("where, msg", [("kernel", "layer 'conv': kernel holds 1 non-finite"),
                                        ("bias", "layer 'fc': bias holds 1 non-finite")])
def test_nonfinite_weights_rejected(rng, where, msg):
    net = _nan_net(rng, where)
    with pytest.raises(ValueError, match=msg):
        quantize_model(net, calibration=np.zeros((2, 6, 6, 2)))
    assert all(l.quant is None for l in net.layers)


@pytest.mark.parametrize("kw, msg", [
    (dict(calibration=np.zeros((4, 6, 6))), r"calibration images have shape \(4, 6, 6\); network 'tiny' expects \(N, 6, 6, 2\)"),
    (dict(calibration=np.zeros((4, 6, 6, 3))), r"expects \(N, 6, 6, 2\)"),
    (dict(calibration=np.zeros((0, 6, 6, 2))), "calibration set is empty"),
    (dict(calibration=np.full((2, 6, 6, 2), np.nan)), "non-finite"),
    (dict(), "calibration images are needed"),
    (dict(method="kl", calibration=np.zeros((2, 6, 6, 2))), "unknown calibration method 'kl'"),
    (dict(weights="fp8_e4m3", weight_scheme="asymmetric"), "needs an integer / fixed-point format"),
    (dict(activations="uint1", act_scheme="asymmetric"), "too narrow for scheme='asymmetric'"),
    (dict(weights="mxfp8_e4m3", scale="real"), "use scale='mx'"),
    (dict(weights="fp8_e4m3", requant="tflite"), "requant='tflite' is integer arithmetic"),
    (dict(requant="fixed"), "unknown requant mode 'fixed'; valid: float, tflite"),
    (dict(scale={"bias": "real"}), r"scale mapping keys \['bias'\] unknown"),
    (dict(overrides={"nope": {}}), "unknown layer 'nope'; MAC layers: conv, fc"),
    (dict(overrides={"pool": {}}), "'pool', which is a pool layer, not a MAC layer"),
    (dict(overrides={"fc": {"bits": 4}}), r"overrides\['fc'\]: unknown settings \['bits'\]"),
    (dict(overrides={"fc": {"weights": "int99"}}), "layer 'fc'.*int99"),
    (dict(mse_grid=0), "mse_grid must be a positive int"),
])
def test_bad_arguments_give_clear_errors(tiny, kw, msg):
    net, cal, x = tiny
    with pytest.raises(ValueError, match=msg):
        quantize_model(net, **kw)
    assert all(l.quant is None for l in net.layers)


def test_tflite_rejects_softmax_and_float_accumulators(rng):
    net = ir.Network("d", (4,), [ir.Dense("fc", ("input",), kernel=np.ones((4, 3), np.float32), activation="softmax")])
    with pytest.raises(ValueError, match="folds only linear, relu, relu6.*'softmax'"):
        quantize_model(net, requant="tflite", calibration=np.ones((2, 4)))
    net = ir.Network("d", (4,), [ir.Dense("fc", ("input",), kernel=np.ones((4, 3), np.float32))])
    with pytest.raises(ValueError, match="needs a signed integer accumulator"):
        quantize_model(net, requant="tflite", mac="fp32", calibration=np.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# the zoo models
# ---------------------------------------------------------------------------------------------

needs_weights = pytest.mark.skipif(not all(zoo.model_path(n).is_file() for n in zoo.NAMES),
                                   reason="zoo weights not trained yet")


def _cifar(split):
    try:
        return hwsim.load_cifar10(split)
    except (FileNotFoundError, ValueError) as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"CIFAR-10 not available: {exc}")


def _calibration(n):
    x, _ = _cifar("train")
    return x[np.random.default_rng(0).choice(len(x), n, replace=False)]


@needs_weights
@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_int8_on_200_test_images(name):
    """200 evenly spaced test images (the set is sorted by class; the file budget of a minute allows no
    more for MobileNet), 128 random training images for calibration. int8 per-channel min-max PTQ must
    agree with float32 on >= 95% of the predictions (<= 10 flips) and lose at most 2.5 points
    (5 images) of top-1; a broken quantizer (wrong zero point, scale or channel order) disagrees on a
    large fraction."""
    net = hwsim.load_model(name)
    x, y = _cifar("test")
    idx = np.linspace(0, len(x) - 1, 200).astype(int)
    x, y = x[idx], y[idx]
    f = hwsim.run(net, x, mac="fp32").argmax(1)
    q = hwsim.run(quantize_model(net, calibration=_calibration(128)), x).argmax(1)
    assert (f == q).mean() >= 0.95
    assert (q == y).mean() >= (f == y).mean() - 0.025


@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_int8_full_test_set_within_one_point(name):
    net = hwsim.load_model(name)
    x, y = _cifar("test")
    base = hwsim.accuracy(net, x, y, mac="fp32", progress=False)
    acc = hwsim.accuracy(quantize_model(net, calibration=_calibration(1000)), x, y, progress=False)
    assert acc >= base - 0.010, (acc, base)
