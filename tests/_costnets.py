"""IR networks for the cost-model tests, built directly (no Keras): the shapes of the two zoo models.

* :func:`cifar_cnn`: the seed CIFAR-10 CNN (hwsim/zoo.py ``cifar_cnn``).
* :func:`mobilenet`: the zoo's MobileNetV2-style network for 32x32 inputs (hwsim/zoo.py
  ``mobilenet``, built from the zoo's own ``MOBILENET_STEM/BLOCKS/HEAD`` constants), with batch norm
  folded into conv biases as the importer does.
* :func:`mobilenet_v1_224`, :func:`mobilenet_v2_224`: the ImageNet MobileNets.

Weights are zeros: only shapes matter to the cost model, and building these needs no TensorFlow.
tests/test_cost.py checks them against the importer's IR of ``hwsim.zoo.build(name)``.
"""

from __future__ import annotations

import numpy as np

from hwsim.graph import ir
from hwsim.zoo import MOBILENET_BLOCKS as BLOCKS
from hwsim.zoo import MOBILENET_HEAD as HEAD
from hwsim.zoo import MOBILENET_STEM as STEM


def _k(*shape):
    return np.zeros(shape, np.float32)


def conv(name, src, kh, cin, cout, stride=1, padding="same", bias=True):
    return ir.Conv2D(name, (src,), kernel=_k(kh, kh, cin, cout), bias=_k(cout) if bias else None,
                     strides=stride, padding=padding)


def dwconv(name, src, kh, c, stride=1, padding="same", mult=1):
    return ir.DepthwiseConv2D(name, (src,), kernel=_k(kh, kh, c, mult), bias=_k(c * mult), strides=stride,
                              padding=padding)


def dense(name, src, n_in, n_out):
    return ir.Dense(name, (src,), kernel=_k(n_in, n_out), bias=_k(n_out))


def cifar_cnn() -> ir.Network:
    L = [
        conv("conv1", "input", 3, 3, 32),
        conv("conv2", "conv1", 3, 32, 32, padding="valid"),
        ir.Pool2D("pool1", ("conv2",)),
        conv("conv3", "pool1", 3, 32, 64),
        conv("conv4", "conv3", 3, 64, 64, padding="valid"),
        ir.Pool2D("pool2", ("conv4",)),
        ir.Reshape("flatten", ("pool2",)),
        dense("fc1", "flatten", 6 * 6 * 64, 512),
        dense("fc2", "fc1", 512, 512),
        dense("logits", "fc2", 512, 10),
    ]
    return ir.Network("cifar_cnn", (32, 32, 3), L)


def mobilenet(stem=STEM, blocks=BLOCKS, head=HEAD, hw=32, stem_stride=1, classes=10, name="mobilenet") -> ir.Network:
    """MobileNetV2-style: the zoo model by default; :func:`mobilenet_v2_224` for the ImageNet one."""
    L = [conv("stem_conv", "input", 3, 3, stem, stride=stem_stride)]
    x, cin, b = "stem_conv", stem, 0
    for t, c, n, s in blocks:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"b{b}_"
            y = x
            if t != 1:
                L.append(conv(p + "expand", y, 1, cin, cin * t))
                y = p + "expand"
            L.append(dwconv(p + "dw", y, 3, cin * t, stride=stride))
            L.append(conv(p + "project", p + "dw", 1, cin * t, c))
            y = p + "project"
            if stride == 1 and cin == c:
                L.append(ir.Add(p + "add", (x, y)))
                y = p + "add"
            x, cin, b = y, c, b + 1
    L.append(conv("head_conv", x, 1, cin, head))
    L.append(ir.GlobalAvgPool2D("gap", ("head_conv",)))
    L.append(dense("logits", "gap", head, classes))
    return ir.Network(name, (hw, hw, 3), L)


def mobilenet_v2_224() -> ir.Network:
    """MobileNetV2 1.0 for 224x224 ImageNet (Sandler et al. 2018, Table 2), BN folded."""
    blocks = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    return mobilenet(stem=32, blocks=blocks, head=1280, hw=224, stem_stride=2, classes=1000, name="mobilenet_v2_224")


def mobilenet_v1_224() -> ir.Network:
    """MobileNet 1.0 for 224x224 ImageNet (Howard et al. 2017, Table 1), BN folded."""
    L = [conv("conv1", "input", 3, 3, 32, stride=2)]
    x, cin = "conv1", 32
    for i, (c, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5
                               + [(1024, 2), (1024, 1)], start=1):
        L.append(dwconv(f"conv_dw_{i}", x, 3, cin, stride=s))
        L.append(conv(f"conv_pw_{i}", f"conv_dw_{i}", 1, cin, c))
        x, cin = f"conv_pw_{i}", c
    L.append(ir.GlobalAvgPool2D("gap", (x,)))
    L.append(dense("logits", "gap", 1024, 1000))
    return ir.Network("mobilenet_v1_224", (224, 224, 3), L)
