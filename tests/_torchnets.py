"""Small PyTorch networks built from plain torch modules, shaped like torchvision's resnet18, mobilenet_v2 and
mobilenet_v3_small (basic blocks with downsampling, inverted residuals with ReLU6 and depthwise convs,
squeeze-and-excite with hard-sigmoid and hard-swish). torchvision itself is not used: the wheel the
registry serves is a CUDA build whose C++ ops do not load with the CPU torch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNetLike(nn.Module):
    """resnet18's shape: 7x7/2 stem with pads 3, 3x3/2 max pool with pads 1, basic blocks, global pool, fc."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        h = cin * t
        self.res = stride == 1 and cin == cout
        self.b = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                               nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                               nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.b(x) if self.res else self.b(x)


class MobileNetV2Like(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                                      InvertedResidual(16, 8, 1, 1), InvertedResidual(8, 12, 2, 6),
                                      InvertedResidual(12, 12, 1, 6), InvertedResidual(12, 16, 2, 6))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        g = F.hardsigmoid(self.b(F.relu(self.a(F.adaptive_avg_pool2d(x, 1)))))
        return x * g


class MobileNetV3Like(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
            nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(), SqueezeExcite(16, 8),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16),
            nn.Conv2d(16, 72, 1, bias=False), nn.BatchNorm2d(72), nn.Hardswish(),
            nn.Conv2d(72, 72, 5, 2, 2, groups=72, bias=False), nn.BatchNorm2d(72), nn.Hardswish(), SqueezeExcite(72, 24),
            nn.Conv2d(72, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.classifier = nn.Sequential(nn.Linear(24, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class FlattenNet(nn.Module):
    """A Linear after a Flatten of a 4x4x8 map: the Gemm's rows are in CHW order."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.fc = nn.Linear(8 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def randomize(model, seed=0):
    """Non-trivial batch-norm statistics (PyTorch initialises them to identity); eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) * 1.5 + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.3
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.3
            m.running_var = torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5
    return model.eval()


def export(model, path, hw=32, opset=None):
    """``torch.onnx.export`` with a dynamic batch (the TorchScript exporter: no onnxscript needed)."""
    kw = {} if opset is None else {"opset_version": opset}
    torch.onnx.export(model, (torch.zeros(1, 3, hw, hw),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, **kw)
    return path


def quantize_onnx(path, qpath, quant_format, **kw):
    """onnxruntime's ``quantize_static`` of ``path`` into ``qpath`` (``quant_format``: "QDQ" or "QOperator";
    ``kw``: per_channel, activation_type, ...), calibrated on 32 CIFAR-10 training images scaled to [0, 1]."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from hwsim import sweep_exec as X
    from hwsim.data import load_cifar10

    train, _ = load_cifar10("train")
    calib = train[X.subset(len(train), 32)].transpose(0, 3, 1, 2).astype(np.float32) / 255

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": c[None]} for c in calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(path), str(qpath), Reader(), quant_format=getattr(QuantFormat, quant_format), **kw)
    return qpath
