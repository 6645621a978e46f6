"""TF-Lite int8 op coverage: every op the importer maps, on models Keras and the TF-Lite converter make
in the test (full-integer quantization through a representative dataset), equal to the real
``tf.lite.Interpreter`` bit for bit in both of its arithmetics (the default one with the XNNPACK
delegate, and the reference kernels), on several random models per op.

Each case is a small Keras model around the op, built three times with different random weights and
calibration data (so the scales and zero points differ), shaped like the edge models the ops come from
(49x10 spectrograms, 30x1x40 streams, squeeze-and-excite gates, ...).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import hwsim  # noqa: E402
from hwsim.frontends.tflite import load_tflite  # noqa: E402
from tests._tflite_util import convert, interpreter_outputs  # noqa: E402

KERNELS = ("xnnpack", "reference")
SEEDS = (0, 1, 2)


def _conv(i, filters=4, k=3):
    return layers.Conv2D(filters, k, padding="same")(i)


#: case -> (input shape without the batch, builder from the Keras input to the output, TF-Lite ops it must contain)
CASES = {
    "fc_rank3": ((7, 6), lambda i: layers.Dense(5)(i), {"FULLY_CONNECTED"}),
    "fc_rank3_stack": ((49, 10), lambda i: layers.Dense(3)(layers.Dense(8, activation="relu")(i)), {"FULLY_CONNECTED"}),
    "fc_rank4": ((5, 4, 3), lambda i: layers.Dense(5)(_conv(i)), {"FULLY_CONNECTED"}),
    "dilated_same": ((9, 9, 3), lambda i: layers.Conv2D(4, 3, dilation_rate=2, padding="same")(i),
                     {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}),
    "dilated_valid": ((11, 12, 3), lambda i: layers.Conv2D(4, 3, dilation_rate=(2, 3))(i), {"CONV_2D"}),
    "dilated_odd": ((10, 7, 3), lambda i: layers.Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu")(i),
                    {"SPACE_TO_BATCH_ND"}),
    "depthwise_dilated": ((9, 9, 3), lambda i: layers.DepthwiseConv2D(3, dilation_rate=2, padding="same")(i),
                          {"DEPTHWISE_CONV_2D"}),
    "depth_multiplier_stream": ((30, 1, 40), lambda i: layers.DepthwiseConv2D((3, 1), depth_multiplier=2)(i),
                                {"DEPTHWISE_CONV_2D"}),
    "avg_pool_3x2_s2x1": ((49, 10, 1), lambda i: layers.AveragePooling2D((3, 2), strides=(2, 1), padding="same")(
        _conv(i)), {"AVERAGE_POOL_2D"}),
    "max_pool_3x3_s2": ((49, 10, 1), lambda i: layers.MaxPooling2D(3, strides=2, padding="same")(_conv(i)),
                        {"MAX_POOL_2D"}),
    "max_pool_valid_4x1": ((30, 1, 40), lambda i: layers.MaxPooling2D((4, 1), strides=(3, 1))(i), {"MAX_POOL_2D"}),
    "pad_asymmetric": ((6, 5, 3), lambda i: _conv(layers.ZeroPadding2D(((1, 2), (0, 3)))(_conv(i))), {"PAD"}),
    "padv2_constant": ((6, 5, 3), lambda i: layers.Conv2D(4, 3)(keras.ops.pad(
        _conv(i), ((0, 0), (1, 2), (2, 0), (0, 0)), constant_values=0.75)), {"PADV2"}),
    "mean_keepdims": ((7, 5, 3), lambda i: layers.GlobalAveragePooling2D(keepdims=True)(_conv(i)), {"MEAN"}),
    "softmax_dense": ((8,), lambda i: layers.Softmax()(layers.Dense(10)(i)), {"SOFTMAX"}),
    "softmax_37": ((12,), lambda i: layers.Softmax()(layers.Dense(37)(i)), {"SOFTMAX"}),
    "softmax_spatial": ((5, 4, 3), lambda i: layers.Softmax()(_conv(i, 6)), {"SOFTMAX"}),
    "logistic": ((6, 6, 3), lambda i: layers.Activation("sigmoid")(_conv(i)), {"LOGISTIC"}),
    "tanh": ((49, 10, 1), lambda i: layers.Activation("tanh")(_conv(i)), {"TANH"}),
    "hard_swish": ((6, 6, 3), lambda i: layers.Activation("hard_swish")(_conv(i)), {"HARD_SWISH"}),
    "leaky_relu": ((6, 6, 3), lambda i: layers.LeakyReLU(0.1)(_conv(i)), {"LEAKY_RELU"}),
    "relu_after_resize": ((6, 6, 3), lambda i: layers.ReLU()(layers.Resizing(9, 9)(_conv(i))), {"RELU"}),
    "relu6_after_concat": ((6, 6, 3), lambda i: layers.ReLU(6.0)(layers.Concatenate()([_conv(i), _conv(i)])),
                           {"RELU6"}),
    "relu_n1_to_1": ((6, 6, 3), lambda i: keras.ops.clip(layers.Concatenate()([_conv(i), _conv(i)]), -1.0, 1.0),
                     {"RELU_N1_TO_1"}),
    "requantize_before_concat": ((8,), lambda i: layers.Concatenate()([layers.Dense(4)(i), layers.Activation("tanh")(
        layers.Dense(4)(i))]), {"QUANTIZE", "TANH", "CONCATENATION"}),
    "mean_channels": ((6, 5, 3), lambda i: keras.ops.mean(_conv(i, 8), axis=-1), {"MEAN"}),
    "mean_rows_keep": ((6, 5, 3), lambda i: keras.ops.mean(_conv(i, 8), axis=1, keepdims=True), {"MEAN"}),
    "mean_time": ((49, 10), lambda i: keras.ops.mean(layers.Dense(8)(i), axis=1), {"MEAN"}),
    "transpose_conv_same": ((6, 5, 3), lambda i: layers.Conv2DTranspose(4, 3, strides=2, padding="same")(_conv(i)),
                            {"TRANSPOSE_CONV"}),
    "transpose_conv_valid_9": ((5, 4, 3), lambda i: layers.Conv2DTranspose(9, (2, 3), strides=(1, 2))(i),
                               {"TRANSPOSE_CONV"}),
    "transpose_conv_relu_16": ((4, 4, 3), lambda i: layers.Conv2DTranspose(16, 4, strides=2, padding="same",
                                                                            activation="relu")(i), {"TRANSPOSE_CONV"}),
    "mul": ((6, 6, 3), lambda i: layers.Multiply()([_conv(i), _conv(i)]), {"MUL"}),
    "mul_relu_squeeze_excite": ((7, 5, 12), lambda i: layers.ReLU()(layers.Multiply()([
        i, layers.Dense(12, activation="sigmoid")(layers.GlobalAveragePooling2D(keepdims=True)(i))])), {"MUL"}),
    "mul_by_constant": ((6, 6, 3), lambda i: layers.Concatenate()([_conv(i), _conv(i)]) * 0.5, {"MUL"}),
    "sub": ((6, 6, 3), lambda i: layers.Subtract()([_conv(i), _conv(i)]), {"SUB"}),
    "sub_from_constant": ((8,), lambda i: 1.5 - layers.Dense(6)(i), {"SUB"}),
    "add_broadcast": ((5, 4, 8), lambda i: layers.Add()([i, layers.Dense(8)(layers.GlobalAveragePooling2D(
        keepdims=True)(i))]), {"ADD"}),
    "add_lower_rank": ((4, 4, 8), lambda i: _conv(i, 8) + keras.ops.mean(_conv(i, 8), axis=(1, 2)), {"ADD"}),
    "add_constant": ((6, 6, 3), lambda i: layers.Concatenate()([_conv(i), _conv(i)]) + 0.25, {"ADD"}),
    "maximum": ((6, 6, 3), lambda i: layers.Maximum()([_conv(i), _conv(i)]), {"MAXIMUM"}),
    "minimum_constant": ((6, 6, 3), lambda i: keras.ops.minimum(_conv(i), 0.5), {"MINIMUM"}),
    "expand_dims": ((6,), lambda i: keras.ops.expand_dims(layers.Dense(6)(i), axis=1), {"EXPAND_DIMS"}),
    "squeeze": ((1, 6, 3), lambda i: keras.ops.squeeze(layers.Conv2D(4, (1, 3))(i), axis=1), {"RESHAPE"}),
    "resize_bilinear_x2": ((6, 6, 3), lambda i: layers.UpSampling2D(2, interpolation="bilinear")(_conv(i)),
                           {"RESIZE_BILINEAR"}),
    "resize_bilinear_odd": ((6, 7, 3), lambda i: layers.Resizing(9, 11, interpolation="bilinear")(_conv(i)),
                            {"RESIZE_BILINEAR"}),
    "resize_bilinear_down": ((9, 7, 3), lambda i: layers.Resizing(4, 3, interpolation="bilinear")(_conv(i)),
                             {"RESIZE_BILINEAR"}),
    "resize_nearest": ((6, 7, 3), lambda i: layers.Resizing(13, 5, interpolation="nearest")(_conv(i)),
                       {"RESIZE_NEAREST_NEIGHBOR"}),
    "concat_channels": ((6, 6, 3), lambda i: layers.Concatenate()([_conv(i), _conv(i, 5)]), {"CONCATENATION"}),
    "concat_rows_6": ((6, 5, 3), lambda i: layers.Concatenate(axis=1)([_conv(i) for _ in range(6)]),
                      {"CONCATENATION"}),
}


def _ops(content: bytes) -> set[str]:
    from hwsim.frontends.tflite import interpreter

    return {o["op_name"] for o in interpreter(content, "builtin")._get_ops_details()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite_ops")
    cache = {}

    def get(case, seed):
        if (case, seed) not in cache:
            shape, build, _ = CASES[case]
            keras.utils.set_random_seed(seed)
            inp = keras.Input(shape)
            model = keras.Model(inp, build(inp))
            rng = np.random.default_rng(100 + seed)
            x = (rng.normal(size=(160, *shape)) * rng.uniform(0.5, 3)).astype(np.float32)
            content = convert(model, [x[:100]])
            path = d / f"{case}_{seed}.tflite"
            path.write_bytes(content)
            cache[case, seed] = (path, content, x[100:])
        return cache[case, seed]

    return get


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_equals_interpreter(built, case, seed):
    path, content, x = built(case, seed)
    assert CASES[case][2] <= _ops(content), f"the converter no longer emits {CASES[case][2]} for {case}"
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        want = interpreter_outputs(content, kernels, x)
        got = hwsim.run(net, x)
        assert got.shape == want.shape
        diff = int(np.sum(got != want))
        assert diff == 0, f"{case} seed {seed} {kernels}: {diff} of {want.size} outputs differ"


@pytest.mark.parametrize("seed", SEEDS)
def test_uint8_input_and_output(tmp_path, seed):
    """``inference_input_type = inference_output_type = tf.uint8``: QUANTIZE uint8 -> int8 first and
    int8 -> uint8 last (both on TF-Lite's built-in kernel); hwsim takes and returns the uint8 codes."""
    from hwsim.frontends.tflite import _quiet_tf

    tf = _quiet_tf()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, layers.Dense(4)(layers.Flatten()(layers.Conv2D(4, 3, activation="relu")(inp))))
    x = np.random.default_rng(seed).uniform(0, 255, size=(80, 6, 6, 3)).astype(np.float32)
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(50))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.uint8
    content = c.convert()
    path = tmp_path / "u8.tflite"
    path.write_bytes(content)
    codes = np.round(x[50:]).astype(np.uint8)
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        assert net.meta["input_dtype"] == net.meta["output_dtype"] == "uint8"
        want = interpreter_outputs(content, kernels, codes)
        got = hwsim.run(net, codes.astype(np.float32))
        assert want.dtype == np.uint8 and 0 < want.min() < want.max() < 255
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("seed", SEEDS)
def test_transpose_conv_inside_xnnpack(tmp_path, seed):
    """With a fixed batch the converter writes TRANSPOSE_CONV's output shape as a constant and XNNPACK
    takes the op (float32 requantization); with the dynamic batch above it runs on TF-Lite's kernel."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((5, 4, 3), batch_size=1)
    model = keras.Model(inp, layers.Conv2DTranspose(12, 3, strides=2, padding="same")(_conv(inp)))
    x = np.random.default_rng(seed).normal(size=(60, 5, 4, 3)).astype(np.float32)
    content = convert(model, [x[:40]])
    path = tmp_path / "tconv.tflite"
    path.write_bytes(content)
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        (t,) = [la for la in net.layers if la.kind == "conv2d_transpose"]
        assert t.quant.kernels == kernels
        np.testing.assert_array_equal(hwsim.run(net, x[40:]), interpreter_outputs(content, kernels, x[40:]))


@pytest.mark.parametrize("app", ["MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_int8(tmp_path, app):
    """Whole networks nobody on the team wrote (``keras.applications``, random weights, 64x64), converted
    to int8: every output equals the interpreter's. MobileNetV3Small's logits are so small that the
    reference SOFTMAX's fixed-point multiplier is below 1: TF-Lite's reference kernel aborts the process
    there (TFLITE_CHECK_GT), and the importer refuses the model with that reason instead."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(input_shape=(64, 64, 3), weights=None, classes=10)
    x = np.random.default_rng(0).uniform(0, 255, size=(40, 64, 64, 3)).astype(np.float32)
    content = convert(model, [x[:30]])
    path = tmp_path / f"{app}.tflite"
    path.write_bytes(content)
    for kernels in KERNELS:
        if app == "MobileNetV3Small" and kernels == "reference":
            with pytest.raises(ValueError, match=r"SOFTMAX .*TFLITE_CHECK_GT.* <= 1"):
                load_tflite(path, kernels=kernels)
            continue
        net = load_tflite(path, kernels=kernels)
        np.testing.assert_array_equal(hwsim.run(net, x[30:]), interpreter_outputs(content, kernels, x[30:]))


