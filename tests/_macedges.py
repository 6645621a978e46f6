"""Operands on the fp8 e4m3 grid for the MAC lane tests (tests/test_mac_half_lanes.py,
tests/test_mac_stoch32.py): random ones, and small problems built to hit a lane's edges."""

import numpy as np

import kernels


def fp8_grid(rng, shape, scale=1.0):
    """Normal random values times ``scale``, rounded onto the fp8 e4m3 grid (float64)."""
    return kernels.quantize(rng.standard_normal(shape) * scale, "fp8_e4m3").astype(np.float64)


def edge_problems(rng, K):
    """(name, a, b) for fp8 e4m3 operands: ordinary; overflow to inf of the running sum; sums in
    binary16's subnormal range; exact cancellation (signed zeros); a big accumulator with small
    products (every add rounds, ties included)."""
    out = [("normal", fp8_grid(rng, (5, K)), fp8_grid(rng, (K, 9)))]
    a = np.full((3, K), 240.0)
    b = np.full((K, 4), 224.0)  # 53760 per product: the second add overflows
    b[:, 1] = -224.0
    b[1::2, 2] = -224.0         # alternating signs: never overflows, returns to 0
    out.append(("overflow", a, b))
    out.append(("subnormal", fp8_grid(rng, (4, K), 2.0 ** -7), fp8_grid(rng, (K, 5), 2.0 ** -7)))
    a = fp8_grid(rng, (2, K))
    a[:, 1::2] = -a[:, 0::2][:, : K // 2] if K > 1 else a[:, 1::2]
    b = np.ones((K, 3))
    b[:, 1] = -1.0
    out.append(("cancel", a, b))
    a = fp8_grid(rng, (3, K), 0.05)
    a[:, 0] = 448.0
    b = fp8_grid(rng, (K, 6), 0.5)
    b[0] = 64.0
    out.append(("ties", a, b))
    return out


def assert_convs_equal_reference(spec, x, w, wd):
    """kernels.conv2d (weights ``w``) and depthwise_conv2d (``wd``) of ``x`` equal the literal reference,
    same and valid padding, strides 1 and (2, 1)."""
    from conftest import same_values
    from kernels import reference as R

    for pad in ("same", "valid"):
        for stride in (1, (2, 1)):
            kw = dict(stride=stride, padding=pad, seed=11, offset=5)
            assert same_values(kernels.conv2d(x, w, spec, **kw), R.ref_conv2d(x, w, spec, **kw)).all(), (pad, stride)
            assert same_values(kernels.depthwise_conv2d(x, wd, spec, **kw),
                               R.ref_depthwise_conv2d(x, wd, spec, **kw)).all(), (pad, stride)
