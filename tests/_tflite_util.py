"""Helpers for the TF-Lite tests: convert small Keras models, edit a .tflite flatbuffer (weights,
biases, scales), and run the real interpreter as the oracle."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def convert(model, samples, int_io=False, per_channel_dense=True) -> bytes:
    """Full-integer conversion; ``samples`` is a list of input arrays (one per model input), each
    with the samples along axis 0."""
    from hwsim.frontends.tflite import _quiet_tf

    tf = _quiet_tf()
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    n = len(samples[0])
    c.representative_dataset = lambda: ([s[i:i + 1].astype(np.float32) for s in samples] for i in range(n))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int_io:
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    if not per_channel_dense:
        c._experimental_disable_per_channel_quantization_for_dense_layers = True
    return c.convert()


def edit(content: bytes, fn) -> bytes:
    """Apply ``fn(model_object)`` (the flatbuffer object API, subgraph 0 in ``model.subgraphs[0]``)."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(content))
    fn(model)
    return bytes(fu.convert_object_to_bytearray(model))


def set_buffer(model, tensor, values: np.ndarray):
    buf = model.buffers[tensor.buffer]
    raw = np.ascontiguousarray(values).view(np.uint8).ravel()
    assert buf.data is not None and len(buf.data) == len(raw), "buffer size must not change"
    buf.data = raw.copy()


def set_quant(tensor, scales, zero_points):
    tensor.quantization.scale = np.asarray(scales, dtype=np.float32).ravel().tolist()
    tensor.quantization.zeroPoint = np.asarray(zero_points, dtype=np.int64).ravel().tolist()


def crafted_bias_model(op: str, accs, reals) -> bytes:
    """A one-op int8 model (CONV_2D 1x1 or FULLY_CONNECTED) with C = len(accs) output channels whose
    accumulator for input 0 is exactly ``accs[c]`` (weights 1, biases ``accs``, input zero point 0)
    and whose requantization multiplier is ``f32(reals[c])`` (input and output scale 1, zero points 0,
    weight scale ``reals[c]``)."""
    import keras

    C = len(accs)
    if op == "CONV_2D":
        inp = keras.Input((1, 1, 1))
        model = keras.Model(inp, keras.layers.Conv2D(C, 1)(inp))
        shape = (1, 1, 1)
    else:
        inp = keras.Input((1,))
        model = keras.Model(inp, keras.layers.Dense(C)(inp))
        shape = (1,)
    rng = np.random.default_rng(0)
    layer = model.layers[-1]
    layer.set_weights([w + 0.5 for w in layer.get_weights()])  # a nonzero bias, so the converter keeps it
    content = convert(model, [rng.normal(0, 1, (50, *shape))], int_io=True)

    def fix(m):
        sg = m.subgraphs[0]
        (o,) = sg.operators
        x, w, b = (sg.tensors[i] for i in o.inputs[:3])
        y = sg.tensors[o.outputs[0]]
        set_buffer(m, w, np.ones(C, dtype=np.int8))
        set_buffer(m, b, np.asarray(accs, dtype=np.int32))
        set_quant(x, [1.0], [0])
        set_quant(y, [1.0], [0])
        set_quant(w, reals, [0] * C)
        set_quant(b, reals, [0] * C)

    return edit(content, fix)


def interpreter_outputs(content, kernels, images):
    """Interpreter outputs for ``images`` (one invoke per image) with arithmetic ``kernels``."""
    from hwsim.frontends.tflite import interpreter

    it = interpreter(content, kernels)
    i = it.get_input_details()[0]
    o = it.get_output_details()[0]
    out = []
    for k in range(len(images)):
        it.set_tensor(i["index"], np.asarray(images[k:k + 1]).astype(i["dtype"]))
        it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(out)


def run_crafted(content, kernels) -> np.ndarray:
    from hwsim.frontends.tflite import interpreter

    it = interpreter(content, kernels)
    i = it.get_input_details()[0]
    it.set_tensor(i["index"], np.zeros(i["shape"], dtype=i["dtype"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64).ravel()
