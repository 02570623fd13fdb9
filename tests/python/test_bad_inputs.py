"""Bad inputs over the CLI: every one exits 2 (or 130) with one line naming what and where.

Consumes: a world of small artifacts built once (an untrained demo CNN saved with ep.save, its
quantized dir and ONNX exports, and a previous output directory), hostile copies of them, and
the CLI in-process (``run_cli``); the Ctrl-C case runs a real ``edgeprune train`` subprocess.
Each table row asserts the exit code, the message (regex), that the whole world (inputs, the
previous output dir, the marker a hostile spec would create) is byte-identical afterwards, and
that no temporary sibling is left.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeprune as ep
from edgeprune.errors import UserError

MARKER = "PWNED"


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _hostile(world: Path, name: str, spec, kwargs=None, **manifest) -> Path:
    """A copy of the saved model whose model.json says ``spec`` / ``build_kwargs`` / other fields."""
    d = world / name
    shutil.copytree(world / "model", d)
    m = json.loads((d / "model.json").read_text())
    m.update({"spec": spec, "build_kwargs": kwargs or {}}, **manifest)
    (d / "model.json").write_text(json.dumps(m))
    return d


def _write_npz(path: Path, **arrays) -> str:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def _build_world(w: Path) -> None:
    digits = ep.data.load("digits")
    model = ep.models.build("edgeprune:demo-cnn")
    ep.save(model, w / "model")
    qm = ep.quantize(model, digits, calib_n=16)
    qm.save(w / "quant")
    ep.export(qm, w / "onnx", formats=["onnx", "onnx-int8"])
    (w / "old").mkdir()
    (w / "old" / "keep.txt").write_text("previous output\n")
    (w / "file.txt").write_text("a file, not a directory\n")
    (w / "notmodel").mkdir()
    (w / "notmodel" / "readme.txt").write_text("not a model\n")
    (w / "pruned").mkdir()
    shutil.copytree(w / "model", w / "pruned" / "model")
    marker = w / MARKER
    # hostile model.json specs: each would create the marker if anything were imported and called
    _hostile(w, "h_system", "os:system", {"command": f"touch {marker}"})
    _hostile(w, "h_subprocess", "subprocess:run", {"args": ["touch", str(marker)]})
    _hostile(w, "h_exec", "builtins:exec", {"source": f"open({str(marker)!r}, 'w')"})
    _hostile(w, "h_import", "importlib:import_module", {"name": "this"})
    _hostile(w, "h_eval", "builtins:eval", {"source": "__import__('os').system('touch x')"})
    evil = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\ndef make():\n    return None\n"
    (w / "evil.py").write_text(evil)
    sha = hashlib.sha256(evil.encode()).hexdigest()
    _hostile(w, "h_outside", "../evil.py:make", code={"../evil.py": sha})
    _hostile(w, "h_absolute", f"{w / 'evil.py'}:make", code={f"{w / 'evil.py'}": sha})
    d = _hostile(w, "h_symlink", "code/net.py:make", code={"code/net.py": sha})
    (d / "code").mkdir()
    (d / "code" / "net.py").symlink_to(w / "evil.py")
    d = _hostile(w, "h_hash", "code/net.py:make", code={"code/net.py": "0" * 64})
    (d / "code").mkdir()
    (d / "code" / "net.py").write_text(evil)
    d = _hostile(w, "h_nohash", "code/net.py:make")
    (d / "code").mkdir()
    (d / "code" / "net.py").write_text(evil)
    _hostile(w, "h_file_untrusted", "code/net.py:make", code={"code/net.py": sha})
    _hostile(w, "h_tv_weights", "torchvision:resnet18", {"weights": "DEFAULT"})
    _hostile(w, "h_kwarg", "edgeprune:demo-cnn", {"evil": 1})
    _hostile(w, "h_kwarg_obj", "edgeprune:demo-cnn", {"num_classes": {"__class__": "x"}})
    _hostile(w, "h_kwargs_list", "edgeprune:demo-cnn", None, build_kwargs=[1, 2])
    _hostile(w, "h_zero_classes", "edgeprune:demo-cnn", {"num_classes": 0})
    _hostile(w, "h_weights_out", "edgeprune:demo-cnn", files={"weights": "../model/weights.pt"})
    _hostile(w, "h_weights_abs", "edgeprune:demo-cnn", files={"weights": str(w / "model" / "weights.pt")})
    d = _hostile(w, "h_weights_link", "edgeprune:demo-cnn")
    (d / "weights.pt").unlink()
    (d / "weights.pt").symlink_to(w / "model" / "weights.pt")
    _hostile(w, "h_version", "edgeprune:demo-cnn", version=99)
    _hostile(w, "h_version_neg", "edgeprune:demo-cnn", version=-1)
    _hostile(w, "h_version_str", "edgeprune:demo-cnn", version="1")
    d = _hostile(w, "h_bigint", "edgeprune:demo-cnn", metadata={"num_params": 0})
    (d / "model.json").write_text(
        (d / "model.json").read_text().replace('"num_params": 0', '"num_params": ' + "7" * 5000)
    )
    _hostile(w, "h_format", "edgeprune:demo-cnn", format="something-else")
    _hostile(w, "h_nospec", None)
    _hostile(w, "h_unknown", "resnet")
    _hostile(w, "h_builtin", "edgeprune:nope")
    _hostile(w, "h_shape", "edgeprune:demo-cnn", input_shape=[-1, 32])
    _hostile(w, "h_plan", "edgeprune:demo-cnn", plan={"groups": 5})
    d = _hostile(w, "h_badjson", "edgeprune:demo-cnn")
    (d / "model.json").write_text("{not json")
    _build_broken_files(w)


def _build_broken_files(w: Path) -> None:
    """Damaged weights, data, quantized dirs and ONNX files next to the good ones."""
    weights = (w / "model" / "weights.pt").read_bytes()
    d = _hostile(w, "h_truncated", "edgeprune:demo-cnn")
    (d / "weights.pt").write_bytes(weights[: len(weights) // 2])
    d = _hostile(w, "h_noweights", "edgeprune:demo-cnn")
    (d / "weights.pt").unlink()
    state = torch.load(w / "model" / "weights.pt", weights_only=True)
    nan_state = {k: v.clone() for k, v in state.items()}
    nan_state["stem.0.weight"][0, 0, 0, 0] = float("nan")
    d = _hostile(w, "h_nan", "edgeprune:demo-cnn")
    torch.save(nan_state, d / "weights.pt")
    # --weights files
    torch.save(nan_state, w / "nan.pt")
    (w / "truncated.pt").write_bytes(weights[: len(weights) // 3])
    (w / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    # a torch zip whose pickle names a storage by a bare int (one flipped byte did this; torch asserts)
    bad_ref = io.BytesIO()
    with zipfile.ZipFile(w / "model" / "weights.pt") as src:
        with zipfile.ZipFile(bad_ref, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith("data.pkl"):
                    data = b"\x80\x02K\x05Q."  # PROTO 2, BININT1 5, BINPERSID, STOP
                dst.writestr(item, data)
    (w / "bad_ref.pt").write_bytes(bad_ref.getvalue())
    (w / "empty.pt").write_bytes(b"")
    (w / "onebyte.pt").write_bytes(b"J")  # found by the reader fuzzer: the unpickler's struct.error
    torch.save(ep.models.build("edgeprune:demo-cnn"), w / "pickled.pt")
    torch.save({"stem.0.weight": torch.zeros(3, 3)}, w / "shape.pt")
    # data
    x = np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(np.float32)
    y = np.arange(40) % 10
    _write_npz(w / "labels56.npz", x=x, y=np.where(y == 9, 55, y))
    xn = x.copy()
    xn[3, 0, 0, 0] = np.nan
    _write_npz(w / "nan.npz", x=xn, y=y)
    _write_npz(w / "noy.npz", x=x)
    _write_npz(w / "x3d.npz", x=x[:, 0], y=y)
    _write_npz(w / "neg.npz", x=x, y=y - 1)
    _write_npz(w / "label_huge.npz", x=x, y=np.where(y == 9, 2**62, y))
    _write_npz(w / "obj.npz", x=x, y=np.array([object()] * 40, dtype=object))
    good = (w / "labels56.npz").read_bytes()
    (w / "truncated.npz").write_bytes(good[: len(good) // 2])
    # quantized dirs
    qj = json.loads((w / "quant" / "quant.json").read_text())
    point = next(iter(qj["points"]))
    layer = next(iter(qj["layers"]))
    for name, edit in (
        ("q_nan", lambda d: d["points"][point].update(scale=float("nan"))),
        ("q_neg", lambda d: d["layers"][layer].update(weight_scale=[-1.0] * len(d["layers"][layer]["weight_scale"]))),
        ("q_inf", lambda d: d["layers"][layer].update(bias_scale=[float("inf")])),
        ("q_nopoints", lambda d: d.pop("points")),
        ("q_bigint", lambda d: d["points"][point].update(scale=-(2**63) - 1)),  # found by the reader fuzzer
    ):
        shutil.copytree(w / "quant", w / name)
        d = json.loads(json.dumps(qj))
        edit(d)
        (w / name / "quant.json").write_text(json.dumps(d))
    shutil.copytree(w / "quant", w / "q_badjson")
    (w / "q_badjson" / "quant.json").write_text("[1, 2")
    shutil.copytree(w / "quant", w / "q_folded")
    folded = (w / "quant" / "folded.pt").read_bytes()
    (w / "q_folded" / "folded.pt").write_bytes(folded[:100])
    shutil.copytree(w / "quant", w / "q_hostile")
    shutil.rmtree(w / "q_hostile" / "model")
    shutil.copytree(w / "h_system", w / "q_hostile" / "model")
    # onnx
    onnx_bytes = (w / "onnx" / "model.onnx").read_bytes()
    (w / "empty.onnx").write_bytes(b"")
    (w / "truncated.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    (w / "random.onnx").write_bytes(np.random.default_rng(1).bytes(2048))
    _build_more_broken_files(w)


def _build_more_broken_files(w: Path) -> None:
    """Target profiles, prune plans, empty files of every kind and damaged .tflite files."""
    import re

    good = (Path(__file__).resolve().parents[2] / "targets" / "rpi4.toml").read_text()
    (w / "t_empty.toml").write_text("")
    (w / "t_malformed.toml").write_text(good.replace("[cpu]", "[cpu", 1))
    (w / "t_type.toml").write_text(re.sub(r"cores = \d+", 'cores = "four"', good, count=1))
    (w / "t_unknown.toml").write_text(good.replace("[cpu]", "[cpu]\nfrq_ghz = 2", 1))
    (w / "t_neg.toml").write_text(re.sub(r"freq_ghz = [\d.]+", "freq_ghz = -1.5", good, count=1))
    (w / "t_inf.toml").write_text(re.sub(r"freq_ghz = [\d.]+", "freq_ghz = inf", good, count=1))
    (w / "t_huge.toml").write_text(re.sub(r"cores = \d+", "cores = 4000000", good, count=1))
    (w / "t_section.toml").write_text(good.replace("[peak]", "[peaks]", 1))
    (w / "t_binary.toml").write_bytes(b"\xff\xfe\x00not text")
    (w / "t_tiny.toml").write_text(re.sub(r"freq_ghz = [\d.]+", "freq_ghz = 5e-324", good, count=1))
    # prune plans: a good one for the demo CNN, then damaged copies (hash dropped so the shape check speaks)
    plan = json.loads(ep.plan(ep.models.build("edgeprune:demo-cnn"), torch.randn(1, 1, 32, 32)).to_json())
    (w / "p_good.json").write_text(json.dumps(plan))
    (w / "p_empty.json").write_text("")
    (w / "p_truncated.json").write_text(json.dumps(plan)[:150])
    (w / "p_list.json").write_text("[1, 2]")
    first = next(iter(plan["modules"]))
    role = next(iter(plan["modules"][first]))
    for name, edit in (
        ("p_unknown", lambda d: d.update(evil=1)),
        ("p_params", lambda d: d.update(params=[1])),
        ("p_attrs", lambda d: d.update(attrs=[{"module": "x"}])),
        ("p_groups", lambda d: d.update(groups="all")),
        ("p_negative", lambda d: d["modules"][first].update({role: [-1, 0]})),
        ("p_version", lambda d: d.update(version="1")),
        ("p_signature", lambda d: d.update(signature="0123456789abcdef")),
    ):
        d = json.loads(json.dumps(plan))
        edit(d)
        d.pop("hash")
        (w / f"{name}.json").write_text(json.dumps(d))
    # empty files of the other kinds
    d = _hostile(w, "h_empty", "edgeprune:demo-cnn")
    (d / "model.json").write_text("")
    shutil.copytree(w / "quant", w / "q_empty")
    (w / "q_empty" / "quant.json").write_text("")
    (w / "empty.npz").write_bytes(b"")
    # .tflite
    ep.export(ep.models.build("edgeprune:demo-cnn"), w / "tfl", formats=["tflite"])
    tfl = (w / "tfl" / "model.tflite").read_bytes()
    (w / "empty.tflite").write_bytes(b"")
    (w / "truncated.tflite").write_bytes(tfl[: len(tfl) // 2])
    (w / "random.tflite").write_bytes(np.random.default_rng(2).bytes(4096))
    (w / "offset.tflite").write_bytes((10**9).to_bytes(4, "little") + tfl[4:])  # root table far past the end
    # found by the reader fuzzer: one flipped byte sends a tensor's table offset past the end
    conv = bytearray((Path(__file__).resolve().parents[1] / "data" / "runtime" / "conv_variants.tflite").read_bytes())
    conv[464] ^= 3
    (w / "tensor_offset.tflite").write_bytes(bytes(conv))
    _build_sweep_files(w)


def _build_sweep_files(w: Path) -> None:
    """What a sweep of hand-made bad inputs found: deep nesting, sizes that would allocate for
    minutes, files consistent in type but not with each other or the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    plan = json.loads((w / "p_good.json").read_text())
    good_toml = (Path(__file__).resolve().parents[2] / "targets" / "rpi4.toml").read_text()
    state = torch.load(w / "model" / "weights.pt", weights_only=True)
    x = np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(np.float32)
    y = np.arange(40) % 10
    qj = json.loads((w / "quant" / "quant.json").read_text())
    point = next(iter(qj["points"]))
    layer = next(iter(qj["layers"]))

    for name, edit in (
        ("p_inputs_big", lambda d: d.update(inputs=[{"dtype": "float32", "shape": [1, 1, 20000, 20000]}])),
        ("p_dunder", lambda d: d.update(attrs=[{"module": "stem.0", "attr": "__class__", "value": 1}])),
        ("p_method", lambda d: d.update(attrs=[{"module": "stem.0", "attr": "forward", "value": 1}])),
        ("p_axis", lambda d: d.update(params=[{"name": "stem.0.weight", "axis": 7, "keep": [0]}])),
        ("p_param_name", lambda d: d.update(params=[{"name": "nosuch", "axis": 0, "keep": [0]}])),
    ):
        d = json.loads(json.dumps(plan))
        edit(d)
        d.pop("hash")
        (w / f"{name}.json").write_text(json.dumps(d))
    (w / "p_deep.json").write_text('{"a":' * 100000 + "1" + "}" * 100000)
    (w / "t_deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n" + good_toml)
    for name, edit in (
        ("q_zero_point", lambda d: d["points"][point].update(zero_point=1000)),
        ("q_layer", lambda d: d["layers"].update(nosuch=d["layers"][layer])),
        ("q_scales", lambda d: d["layers"][layer].update(weight_scale=[0.1] * 1000)),
        ("q_op_kind", lambda d: next(iter(d["ops"].values())).update(kind="evil")),
        ("q_point_gone", lambda d: d["points"].pop(d["layers"][layer]["output"])),
        ("q_shape_big", lambda d: d.update(input_shape=[1, 2**40, 2**40])),
        ("q_config_bool", lambda d: d["config"].update(per_channel="yes")),
        ("q_config_target", lambda d: d["config"].update(target=5)),
    ):
        shutil.copytree(w / "quant", w / name)
        d = json.loads(json.dumps(qj))
        edit(d)
        (w / name / "quant.json").write_text(json.dumps(d))
    sparse = dict(state, **{"stem.0.weight": state["stem.0.weight"].to_sparse()})
    torch.save(sparse, w / "sparse.pt")
    with warnings.catch_warnings():  # (torch deprecates quantized tensors; users still have such files)
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_tensor(state["stem.0.weight"], 0.1, 0, torch.qint8)
    torch.save(dict(state, **{"stem.0.weight": qweight}), w / "quantized.pt")
    _write_npz(w / "one.npz", x=x[:1], y=y[:1])

    def conv_onnx(path: Path, shape) -> None:
        weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
        node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
            [weight],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    conv_onnx(w / "zero_dim.onnx", [1, 3, 0, 8])
    conv_onnx(w / "huge_input.onnx", [1, 3, 2**40, 2**40])
    conv_onnx(w / "negative_dim.onnx", [1, 3, -5, 8])
    # a bench JSON of the world's ONNX file, for `targets calibrate`, and damaged copies
    measured = ep.bench(w / "onnx" / "model.onnx", runs=3, warmup=1).to_dict()
    for name, edit in (
        ("c_layers", lambda d: d.update(layers="x")),
        ("c_threads", lambda d: d.update(threads=-1)),
        ("c_time", lambda d: d["layers"][0].update(mean_ms="slow", min_ms="slow")),
    ):
        d = json.loads(json.dumps(measured))
        edit(d)
        (w / f"{name}.json").write_text(json.dumps(d))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    _build_world(w)
    return w


