"""int8 quantization of models with several named inputs that torch.fx cannot trace: a
``transformers`` BERT calibrated on dicts / a ``BatchEncoding`` of token ids and attention masks,
its twin against ONNX Runtime and LiteRT on the files we write, our runtime on the int8 TFLite
file, save/load, and the refusals (mismatched batches, unknown inputs, dynamic batch, a tampered
example file). A one-input model with in-place index assignment quantizes through the same
torch.export capture. Also the TFLite operators these models brought (1-D convolutions, mean
pooling, ARG_MAX, position-id arithmetic), on eleven more transformers families and a 1-D CNN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from runtime_models import litert_reference

import edgeprune as ep
from edgeprune.errors import UserError
from edgeprune.export import export
from edgeprune.quant import QuantizedModel
from edgeprune.quant.quantize import CalibrationError, QuantizeError

VOCAB, SEQ = 120, 16


def _bert(seed: int = 0):
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    torch.manual_seed(seed)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def _batch(seed: int, n: int = 4, pad: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, SEQ, dtype=torch.int64)
    mask[:, SEQ - pad :] = 0
    return {"input_ids": torch.randint(0, VOCAB, (n, SEQ), generator=g), "attention_mask": mask}


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def bert_q():
    model = _bert()
    return model, ep.quantize(model, [_batch(1), _batch(2)], progress=False)


def test_bert_dict_calibration_quantizes_every_linear(bert_q):
    model, q = bert_q
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(q.layers) == sorted(linears) and len(linears) == 12
    assert q.input_names == ["input_ids", "attention_mask"]
    assert q.metadata["calibration_samples"] == 8
    assert q.skipped == []
    tables = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    assert sorted(q.embeddings) == sorted(tables) and len(tables) == 3
    for name, e in q.embeddings.items():  # one symmetric scale: the table's largest magnitude at 127
        w = model.get_submodule(name).weight
        assert e["qmax"] == 127 and e["scale"] == pytest.approx(float(w.abs().max()) / 127, rel=1e-6)
    x = _batch(7, n=3)
    with torch.no_grad():
        ref = model(**x).last_hidden_state
    out = q(**x)  # batch 3 on a graph captured at batch 1: one sample at a time
    assert out.shape == ref.shape
    assert _cos(out, ref) > 0.999
    assert not torch.equal(out, ref)  # the twin rounds to the int8 grid
    assert torch.equal(q(x), out) and torch.equal(q(x["input_ids"], x["attention_mask"]), out)


def test_dataloader_of_dicts_and_a_generator_calibrate_alike(bert_q):
    model, q = bert_q
    samples = [{k: v[i] for k, v in b.items()} for b in (_batch(1), _batch(2)) for i in range(4)]
    loader = torch.utils.data.DataLoader(samples, batch_size=4)  # default collate: dict batches
    assert ep.quantize(model, loader, progress=False).points == q.points
    gen = (b for b in (_batch(1), _batch(2)))
    assert ep.quantize(model, gen, progress=False).points == q.points


def test_batch_encoding_and_positional_tuples_calibrate_alike(bert_q):
    model, q = bert_q
    enc = transformers.BatchEncoding({**_batch(1)})
    enc2 = transformers.BatchEncoding({**_batch(2)})
    q2 = ep.quantize(model, [enc, enc2], progress=False)
    assert q2.points == q.points and q2.layers == q.layers
    pos = [tuple(_batch(s).values()) for s in (1, 2)]
    q3 = ep.quantize(model, pos, progress=False)
    assert q3.points == q.points


def test_bert_int8_files_match_the_twin_in_onnxruntime_litert_and_our_runtime(bert_q, tmp_path):
    import onnxruntime as ort

    _, q = bert_q
    x = _batch(9, n=1)
    twin = q(**x).numpy()
    paths = export(q, tmp_path, formats=["onnx-int8", "tflite-int8"])  # the saved example sample
    feeds = [x["input_ids"].numpy(), x["attention_mask"].numpy()]
    sess = ort.InferenceSession(str(paths["onnx-int8"]), providers=["CPUExecutionProvider"])
    o = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), feeds)})[0]
    np.testing.assert_allclose(o, twin, atol=1e-4)
    data = paths["tflite-int8"].read_bytes()
    lite = litert_reference(data)(feeds)[0]
    np.testing.assert_allclose(lite, twin, atol=1e-4)
    m = ep.runtime.load(data)
    kinds = [k for k, label in m.operators if "int8" in label]
    # every linear, and attention's two matmuls per layer (q @ k^T, probabilities @ v), run int8
    assert kinds.count("FULLY_CONNECTED") == 12 and kinds.count("BATCH_MATMUL") == 4
    ours = m(*feeds)[0]
    # the float parts (layer norm, softmax, GELU) may differ from LiteRT's in the last bit, and a
    # QUANTIZE after them may then round one value to the neighbouring int8 step
    assert _cos(ours, lite) > 0.9999
    step = max(p["scale"] for p in q.points.values())
    assert float(np.abs(ours - lite).max()) < 4 * step


def test_embedding_tables_are_int8_in_both_files(bert_q, tmp_path):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    model, q = bert_q
    paths = export(q, tmp_path, formats=["onnx-int8", "tflite-int8"])
    proto = onnx.load(str(paths["onnx-int8"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    users = {i: n for n in proto.graph.node for i in n.input}
    # each table is int8: its Gather reads int8 rows, a DequantizeLinear at the table's scale follows
    gathers = [n for n in proto.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert len(gathers) == 3 and all(inits[g.input[0]].dtype == np.int8 for g in gathers)
    for g in gathers:
        dq = users[g.output[0]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[2]] == 0 and inits[dq.input[1]].size == 1
    word = model.embeddings.word_embeddings.weight.detach().numpy()
    assert not any(v.shape == word.shape and v.dtype == np.float32 for v in inits.values())  # no float copy
    it = Interpreter(model_content=paths["tflite-int8"].read_bytes())
    it.allocate_tensors()
    td = {t["index"]: t for t in it.get_tensor_details()}
    gather_tables = [td[o["inputs"][0]] for o in it._get_ops_details() if o["op_name"] == "GATHER"]
    int8_tables = [t for t in gather_tables if t["dtype"] == np.int8]
    # the word table; lookups of constant ids (positions, token types) fold to constants at export
    assert len(int8_tables) == 1
    e = q.embeddings["embeddings.word_embeddings"]
    word_t = next(t for t in int8_tables if tuple(t["shape"]) == word.shape)
    assert word_t["quantization"] == (pytest.approx(e["scale"]), 0)


def test_quant_json_embedding_refusals(bert_q, tmp_path):
    import json

    _, q = bert_q
    q.save(tmp_path / "q")
    qfile = tmp_path / "q" / "quant.json"
    d = json.loads(qfile.read_text())
    d["embeddings"]["embeddings.word_embeddings"]["scale"] = 0
    qfile.write_text(json.dumps(d))
    with pytest.raises(QuantizeError, match=r"scale of 'embeddings.word_embeddings' is 0; scales must be finite"):
        QuantizedModel.load(tmp_path / "q")
    d["embeddings"] = {"encoder.layer.0.attention.self.query": {"scale": 0.1, "qmax": 127}}
    qfile.write_text(json.dumps(d))
    with pytest.raises(QuantizeError, match=r"embedding 'encoder.layer.0.attention.self.query' is not an nn.Embedding"):
        QuantizedModel.load(tmp_path / "q")


def test_save_load_round_trip_and_tampered_example(bert_q, tmp_path):
    _, q = bert_q
    q.save(tmp_path / "q")
    back = QuantizedModel.load(tmp_path / "q")
    assert back.input_names == q.input_names and back.points == q.points
    x = _batch(11, n=2)
    assert torch.equal(back(**x), q(**x))
    torch.save({"input_0": torch.zeros(1, SEQ, dtype=torch.int64)}, tmp_path / "q" / "example.pt")
    with pytest.raises(QuantizeError, match=r"example\.pt: expected tensors \['input_0', 'input_1'\]"):
        QuantizedModel.load(tmp_path / "q")
    ids = torch.zeros(1, SEQ, dtype=torch.float32)  # float token ids: no embedding lookup takes them
    torch.save({"input_0": ids, "input_1": torch.ones(1, SEQ, dtype=torch.int64)}, tmp_path / "q" / "example.pt")
    with pytest.raises(
        QuantizeError, match=r"cannot be captured again from its inputs \['input_ids', 'attention_mask'\]"
    ):
        QuantizedModel.load(tmp_path / "q")


def test_named_input_refusals(bert_q, tmp_path):
    model, q = bert_q
    b = _batch(1)
    with pytest.raises(CalibrationError, match=r"calibration batch 1 has inputs \['input_ids'\] but the first"):
        ep.quantize(model, [b, {"input_ids": b["input_ids"]}], progress=False)
    with pytest.raises(
        CalibrationError, match=r"rejects calibration inputs pixel_values \(3\) float32 per sample: You"
    ):
        ep.quantize(model, [{"pixel_values": torch.zeros(2, 3)}], progress=False)  # BertModel takes **kwargs
    with pytest.raises(
        CalibrationError, match=r"calibration batch 0: input 'pixel_values' is not a parameter of _Masked"
    ):
        ep.quantize(_Masked(), [{"pixel_values": torch.zeros(2, 8)}], progress=False)
    with pytest.raises(CalibrationError, match=r"batch sizes \[2, 4\]"):
        ep.quantize(model, [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"][:2]}], progress=False)
    longer = {k: torch.cat([v, v], 1) for k, v in _batch(3).items()}
    with pytest.raises(
        CalibrationError,
        match=r"batch 1: input 'input_ids' has shape \(32,\) per sample but the first batch has \(16,\); pad or cut",
    ):
        ep.quantize(model, [b, longer], progress=False)
    with pytest.raises(
        UserError, match=r"captured with input_ids of shape \(16,\) per sample, not \(32,\); pad or cut"
    ):
        q(**longer)
    with pytest.raises(ValueError, match="captured by torch.export at batch 1"):
        export(q, tmp_path, formats=["onnx-int8"], dynamic_batch=True)
    with pytest.raises(UserError, match=r"takes inputs \['input_ids', 'attention_mask'\], not 'pixel_values'"):
        q(pixel_values=b["input_ids"])


class _Masked(torch.nn.Module):
    """In-place index assignment: torch.fx cannot trace it ('Proxy' does not support item assignment)."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h[:, :2] = 0
        return self.fc2(h)


