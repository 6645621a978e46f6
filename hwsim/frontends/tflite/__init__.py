"""TF-Lite integer models in hwsim (int8, with uint8 inputs / outputs, and int16x8): import a ``.tflite``
file into the network IR and execute it bit for bit as ``tf.lite.Interpreter`` does. (Float models go to
:mod:`hwsim.frontends.tflite_float`.)

``load_tflite(path)`` returns a :class:`hwsim.graph.ir.Network` whose layers carry *quant records*
(``layer.quant``); ``hwsim.run(network, images)`` then returns exactly what the interpreter returns
(the dequantized float32 output for a float-output model, the int8 values otherwise).
``convert_keras(model, images, path)`` writes such a model from Keras (full-integer quantization).

Values between layers
---------------------
Every int8 tensor travels through ``hwsim.run`` as a float32 array holding its exact integer codes
``q`` (-128..127); its real value ``scale * (q - zero_point)`` is never formed. The scales and
zero points live in the quant records (:class:`TensorQ`), one per tensor, as in the ``.tflite``
file. Float tensors (the model's float input, the DEQUANTIZE output) are float32 values. So the
network input is what the interpreter's input tensor takes (float pixels for the zoo models) and
the IR keeps the TF-Lite graph: QUANTIZE and DEQUANTIZE become :class:`hwsim.graph.ir.Affine` layers,
CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV the MAC layers (their ``kernel`` holds
the int8 weights, HWIO / (kh, kw, C, M) / (in, out) / (kh, kw, C_in, C_out), and ``bias`` the int32
biases), and every other op the IR layer of the same meaning (:data:`.convert.CONVERTERS` maps each
TF-Lite op to its converter). uint8 tensors (a model converted with ``inference_input_type=tf.uint8``)
travel as their codes 0..255 the same way.

Patterns the converter writes are read back as the layer they stand for: SPACE_TO_BATCH_ND ->
CONV_2D / DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND is one dilated convolution (on the input padded with
the zero point, as SPACE_TO_BATCH_ND pads); RESHAPE (1, ..., K) -> (rows, K) -> FULLY_CONNECTED ->
RESHAPE back (Keras' Dense on a rank > 2 input) is one Dense over the last axis; the int32 shape
arithmetic feeding a RESHAPE or TRANSPOSE_CONV (SHAPE, GATHER, REDUCE_PROD, PACK, ...) is evaluated
at import.

Which arithmetic: ``kernels=``
------------------------------
The interpreter does not have one int8 arithmetic. With its default settings
(``tf.lite.Interpreter(path)``) the XNNPACK delegate executes every op it supports and TF-Lite's
built-in kernels the rest; ``OpResolverType.BUILTIN_REF`` runs TF-Lite's reference kernels. The two
requantize differently (about 0.1 % of conv outputs differ by one), so the emulator has both:

* ``kernels="xnnpack"`` (default; equals ``tf.lite.Interpreter(path)``): the ops of the XNNPACK
  partition use XNNPACK's arithmetic, the others TF-Lite's built-in kernels. Which ops XNNPACK takes
  is checked at load time against the partition the interpreter really makes.
* ``kernels="reference"`` (equals ``experimental_op_resolver_type=OpResolverType.BUILTIN_REF``):
  TF-Lite's reference kernels.

TF-Lite's own optimized built-in kernels without the delegate
(``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) are not emulated: on x86 some of them run NEON code through
NEON_2_SSE with other roundings (1x1 CONV_2D, DEPTHWISE_CONV_2D with depth multiplier > 1, MEAN with
keep_dims, DEQUANTIZE were measured to differ from both variants).

Per op (``acc`` is the exact int32 accumulator, ``zp``/``s`` zero points and scales, ``[lo, hi]`` the
int8 range intersected with the fused activation's; "round-even" is round half to even, "round-away"
half away from zero; ``f32(.)`` one float32 operation):

* MAC layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), both variants:
  ``acc = sum((x - zp_x) * w) + bias``, computed as TF-Lite's optimized kernels and XNNPACK do:
  the int8 input is padded with ``zp_x`` (not 0) and the int8 x int8 MACs run on the emulated MAC
  array (:mod:`kernels` with the ``int8_int32`` spec by default; products and int32 sums exact),
  then ``zp_x * sum(w)`` (per output channel, over the whole window) is subtracted and the bias
  added, in int64 (equal to TF-Lite's int32 sum; the wrap cannot trigger at these sizes).
  Requantization (the hardware's rescaling stage):

  - xnnpack: XNNPACK's "fp32" requantization, :func:`quant.requant.fp32_requantize`:
    ``y = clamp(round-even(f32(f32(acc) * scale)), lo - zp_y, hi - zp_y) + zp_y`` with the float32
    ``scale = f32(f32(s_x * s_w[c]) / s_y)`` per output channel;
  - reference: TF-Lite's fixed-point multiplier ``(m, shift) = QuantizeMultiplier(double(s_x) *
    double(s_w[c]) / double(s_y))`` and ``y = clamp(MultiplyByQuantizedMultiplier(acc, m, shift) +
    zp_y, lo, hi)`` (:mod:`quant.requant`) with double rounding for CONV_2D and DEPTHWISE_CONV_2D;
    FULLY_CONNECTED rounds the exact ``acc * m * 2**(shift - 31)`` once, ties away from zero -- both
    measured on the TF 2.21 interpreter (``tests/test_requant.py``).

* Activation bounds: reference ``lo = max(-128, zp_y)`` for RELU/RELU6 and
  ``hi = min(127, zp_y + round-away(f32(6 / s_y)))`` for RELU6 (``CalculateActivationRangeQuantized``);
  xnnpack ``round-even(clamp(f32(f32(v / s_y) + zp_y), -128, 127))`` for v = 0, 6 (``xnn_qs8_quantize``).
* QUANTIZE float32 -> int8: xnnpack ``clamp(round-even(f32(x * f32(1 / s)) ) + zp)``; reference
  ``clamp(round-away(f32(x / s)) + zp)``.
* DEQUANTIZE int8 -> float32: ``f32(float(q - zp) * s)`` (both).
* ADD (with broadcasting; SUB, MUL, MAXIMUM, MINIMUM and TF-Lite's optimized kernels, which round some
  elements of their vector loops differently, are in :mod:`.binary`): xnnpack
  (``xnn_init_qs8_add_minmax_scalar_params`` / qs8-vadd):
  ``r_a = f32(s_a / s_y)``, ``r_b = f32(s_b / s_y)``, ``shift = 20 - exponent(max(r_a, r_b))``,
  ``m_a = round-even(r_a * 2**shift)``, ``m_b`` alike, ``y = clamp(((2**(shift-1) - m_a zp_a - m_b zp_b
  + m_a a + m_b b) >> shift) + zp_y, lo, hi)``. reference (``reference_integer_ops::Add``):
  ``left_shift = 20``, ``twice = 2 * max(s_a, s_b)``; the input multipliers ``s_a / twice``,
  ``s_b / twice`` and the output multiplier ``twice / (2**20 s_y)`` are quantized with
  ``QuantizeMultiplier`` (double); ``a' = MBQM((a - zp_a) * 2**20, m_a, shift_a)``, ``b'`` alike,
  ``y = clamp(MBQM(a' + b', m_y, shift_y) + zp_y, lo, hi)`` (double rounding).
* MEAN over any axes (GlobalAveragePooling2D is H, W), ``n`` reduced elements, ``S = sum(q) - zp_x * n``:
  xnnpack (qs8 reduce): ``scale = f32(f32(s_x / s_y) * f32(1 / n))``, the zero point folded into a float
  one, ``zp' = f32(zp_y - f32(f32(n * zp_x) * scale))``, and ``y = clamp(round-away(f32(f32(sum(q) *
  scale) + zp')))`` -- ties away from zero, unlike XNNPACK's conv requantization (measured with crafted
  power-of-two scale ratios, where ties are frequent). reference (``QuantizedMeanOrSum``): ``(m, shift) = QuantizeMultiplier(double(s_x) / double(s_y))``,
  ``k = min(floor(log2 n), 32, 31 + shift)``, ``m' = (m * 2**k) // n``,
  ``y = clamp(MBQM(S, m', shift - k) + zp_y)`` (also when input and output quantization are equal).
* AVERAGE_POOL_2D (not delegated to XNNPACK for int8; both variants): over the window's in-bounds
  cells (``count`` of them), ``y = clamp(round-away(sum(q) / count))`` computed as TF-Lite does,
  ``(sum + count/2) / count`` (C division) for positive sums, ``(sum - count/2) / count`` otherwise.
* MAX_POOL_2D: the maximum over the in-bounds cells, clamped to ``[lo, hi]``. RESHAPE, PAD: exact.
* SHAPE / STRIDED_SLICE / PACK / CONCATENATION / GATHER / SLICE / REDUCE_PROD on int32 tensors that
  only compute a RESHAPE's target shape (Keras' ``Flatten`` converted with a dynamic batch) are
  evaluated at import, not executed. Such a RESHAPE is not delegated to XNNPACK, which splits the
  delegate's partition (the emulator models that and checks it).

The other ops' arithmetic is written in their records (:mod:`.records`), with the sources:

* TRANSPOSE_CONV: :class:`.records.MacOp` (the MAC sums as above over the taps that reach each output).
* LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1, QUANTIZE between 8-bit types:
  a 256-entry table per op built with the kernel's own arithmetic (:mod:`.tables`, which calls the C
  library's ``expf`` / ``tanhf`` as TF-Lite does); :class:`.records.LutOp`.
* SOFTMAX: :mod:`.softmax` (XNNPACK never takes it: the optimized kernel's float32 table or the
  reference kernel's gemmlowp fixed point).
* MEAN over any axes: :class:`.records.MeanOp` (XNNPACK folds the input zero point into a float one).
* RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR: :class:`.records.ResizeOp`. CONCATENATION, PADV2,
  EXPAND_DIMS, SQUEEZE: exact copies.

**int16x8 models** (int16 activations with zero point 0, int8 weights, int64 biases: the converter's
``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``): QUANTIZE, DEQUANTIZE, CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED (with or without bias), same-shape ADD, MEAN over H and W, the pools and
the reshapes (:data:`.convert.INT16_OPS`), with :mod:`.int16`'s arithmetic. XNNPACK takes none of them, so
the default interpreter runs TF-Lite's optimized kernels there. Their MAC sums run on
:data:`INT16_MAC` (int16 x int8, exact) unless ``mac`` says otherwise.

Which ops the XNNPACK delegate takes (some only for some parameters, e.g. LEAKY_RELU's scale ratio,
TRANSPOSE_CONV's constant output shape) is stated per op in :data:`.convert.CONVERTERS` and checked
against the interpreter's real partition at load time.

Any other op, or an op configuration outside these (int16 LOGISTIC, a per-channel-quantized activation,
...), raises ``ValueError`` naming it and listing the supported ops.

The MAC spec: ``load_tflite(path, mac=...)`` (default the ``int8_int32`` preset) is the MAC unit the
convolution and dense sums run on; the TF-Lite bit-exactness holds for ``int8_int32``. Another spec
(e.g. 6-bit operands, a float accumulator) emulates that hardware on the same int8 tensors: operands
are rounded into its formats by :mod:`kernels` and its sums replace the exact ones, the zero-point
correction, bias and requantization stay as above (so the result is that hardware under TF-Lite's
scheme, not something the interpreter can check). ``hwsim.run``'s own ``mac=`` argument does not
reach these layers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hwsim.graph import ir
from kernels.mac import MacSpec, as_spec

from .convert import CONVERTERS, INT16_OPS, SUPPORTED_OPS, Ctx, Op, tensor_of, unsupported
from .records import TensorQ, TFLiteOp
from .runtime import interpreter, quiet_tf as _quiet_tf, schema

__all__ = ["load_tflite", "convert_keras", "convert_keras_float", "SUPPORTED_OPS", "KERNELS", "TensorQ", "interpreter"]

KERNELS = ("xnnpack", "reference")

# int32 shape arithmetic that only feeds a RESHAPE's shape operand (skipped, see _shape_only_ops)
_SHAPE_OPS = frozenset({"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "REDUCE_PROD"})
# the (op, input position) pairs that take a shape: RESHAPE's target, TRANSPOSE_CONV's output shape
_SHAPE_OPERANDS = frozenset({("RESHAPE", 1), ("TRANSPOSE_CONV", 0)})


def _read_model(path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TF-Lite model not found: {p}")
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{p}: not a TF-Lite model (no 'TFL3' flatbuffer identifier; {len(data)} bytes)")
    return data


def _open(data: bytes, where, kernels_: str):
    try:
        return interpreter(data, kernels_)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: corrupt or unreadable TF-Lite model: {str(e).strip()}") from None



def _options(data: bytes, nops: int, where):
    """(builtin op name, options object) per operator of subgraph 0, from the flatbuffer schema."""
    S = schema()

    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = S.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() != 1:
            raise ValueError(f"{model.SubgraphsLength()} subgraphs (control flow); only single-graph models are supported")
        sub = model.Subgraphs(0)
        out = []
        for i in range(sub.OperatorsLength()):
            op = S.OperatorT.InitFromObj(sub.Operators(i))
            code = S.OperatorCodeT.InitFromObj(model.OperatorCodes(op.opcodeIndex))
            b = max(code.builtinCode, code.deprecatedBuiltinCode)
            out.append((names.get(b, f"BUILTIN_{b}"), op.builtinOptions))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except Exception as e:  # a flatbuffer the interpreter accepted but the schema reader cannot walk
        raise ValueError(f"{where}: corrupt or unreadable TF-Lite model: {type(e).__name__}: {e}") from None
    if len(out) != nops:
        raise ValueError(f"{where}: the interpreter lists {nops} operators but the flatbuffer holds {len(out)}")
    return out




def _delegated_outputs(data: bytes, where) -> set[int] | None:
    """Tensor indices the XNNPACK delegate's partitions output in the default interpreter (None if
    nothing was delegated)."""
    it = _open(data, where, "xnnpack")
    outs: set[int] = set()
    found = False
    for op in it._get_ops_details():
        if op["op_name"] == "DELEGATE":
            found = True
            outs.update(int(t) for t in op["outputs"])
    return outs if found else None


def _shape_only_ops(ops, tensors) -> set[int]:
    """Operators that only compute a RESHAPE's target shape (SHAPE -> STRIDED_SLICE -> PACK ... on int32,
    what the converter emits for Keras' Flatten with a dynamic batch): every output is an int32 tensor
    read only as the shape operand of a RESHAPE or by another such operator. The emulator takes the
    RESHAPE's static output shape, so these are skipped."""
    consumers: dict[int, list[tuple[int, int]]] = {}
    for i, op in enumerate(ops):
        for pos, t in enumerate(op["inputs"]):
            consumers.setdefault(int(t), []).append((i, pos))
    skip: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i in range(len(ops) - 1, -1, -1):
            op = ops[i]
            if i in skip or op["op_name"] not in _SHAPE_OPS:
                continue
            outs = [int(t) for t in op["outputs"]]
            if all(np.dtype(tensors[t]["dtype"]) == np.int32 and consumers.get(t) and
                   all((ops[c]["op_name"], pos) in _SHAPE_OPERANDS or c in skip for c, pos in consumers[t])
                   for t in outs):
                skip.add(i)
                changed = True
    return skip