def _int16_model(seed):
    """Every op an int16x8 model may hold: conv + ReLU6, depthwise with a depth multiplier, a residual
    ADD, average and max pooling, MEAN, Flatten, Dense with and without bias."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 10, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu6")(inp)
    y = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    y = layers.Conv2D(8, 1)(y)
    x = layers.Add()([x, y])
    x = layers.AveragePooling2D(2)(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    a = layers.Dense(6, use_bias=False)(layers.Flatten()(x))
    b = layers.Dense(6, activation="relu")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, layers.Add()([a, b]))
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # nonzero biases (the converter drops an all-zero Dense bias)
        if getattr(layer, "use_bias", False):
            w = layer.get_weights()
            layer.set_weights([*w[:-1], rng.normal(0, 0.3, w[-1].shape).astype(np.float32)])
    return model


@pytest.mark.parametrize("seed", SEEDS)
def test_int16x8_models(tmp_path, seed):
    """int16 activations, int8 weights, int64 biases (the converter's 16x8 mode): XNNPACK takes nothing,
    so the default interpreter runs TF-Lite's optimized kernels, whose QUANTIZE and ADD round the vector
    part of a tensor unlike its tail; every output equals the interpreter's in both arithmetics."""
    from hwsim.frontends.tflite import _quiet_tf

    tf = _quiet_tf()
    model = _int16_model(seed)
    x = np.random.default_rng(seed).normal(size=(60, 12, 10, 3)).astype(np.float32)
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(40))
    c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    content = c.convert()
    path = tmp_path / "m16.tflite"
    path.write_bytes(content)
    from hwsim.frontends.tflite import interpreter

    assert {"int16"} <= {np.dtype(t["dtype"]).name for t in interpreter(content, "builtin").get_tensor_details()}
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        assert net.meta["mac"] == "int16x8_exact"
        np.testing.assert_array_equal(hwsim.run(net, x[40:]), interpreter_outputs(content, kernels, x[40:]))