def test_one_input_model_fx_cannot_trace_falls_back_to_export():
    torch.manual_seed(0)
    model = _Masked().eval()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(Exception, match="item assignment"):
        torch.fx.symbolic_trace(model)
    q = ep.quantize(model, x, progress=False)
    assert sorted(q.layers) == ["fc1", "fc2"]
    with torch.no_grad():
        ref = model(x[:5])
    out = q(x[:5])
    assert out.shape == (5, 4) and _cos(out, ref) > 0.999
    assert torch.allclose(out, ref, atol=0.1) and not torch.equal(out, ref)


# ---- the CLI: an .npz of named inputs as --calib ------------------------------------------------
def _token_npz(path, n: int = 12, **override):
    g = torch.Generator().manual_seed(4)
    mask = np.ones((n, SEQ), np.int64)
    mask[:, SEQ - 3 :] = 0
    arrays = {
        "input_ids": torch.randint(0, VOCAB, (n, SEQ), generator=g).numpy().astype(np.int32),
        "attention_mask": mask,
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def bert_dir(tmp_path):
    from edgeprune.prune.hf import tag

    model = _bert()
    tag(model, model)
    return ep.save(model, tmp_path / "bert")


def test_cli_quantize_on_named_inputs_then_export_and_run(run_cli, bert_dir, tmp_path):
    import json

    tokens = _token_npz(tmp_path / "tokens.npz")
    r = run_cli("quantize", "--model", bert_dir, "--calib", tokens, "--out", tmp_path / "q", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["quantized_layers"] == 12 and res["calibration_samples"] == 12
    assert res["inputs"] == ["input_ids", "attention_mask"] and res["fp32_top1"] is None
    assert (
        res["output_cosine"]["samples"] == 12
        and 0.999 < res["output_cosine"]["min"] <= res["output_cosine"]["mean"] < 1
    )
    assert (tmp_path / "q" / "example.pt").is_file()
    r = run_cli("export", tmp_path / "q", "--format", "tflite-int8", "--out", tmp_path / "e", "--json")
    assert r.code == 0, r.err
    data = (tmp_path / "e" / "model.int8.tflite").read_bytes()
    feeds = [np.arange(SEQ, dtype=np.int64)[None] % VOCAB, np.ones((1, SEQ), np.int64)]
    lite = litert_reference(data)(feeds)[0]
    ours = ep.runtime.load(data)(*feeds)[0]
    assert ours.shape == (1, SEQ, 32) and _cos(ours, lite) > 0.9999
    r = run_cli("quantize", "--model", bert_dir, "--calib", tokens, "--out", tmp_path / "q2")  # the table
    assert r.code == 0 and "int8 vs fp32 output cosine" in r.out and "input_ids, attention_mask" in r.out


def test_cli_named_inputs_refusals(run_cli, bert_dir, tmp_path):
    bad = _token_npz(tmp_path / "bad.npz", attention_mask=np.ones((5, SEQ), np.int64))
    r = run_cli("quantize", "--model", bert_dir, "--calib", bad, "--out", tmp_path / "q")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "arrays have different sample counts {'input_ids': 12, 'attention_mask': 5}" in r.err
    tokens = _token_npz(tmp_path / "tokens.npz")
    r = run_cli("quantize", "--model", bert_dir, "--calib", tokens, "--out", tmp_path / "q", "--max-acc-drop", "1")
    assert r.code == 2 and "holds named model inputs without labels; --qat-epochs and --max-acc-drop need" in r.err
    strs = _token_npz(tmp_path / "strs.npz", attention_mask=np.array(["a"] * 12))
    r = run_cli("quantize", "--model", bert_dir, "--calib", strs, "--out", tmp_path / "q")
    assert r.code == 2 and "array 'attention_mask' has shape (12,) dtype <U1; expected numbers" in r.err
    assert not (tmp_path / "q").exists()


# ---- every tiny transformers family of the pruning tests, and three more ------------------------
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _more(name):
    torch.manual_seed(0)
    if name == "roberta":  # position ids from a cumulative sum of the padding mask
        cfg = transformers.RobertaConfig(vocab_size=64, max_position_embeddings=20, **_SMALL)
        return transformers.RobertaModel(cfg, add_pooling_layer=False).eval()
    if name == "mpnet":  # relative position buckets (all-mpnet-base-v2's architecture)
        cfg = transformers.MPNetConfig(vocab_size=64, max_position_embeddings=20, **_SMALL)
        return transformers.MPNetModel(cfg, add_pooling_layer=False).eval()
    if name == "deberta":  # disentangled attention; its position table is read at constant positions
        return transformers.DebertaV2Model(transformers.DebertaV2Config(vocab_size=64, **_SMALL)).eval()
    if name == "clip":  # causal mask, pooled at the argmax of the ids (ARG_MAX in the file)
        cfg = transformers.CLIPTextConfig(
            vocab_size=64, max_position_embeddings=16, eos_token_id=2, bos_token_id=1, pad_token_id=1, **_SMALL
        )
        return transformers.CLIPTextModel(cfg).eval()
    if name == "swin":  # shifted windows: roll, window partition reshapes
        cfg = transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4
        )
        return transformers.SwinModel(cfg).eval()
    if name == "segformer":  # overlapping patch embeddings, reduced-sequence attention, an identity drop_path
        cfg = transformers.SegformerConfig(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[16, 32],
            num_attention_heads=[1, 2],
            patch_sizes=[7, 3],
            strides=[4, 2],
            mlp_ratios=[2, 2],
        )
        return transformers.SegformerModel(cfg).eval()
    if name == "albert":  # one layer shared by every block
        cfg = transformers.AlbertConfig(vocab_size=64, embedding_size=16, max_position_embeddings=16, **_SMALL)
        return transformers.AlbertModel(cfg, add_pooling_layer=False).eval()
    if name == "gptneo":  # local attention: the mask picked at fixed positions (GatherND in the graph)
        cfg = transformers.GPTNeoConfig(
            vocab_size=64, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=4,
            attention_types=[[["global", "local"], 1]], intermediate_size=64,
        )  # fmt: skip
        return transformers.GPTNeoModel(cfg).eval()
    if name == "convbert":  # span-based dynamic convolution: a softmax over the middle axis
        cfg = transformers.ConvBertConfig(vocab_size=64, max_position_embeddings=32, embedding_size=32, **_SMALL)
        return transformers.ConvBertModel(cfg).eval()
    if name == "siglip":  # a patch embedding written with auto_pad=VALID
        cfg = transformers.SiglipVisionConfig(image_size=32, patch_size=8, **_SMALL)
        return transformers.SiglipVisionModel(cfg).eval()
    cfg = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return transformers.T5EncoderModel(cfg).eval()  # relative position buckets, RMS norm


@pytest.mark.parametrize(
    "name",
    [
        "bert",
        "distilbert",
        "vit",
        "gpt2",
        "llama",
        "roberta",
        "albert",
        "t5",
        "mpnet",
        "deberta",
        "clip",
        "swin",
        "segformer",
        "gptneo",
        "convbert",
        "siglip",
    ],
)
def test_transformers_families_quantize_export_and_run(name, tmp_path):
    """BERT (BatchEncoding), DistilBERT, ViT (one pixel input fx cannot trace), GPT-2 (Conv1D
    projections, read as the Linear they compute), a Llama with GQA and RMSNorm (its key/value
    cache left out of the capture), RoBERTa (integer position arithmetic and CUMSUM in the file),
    ALBERT (shared layers stay float, said in ``skipped``), a T5 encoder, MPNet and DeBERTa-v2
    (a table looked up at constant positions, folded by the exporter) and CLIP's text encoder
    (ARG_MAX), Swin and SegFormer, GPT-Neo (GatherND at constant positions), ConvBERT (a softmax
    over the middle axis) and SigLIP (auto_pad): the twin close to
    fp32, the QDQ ONNX equal to the twin, our runtime equal to LiteRT on the int8 TFLite file."""
    import onnxruntime as ort
    from test_hf import _build, _inputs, _main

    if name in ("swin", "segformer", "siglip"):
        model = _more(name)
        inputs = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    elif name in ("roberta", "albert", "t5", "mpnet", "deberta", "clip", "gptneo", "convbert"):
        model = _more(name)
        g = torch.Generator().manual_seed(1)
        inputs = {
            "input_ids": torch.randint(2, 64, (2, 8), generator=g),
            "attention_mask": torch.ones(2, 8, dtype=torch.long),
        }
    else:
        model, inputs = _build(name), dict(_inputs(name))
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d)
    # nn.MultiheadAttention (SigLIP's pooling head) reads its out_proj functionally: it stays float
    mha = [n + "." for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    projections = [
        n
        for n, m in model.named_modules()
        if (isinstance(m, kinds) or type(m).__name__ == "Conv1D") and not any(n.startswith(p) for p in mha)
    ]
    q = ep.quantize(model, [inputs], progress=False)
    if name == "albert":
        shared = {s["name"] for s in q.skipped if "times (shared weights); kept fp32" in s["reason"]}
        assert sorted(q.layers) == ["encoder.embedding_hidden_mapping_in"]
        assert shared == set(projections) - set(q.layers) and len(shared) == 6
    else:
        assert sorted(q.layers) == sorted(projections)
    # every table the graph looks up is int8 (T5 shares its word table under two names; its
    # relative position table is read at constant buckets, folded to a float constant)
    tables = [m for m in model.modules() if type(m) is torch.nn.Embedding]
    got = {model.get_submodule(n).weight.data_ptr() for n in q.embeddings}
    assert q.input_names == list(inputs) and got <= {m.weight.data_ptr() for m in tables}
    if tables:
        assert max(tables, key=lambda m: m.num_embeddings).weight.data_ptr() in got
    with torch.no_grad():
        ref = _main(model(**inputs))
    out = q(**inputs)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == ref.shape and _cos(out, ref) > 0.999
    paths = export(q, tmp_path, formats=["onnx-int8", "tflite-int8"])
    feeds = [x.numpy() for x in q.example]
    sess = ort.InferenceSession(str(paths["onnx-int8"]), providers=["CPUExecutionProvider"])
    o = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), feeds)})[0]
    twin = q(*q.example)
    twin = (twin[0] if isinstance(twin, tuple) else twin).numpy()
    np.testing.assert_allclose(o, twin, atol=1e-4 * max(1.0, float(np.abs(twin).max())))
    data = paths["tflite-int8"].read_bytes()
    if name in ("vit", "swin", "segformer", "siglip"):  # a rank-4 input is NHWC in TFLite
        feeds = [feeds[0].transpose(0, 2, 3, 1).copy()]
    lite_all, ours_all = litert_reference(data)(feeds), ep.runtime.load(data)(*feeds)
    lite, ours = lite_all[0], ours_all[0]
    assert ours.shape == lite.shape and _cos(ours, lite) > 0.9999
    if lite.ndim == 4:  # a rank-4 output is NHWC in TFLite (SegFormer's feature map)
        lite = lite.transpose(0, 3, 1, 2)
    assert _cos(lite, twin) > 0.9999
    if name == "clip":  # the pooled output, gathered at the argmax of the ids
        assert "ARG_MAX" in {k for k, _ in ep.runtime.load(data).operators}
        assert len(ours_all) == 2 and _cos(ours_all[1], lite_all[1]) > 0.9999
    # attention's matmuls run int8 (two per layer; GPT-2's through the split of its fused
    # projection), except Llama's q @ k^T (rotary embeddings: neither operand a view of a
    # quantized tensor; its probabilities @ v, through the grouped-query repeat, is int8),
    # ALBERT's shared layers (float) and ConvBERT's span convolution (a softmax and an im2col)
    bmm = [label for k, label in ep.runtime.load(data).operators if k == "BATCH_MATMUL"]
    int8_bmm = {"llama": 2, "albert": 0}.get(name, 4)
    assert sum(" int8 " in label for label in bmm) == int8_bmm, bmm