#: the MAC unit an int16x8 model's sums run on by default: int16 x int8 products, exact sums (a 53-bit
#: significand holds TF-Lite's int64 accumulator exactly while |acc| < 2**53)
INT16_MAC = MacSpec(a="int16", b="int8", accum="e10m52", name="int16x8_exact")


def load_tflite(path, kernels: str = "xnnpack", mac=None) -> ir.Network:
    """Import the TF-Lite int8 model at ``path`` into a :class:`hwsim.graph.ir.Network` that
    :func:`hwsim.run` executes bit-exactly as ``tf.lite.Interpreter`` (``kernels="xnnpack"``, the
    interpreter's default) or its reference kernels (``kernels="reference"``); see the module
    docstring for the arithmetic of every op. ``mac``: the MAC spec for the conv/dense sums (default
    ``int8_int32``, or :data:`INT16_MAC` for an int16x8 model).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a corrupt file, an
    unsupported op (named) or configuration. Reading never writes anything.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}")
    where = str(path)
    data = _read_model(path)
    it = _open(data, where, "builtin")
    ops = it._get_ops_details()
    opts = _options(data, len(ops), where)
    tensors = {int(d["index"]): d for d in it.get_tensor_details()}
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"{where}: {len(ins)} inputs and {len(outs)} outputs; hwsim runs single-input, single-output models")
    in_t, out_t = tensor_of(ins[0]), tensor_of(outs[0])
    if len(in_t.shape) < 2 or in_t.shape[0] != 1:
        raise ValueError(f"{where}: input shape {in_t.shape}: expected a batch dimension of 1 first")
    from .. import tflite_float

    if tflite_float.is_float_model(ops, tensors):  # float32 / float16-weight models: plain IR, any MAC spec
        return tflite_float.load_float_tflite(where, it, ops, opts, tensors, _shape_only_ops(ops, tensors))

    int16 = any(np.dtype(tensors[int(t)]["dtype"]) == np.int16 for op in ops for t in op["outputs"])
    mac = as_spec(mac if mac is not None else INT16_MAC if int16 else "int8_int32")
    ctx = Ctx(where=where, it=it, ops=ops, tensors=tensors, kernels=kernels, mac=mac, opts=opts,
              produced={int(t) for op in ops for t in op["outputs"]}, shape_only=_shape_only_ops(ops, tensors),
              act="int16" if int16 else "int8")
    ctx.producer[in_t.index] = ir.INPUT
    for i, (op, (oname, opt)) in enumerate(zip(ops, opts)):
        name = op["op_name"]
        if name != oname:
            raise ValueError(f"{where}: operator #{i} is {name} for the interpreter but {oname} in the flatbuffer")
        if i in ctx.shape_only:
            continue
        conv = CONVERTERS.get(name)
        if conv is None:
            raise unsupported(where, i, name)
        outs_i = [int(t) for t in op["outputs"]]
        if len(outs_i) != 1:
            raise unsupported(where, i, name, f"{len(outs_i)} outputs")
        if int16 and name not in INT16_OPS:
            raise unsupported(where, i, name, supported=INT16_OPS, what=" in an int16x8 model")
        ctx.delegated[i] = kernels == "xnnpack" and not int16 and bool(conv.xnnpack(ctx, i))
        mode = "reference" if kernels == "reference" else ("xnnpack" if ctx.delegated[i] else "builtin")
        if mode == "builtin" and not conv.builtin and not int16:
            raise unsupported(where, i, name, "it would run outside the XNNPACK delegate on TF-Lite's optimized "
                              "built-in kernel, whose arithmetic is not emulated")
        o = Op(ctx, i, name, opt, [int(t) for t in op["inputs"]], outs_i, mode)
        result = conv.fn(ctx, o)
        if isinstance(result, str):  # the op only renames a tensor
            ctx.producer[outs_i[0]] = result
            continue
        if o.y.shape[0] != 1:
            raise unsupported(where, i, name, f"output shape {o.y.shape} does not keep the batch dimension first")
        ctx.layers.append(result)
        ctx.producer[outs_i[0]] = result.name

    if out_t.index not in ctx.producer:
        raise ValueError(f"{where}: the output tensor {out_t.index} is not produced by any op")
    if ctx.pending_dilation:
        raise ValueError(f"{where}: SPACE_TO_BATCH_ND outputs {sorted(ctx.pending_dilation)} reach no convolution")
    net = ir.Network(name=Path(path).stem, input_shape=in_t.shape[1:], layers=ctx.layers,
                     output=ctx.producer[out_t.index],
                     meta={"source": str(path), "format": "tflite", "kernels": kernels, "mac": mac.name,
                           "input_dtype": in_t.dtype, "output_dtype": out_t.dtype,
                           "input_quant": (float(in_t.scale[0]), int(in_t.zero_point[0])) if in_t.scale.size else None,
                           "output_quant": (float(out_t.scale[0]), int(out_t.zero_point[0])) if out_t.scale.size else None})
    shapes = net.shapes
    for layer in net.layers:
        q = layer.quant
        if isinstance(q, TFLiteOp) and tuple(q.output.shape[1:]) != tuple(shapes[layer.name]):
            raise unsupported(where, q.index, q.op, f"output shape {q.output.shape[1:]} but the IR computes "
                              f"{shapes[layer.name]}")
    if kernels == "xnnpack":
        delegated = [ctx.delegated.get(i, False) for i in range(len(ops))]
        _check_partition(data, ops, delegated, out_t.index, where)
    return net


def _partitions(ops, delegated: list[bool]) -> list[int]:
    """The partition of every operator as TF-Lite forms them (``PartitionGraphIntoIndependentNodeSubsets``
    in ``tensorflow/lite/graph_info.cc``): alternately delegated and not, each partition takes, in
    order and repeatedly, every remaining operator of its kind whose inputs are all available (graph
    inputs, constants, or outputs of operators already placed)."""
    produced = {int(t): i for i, op in enumerate(ops) for t in op["outputs"]}
    part = [-1] * len(ops)
    kind = delegated[0] if ops else False
    n = 0
    while -1 in part:
        changed = True
        while changed:
            changed = False
            for i, op in enumerate(ops):
                if part[i] == -1 and delegated[i] == kind and all(
                        int(t) not in produced or part[produced[int(t)]] != -1 for t in op["inputs"] if int(t) >= 0):
                    part[i] = n
                    changed = True
        n += 1
        kind = not kind
    return part


def _check_partition(data: bytes, ops, delegated: list[bool], graph_out: int, where):
    """The emulator assumes XNNPACK runs exactly the operators marked ``delegated``: compare the tensors
    its partitions would output (:func:`_partitions`) with the ones the interpreter's DELEGATE nodes do
    output."""
    part = _partitions(ops, delegated)
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(i)
    predicted = set()
    for i, op in enumerate(ops):
        if not delegated[i]:
            continue
        for t in (int(t) for t in op["outputs"]):
            if t == graph_out or any(part[c] != part[i] for c in consumers.get(t, [])):
                predicted.add(t)
    actual = _delegated_outputs(data, where) or set()
    if predicted != actual:
        raise ValueError(f"{where}: the XNNPACK delegate partitions this model differently than the emulator assumes "
                         f"(partition outputs: interpreter {sorted(actual)}, emulator {sorted(predicted)}); "
                         "use kernels='reference' and compare with the BUILTIN_REF interpreter")


# ------------------------------------------------------------------------------------------------
# Keras -> TF-Lite
# ------------------------------------------------------------------------------------------------

def convert_keras(model, representative_images, path, *, per_channel_dense: bool = True) -> Path:
    """Full-integer quantization of a Keras ``model`` with ``tf.lite.TFLiteConverter``: int8 weights
    (per channel) and activations calibrated on ``representative_images`` (an array, one sample per
    row, fed as float32 batches of one), int8-only builtin ops, float32 input and output (a QUANTIZE
    first, a DEQUANTIZE last). Writes the model to ``path`` atomically (a temporary file in the same
    folder, renamed) and returns the path; on failure nothing is written."""
    tf = _quiet_tf()
    images = np.asarray(representative_images)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"representative_images must be a non-empty array of samples, got shape {images.shape}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([images[i:i + 1].astype(np.float32)] for i in range(len(images)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.float32
    conv.inference_output_type = tf.float32
    if not per_channel_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return _write_atomic(conv.convert(), path)


def convert_keras_float(model, path, *, float16: bool = False) -> Path:
    """A float TF-Lite model of the Keras ``model`` (``tf.lite.TFLiteConverter`` defaults; ``float16``:
    float16 weights, dequantized at run time), written to ``path`` atomically; returns the path."""
    tf = _quiet_tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    return _write_atomic(conv.convert(), path)


def _write_atomic(content: bytes, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(source, **options) -> ir.Network:
    """The frontend entry point (:mod:`hwsim.frontends`): :func:`load_tflite` (options ``kernels``, ``mac``)."""
    from .. import check_options

    check_options(options, "TF-Lite", ("kernels", "mac"))
    return load_tflite(source, **options)