"""Transformer encoders on edgeprune's runtime: BATCH_MATMUL, GELU, GATHER, the attention-mask
operators (CAST, comparisons, LOGICAL_*, SELECT_V2, BROADCAST_TO), MAXIMUM/MINIMUM, SQRT/RSQRT/NEG,
and int32/int64/bool model inputs, against LiteRT's builtin kernels on identical files (every
compiled path, same bits for 1/2/4 threads), GELU against float64 erf, a `transformers` BERT
encoder exported by edgeprune, and token ids outside the vocabulary (an error, never a read past
the table).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tflite_builder import Builder

import edgeprune as ep
from edgeprune import kernels
from edgeprune.errors import UserError
from edgeprune.export import export

ISAS = [i for i in ("reference", "avx2", "avx512", "neon", "neon-dotprod") if i in kernels.supported_isas()]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _litert_builtin(data: bytes, inputs):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def _ops_file() -> tuple[bytes, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input([2, 3, 5, 8])
    ids = b.input([2, 4], np.int32)
    keep = b.input([2, 1, 1, 8], np.bool_)
    outs = []
    # attention: Q K^T with broadcast batch dimensions, then P V, and a transposed A
    kt = b.const(rng.standard_normal((1, 3, 6, 8)))
    scores = b.batch_matmul(x, kt, adj_y=True)  # [2, 3, 5, 6]
    outs.append(scores)
    v = b.const(rng.standard_normal((3, 6, 37)))
    outs.append(b.batch_matmul(scores, v))  # [2, 3, 5, 37]: 37 = a 32 tile, no 16 tile, a tail of 5
    at = b.const(rng.standard_normal((2, 1, 8, 5)))
    outs.append(b.batch_matmul(at, x, adj_x=True, adj_y=True))  # [2, 3, 5, 5]
    # embeddings: rows of a table by int32 ids, and a gather along axis 1
    table = b.const(rng.standard_normal((11, 8)))
    outs.append(b.gather(table, ids))  # [2, 4, 8]
    outs.append(b.gather(x, b.const([2, 0, 2], np.int32), axis=1))  # [2, 3, 5, 8]
    # element-wise
    outs.append(b.gelu(x))
    outs.append(b.gelu(x, approximate=True))
    sq = b.binary("add", b.binary("mul", x, x), b.const(np.float32(0.5)))
    outs.append(b.unary(76, sq))  # RSQRT
    outs.append(b.unary(75, sq))  # SQRT
    outs.append(b.unary(59, x))  # NEG
    outs.append(b.elementwise(55, [x, b.const(np.full(8, -0.3, np.float32))]))  # MAXIMUM
    outs.append(b.elementwise(57, [x, b.const(np.float32(0.4))]))  # MINIMUM
    outs.append(b.softmax(b.reshape(x, [6, 40])))  # rows of 40: two 16-lane blocks and a tail
    outs += b.split_v(x, [3, -1, 1], axis=-1)  # SPLIT_V: a qkv-style split with a "rest" part
    outs += b.split_v(x, [2, 1], axis=1)
    outs.append(b.elementwise(78, [b.unary(76, sq), b.const(np.float32(1.7))]))  # POW
    # an attention mask as the exporter writes it
    lt = b.elementwise(58, [x, b.const(np.float32(0.1))], np.bool_)  # LESS
    ne = b.elementwise(72, [x, x], np.bool_)  # NOT_EQUAL (x != x: NaN)
    both = b.elementwise(86, [lt, keep], np.bool_)  # LOGICAL_AND, broadcast
    either = b.elementwise(84, [both, ne], np.bool_)  # LOGICAL_OR
    inv = b.op(87, [either], b.shape(either), None, np.bool_)  # LOGICAL_NOT
    outs.append(b.elementwise(123, [inv, b.const(np.float32(-1e4)), x]))  # SELECT_V2
    outs.append(b.cast(inv, np.float32))
    outs.append(b.cast(ids, np.float32))
    outs.append(b.cast(b.binary("mul", x, b.const(np.float32(3.0))), np.int32))
    # position ids as RoBERTa computes them: integer arithmetic and cumulative sums
    i32 = np.int32
    outs.append(b.binary("add", ids, b.const([1, -2, 3, 2**31 - 1], i32), dtype=i32))  # wraps
    outs.append(b.binary("sub", b.const([[7], [9]], i32), ids, dtype=i32))  # broadcast
    outs.append(b.binary("mul", ids, ids, dtype=i32))
    outs.append(b.cumsum(ids, 1, dtype=i32))
    outs.append(b.cumsum(ids, 0, exclusive=True, reverse=True, dtype=i32))
    ids64 = b.cast(ids, np.int64)
    outs.append(b.binary("add", b.cumsum(ids64, -1, reverse=True, dtype=np.int64), ids64, dtype=np.int64))
    outs.append(b.cumsum(x, -1))
    outs.append(b.cumsum(x, 1, exclusive=True))
    # SUM (a sentence embedder's masked mean pooling and its L2 norm): inner, outer and several axes
    outs.append(b.mean(x, [2], keep_dims=False, code=74))
    outs.append(b.mean(x, [3], keep_dims=True, code=74))
    outs.append(b.mean(x, [0, 3], keep_dims=False, code=74))
    # ARG_MAX (CLIP pools at the argmax of its ids): float and int values, ties pick the first
    outs.append(b.arg_max(x, -1))
    outs.append(b.arg_max(x, 1, dtype=np.int32))
    outs.append(b.arg_max(b.binary("mul", ids, b.const([[0], [1]], np.int32), dtype=np.int32), 1))
    # attention's NaN clean-up, SELECT_V2(NOT_EQUAL(s, s), 0, s): one fused pass at load
    outs.append(b.elementwise(123, [b.elementwise(72, [x, x], np.bool_), b.const(np.float32(0.0)), x]))
    mask = b.broadcast_to(keep, [2, 3, 5, 8], np.bool_)
    outs.append(b.elementwise(123, [mask, b.const(np.float32(0.0)), b.const(np.float32(-1e9))]))
    data = b.finish(outs)
    inputs = [
        rng.standard_normal((2, 3, 5, 8)).astype(np.float32),
        rng.integers(0, 11, (2, 4)).astype(np.int32),
        rng.random((2, 1, 1, 8)) < 0.6,
    ]
    inputs[0][0, 0, 0, 0] = np.nan  # the NaN path of the mask
    return data, inputs


@pytest.fixture(scope="module")
def ops_case():
    data, inputs = _ops_file()
    return data, inputs, _litert_builtin(data, inputs)


@pytest.mark.parametrize("isa", ISAS)
def test_transformer_operators_match_litert_on_every_path(ops_case, isa):
    data, inputs, want = ops_case
    got = ep.runtime.load(data, isa=isa)(*inputs)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g.dtype, w.dtype, g.shape, w.shape)
        if g.dtype == np.float32:
            fin = np.isfinite(w)
            assert np.array_equal(np.isnan(g), np.isnan(w)), k
            assert _rel(g[fin], w[fin]) < 1e-4, (k, isa, _rel(g[fin], w[fin]))
        else:
            assert np.array_equal(g, w), (k, isa)


def test_nan_clean_up_is_fused_and_keeps_the_values(ops_case):
    data, inputs, want = ops_case
    m = ep.runtime.load(data)
    labels = [label for _, label in m.operators]
    assert sum("nan->const" in label for label in labels) == 1  # the LOGICAL_OR reader keeps its NOT_EQUAL
    assert [k for k, _ in m.operators].count("NOT_EQUAL") == 1
    k = len(want) - 2  # the fused output: NaN -> 0, every other value as it was
    assert np.isnan(inputs[0]).any() and not np.isnan(want[k]).any()
    assert np.array_equal(m(*inputs)[k], want[k])


def test_transformer_operators_give_the_same_bits_for_1_2_4_threads(ops_case):
    data, inputs, _ = ops_case
    for isa in ISAS:
        outs = [ep.runtime.load(data, isa=isa, threads=t)(*inputs) for t in (1, 2, 4)]
        for other in outs[1:]:
            assert all(np.array_equal(a, c, equal_nan=a.dtype == np.float32) for a, c in zip(outs[0], other))


def test_gelu_matches_float64_erf():
    b = Builder()
    x = b.input([200001])
    data = b.finish([b.gelu(x)])
    v = np.linspace(-20, 20, 200001).astype(np.float32)
    ref = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in v.astype(np.float64)])
    for isa in ISAS:
        (y,) = ep.runtime.load(data, isa=isa)(v)
        assert np.all(np.abs(y - ref) <= 3e-6 * np.abs(ref) + 1e-7), isa


def _bert(seq: int):
    pytest.importorskip("transformers")
    from bert_encoder import bert_encoder

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return bert_encoder(seq, seq // 4, vocab_size=120, max_position_embeddings=seq, **small)


@pytest.fixture(scope="module")
def bert_file(tmp_path_factory):
    # 80 positions: past 64, where onnx's reference GatherElements (once used to fold BERT's
    # token-type buffer) gave a wrong shape and the export failed
    model, ids, mask = _bert(80)
    path = export(model, tmp_path_factory.mktemp("bert"), formats=["tflite"], example_inputs=(ids, mask))["tflite"]
    with torch.no_grad():
        ref = model(ids, mask).numpy()
    return path, ids.numpy(), mask.numpy(), ref


def test_bert_encoder_matches_torch_and_litert_on_every_path(bert_file):
    path, ids, mask, ref = bert_file
    want = _litert_builtin(path.read_bytes(), [ids, mask])[0]
    assert _rel(want, ref) < 1e-4
    m = ep.runtime.load(path)
    assert [(i["dtype"], tuple(i["shape"])) for i in m.inputs] == [("int64", (1, 80)), ("int64", (1, 80))]
    for isa in ISAS:
        outs = [ep.runtime.load(path, isa=isa, threads=t)(ids, mask)[0] for t in (1, 2)]
        assert _rel(outs[0], ref) < 1e-4 and _rel(outs[0], want) < 1e-4, isa
        assert np.array_equal(outs[0], outs[1]), isa
    # the padding tokens change nothing but themselves: the mask is honoured
    mask2 = mask.copy()
    ids2 = ids.copy()
    ids2[0, -1] = (ids2[0, -1] + 1) % 120
    a, b2 = m(ids, mask)[0], m(ids2, mask2)[0]
    assert np.array_equal(a[0, :60], b2[0, :60])


def test_bert_profile_names_the_transformer_operators(bert_file):
    path, ids, mask, _ = bert_file
    prof = ep.runtime.load(path).profile(runs=2)
    kinds = {k for k, _, _ in prof}
    assert {"BATCH_MATMUL", "GELU", "GATHER", "SOFTMAX", "FULLY_CONNECTED"} <= kinds
    assert all(ms >= 0 for _, _, ms in prof)


def test_token_ids_outside_the_vocabulary_are_an_error(bert_file):
    path, ids, mask, _ = bert_file
    m = ep.runtime.load(path)
    want = m(ids, mask)[0]
    bad = ids.copy()
    bad[0, 3] = 120
    with pytest.raises(UserError, match=r"GATHER.*index 120 is outside \[0, 120\)"):
        m(bad, mask)
    bad[0, 3] = -1
    with pytest.raises(UserError, match=r"index -1 is outside"):
        m(bad, mask)
    assert np.array_equal(m(ids, mask)[0], want)  # the same context runs as before afterwards


def test_wrong_input_count_is_a_user_error(bert_file):
    path, ids, _, _ = bert_file
    with pytest.raises(UserError, match="takes 2 inputs"):
        ep.runtime.load(path)(ids)


def test_bench_cli_times_the_encoder_on_every_tflite_runtime(bert_file, capsys):
    import json

    from edgeprune.cli.main import main

    path = bert_file[0]
    for runtime in ("edgeprune", "litert"):
        assert main(["bench", str(path), "--runtime", runtime, "--runs", "3", "--warmup", "1", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["runtime"] == runtime and out["runs"] == 3 and out["median_ms"] > 0
        if runtime == "edgeprune":
            assert {"BATCH_MATMUL", "GELU", "GATHER"} <= {r["op_type"] for r in out["layers"]}


def test_inspect_reports_what_edgeprune_runtime_runs(ops_case, tmp_path, capsys):
    from pathlib import Path

    from edgeprune.cli.main import main
    from edgeprune.export.inspect_tflite import inspect_tflite

    data = ops_case[0]
    p = tmp_path / "ops.tflite"
    p.write_bytes(data)
    ours = inspect_tflite(p)["edgeprune_runtime"]
    assert ours["runs"] and ours["arena_bytes"] > 0
    assert ours["operators"]["BATCH_MATMUL"] == {"ops": 3, "int8": 0, "sparse": 0}
    assert ours["operators"]["GATHER"]["ops"] == 2 and ours["operators"]["SELECT_V2"]["ops"] == 3
    data_dir = Path(__file__).resolve().parents[1] / "data" / "runtime"
    q = inspect_tflite(data_dir / "int8_sparse_wide.tflite")["edgeprune_runtime"]["operators"]
    assert q["CONV_2D"] == {"ops": 3, "int8": 3, "sparse": 2}
    s = inspect_tflite(data_dir / "encoder_sparse.tflite")["edgeprune_runtime"]["operators"]
    assert s["FULLY_CONNECTED"] == {"ops": 6, "int8": 0, "sparse": 2}
    b = Builder()
    x = b.input([1, 4])
    (tmp_path / "lstm.tflite").write_bytes(b.finish([b.op(16, [x], [1, 4])]))  # LSTM
    no = inspect_tflite(tmp_path / "lstm.tflite")["edgeprune_runtime"]
    assert not no["runs"] and "operator 0 (BUILTIN_16)" in no["reason"]
    assert main(["inspect", str(tmp_path / "lstm.tflite")]) == 0
    assert "edgeprune runtime: does not run this file: operator 0 (BUILTIN_16)" in capsys.readouterr().out


def _hf(name):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "gpt2":  # tanh GELU written with x**3, qkv by split
        m = transformers.GPT2Model(
            transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32)
        )
    elif name == "llama":  # RMSNorm (pow 2, rsqrt), rotary, SwiGLU, 2 key/value heads for 4 query heads
        cfg = transformers.LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
        m = transformers.LlamaModel(cfg)
    elif name == "distilbert":
        cfg = transformers.DistilBertConfig(
            vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32
        )
        m = transformers.DistilBertModel(cfg)
    else:
        cfg = transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
        m = transformers.ViTModel(cfg, add_pooling_layer=False)

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m.eval()

        def forward(self, x):
            return self.m(x).last_hidden_state

    x = torch.randn(1, 3, 32, 32) if name == "vit" else torch.randint(0, 100, (1, 12))
    return Hidden().eval(), x


@pytest.mark.parametrize("name", ["gpt2", "llama", "distilbert", "vit"])
def test_decoders_and_vit_export_to_tflite_and_run_on_the_runtime(name, tmp_path):
    import warnings

    model, x = _hf(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    with torch.no_grad():
        ref = model(x).numpy()
    xin = x.numpy().transpose(0, 2, 3, 1).copy() if x.dim() == 4 else x.numpy()
    want = _litert_builtin(path.read_bytes(), [xin])[0]
    assert _rel(want, ref) < 1e-4
    m = ep.runtime.load(path)
    got = m(xin)[0]
    assert _rel(got, ref) < 1e-4 and _rel(got, want) < 1e-4
    if name == "gpt2":  # each block's hand-written tanh GELU is one GELU operator in the file
        kinds = [k for k, _ in m.operators]
        assert kinds.count("GELU") == 2 and "TANH" not in kinds, kinds


def test_tanh_gelu_patterns_export_as_one_gelu(tmp_path):
    """F.gelu(approximate="tanh") and the hand-written form (x**3 or x*x*x, any association of
    the 0.5 and x) export as one approximate GELU; a different constant, or an intermediate that
    is read elsewhere, keeps the operators as they are. Every file gives torch's values."""
    c = math.sqrt(2.0 / math.pi)
    forms = {
        "torch": (lambda x: torch.nn.functional.gelu(x, approximate="tanh"), True),
        "gpt2": (lambda x: 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0)))), True),
        "x*x*x, 0.5 last": (lambda x: (x * (1 + torch.tanh(c * (x + 0.044715 * (x * x * x))))) * 0.5, True),
        "0.5 first": (lambda x: (0.5 * (1 + torch.tanh((x + x * x * x * 0.044715) * c))) * x, True),
        "another constant": (lambda x: 0.5 * x * (1.0 + torch.tanh(c * (x + 0.04 * torch.pow(x, 3.0)))), False),
        "tanh read twice": (
            lambda x: torch.cat([0.5 * x * (1 + (t := torch.tanh(c * (x + 0.044715 * x**3)))), t], -1),
            False,
        ),
    }
    x = torch.randn(1, 7, 24) * 3
    for i, (name, (f, fused)) in enumerate(forms.items()):

        class M(torch.nn.Module):
            def forward(self, x, f=f):
                return f(x)

        path = export(M().eval(), tmp_path / str(i), formats=["tflite"], example_inputs=(x,))["tflite"]
        m = ep.runtime.load(path)
        kinds = [k for k, _ in m.operators]
        assert (kinds == ["GELU"]) == fused and ("TANH" in kinds) == (not fused), (name, kinds)
        ref = M()(x).numpy()
        assert _rel(m(x.numpy())[0], ref) < 1e-6, name
        assert _rel(_litert_builtin(path.read_bytes(), [x.numpy()])[0], ref) < 1e-6, name


