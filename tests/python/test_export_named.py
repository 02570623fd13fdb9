"""Files of models with named inputs (transformers): input and output names, fp32 TFLite, and two
lowerings their graphs need (softmax over a middle axis, GatherND at constant positions).

Consumes: a tiny ``transformers`` BertModel with its pooler (random weights, from a config), a
BatchEncoding or dict as example, small modules written here; ONNX Runtime, LiteRT and our runtime
on the files. Produces: assertions that the files take ``input_ids``/``attention_mask`` in
``forward``'s order and give ``last_hidden_state``/``pooler_output``, with every runtime's outputs
equal to torch's within 1e-4 relative.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import edgeprune as ep
from edgeprune.export import export
from edgeprune.export.tflite_family import run

transformers = pytest.importorskip("transformers")

SEQ = 8


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(1, 64, (1, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[0, -2:] = 0
    return model, ids, mask


def _close(got, ref):
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_a_transformers_model_exports_with_its_input_and_output_names(tmp_path):
    model, ids, mask = _bert()
    example = transformers.BatchEncoding({"attention_mask": mask, "input_ids": ids})  # not forward's order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = export(model, tmp_path, formats=["onnx", "tflite"], example_inputs=example)
    assert not model.training  # the exporters restore the mode they found, the user's model's
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    refs = {"last_hidden_state": out.last_hidden_state.numpy(), "pooler_output": out.pooler_output.numpy()}

    import onnxruntime as ort

    proto = onnx.load(paths["onnx"])
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in proto.graph.output] == list(refs)
    spec = json.loads({p.key: p.value for p in proto.metadata_props}["edgeprune_input"])
    assert [s["name"] for s in spec] == ["input_ids", "attention_mask"]
    sess = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    for g, name in zip(got, refs):
        _close(g, refs[name])

    # fp32 TFLite: the mask code ran on the example's static shapes (no gathers TFLite lacks)
    for builtin in (False, True):
        got = run(paths["tflite"], [ids.numpy(), mask.numpy()], builtin=builtin)
        for g, name in zip(got, refs):
            _close(g, refs[name])
    rt = ep.runtime.load(paths["tflite"])
    assert [i["name"] for i in rt.inputs] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in rt.outputs] == list(refs)
    for g, name in zip(rt(ids.numpy(), mask.numpy()), refs):
        _close(g, refs[name])


def test_a_quantized_model_keeps_the_names_in_every_format(tmp_path):
    model, ids, mask = _bert()
    calib = [{"input_ids": ids.roll(i, 1), "attention_mask": mask} for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ep.quantize(model, calib, progress=False)
        paths = export(q, tmp_path, formats=["onnx", "onnx-int8", "tflite", "tflite-int8"])
    for fmt in ("onnx", "onnx-int8"):
        g = onnx.load(paths[fmt]).graph
        assert [i.name for i in g.input] == ["input_ids", "attention_mask"], fmt
        assert [o.name for o in g.output] == ["last_hidden_state", "pooler_output"], fmt
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    for fmt in ("tflite", "tflite-int8"):
        rt = ep.runtime.load(paths[fmt])
        assert [i["name"] for i in rt.inputs] == ["input_ids", "attention_mask"], fmt
        assert [o["name"] for o in rt.outputs] == ["last_hidden_state", "pooler_output"], fmt
        got = rt(ids.numpy(), mask.numpy())[0]
        if fmt == "tflite":  # the float graph of the quantizer's capture: the model itself
            _close(got, ref)
        else:
            cos = float((got.ravel() @ ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
            assert cos > 0.99, cos


def test_a_dict_example_needs_tensors_the_model_takes(tmp_path):
    model, ids, _ = _bert()
    with pytest.raises(ValueError, match=r"example_inputs\['attention_mask'\] is a list; pass tensors"):
        export(model, tmp_path, formats=["onnx"], example_inputs={"input_ids": ids, "attention_mask": [1] * SEQ})
    with pytest.raises(
        ValueError,
        match=r"example_inputs\['input_idz'\]: BertModel.forward takes no such input; its inputs are input_ids, attention_mask",
    ):
        export(model, tmp_path, formats=["onnx"], example_inputs={"input_idz": ids})
    assert not any(tmp_path.iterdir())  # refused before anything is written


class _SpanSoftmax(nn.Module):
    """Softmax over the middle axis of a rank-3 tensor (ConvBERT's span-based dynamic convolution)."""

    def forward(self, x):
        return torch.softmax(x * 2.0, dim=1) + 1.0


def test_softmax_over_a_middle_axis_matches_torch(tmp_path):
    module, x = _SpanSoftmax().eval(), torch.randn(1, 5, 7, generator=torch.Generator().manual_seed(0))
    paths = export(module, tmp_path, formats=["onnx", "tflite"], example_inputs=(x,))
    assert "Softmax" in {n.op_type for n in onnx.load(paths["onnx"]).graph.node}
    with torch.no_grad():
        ref = module(x).numpy()
    for builtin in (False, True):
        _close(run(paths["tflite"], [x.numpy()], builtin=builtin)[0], ref)
    _close(ep.runtime.load(paths["tflite"])(x.numpy())[0], ref)


@pytest.mark.parametrize("indices", [[[0, 1], [0, 3], [0, -2]], [[0, 2, 5], [0, -1, 0]]], ids=["rows", "elements"])
def test_gather_nd_at_constant_positions_lowers_to_one_gather(indices, tmp_path):
    # the form torch.export gives advanced indexing at fixed positions (GPT-Neo's mask)
    from onnx import TensorProto, helper

    from edgeprune.export.tflite_lower import lower
    from edgeprune.export.tflite_schema import OP, serialize

    idx = np.array(indices, dtype=np.int64)
    out_shape = [idx.shape[0]] + [1, 4, 6][idx.shape[1] :]
    graph = helper.make_graph(
        [helper.make_node("GatherND", ["x", "idx"], ["y"], name="pick")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [helper.make_tensor("idx", TensorProto.INT64, idx.shape, idx.ravel())],
    )
    model = lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [op.code for op in model.operators if op.code != OP.RESHAPE] == [OP.GATHER]
    path = tmp_path / "g.tflite"
    path.write_bytes(serialize(model))
    x = np.random.default_rng(0).standard_normal((1, 4, 6)).astype(np.float32)
    ref = x[tuple(idx.T)]  # numpy's advanced indexing: index tuples along the last axis of idx
    for builtin in (False, True):
        np.testing.assert_array_equal(run(path, [x], builtin=builtin)[0], ref)
    np.testing.assert_array_equal(ep.runtime.load(path)(x)[0], ref)


def test_gather_nd_at_computed_positions_is_refused():
    from onnx import TensorProto, helper

    from edgeprune.export.tflite_lower import TFLiteLoweringError, lower

    graph = helper.make_graph(
        [helper.make_node("GatherND", ["x", "idx"], ["y"], name="pick")],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
    )
    with pytest.raises(
        TFLiteLoweringError, match="GatherND .indices computed at run time, or batch_dims. at node 'pick'"
    ):
        lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("auto_pad", ["VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
def test_auto_pad_lowers_to_the_pads_it_means(op, auto_pad, tmp_path):
    # SigLIP's patch embedding is written with auto_pad=VALID; SAME_* at stride 2 on an odd size
    # puts the odd pixel at the end or the start
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeprune.export.tflite_lower import lower
    from edgeprune.export.tflite_schema import serialize

    rng = np.random.default_rng(0)
    size, k, stride = 9, 3, 2
    out = (size - k) // stride + 1 if auto_pad == "VALID" else -(-size // stride)
    inits, extra = [], {}
    if op == "Conv":
        w = rng.standard_normal((4, 3, k, k)).astype(np.float32)
        inits = [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())]
        ins, cout = ["x", "w"], 4
    else:
        ins, cout, extra = ["x"], 3, {"kernel_shape": [k, k]}
    node = helper.make_node(op, ins, ["y"], name="n", auto_pad=auto_pad, strides=[stride, stride], **extra)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out, out])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert ref.shape == (1, cout, out, out)
    path = tmp_path / "g.tflite"
    path.write_bytes(serialize(lower(proto)))
    for builtin in (False, True):
        _close(run(path, [x], builtin=builtin)[0], ref)  # run() takes and gives PyTorch's layout
    _close(ep.runtime.load(path)(x.transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2), ref)


def test_a_pruned_transformers_directory_exports_from_the_cli_with_no_example(tmp_path):
    # the plan recorded the inputs it was traced with: `edgeprune export DIR` needs nothing else
    import subprocess
    import sys

    import onnxruntime as ort

    cfg = transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    ids = torch.randint(1, 64, (2, SEQ), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones(2, SEQ, dtype=torch.int64)}
    small = ep.apply(model, ep.plan(model, inputs, ratio=0.3))
    ep.save(small, tmp_path / "m")
    cli = [sys.executable, "-m", "edgeprune.cli.main", "export", str(tmp_path / "m"), "--out", str(tmp_path / "out")]
    r = subprocess.run([*cli, "--format", "onnx", "--format", "tflite"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    assert sess.get_outputs()[0].name == "logits"
    x = {"input_ids": ids[:1].numpy(), "attention_mask": np.ones((1, SEQ), np.int64)}
    with torch.no_grad():
        ref = small(input_ids=ids[:1]).logits.numpy()
    _close(sess.run(None, x)[0], ref)
    _close(ep.runtime.load(tmp_path / "out" / "model.tflite")(*x.values())[0], ref)
