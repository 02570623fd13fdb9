"""edgeprune.io: ep.save / ep.load round trips, the on-disk format, refusals and atomicity."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from torch import nn

import edgeprune as ep
import edgeprune.errors
import edgeprune.io as epio


def test_round_trip_outputs_equal(trained_demo_cnn, digits, tmp_path):
    x = digits.test.tensors[0][:16]
    expected = trained_demo_cnn(x)
    ep.save(trained_demo_cnn, tmp_path / "m", metadata={"note": "hello", "top1": 0.98})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.pt"]
    back = ep.load(tmp_path / "m")
    assert not back.training and back.input_shape == (1, 32, 32)
    assert torch.equal(back(x), expected)
    assert back.edgeprune_metadata == {"note": "hello", "top1": 0.98}
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    assert manifest["spec"] == "edgeprune:demo-cnn" and manifest["input_shape"] == [1, 32, 32]
    assert manifest["format"] == "edgeprune-model" and manifest["version"] == 1 and manifest["plan"] is None
    assert manifest["num_params"] == sum(p.numel() for p in trained_demo_cnn.parameters())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    # weights.pt holds only tensors: the safe loader reads it
    sd = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert set(sd) == set(trained_demo_cnn.state_dict())


def test_build_from_saved_dir_and_kwargs(tmp_path):
    m = ep.models.build("edgeprune:demo-cnn", num_classes=4).eval()
    ep.save(m, tmp_path / "four")
    back = ep.models.build(str(tmp_path / "four"))
    assert back.edgeprune_spec == "edgeprune:demo-cnn" and back.edgeprune_build_kwargs == {"num_classes": 4}
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(back(x), m(x))


def test_masks_round_trip_and_resave(tmp_path):
    m = ep.models.build("edgeprune:demo-cnn").eval()
    mask = torch.rand(16, 16, 3, 3) > 0.5
    ep.save(m, tmp_path / "a", masks={"block1.conv1.weight": mask})
    back = ep.load(tmp_path / "a")
    assert set(back.edgeprune_masks) == {"block1.conv1.weight"}
    assert torch.equal(back.edgeprune_masks["block1.conv1.weight"], mask)
    ep.save(back, tmp_path / "b")  # masks travel with the loaded model
    assert torch.equal(ep.load(tmp_path / "b").edgeprune_masks["block1.conv1.weight"], mask)


def test_save_refuses_a_model_without_spec(tmp_path):
    with pytest.raises(
        ValueError, match=r"ep.save needs a model built from a spec \(Sequential has no edgeprune_spec\)"
    ):
        ep.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_file_spec_copied_into_the_dir_and_moves_with_it(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    source = "import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))\n"
    (tmp_path / "src" / "net_h2.py").write_text(source)
    monkeypatch.chdir(tmp_path / "src")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    ep.save(plain, tmp_path / "m", spec="net_h2.py:make")  # explicit spec for a user-built module
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src" / "net_h2.py").unlink()  # the copy inside the directory is what loads
    (tmp_path / "m").rename(tmp_path / "moved")
    manifest = json.loads((tmp_path / "moved" / "model.json").read_text())
    assert manifest["spec"] == "code/net_h2.py:make"
    assert manifest["code"] == {"code/net_h2.py": hashlib.sha256(source.encode()).hexdigest()}
    assert (tmp_path / "moved" / "code" / "net_h2.py").read_text() == source
    with pytest.raises(ep.errors.UserError, match=r"model spec 'code/net_h2.py:make' runs Python code .* --trust-code"):
        ep.load(tmp_path / "moved")
    back = ep.load(tmp_path / "moved", trust_code=True)
    x = torch.randn(2, 4)
    assert torch.equal(back(x), plain(x))
    ep.save(back, tmp_path / "again")  # re-saving copies the file again
    assert (tmp_path / "again" / "code" / "net_h2.py").read_text() == source
    (tmp_path / "moved" / "code" / "net_h2.py").write_text(source + "print('changed')\n")
    with pytest.raises(ep.errors.UserError, match=r"net_h2.py: sha256 differs from model.json"):
        ep.load(tmp_path / "moved", trust_code=True)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory written by ep.save"):
        ep.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model.json"):
        ep.load(tmp_path / "empty")
    ep.save(ep.models.build("edgeprune:demo-cnn"), tmp_path / "m")
    mj = tmp_path / "m" / "model.json"
    d = json.loads(mj.read_text())
    mj.write_text(json.dumps({**d, "version": 99}))
    with pytest.raises(ValueError, match="format version 99 is newer"):
        ep.load(tmp_path / "m")
    # weights that do not fit the spec (e.g. a pruned model saved without its plan)
    mj.write_text(json.dumps({**d, "build_kwargs": {"num_classes": 3}}))
    with pytest.raises(
        ValueError, match=r"does not fit the model built from 'edgeprune:demo-cnn' \(was the model pruned"
    ):
        ep.load(tmp_path / "m")


def test_failed_save_leaves_previous_dir_intact(tmp_path, monkeypatch):
    m = ep.models.build("edgeprune:demo-cnn")
    ep.save(m, tmp_path / "m", metadata={"v": 1})
    real_save = torch.save

    def exploding_save(obj, f, *a, **k):
        if str(f).endswith("masks.pt"):
            raise KeyboardInterrupt  # interrupted half-way: weights.pt already written
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ep.save(
            m, tmp_path / "m", masks={"stem.0.weight": torch.ones(16, 1, 3, 3, dtype=torch.bool)}, metadata={"v": 2}
        )
    monkeypatch.undo()
    assert ep.load(tmp_path / "m").edgeprune_metadata == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left behind


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="metadata must be JSON-serializable"):
        ep.save(ep.models.build("edgeprune:demo-cnn"), tmp_path / "m", metadata={"x": object()})


def test_plan_argument_forms():
    class FakePlan:
        def to_dict(self):
            return {"groups": []}

    assert epio._plan_to_dict(FakePlan()) == {"groups": []}
    assert epio._plan_to_dict([FakePlan(), {"a": 1}]) == [{"groups": []}, {"a": 1}]
    with pytest.raises(ValueError, match="plan must be a PrunePlan"):
        epio._plan_to_dict(3)


def test_pruned_model_round_trip_replays_the_plan(trained_demo_cnn, digits, tmp_path):
    from edgeprune.prune import apply, plan

    x = digits.test.tensors[0][:16]
    p = plan(trained_demo_cnn, x[:1], ratio=0.5, round_to=8)
    pruned = apply(trained_demo_cnn, p).eval()
    n_pruned = sum(t.numel() for t in pruned.parameters())
    assert n_pruned < sum(t.numel() for t in trained_demo_cnn.parameters())
    ep.save(pruned, tmp_path / "p", plan=p)
    manifest = json.loads((tmp_path / "p" / "model.json").read_text())
    assert manifest["plan"] == json.loads(json.dumps(p.to_dict())) and manifest["num_params"] == n_pruned
    back = ep.load(tmp_path / "p")
    assert sum(t.numel() for t in back.parameters()) == n_pruned
    assert torch.equal(back(x), pruned(x))
    assert back.edgeprune_plan.to_dict() == p.to_dict()
    ep.save(back, tmp_path / "again")  # the plan travels with the loaded model
    assert torch.equal(ep.load(tmp_path / "again")(x), pruned(x))
    # without its plan the pruned weights cannot fit the rebuilt spec: a clear refusal on load
    if hasattr(pruned, "edgeprune_plan"):
        del pruned.edgeprune_plan
    ep.save(pruned, tmp_path / "noplan")
    with pytest.raises(ValueError, match="was the model pruned and saved without its plan"):
        ep.load(tmp_path / "noplan")
