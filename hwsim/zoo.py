"""The model zoo: the two CIFAR-10 networks hwsim ships with trained float32 weights.

Both models take **raw pixels** (``uint8`` values cast to float32, shape ``(N, 32, 32, 3)``) and
return **logits** ``(N, 10)``; all input scaling is inside the model (a ``Rescaling`` layer
first). Only layer types the hwsim importer supports are used (Conv2D, DepthwiseConv2D, Dense,
BatchNormalization, ReLU, MaxPooling2D, Flatten, Dropout, Add, GlobalAveragePooling2D,
Rescaling, InputLayer); there are no augmentation layers and no regularizer objects.

* ``cifar_cnn``: the classic Keras CIFAR-10 CNN, exactly: Rescaling(1/255), Conv(32,3x3,same,relu),
  Conv(32,3x3,valid,relu), MaxPool 2/2, Conv(64,3x3,same,relu), Conv(64,3x3,valid,relu),
  MaxPool 2/2, Flatten, Dense 512 relu, Dense 512 relu, Dense 10 linear, with Dropout layers in
  between (identity at inference).
* ``mobilenet``: a MobileNetV2-style network for 32x32 inputs (see ``MOBILENET_BLOCKS``):
  3x3 stem at stride 1, inverted-residual blocks (1x1 expand + BN + ReLU6, 3x3 depthwise + BN +
  ReLU6, 1x1 linear projection + BN, ``Add`` when input and output shapes match), a 1x1 head
  conv + BN + ReLU6, GlobalAveragePooling2D and Dense 10 logits.

Trained weights are package data: ``hwsim/models/{name}.keras`` (``model_path``/``load_keras``).
"""

from __future__ import annotations

from pathlib import Path

from quant import tfimport

NAMES = ("cifar_cnn", "mobilenet")
MODELS_DIR = Path(__file__).resolve().parent / "models"

# MobileNetV2 inverted-residual stages for 32x32: (expansion t, output channels c, repeats n,
# stride of the first block s), as in MobileNetV2 Table 2 but with the stem at stride 1 and
# channel counts scaled down so that training fits one CPU core.
# Spatial sizes: 32x32 (stem, first block) -> 16x16 -> 8x8 -> 4x4. About 16.3 M MACs and 0.43 M
# parameters (the full-width CIFAR MobileNetV2 with 7 stages measured 20x slower per epoch here).
MOBILENET_STEM = 16
MOBILENET_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 48, 3, 2),
    (6, 96, 3, 2),
)
MOBILENET_HEAD = 384


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(NAMES)}")
    return name


def build(name: str):
    """Return a freshly initialised (untrained) Keras model ``name`` (one of ``NAMES``)."""
    _check_name(name)
    return _cifar_cnn() if name == "cifar_cnn" else _mobilenet()


def model_path(name: str) -> Path:
    """Path of the committed trained weights ``hwsim/models/{name}.keras`` (may not exist yet)."""
    return MODELS_DIR / f"{_check_name(name)}.keras"


def load_keras(name: str):
    """Load the trained Keras model ``name`` from ``model_path(name)`` (compile=False).

    Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` if the weights file is
    missing (train it with ``hwsim train NAME``)."""
    p = model_path(name)
    if not p.is_file():
        raise FileNotFoundError(f"trained weights for {name!r} not found at {p}; create them with `hwsim train {name}`")
    keras = tfimport.keras()

    return keras.models.load_model(p, compile=False)


def _cifar_cnn():
    keras = tfimport.keras()
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((32, 32, 3), name="pixels"),
            layers.Rescaling(1.0 / 255, name="rescale"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(32, 3, padding="valid", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, 2, name="pool1"),
            layers.Dropout(0.05, name="drop1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            layers.Conv2D(64, 3, padding="valid", activation="relu", name="conv4"),
            layers.MaxPooling2D(2, 2, name="pool2"),
            layers.Dropout(0.1, name="drop2"),
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", name="fc1"),
            layers.Dropout(0.25, name="drop3"),
            layers.Dense(512, activation="relu", name="fc2"),
            layers.Dropout(0.25, name="drop4"),
            layers.Dense(10, activation="linear", name="logits"),
        ],
        name="cifar_cnn",
    )


def _mobilenet(stem=MOBILENET_STEM, blocks=MOBILENET_BLOCKS, head=MOBILENET_HEAD):
    keras = tfimport.keras()
    from keras import layers

    def bn(name):
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=name)

    inp = keras.Input((32, 32, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inp)
    x = layers.Conv2D(stem, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    cin = stem
    b = 0
    for t, c, n, s in blocks:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"b{b}_"
            y = x
            if t != 1:
                y = layers.Conv2D(cin * t, 1, use_bias=False, name=p + "expand")(y)
                y = bn(p + "expand_bn")(y)
                y = layers.ReLU(6.0, name=p + "expand_relu6")(y)
            y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=p + "dw")(y)
            y = bn(p + "dw_bn")(y)
            y = layers.ReLU(6.0, name=p + "dw_relu6")(y)
            y = layers.Conv2D(c, 1, use_bias=False, name=p + "project")(y)
            y = bn(p + "project_bn")(y)
            if stride == 1 and cin == c:
                y = layers.Add(name=p + "add")([x, y])
            x = y
            cin = c
            b += 1
    x = layers.Conv2D(head, 1, use_bias=False, name="head_conv")(x)
    x = bn("head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, x, name="mobilenet")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass on one image, counted for Conv2D, DepthwiseConv2D
    and Dense layers (output elements x kernel fan-in; bias adds, BN, pooling not counted)."""
    tfimport.keras()
    from keras import layers

    macs = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c * kh * kw
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            macs += layer.units * layer.input.shape[-1]
    return int(macs)