def test_roberta_fp32_tflite_matches_torch(tmp_path):
    """RoBERTa's position ids (padding mask, CUMSUM, integer ADD/MUL) in the fp32 file: LiteRT and
    our runtime against torch, with padding, on ids where the padding index changes positions."""
    model = _more("roberta")
    ids = torch.tensor([[0, 5, 9, 33, 12, 7, 1, 1]])  # RoBERTa pads with id 1
    mask = (ids != 1).long()

    class Enc(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, i, a):
            return self.m(input_ids=i, attention_mask=a).last_hidden_state

    enc = Enc(model).eval()
    path = export(enc, tmp_path, formats=["tflite"], example_inputs=(ids, mask))["tflite"]
    data = path.read_bytes()
    with torch.no_grad():
        ref = enc(ids, mask).numpy()
    feeds = [ids.numpy(), mask.numpy()]
    lite = litert_reference(data)(feeds)[0]
    ours = ep.runtime.load(data)(*feeds)[0]
    np.testing.assert_allclose(lite, ref, atol=1e-4)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    kinds = [k for k, _ in ep.runtime.load(data).operators]
    assert "CUMSUM" in kinds


class _SentenceEmbedder(torch.nn.Module):
    """A sentence-transformers style embedder: BERT, mean pooling over the attention mask
    (ReduceSum of masked tokens over the mask's sum), L2 normalisation (ReduceL2)."""

    def __init__(self):
        super().__init__()
        cfg = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=SEQ, **_SMALL)
        self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def test_sentence_embedder_exports_to_tflite_in_fp32_and_int8(tmp_path):
    torch.manual_seed(0)
    model = _SentenceEmbedder().eval()
    b = _batch(5)
    q = ep.quantize(model, [b], progress=False)
    with torch.no_grad():
        ref = model(**b).numpy()
    assert float(torch.nn.functional.cosine_similarity(q(**b), torch.from_numpy(ref)).min()) > 0.999
    one = (b["input_ids"][:1], b["attention_mask"][:1])
    feeds = [t.numpy() for t in one]
    fp32 = export(model, tmp_path / "fp32", formats=["tflite"], example_inputs=one)["tflite"].read_bytes()
    m = ep.runtime.load(fp32)
    assert {"SUM", "SQRT"} <= {k for k, _ in m.operators}
    np.testing.assert_allclose(m(*feeds)[0], ref[:1], atol=1e-5)
    np.testing.assert_allclose(litert_reference(fp32)(feeds)[0], ref[:1], atol=1e-5)
    int8 = export(q, tmp_path / "int8", formats=["tflite-int8"])["tflite-int8"].read_bytes()
    ours, lite = ep.runtime.load(int8)(*feeds)[0], litert_reference(int8)(feeds)[0]
    assert _cos(ours, lite) > 0.9999 and _cos(ours, ref[:1]) > 0.999


