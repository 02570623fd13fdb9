"""Recurrent ONNX ops (LSTM, GRU, RNN) as TFLite builtins, unrolled over the static sequence.

Consumes: an ONNX ``LSTM`` / ``GRU`` / ``RNN`` node as PyTorch exports ``nn.LSTM`` / ``nn.GRU`` /
``nn.RNN`` (layout 0: X [T, B, I]; constant W, R, B; no sequence_lens or all full; initial states
constant or computed; forward, reverse or bidirectional), inside ``tflite_lower.Lowering``.
Produces: per direction one FULLY_CONNECTED of every time step's input at once, split per step,
then per step a FULLY_CONNECTED of the previous hidden state and the gate arithmetic (ADD, MUL,
SUB, LOGISTIC, TANH, RELU); Y, Y_h and Y_c as the ONNX outputs lay them out, each only if read.

Why unrolled: TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM has no GRU or RNN counterpart that LiteRT's
XNNPACK delegate takes, and keyword-spotting and sensor models run tens of steps of small
matrices, where one operator per gate costs little. Every operator here is one LiteRT and our
runtime already run, so the same file runs on both.
"""

from __future__ import annotations

import numpy as np

from .tflite_lower import Lowering, Val, _attr, unsupported
from .tflite_ops import _requant_to_next, tmp
from .tflite_schema import OP

# gates per op, and the ONNX order of their rows in W and R
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # LSTM: i, o, f, c; GRU: z, r, h; RNN: the one
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _activations(node) -> list[str]:
    return [a.decode() if isinstance(a, bytes) else a for a in _attr(node, "activations", [])]


def _check(lw: Lowering, node) -> None:
    op = node.op_type
    acts = _activations(node)
    ok = acts in ([], _DEFAULT_ACTS[op], _DEFAULT_ACTS[op] * 2)
    if not (ok or (op == "RNN" and acts in (["Relu"], ["Relu", "Relu"]))):
        raise unsupported(node, f"activations {acts}")
    if _attr(node, "clip", None) is not None:
        raise unsupported(node, "a cell clip")
    if _attr(node, "layout", 0) != 0:
        raise unsupported(node, "layout 1 (batch first inside the op)")
    if op == "LSTM" and _attr(node, "input_forget", 0):
        raise unsupported(node, "input_forget (coupled input and forget gates)")
    if op == "GRU" and not _attr(node, "linear_before_reset", 0):
        raise unsupported(node, "linear_before_reset=0 (PyTorch's GRU exports 1)")
    for i in (1, 2):
        if node.input[i] not in lw.consts:
            raise unsupported(node, "weights that are not constants")
    if len(node.input) > 3 and node.input[3] and node.input[3] not in lw.consts:
        raise unsupported(node, "a bias that is not a constant")
    seq_in = lw.shape(node.input[0])
    w, r = (np.asarray(lw.consts[node.input[i]]) for i in (1, 2))
    hidden = int(_attr(node, "hidden_size", 0)) or r.shape[-1]
    dirs = 2 if _attr(node, "direction", b"forward") in (b"bidirectional", "bidirectional") else 1
    g = _GATES[op]
    b = np.asarray(lw.consts[node.input[3]]) if len(node.input) > 3 and node.input[3] else None
    if (
        len(seq_in) != 3
        or w.shape != (dirs, g * hidden, seq_in[2])
        or r.shape != (dirs, g * hidden, hidden)
        or (b is not None and b.shape != (dirs, 2 * g * hidden))
    ):
        raise unsupported(
            node,
            f"weights W {list(w.shape)} and R {list(r.shape)} that do not fit hidden_size {hidden} (a projected LSTM: proj_size)",
        )
    for i in (5, 6):
        if len(node.input) > i and node.input[i] and lw.shape(node.input[i]) != [dirs, seq_in[1], hidden]:
            got = lw.shape(node.input[i])
            raise unsupported(
                node, f"an initial state {got}, not [{dirs}, {seq_in[1]}, {hidden}] (a projected LSTM: proj_size)"
            )
    if len(node.input) > 4 and node.input[4]:
        lens = lw.consts.get(node.input[4])
        if lens is None or not np.all(np.asarray(lens) == lw.shape(node.input[0])[0]):
            raise unsupported(node, "sequence_lens shorter than the sequence (pack_padded_sequence)")
    if op == "LSTM" and len(node.input) > 7 and node.input[7]:
        p = lw.consts.get(node.input[7])
        if p is None or np.any(p):
            raise unsupported(node, "peephole weights")