def test_pow_exports_as_the_ops_it_is(tmp_path):
    from edgeprune.export.inspect_tflite import inspect_tflite

    class Powers(torch.nn.Module):
        def forward(self, x):
            y = x.abs() + 0.5
            return torch.cat([y**2, y**3, y**0.5, y**-0.5, y**-1, y**1.7, torch.rsqrt(y)], dim=-1)

    x = torch.rand(1, 6, 8)
    path = export(Powers().eval(), tmp_path, formats=["tflite"], example_inputs=(x,))["tflite"]
    ops = inspect_tflite(path)["ops"]
    assert ops.get("POW") == 1 and ops.get("SQRT") and ops.get("RSQRT") and ops.get("DIV")
    with torch.no_grad():
        ref = Powers()(x).numpy()
    for got in (_litert_builtin(path.read_bytes(), [x.numpy()])[0], ep.runtime.load(path)(x.numpy())[0]):
        assert _rel(got, ref) < 1e-5


def test_inconsistent_split_v_is_refused_with_a_message():
    from edgeprune.runtime import RuntimeModelError

    b = Builder()
    x = b.input([2, 6])
    outs = b.split_v(x, [2, 4], axis=1)
    code, ins, o, _ = b.ops[-1]
    b.ops[-1] = (code, ins, o, ("splitv", dict(n=3)))
    with pytest.raises(RuntimeModelError, match=r"operator 0 \(SPLIT_V\): num_splits 3 is not the 2 outputs"):
        ep.runtime.load(b.finish(outs))
    b = Builder()
    x = b.input([2, 6])
    outs = b.split_v(x, [2, 4], axis=1)
    b.tensors[b.ops[-1][1][1]]["data"] = np.array([2, 5], np.int32).tobytes()  # 7 of 6 columns
    with pytest.raises(RuntimeModelError, match=r"SPLIT_V\): size_splits does not add up to the axis"):
        ep.runtime.load(b.finish(outs))


def test_batch_matmul_whose_batches_disagree_with_its_output_is_refused_at_once():
    """A file whose operand declares millions of batch matrices while the output declares six is
    refused by the shape check, in a line naming the operator. (Found by the loader fuzzer: the
    operator once tabulated every batch matrix before that check, 1 GB for the fuzzer's file,
    tests/data/fuzz/bmm-huge-batch.tflite, which now seeds the fuzzer.)"""
    b = Builder()
    a = b.input([16_000_000, 1, 5, 8])
    w = b.input([1, 3, 8, 6])
    y = b.op(126, [a, w], [2, 3, 5, 6], ("bmm", dict(adj_x=False, adj_y=False)))
    with pytest.raises(
        ep.runtime.RuntimeModelError,
        match=r"BATCH_MATMUL.*has shape \[2, 3, 5, 6\], the operator computes \[16000000, 3, 5, 6\]",
    ) as e:
        ep.runtime.load(b.finish([y]))
    assert "\n" not in str(e.value)