TRUST = (
    r"model spec '{spec}' runs Python code from outside edgeprune; refused \(nothing was imported\); pass --trust-code"
)
OLD = ("--out", "{w}/old", "--force")
PRUNE = ("prune", "--ratio", "0.5", *OLD, "--model")
QUANT = ("quantize", "--calib", "digits", "--calib-n", "8", *OLD, "--model")
TRAIN = ("train", "--data", "digits", "--epochs", "1", *OLD, "--model")


def _trust(spec: str) -> str:
    return TRUST.format(spec=spec.replace(".", r"\."))


def _plan_argv(plan_file: str) -> tuple:
    """``edgeprune prune --plan {w}/PLAN_FILE`` of the world's saved model (the --plan cases)."""
    return (*PRUNE[:1], "--plan", "{w}/" + plan_file, *OLD, "--model", "{w}/model")


# (id, argv, exit code, message regex); "{w}" is the world directory
CASES = [
    # hostile model.json: nothing may be imported or called
    ("system-prune", (*PRUNE, "{w}/h_system"), 2, r"--model {w}/h_system/model.json: " + _trust("os:system")),
    ("system-quantize", (*QUANT, "{w}/h_system"), 2, _trust("os:system")),
    ("system-train", (*TRAIN, "{w}/h_system"), 2, _trust("os:system")),
    ("system-export", ("export", "{w}/h_system", *OLD), 2, _trust("os:system")),
    ("system-bench", ("bench", "{w}/h_system", "--in-process", "--runs", "1"), 2, _trust("os:system")),
    ("system-build", ("build", "--model", "{w}/h_system", "--target", "x86-avx2", *OLD), 2, _trust("os:system")),
    ("subprocess-prune", (*PRUNE, "{w}/h_subprocess"), 2, _trust("subprocess:run")),
    ("subprocess-export", ("export", "{w}/h_subprocess", *OLD), 2, _trust("subprocess:run")),
    ("exec-prune", (*PRUNE, "{w}/h_exec"), 2, _trust("builtins:exec")),
    ("exec-quantize", (*QUANT, "{w}/h_exec"), 2, _trust("builtins:exec")),
    ("eval-train", (*TRAIN, "{w}/h_eval"), 2, _trust("builtins:eval")),
    ("import-prune", (*PRUNE, "{w}/h_import"), 2, _trust("importlib:import_module")),
    ("import-export", ("export", "{w}/h_import", *OLD), 2, _trust("importlib:import_module")),
    ("quant-dir-hostile-model", ("export", "{w}/q_hostile", *OLD), 2, _trust("os:system")),
    ("file-spec-untrusted", (*PRUNE, "{w}/h_file_untrusted"), 2, _trust("code/net.py:make")),
    ("outside-untrusted", (*PRUNE, "{w}/h_outside"), 2, _trust("../evil.py:make")),
    ("outside-trusted", (*PRUNE, "{w}/h_outside", "--trust-code"), 2, r"spec file '\.\./evil\.py' points outside"),
    ("absolute-trusted", (*PRUNE, "{w}/h_absolute", "--trust-code"), 2, r"evil\.py' points outside the model dir"),
    ("symlink-trusted", (*PRUNE, "{w}/h_symlink", "--trust-code"), 2, r"spec file 'code/net\.py' is a symlink"),
    ("hash-trusted", (*PRUNE, "{w}/h_hash", "--trust-code"), 2, r"h_hash/code/net\.py: sha256 differs"),
    ("nohash-trusted", (*PRUNE, "{w}/h_nohash", "--trust-code"), 2, r"'code/net\.py' has no sha256 under 'code'"),
    ("torchvision-weights", (*PRUNE, "{w}/h_tv_weights"), 2, r"build_kwargs 'weights' is refused \(it would download or run code\)"),
    ("kwarg-unknown", (*PRUNE, "{w}/h_kwarg"), 2, r"build_kwargs \['evil'\] are not parameters of 'edgeprune:demo"),
    ("kwarg-object", (*PRUNE, "{w}/h_kwarg_obj"), 2, r"build_kwargs 'num_classes' must be a number"),
    ("kwargs-list", (*PRUNE, "{w}/h_kwargs_list"), 2, r"build_kwargs must be an object, got list"),
    ("kwargs-zero-classes", (*PRUNE, "{w}/h_zero_classes"), 2,
     r"weights\.pt: does not fit the model built from 'edgeprune:demo-cnn' .*: size mismatch for classifier\.weight"),
    ("weights-outside", (*PRUNE, "{w}/h_weights_out"), 2, r"weights file '\.\./model/weights\.pt' points outside"),
    ("weights-absolute", (*PRUNE, "{w}/h_weights_abs"), 2, r"weights file '/.*' points outside"),
    ("weights-symlink", (*PRUNE, "{w}/h_weights_link"), 2, r"weights file 'weights\.pt' is a symlink"),
    # broken model directories
    ("manifest-version", (*PRUNE, "{w}/h_version"), 2, r"format version 99 is newer"),
    ("manifest-format", (*PRUNE, "{w}/h_format"), 2, r"not an edgeprune model manifest"),
    ("manifest-version-negative", (*PRUNE, "{w}/h_version_neg"), 2, r"format version -1 must be an integer >= 1"),
    ("manifest-version-string", (*PRUNE, "{w}/h_version_str"), 2, r"format version '1' must be an integer >= 1"),
    ("manifest-huge-number", (*PRUNE, "{w}/h_bigint"), 2, r"h_bigint/model\.json: invalid JSON \(Exceeds the limit"),
    ("manifest-nospec", (*PRUNE, "{w}/h_nospec"), 2, r"h_nospec/model\.json: missing field 'spec'"),
    ("manifest-json", (*PRUNE, "{w}/h_badjson"), 2, r"h_badjson/model\.json: invalid JSON"),
    ("manifest-unknown-spec", (*PRUNE, "{w}/h_unknown"), 2, r"unknown model spec 'resnet'"),
    ("manifest-builtin", (*PRUNE, "{w}/h_builtin"), 2, r"unknown built-in model; built-ins: edgeprune:demo-cnn"),
    ("manifest-shape", (*PRUNE, "{w}/h_shape"), 2, r"input_shape \[-1, 32\] must list positive integers"),
    ("manifest-plan", (*PRUNE, "{w}/h_plan"), 2, r"the stored plan does not apply"),
    ("dir-weights-truncated", (*PRUNE, "{w}/h_truncated"), 2, r"h_truncated/weights\.pt: not a readable torch file"),
    ("dir-weights-missing", (*PRUNE, "{w}/h_noweights"), 2, r"h_noweights/weights\.pt: missing"),
    ("dir-weights-nan", (*PRUNE, "{w}/h_nan"), 2, r"h_nan/weights\.pt: tensor 'stem\.0\.weight' contains NaN"),
    ("not-a-model-dir", (*PRUNE, "{w}/notmodel"), 2, r"notmodel: no model\.json"),
    ("prune-out-as-model", (*PRUNE, "{w}/pruned"), 2, r"no model\.json .*it holds a saved model in {w}/pruned/model"),
    # --weights
    ("weights-truncated", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/truncated.pt"), 2, r"truncated\.pt: not a"),
    ("weights-random", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/random.pt"), 2, r"random\.pt: not a readable"),
    ("weights-bad-storage-ref", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/bad_ref.pt"), 2, r"bad_ref\.pt: not a readable"),
    ("weights-empty", (*TRAIN, "edgeprune:demo-cnn", "--weights", "{w}/empty.pt"), 2, r"empty\.pt: not a readable"),
    ("weights-one-byte", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/onebyte.pt"), 2, r"onebyte\.pt: not a readable"),
    ("weights-pickle", (*QUANT, "edgeprune:demo-cnn", "--weights", "{w}/pickled.pt"), 2, r"pickled Python objects"),
    ("weights-nan", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/nan.pt"), 2, r"tensor 'stem\.0\.weight' .*NaN"),
    ("weights-shape", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/shape.pt"), 2, r"shape mismatch for 1 tensors"),
    ("weights-missing", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/nope.pt"), 2, r"nope\.pt: weights file not"),
    # outputs
    ("out-is-file", ("prune", "--model", "edgeprune:demo-cnn", "--ratio", "0.5", "--out", "{w}/file.txt"), 2, "exists"),
    ("out-not-empty", ("prune", "--model", "edgeprune:demo-cnn", "--ratio", "0.5", "--out", "{w}/old"), 2, "--force"),
    ("out-parent-file", (*TRAIN[:5], "--out", "{w}/file.txt/sub", "--model", "edgeprune:demo-cnn"), 2, r"is a file"),
    ("out-read-only", (*TRAIN[:5], "--out", "/sys/kernel/ep_out", "--model", "edgeprune:demo-cnn"), 2, r"cannot"),
    ("export-jetson-int8", ("export", "{w}/quant", "--target", "jetson-nano", *OLD), 2, r"--target jetson-nano: "),
    # data
    ("labels-out-of-range", (*TRAIN[:1], "--data", "{w}/labels56.npz", *OLD, "--model", "{w}/model"), 2, r"56 classes"),
    ("calib-labels", (*QUANT[:1], "--calib", "{w}/labels56.npz", *OLD, "--model", "{w}/model"), 2, r"56 classes"),
    ("data-nan", (*TRAIN[:1], "--data", "{w}/nan.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"'x' contains NaN"),
    ("calib-nan", ("quantize", "--calib", "{w}/nan.npz", *OLD, "--model", "{w}/model"), 2, r"'x' contains NaN"),
    ("data-no-y", (*TRAIN[:1], "--data", "{w}/noy.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"missing array 'y'"),
    ("data-3d", (*TRAIN[:1], "--data", "{w}/x3d.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"expected 4-D NCHW"),
    ("data-negative", (*TRAIN[:1], "--data", "{w}/neg.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"negative"),
    ("data-label-huge", (*TRAIN[:1], "--data", "{w}/label_huge.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2,
     r"label_huge\.npz: array 'y' has label 4611686018427387904; expected class indices 0\.\.K-1 with K at most"),
    ("data-object", (*TRAIN[:1], "--data", "{w}/obj.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"pickle"),
    ("data-truncated", (*TRAIN[:1], "--data", "{w}/truncated.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, "npz"),
    ("data-missing", (*TRAIN[:1], "--data", "{w}/none.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"not found"),
    # quantized dirs
    ("quant-nan-scale", ("export", "{w}/q_nan", *OLD), 2, r"q_nan/quant\.json: scale of '.*' is nan"),
    ("quant-neg-scale", ("export", "{w}/q_neg", *OLD), 2, r"q_neg/quant\.json: scale of '.*\.weight' is -1\.0"),
    ("quant-inf-scale", ("export", "{w}/q_inf", *OLD), 2, r"q_inf/quant\.json: scale of '.*\.bias' is inf"),
    ("quant-huge-int-scale", ("export", "{w}/q_bigint", *OLD), 2, r"q_bigint/quant\.json: scale of '.*' is -9223372036854775809"),
    ("quant-no-points", ("export", "{w}/q_nopoints", *OLD), 2, r"field 'points' is missing"),
    ("quant-bad-json", ("export", "{w}/q_badjson", *OLD), 2, r"q_badjson/quant\.json: invalid JSON"),
    ("quant-folded", ("export", "{w}/q_folded", *OLD), 2, r"q_folded/folded\.pt: not a readable torch file"),
    # onnx files
    ("inspect-empty", ("inspect", "{w}/empty.onnx"), 2, r"empty\.onnx: empty file \(0 bytes\)"),
    ("inspect-truncated", ("inspect", "{w}/truncated.onnx"), 2, r"truncated\.onnx: not a readable ONNX file"),
    ("inspect-random", ("inspect", "{w}/random.onnx"), 2, r"random\.onnx: not a readable ONNX file"),
    ("inspect-missing", ("inspect", "{w}/none.onnx"), 2, r"none\.onnx: no such file"),
    ("bench-empty-onnx", ("bench", "{w}/empty.onnx", "--in-process"), 2, r"onnxruntime cannot load"),
    ("bench-not-model", ("bench", "{w}/notmodel", "--runs", "1"), 2, r"notmodel: no model\.json"),
    # flags
    ("budget-negative", ("build", "--model", "edgeprune:demo-cnn", "--target", "rpi4", "--budget-macs", "-1", *OLD), 2,
     r"--budget-macs -1: must be > 0"),
    ("ratio-range", (*PRUNE[:1], "--ratio", "1.5", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"--ratio 1\.5: must be"),
    ("verbose-after", (*PRUNE, "nosuch:thing", "-v"), 2, r"--model nosuch:thing"),
    ("target-unknown", (*QUANT, "{w}/model", "--target", "nosuch"), 2, r"--target nosuch"),
    ("train-epochs", (*TRAIN, "edgeprune:demo-cnn", "--epochs", "-1"), 2, r"--epochs -1: must be >= 0"),
    ("export-opset", ("export", "{w}/quant", "--opset", "5", *OLD), 2, r"--opset 5"),
    ("percentile", (*QUANT, "{w}/model", "--percentile", "200"), 2, r"--percentile 200\.0: must be in \(50, 100\]"),
    # target profiles (TOML): as a --target path and through `targets show`
    ("target-empty", ("targets", "show", "{w}/t_empty.toml"), 2, r"t_empty\.toml: empty file; a target profile needs"),
    ("target-malformed", (*QUANT, "{w}/model", "--target", "{w}/t_malformed.toml"), 2, r"t_malformed\.toml: invalid TOML"),
    ("target-wrong-type", ("targets", "show", "{w}/t_type.toml"), 2,
     r"t_type\.toml: field 'cpu\.cores' must be a positive integer, got str 'four'"),
    ("target-unknown-key", ("targets", "show", "{w}/t_unknown.toml"), 2,
     r"unknown field 'cpu\.frq_ghz' \(fields of \[cpu\]: arch, uarch, cores, freq_ghz"),
    ("target-unknown-table", ("targets", "show", "{w}/t_section.toml"), 2, r"unknown field 'peaks' \(fields and tables"),
    ("target-negative", ("export", "{w}/quant", "--target", "{w}/t_neg.toml", *OLD), 2,
     r"field 'cpu\.freq_ghz' must be a positive number, got -1\.5 \(figures must be > 0\)"),
    ("target-inf", ("targets", "show", "{w}/t_inf.toml"), 2, r"'cpu\.freq_ghz' .*got inf \(out of range: at most 10\)"),
    ("target-out-of-range", ("build", "--model", "edgeprune:demo-cnn", "--target", "{w}/t_huge.toml", *OLD), 2,
     r"t_huge\.toml: field 'cpu\.cores' .*4000000 \(out of range: at most 1024\)"),
    ("target-binary", ("targets", "show", "{w}/t_binary.toml"), 2, r"t_binary\.toml: not UTF-8 text"),
    ("target-missing", ("targets", "show", "{w}/none.toml"), 2, r"none\.toml: file not found"),
    # prune plans (--plan)
    ("plan-empty", _plan_argv("p_empty.json"), 2, r"--plan {w}/p_empty\.json: prune plan is not valid JSON"),
    ("plan-truncated", _plan_argv("p_truncated.json"), 2, r"not valid JSON"),
    ("plan-not-object", _plan_argv("p_list.json"), 2, r"must be a JSON object, got list"),
    ("plan-unknown-field", _plan_argv("p_unknown.json"), 2,
     r"p_unknown\.json: prune plan has unknown field 'evil' \(fields: version"),
    ("plan-params-type", _plan_argv("p_params.json"), 2,
     r"field 'params': entry 0 must be an object .name: str, axis: int, keep: \[int >= 0\]., got 1$"),
    ("plan-attrs-type", _plan_argv("p_attrs.json"), 2,
     r"field 'attrs': entry 0 must be an object .module: str, attr: str, value: int."),
    ("plan-groups-type", _plan_argv("p_groups.json"), 2, r"field 'groups' is missing or not a list"),
    ("plan-negative-index", _plan_argv("p_negative.json"), 2, r"must map roles to lists of ints >= 0"),
    ("plan-version-type", _plan_argv("p_version.json"), 2, r"prune plan version '1' is not supported"),
    ("plan-other-model", _plan_argv("p_signature.json"), 2, r"was made for another model"),
    ("plan-missing", _plan_argv("none.json"), 2, r"none\.json: cannot read"),
    # empty files of every kind
    ("manifest-empty", (*PRUNE, "{w}/h_empty"), 2, r"h_empty/model\.json: invalid JSON"),
    ("quant-empty-json", ("export", "{w}/q_empty", *OLD), 2, r"q_empty/quant\.json: invalid JSON"),
    ("data-empty", (*TRAIN[:1], "--data", "{w}/empty.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2, r"empty\.npz: not a readable \.npz archive"),
    ("calib-empty", ("quantize", "--calib", "{w}/empty.npz", *OLD, "--model", "{w}/model"), 2, r"empty\.npz: not a readable \.npz archive"),
    # .tflite files for inspect and bench
    ("inspect-tflite-empty", ("inspect", "{w}/empty.tflite"), 2, r"empty\.tflite: not a TFLite file"),
    ("inspect-tflite-truncated", ("inspect", "{w}/truncated.tflite"), 2,
     r"truncated\.tflite: truncated or corrupt TFLite file"),
    ("inspect-tflite-offset", ("inspect", "{w}/offset.tflite"), 2, r"offset\.tflite: truncated or corrupt"),
    ("inspect-tflite-tensor-offset", ("inspect", "{w}/tensor_offset.tflite"), 2,
     r"tensor_offset\.tflite: truncated or corrupt TFLite file \(unpack_from requires"),
    ("bench-tflite-random", ("bench", "{w}/random.tflite", "--in-process", "--runs", "1"), 2,
     r"random\.tflite: not a TFLite file"),
    ("bench-tflite-truncated", ("bench", "{w}/truncated.tflite", "--in-process", "--runs", "1"), 2,
     r"truncated\.tflite: truncated or corrupt"),
    # a sweep of hand-made bad inputs: outputs over inputs
    ("out-is-the-input", ("export", "{w}/model", "--out", "{w}/model", "--force"), 2,
     r"--out {w}/model: holds the input {w}/model, which replacing it would delete"),
    ("out-holds-the-input", ("prune", "--ratio", "0.5", "--model", "{w}/pruned/model", "--out", "{w}/pruned", "--force"),
     2, r"--out {w}/pruned: holds the input {w}/pruned/model"),
    ("quantize-out-holds-the-input", (*QUANT[:5], "--out", "{w}", "--force", "--model", "{w}/model"), 2,
     r"--out {w}: holds the input"),
    ("build-out-is-the-input", ("build", "--model", "{w}/model", "--target", "rpi4", "--out", "{w}/model", "--force"),
     2, r"--out {w}/model: holds the input {w}/model"),
    ("bench-json-is-a-dir", ("bench", "{w}/onnx/model.onnx", "--in-process", "--runs", "1", "--no-layers", "--json",
     "{w}/old"), 2, r"{w}/old: is a directory; give a file path"),
    ("bench-json-under-a-file", ("bench", "{w}/onnx/model.onnx", "--in-process", "--runs", "1", "--no-layers", "--json",
     "{w}/file.txt/x.json"), 2, r"a parent of it is a file"),
    # sizes and counts that would run for minutes or exhaust memory
    ("bench-threads-huge", ("bench", "{w}/onnx/model.onnx", "--threads", "99999"), 2, r"--threads 99999: at most 256"),
    ("bench-runs-huge", ("bench", "{w}/onnx/model.onnx", "--runs", "99999999999"), 2, r"--runs and --warmup: at most"),
    ("bench-huge-input", ("bench", "{w}/huge_input.onnx", "--runs", "1"), 2, r"needs .* GiB; give a smaller"),
    ("bench-zero-dim", ("bench", "{w}/zero_dim.onnx", "--runs", "1"), 2,
     r"zero_dim\.onnx: the runtime failed on its first run \(InvalidArgument"),
    ("bench-zero-dim-in-process", ("bench", "{w}/zero_dim.onnx", "--runs", "1", "--in-process"), 2,
     r"zero_dim\.onnx: the runtime failed on its first run"),
    ("inspect-negative-dim", ("inspect", "{w}/negative_dim.onnx"), 2,
     r"negative_dim\.onnx: input 'x' has size -5 on axis 2; a size must be >= 0 or a named"),
    ("plan-inputs-huge", _plan_argv("p_inputs_big.json"), 2, r"field 'inputs': entry 0 must be .*at most 134217728"),
    ("quant-input-shape-huge", ("export", "{w}/q_shape_big", *OLD), 2, r"input_shape .* 134217728 elements at most"),
    # plans that name what the model does not have, or what a plan may not set
    ("plan-sets-a-dunder", _plan_argv("p_dunder.json"), 2,
     r"prune plan sets stem\.0\.__class__, which is not an integer size of that layer"),
    ("plan-sets-a-method", _plan_argv("p_method.json"), 2, r"prune plan sets stem\.0\.forward, which is not an"),
    ("plan-param-axis", _plan_argv("p_axis.json"), 2, r"slices 'stem\.0\.weight' on axis 7, but it has 4 axes"),
    ("plan-param-name", _plan_argv("p_param_name.json"), 2, r"slices 'nosuch', which is not a parameter or buffer"),
    ("plan-nested", _plan_argv("p_deep.json"), 2, r"prune plan is not valid JSON \(nested too deep\)"),
    ("target-nested", ("targets", "show", "{w}/t_deep.toml"), 2, r"t_deep\.toml: invalid TOML \(arrays or tables"),
    # quant.json that disagrees with itself or with the model
    ("quant-zero-point", ("export", "{w}/q_zero_point", *OLD), 2, r"zero_point 1000 must be an integer in \[-128, 127\]"),
    ("quant-unknown-layer", ("export", "{w}/q_layer", *OLD), 2, r"layer 'nosuch' is not a layer with weights"),
    ("quant-scale-count", ("export", "{w}/q_scales", *OLD), 2, r"weight_scale must list \d+ positive numbers"),
    ("quant-op-kind", ("export", "{w}/q_op_kind", *OLD), 2, r"kind must be one of add, mul"),
    ("quant-config-bool", ("export", "{w}/q_config_bool", *OLD), 2,
     r"q_config_bool/quant\.json: 'config' is not valid \(per_channel must be true or false, not 'yes'\)"),
    ("quant-config-target", ("export", "{w}/q_config_target", *OLD), 2,
     r"'config' is not valid \(target must be a profile name or path, not 5\); quantize the model again"),
    ("quant-point-gone", ("export", "{w}/q_point_gone", *OLD), 2, r"(reads|its output) .*'block1_relu1'.* (is not in|is not one of the) points"),
    # weights of a kind no layer loads, data too small to split, an opset nobody tested
    ("weights-sparse", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/sparse.pt"), 2,
     r"tensor 'stem\.0\.weight' is a torch\.sparse_coo tensor"),
    ("weights-quantized", (*PRUNE, "edgeprune:demo-cnn", "--weights", "{w}/quantized.pt"), 2,
     r"tensor 'stem\.0\.weight' is a quantized tensor"),
    ("data-one-sample", (*TRAIN[:1], "--data", "{w}/one.npz", *OLD, "--model", "edgeprune:demo-cnn"), 2,
     r"one\.npz: the training split is empty|one\.npz: the validation split is empty"),
    ("export-opset-new", ("export", "{w}/quant", "--opset", "999", *OLD), 2, r"--opset 999: edgeprune writes opsets 17 to 23"),
    ("inspect-directory", ("inspect", "{w}/old"), 2, r"old: a directory; pass an \.onnx or \.tflite file"),
    ("prune-lr-nan", (*PRUNE[:1], "--ratio", "0.5", "--data", "digits", "--lr", "nan", *OLD, "--model",
     "edgeprune:demo-cnn"), 2, r"--lr nan: must be a finite number > 0"),
    ("prune-seed-negative", (*PRUNE, "edgeprune:demo-cnn", "--seed", "-1"), 2, r"--seed -1: must be >= 0"),
    ("prune-input-shape-huge", (*PRUNE, "edgeprune:demo-cnn", "--input-shape", "1,100000,100000"), 2,
     r"--input-shape 1,100000,100000: at most 134217728 elements"),
    ("train-image-size-huge", (*TRAIN, "edgeprune:demo-cnn", "--image-size", "100000"), 2,
     r"--image-size 100000: at most 4096 pixels a side"),
    ("bench-top-negative", ("bench", "{w}/onnx/model.onnx", "--top", "-1"), 2, r"--top -1: must be >= 0"),
    ("target-tiny-figure", ("targets", "show", "{w}/t_tiny.toml"), 2,
     r"'cpu\.freq_ghz' .*5e-324 \(out of range: at least 0\.001\)"),
    # bench JSON for `targets calibrate`
    ("calibrate-layers", ("targets", "calibrate", "rpi4", "{w}/c_layers.json", "--out", "{w}/o.toml"), 2,
     r"c_layers\.json: 'layers' is not a list of per-op rows"),
    ("calibrate-threads", ("targets", "calibrate", "rpi4", "{w}/c_threads.json", "--out", "{w}/o.toml"), 2,
     r"c_threads\.json: 'threads' -1 is not a thread count"),
    ("calibrate-time", ("targets", "calibrate", "rpi4", "{w}/c_time.json", "--out", "{w}/o.toml"), 2,
     r"c_time\.json: layers\[0\] time 'slow' is not a number"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(world, run_cli, monkeypatch, tmp_path, argv, code, pattern):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _snapshot(world)
    res = run_cli(*(a.format(w=world) for a in argv))
    assert res.code == code, res.err
    lines = [line for line in res.err.strip().splitlines() if not line.startswith("build [")]  # build's progress
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert "Traceback" not in res.err and "weights_only=False" not in res.err
    import re

    assert re.search(pattern.format(w=re.escape(str(world))), lines[0]), lines[0]
    assert not (world / MARKER).exists(), "a hostile spec ran"
    assert _snapshot(world) == before  # inputs and the previous --out untouched, no temp sibling left
    assert list(cwd.iterdir()) == []


def test_there_are_at_least_sixty_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("name", ["h_system", "h_subprocess", "h_exec", "h_import", "h_outside", "h_symlink"])
def test_library_load_refuses_hostile_dirs(world, name):
    with pytest.raises(UserError):
        ep.load(world / name)
    if name in ("h_outside", "h_symlink"):
        with pytest.raises(UserError, match="outside|symlink"):
            ep.load(world / name, trust_code=True)
    assert not (world / MARKER).exists()


def test_trusted_file_factory_runs_with_trust_code(world, run_cli, tmp_path):
    src = tmp_path / "net_h18.py"
    src.write_text("from edgeprune.models import demo_cnn\ndef make():\n    return demo_cnn(num_classes=10)\n")
    m = ep.models.build(f"{src}:make")
    ep.save(m, tmp_path / "m")
    res = run_cli("export", tmp_path / "m", "--out", tmp_path / "e")
    assert res.code == 2 and "pass --trust-code" in res.err
    assert not (tmp_path / "e").exists()
    res = run_cli("export", tmp_path / "m", "--out", tmp_path / "e", "--trust-code")
    assert res.code == 0, res.err
    assert (tmp_path / "e" / "model.onnx").is_file()


def test_failed_export_with_force_keeps_the_old_dir(world, run_cli, tmp_path):
    old = tmp_path / "out"
    shutil.copytree(world / "old", old)
    before = _snapshot(old)
    # passes every early check, then fails inside the writer: the onnx-int8 writer needs scales
    res = run_cli("export", world / "model", "--format", "onnx-int8", "--out", old, "--force")
    assert res.code == 2 and "onnx-int8 needs int8 scales" in res.err
    assert _snapshot(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    res = run_cli("export", world / "model", "--out", old, "--force")
    assert res.code == 0, res.err
    assert sorted(p.name for p in old.iterdir()) == ["model.onnx"]  # replaced only on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ctrl_c_during_train_keeps_the_old_dir(world, tmp_path):
    old = tmp_path / "out"
    shutil.copytree(world / "old", old)
    before = _snapshot(old)
    exe = Path(sys.executable).with_name("edgeprune")
    argv = [str(exe), "train", "--model", "edgeprune:demo-cnn", "--data", "digits", "--epochs", "50"]
    proc = subprocess.Popen(
        [*argv, "--out", str(old), "--force", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180  # torch import and data load on a busy machine
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # the staging dir: training started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert _snapshot(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_registered_factory_loads_without_trust_code(tmp_path):
    from edgeprune.models import FACTORIES, register_factory

    register_factory("zoo18", lambda name, spec: {"tiny": lambda width=4: torch.nn.Linear(width, 2)}[name])
    try:
        m = ep.models.build("zoo18:tiny", width=3)
        ep.save(m, tmp_path / "m")
        back = ep.load(tmp_path / "m")  # no trust_code: the prefix is registered
        x = torch.randn(2, 3)
        assert torch.equal(back(x), m(x)) and back.edgeprune_build_kwargs == {"width": 3}
    finally:
        FACTORIES.pop("zoo18")
    with pytest.raises(UserError, match=r"model spec 'zoo18:tiny' runs Python code"):
        ep.load(tmp_path / "m")


def test_readme_snippet_reaches_inspect_onnx_through_ep_export(world):
    code = f"import edgeprune as ep; print(ep.export.inspect_onnx({str(world / 'onnx' / 'model.onnx')!r})['opset'])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "17", res.stderr


def test_qlinear_refuses_nan_weights():
    from edgeprune import kernels

    w = np.ones((4, 8), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"weight must be finite \(it contains NaN"):
        kernels.QLinear(w, input_scale=0.1, input_zero_point=0, output_scale=0.1, output_zero_point=0)
    with pytest.raises(ValueError, match=r"bias must be finite"):
        kernels.QLinear(np.ones((4, 8), np.float32), np.array([0, np.nan, 0, 0], np.float32), input_scale=0.1,
                        input_zero_point=0, output_scale=0.1, output_zero_point=0)  # fmt: skip


def test_quantize_refuses_nan_calibration_data_and_weights():
    from edgeprune.quant import CalibrationError, QuantizeError

    model = ep.models.build("edgeprune:demo-cnn")
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    x[5, 0, 3, 3] = float("inf")
    with pytest.raises(CalibrationError, match=r"calibration sample 5 contains NaN or infinite values"):
        ep.quantize(model, x, progress=False)
    with torch.no_grad():
        model.stem[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(QuantizeError, match=r"model tensor 'stem\.0\.weight' contains NaN"):
        ep.quantize(model, x[:4], progress=False)