class _KeywordSpotter(torch.nn.Module):
    """A keyword-spotting style 1-D CNN: strided, depthwise, pointwise and dilated Conv1d layers."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.f = nn.Sequential(
            nn.Conv1d(8, 16, 5, stride=2, padding=2),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=1, groups=16),
            nn.ReLU(),
            nn.Conv1d(16, 24, 1),
            nn.ReLU6(),
            nn.Conv1d(24, 24, 3, dilation=2, padding=2),
            nn.ReLU(),
        )
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        return self.fc(self.f(x).mean(-1))


def test_conv1d_models_export_to_tflite_with_int8_convolutions(tmp_path):
    """1-D convolutions become CONV_2D / DEPTHWISE_CONV_2D over a height of 1 (int8 in the int8
    file), consecutive ones without a TRANSPOSE between them; a Whisper encoder (two Conv1d
    front-end layers, then attention) exports too."""
    torch.manual_seed(0)
    model = _KeywordSpotter().eval()
    x = torch.randn(64, 8, 40, generator=torch.Generator().manual_seed(1))
    q = ep.quantize(model, x, progress=False)
    paths = export(q, tmp_path, formats=["tflite", "tflite-int8"], example_inputs=(x[:1],))
    feeds = [x[:1].numpy()]
    for fmt, ref in (("tflite", model), ("tflite-int8", q)):
        data = paths[fmt].read_bytes()
        m = ep.runtime.load(data)
        kinds = [k for k, _ in m.operators]
        assert kinds.count("CONV_2D") == 3 and kinds.count("DEPTHWISE_CONV_2D") == 1 and kinds.count("TRANSPOSE") == 2
        convs = [label for k, label in m.operators if k in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        assert all(("int8" in label) == (fmt == "tflite-int8") for label in convs)
        with torch.no_grad():
            want = ref(x[:1]).numpy()
        ours, lite = m(*feeds)[0], litert_reference(data)(feeds)[0]
        np.testing.assert_allclose(ours, lite, atol=1e-5)
        np.testing.assert_allclose(lite, want, atol=1e-5)
    cfg = transformers.WhisperConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=8,
        max_source_positions=16,
        max_target_positions=8,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    encoder = transformers.WhisperModel(cfg).get_encoder().eval()
    mel = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(2))
    qe = ep.quantize(encoder, [{"input_features": mel}], progress=False)
    data = export(qe, tmp_path / "whisper", formats=["tflite-int8"])["tflite-int8"].read_bytes()
    ours, lite = ep.runtime.load(data)(mel[:1].numpy())[0], litert_reference(data)([mel[:1].numpy()])[0]
    assert _cos(ours, lite) > 0.9999
    with torch.no_grad():
        assert _cos(lite, encoder(input_features=mel[:1]).last_hidden_state) > 0.999