def test_int16x8_unsupported_op_is_named(tmp_path):
    from hwsim.frontends.tflite import _quiet_tf

    tf = _quiet_tf()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    model = keras.Model(inp, layers.Activation("sigmoid")(layers.Dense(4)(inp)))
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(20))
    c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    path = tmp_path / "s16.tflite"
    path.write_bytes(c.convert())
    with pytest.raises(ValueError, match=r"LOGISTIC .* not supported in an int16x8 model; supported ops: QUANTIZE"):
        load_tflite(path)


def test_squeeze_op(tmp_path):
    """The converter writes Keras' squeeze as RESHAPE; a SQUEEZE (what other converters write) is made here by
    rewriting that operator in the flatbuffer, then held equal to the interpreter."""
    from tensorflow.lite.python import schema_py_generated as S

    from tests._tflite_util import edit

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 5, 3))
    model = keras.Model(inp, keras.ops.squeeze(layers.Conv2D(1, 3, padding="same")(inp), axis=-1))
    x = np.random.default_rng(0).normal(size=(40, 6, 5, 3)).astype(np.float32)

    def to_squeeze(m):
        code = S.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.SQUEEZE
        code.version = 1
        m.operatorCodes.append(code)
        for op in m.subgraphs[0].operators:
            if m.operatorCodes[op.opcodeIndex].builtinCode == S.BuiltinOperator.RESHAPE:
                op.opcodeIndex, op.inputs = len(m.operatorCodes) - 1, op.inputs[:1]
                op.builtinOptionsType = S.BuiltinOptions.SqueezeOptions
                op.builtinOptions = S.SqueezeOptionsT()
                op.builtinOptions.squeezeDims = [3]

    content = edit(convert(model, [x[:30]]), to_squeeze)
    assert "SQUEEZE" in _ops(content)
    path = tmp_path / "squeeze.tflite"
    path.write_bytes(content)
    for kernels in KERNELS:
        np.testing.assert_array_equal(hwsim.run(load_tflite(path, kernels=kernels), x[30:]),
                                      interpreter_outputs(content, kernels, x[30:]))