class _Steps:
    """Emits one direction's operators; names every intermediate after the node."""

    def __init__(self, lw: Lowering, node, d: int, batch: int, hidden: int):
        self.lw, self.node, self.d, self.b, self.h = lw, node, d, batch, hidden
        self.count = 0

    def tensor(self, shape) -> int:
        self.count += 1
        return tmp(self.lw, f"{self.node.output[0] or self.node.name}_d{self.d}_{self.count}", shape)

    def op(self, code, ins, shape, options=None) -> int:
        out = self.tensor(shape)
        self.lw.m.op(code, ins, [out], options, 1, self.node.name)
        return out

    def weights(self, w: np.ndarray, bias: np.ndarray) -> tuple[int, int, int]:
        """Constant tensors for a FULLY_CONNECTED, made once and read by every step's operator."""
        wt = self.lw.m.const("rnn_weight", np.ascontiguousarray(w, np.float32))
        return wt, self.lw.m.const("rnn_bias", np.ascontiguousarray(bias, np.float32)), w.shape[0]

    def fc(self, x: int, weights: tuple[int, int, int], rows: int) -> int:
        wt, bt, units = weights
        opts = ("FullyConnectedOptions", {"FusedActivationFunction": 0, "KeepNumDims": False})
        return self.op(OP.FULLY_CONNECTED, [x, wt, bt], [rows, units], opts)

    def split(self, x: int, parts: int, axis: int, rows: int, width: int) -> list[int]:
        if parts == 1:
            return [x]
        outs = [self.tensor([rows, width // parts] if axis == 1 else [rows // parts, width]) for _ in range(parts)]
        sizes = np.full(parts, (width if axis == 1 else rows) // parts, np.int32)
        ins = [x, self.lw.m.const("sizes", sizes), self.lw.m.const("axis", np.array(axis, np.int32))]
        self.lw.m.op(OP.SPLIT_V, ins, outs, ("SplitVOptions", {"NumSplits": parts}), 1, self.node.name)
        return outs

    def binary(self, code, a: int, b: int) -> int:
        name = {OP.ADD: "AddOptions", OP.SUB: "SubOptions", OP.MUL: "MulOptions"}[code]
        return self.op(code, [a, b], [self.b, self.h], (name, {"FusedActivationFunction": 0}))

    def unary(self, code, a: int) -> int:
        return self.op(code, [a], [self.b, self.h])


def _initial(lw: Lowering, node, index: int, d: int, batch: int, hidden: int) -> int:
    """Direction d's initial state [B, H]: the given one (constant or computed) or zeros."""
    name = node.input[index] if len(node.input) > index else ""
    if not name:
        return lw.m.const("rnn_zeros", np.zeros((batch, hidden), np.float32))
    if name in lw.consts:
        return lw.m.const("rnn_initial", np.asarray(lw.consts[name], np.float32)[d])
    v = lw.get(name, nhwc=False, want_float=True)
    out = tmp(lw, f"{name}_d{d}", [batch, hidden])
    begin, end = np.array([d, 0, 0], np.int32), np.array([d + 1, batch, hidden], np.int32)
    sliced = tmp(lw, f"{name}_d{d}_slice", [1, batch, hidden])
    ins = [v.index] + [lw.m.const(n, a) for n, a in (("begin", begin), ("end", end), ("strides", np.ones(3, np.int32)))]
    lw.m.op(OP.STRIDED_SLICE, ins, [sliced], ("StridedSliceOptions", {}), 1, node.name)
    lw.reshape_op(sliced, out, [batch, hidden])
    return out


def _direction(lw: Lowering, node, xs: int, d: int, reverse: bool, dims) -> tuple[list[int], int, int | None]:
    """(hidden state per time step in time order, last hidden state, last cell state or None)."""
    op = node.op_type
    seq, batch, _, hidden = dims
    g = _GATES[op]
    w = np.asarray(lw.consts[node.input[1]], np.float32)[d]  # [G H, I]
    r = np.asarray(lw.consts[node.input[2]], np.float32)[d]  # [G H, H]
    has_b = len(node.input) > 3 and node.input[3]
    b = np.asarray(lw.consts[node.input[3]], np.float32)[d] if has_b else np.zeros(2 * g * hidden, np.float32)
    wb, rb = b[: g * hidden], b[g * hidden :]
    s = _Steps(lw, node, d, batch, hidden)
    relu = op == "RNN" and _activations(node)[:1] == ["Relu"]
    # every step's input projection in one FULLY_CONNECTED; a GRU adds R's h-gate bias inside
    # r * (.), so only its z and r gates take R's bias here
    in_bias = wb + rb if op != "GRU" else wb + np.concatenate([rb[: 2 * hidden], np.zeros(hidden, np.float32)])
    rec_bias = (
        np.zeros(g * hidden, np.float32)
        if op != "GRU"
        else np.concatenate([np.zeros(2 * hidden, np.float32), rb[2 * hidden :]])
    )
    xw = s.fc(xs, s.weights(w, in_bias), seq * batch)
    recurrent_weights = s.weights(r, rec_bias)
    per_step = s.split(xw, seq, 0, seq * batch, g * hidden)
    h = _initial(lw, node, 5, d, batch, hidden)
    c = _initial(lw, node, 6, d, batch, hidden) if op == "LSTM" else None
    hs: list[int] = [0] * seq
    for t in reversed(range(seq)) if reverse else range(seq):
        rec = s.fc(h, recurrent_weights, batch)
        if op == "LSTM":
            gates = s.split(
                s.op(OP.ADD, [per_step[t], rec], [batch, g * hidden], ("AddOptions", {})), 4, 1, batch, g * hidden
            )
            i, o, f = (s.unary(OP.LOGISTIC, x) for x in gates[:3])
            cand = s.unary(OP.TANH, gates[3])
            c = s.binary(OP.ADD, s.binary(OP.MUL, f, c), s.binary(OP.MUL, i, cand))
            h = s.binary(OP.MUL, o, s.unary(OP.TANH, c))
        elif op == "GRU":
            xz, xr, xh = s.split(per_step[t], 3, 1, batch, g * hidden)
            hz, hr, hh = s.split(rec, 3, 1, batch, g * hidden)
            z = s.unary(OP.LOGISTIC, s.binary(OP.ADD, xz, hz))
            rg = s.unary(OP.LOGISTIC, s.binary(OP.ADD, xr, hr))
            cand = s.unary(OP.TANH, s.binary(OP.ADD, xh, s.binary(OP.MUL, rg, hh)))
            # (1 - z) h~ + z h = h~ + z (h - h~)
            h = s.binary(OP.ADD, cand, s.binary(OP.MUL, z, s.binary(OP.SUB, h, cand)))
        else:
            h = s.unary(
                OP.RELU if relu else OP.TANH, s.op(OP.ADD, [per_step[t], rec], [batch, hidden], ("AddOptions", {}))
            )
        hs[t] = h
    return hs, h, c


def _stack(lw: Lowering, node, name: str, parts: list[int], unit: list[int], out: Val) -> None:
    """RESHAPE every [B, H] part to ``unit`` and concatenate them along axis 0 into ``out``."""
    shaped = []
    for k, p in enumerate(parts):
        t = tmp(lw, f"{name}_part{k}", unit)
        lw.reshape_op(p, t, unit)
        shaped.append(t)
    opts = ("ConcatenationOptions", {"Axis": 0, "FusedActivationFunction": 0})
    lw.m.op(OP.CONCATENATION, shaped, [out.index], opts, 1, node.name)


def recurrent(lw: Lowering, node) -> None:
    _check(lw, node)
    x = node.input[0]
    seq, batch, inputs = lw.shape(x)
    hidden = int(_attr(node, "hidden_size", 0)) or np.asarray(lw.consts[node.input[2]]).shape[-1]
    direction = _attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise unsupported(node, f"direction {direction}")
    xv = lw.get(x, nhwc=False, want_float=True)
    xs = tmp(lw, f"{x}_steps", [seq * batch, inputs])
    lw.reshape_op(xv.index, xs, [seq * batch, inputs])
    dirs = [(0, False), (1, True)] if direction == "bidirectional" else [(0, direction == "reverse")]
    results = [_direction(lw, node, xs, d, rev, (seq, batch, inputs, hidden)) for d, rev in dirs]
    outs = list(node.output) + [""] * (3 - len(node.output))

    def read(name: str) -> bool:
        return bool(name) and (name in lw.graph_outputs or bool(lw.consumers.get(name)))

    if read(outs[0]):  # Y [T, D, B, H]: time-major, then direction
        y = lw.new(outs[0], False)
        steps = [p for t in range(seq) for p in (r[0][t] for r in results)]
        flat = Val(tmp(lw, f"{outs[0]}_flat", [seq * len(dirs), batch, hidden]), False)
        _stack(lw, node, outs[0], steps, [1, batch, hidden], flat)
        lw.reshape_op(flat.index, y.index, [seq, len(dirs), batch, hidden])
        lw.bind(outs[0], y)
        _requant_to_next(lw, outs[0], y)
    for k in (1, 2):  # Y_h, Y_c [D, B, H]: each direction's last state (a reverse one's: at t = 0)
        if k == 2 and node.op_type != "LSTM":
            break
        if read(outs[k]):
            v = lw.new(outs[k], False)
            _stack(lw, node, outs[k], [r[k] for r in results], [1, batch, hidden], v)
            lw.bind(outs[k], v)
            _requant_to_next(lw, outs[k], v)


RNN_HANDLERS = {"LSTM": recurrent, "GRU": recurrent, "RNN": recurrent}
