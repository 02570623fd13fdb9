"""`edgeprune prune` end to end: files written, models reloaded, plans replayed, bad input.

Consumes: the built-in demo CNN (trained fixture), the zoo file as a `file.py:factory` spec.
Produces: assertions on exit codes, JSON fields, the saved model (ep.load rebuilds the pruned
shape from the stored plan) and one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import edgeprune as ep
from edgeprune.prune import PrunePlan

ZOO = Path(__file__).parent / "zoo.py"


def _one_line_error(res, *needles):
    assert res.code == 2, res
    lines = [line for line in res.err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_prune_trained_model_saves_a_reloadable_smaller_model(run_cli, trained_demo_cnn_dir, tmp_out, digits):
    res = run_cli(
        "prune", "--model", trained_demo_cnn_dir, "--ratio", "0.5", "--round-to", "8", "--out", tmp_out, "--json"
    )
    assert res.code == 0, res.err
    r = json.loads(res.out)
    assert r["after"]["params"] < r["before"]["params"] and r["after"]["macs"] < r["before"]["macs"]
    assert r["layers"] and all(layer["after"] % 8 == 0 and layer["after"] < layer["before"] for layer in r["layers"])
    plan = PrunePlan.from_json((tmp_out / "plan.json").read_text())
    assert plan.hash == r["plan_hash"]
    loaded = ep.load(tmp_out / "model")
    assert sum(p.numel() for p in loaded.parameters()) == r["after"]["params"]
    expected = ep.apply(ep.load(trained_demo_cnn_dir), plan)
    x = torch.stack([digits.test[i][0] for i in range(8)])
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


def test_prune_twice_stacks_plans(run_cli, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert (
        run_cli("prune", "--model", "edgeprune:demo-cnn", "--ratio", "0.3", "--round-to", "4", "--out", first).code == 0
    )
    res = run_cli("prune", "--model", first / "model", "--ratio", "0.3", "--round-to", "4", "--out", second, "--json")
    assert res.code == 0, res.err
    r = json.loads(res.out)
    stored = json.loads((second / "model" / "model.json").read_text())["plan"]
    assert isinstance(stored, list) and len(stored) == 2
    loaded = ep.load(second / "model")
    assert sum(p.numel() for p in loaded.parameters()) == r["after"]["params"]


def test_prune_file_spec_with_target_macs_and_table(run_cli, tmp_out):
    res = run_cli(
        "prune",
        "--model",
        f"{ZOO}:ShuffleNetV2",
        "--input-shape",
        "3,16,16",
        "--target-macs",
        "0.5",
        "--round-to",
        "1",
        "--out",
        tmp_out,
    )
    assert res.code == 0, res.err
    assert "channels per layer" in res.out and "macs" in res.out
    plan = json.loads((tmp_out / "plan.json").read_text())
    model = ep.models.build(f"{ZOO}:ShuffleNetV2")
    x = torch.zeros(1, 3, 16, 16)
    base, _ = ep.prune.count_macs_params(model, x)
    macs, _ = ep.prune.count_macs_params(ep.apply(model, PrunePlan.from_dict(plan)), x)
    assert macs <= 0.5 * base


def test_replay_plan_and_plan_for_another_model(run_cli, tmp_path):
    a = tmp_path / "a"
    assert run_cli("prune", "--model", "edgeprune:demo-cnn", "--ratio", "0.5", "--out", a).code == 0
    res = run_cli(
        "prune", "--model", "edgeprune:demo-cnn", "--plan", a / "plan.json", "--out", tmp_path / "b", "--json"
    )
    assert res.code == 0, res.err
    assert json.loads(res.out)["plan_hash"] == json.loads((a / "plan.json").read_text())["hash"]
    res = run_cli(
        "prune",
        "--model",
        f"{ZOO}:ResNetBasic",
        "--input-shape",
        "3,16,16",
        "--plan",
        a / "plan.json",
        "--out",
        tmp_path / "c",
    )
    _one_line_error(res, "--plan", "made for another model")
    # a hand-edited plan (no hash) with a misspelt role: one line, exit 2, nothing written
    d = json.loads((a / "plan.json").read_text())
    del d["hash"]
    layer = next(n for n, roles in d["modules"].items() if "out" in roles)
    d["modules"][layer]["outputs"] = d["modules"][layer].pop("out")
    (tmp_path / "edited.json").write_text(json.dumps(d))
    res = run_cli("prune", "--model", "edgeprune:demo-cnn", "--plan", tmp_path / "edited.json", "--out", tmp_path / "d")
    _one_line_error(res, "--plan", f"{layer}: Conv2d has no role 'outputs' (its roles: out, in)")
    assert not (tmp_path / "d").exists()


def test_data_driven_importance_uses_calib(run_cli, tmp_out):
    res = run_cli(
        "prune",
        "--model",
        "edgeprune:demo-cnn",
        "--ratio",
        "0.4",
        "--importance",
        "taylor",
        "--calib",
        "digits",
        "--out",
        tmp_out,
        "--json",
    )
    assert res.code == 0, res.err
    assert json.loads(res.out)["settings"]["importance"] == "taylor"


def test_bad_input_exits_2_with_one_line(run_cli, tmp_path):
    base = ("prune", "--model", "edgeprune:demo-cnn")
    _one_line_error(run_cli(*base, "--ratio", "1.5", "--out", tmp_path / "a"), "--ratio 1.5", "[0, 1)")
    _one_line_error(run_cli(*base, "--ratio", "-0.1", "--out", tmp_path / "a"), "--ratio")
    _one_line_error(
        run_cli(*base, "--ratio", "0.5", "--importance", "magic", "--out", tmp_path / "a"), "--importance magic", "l2"
    )
    _one_line_error(
        run_cli("prune", "--model", "nosuch:thing", "--ratio", "0.5", "--out", tmp_path / "a"), "--model nosuch:thing"
    )
    _one_line_error(run_cli(*base, "--ratio", "0.5", "--importance", "taylor", "--out", tmp_path / "a"), "--calib")
    _one_line_error(run_cli(*base, "--ratio", "0.5", "--ignore", "nolayer", "--out", tmp_path / "a"), "--ignore")
    _one_line_error(run_cli(*base, "--out", tmp_path / "a"), "--ratio")  # neither --ratio nor --target-macs
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    _one_line_error(run_cli(*base, "--ratio", "0.5", "--out", tmp_path / "full"), "--force")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(run_cli(*base, "--plan", bad, "--out", tmp_path / "b"), "--plan", "not valid JSON")


_DATA_DEPENDENT = """
import torch, torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
    def forward(self, x):
        y = self.a(x)
        if x.mean() > -1e9:  # data-dependent: symbolic fx and torch.export stop here
            y = torch.relu(y)
        return self.head(self.b(y).view({view}).mean((2, 3)))
def make():
    return Net()
"""


def test_capture_falls_back_to_the_eager_recording_and_a_model_that_cannot_run_exits_2(run_cli, tmp_path):
    # the branch stops symbolic capture; the eager recording still follows the run and prunes
    (tmp_path / "dd.py").write_text(_DATA_DEPENDENT.format(view="-1, 8, 16, 16"))
    res = run_cli(
        "prune", "--model", f"{tmp_path / 'dd.py'}:make", "--trust-code", "--input-shape", "3,16,16",
        "--ratio", "0.5", "--out", tmp_path / "o", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["after"]["params"] < out["before"]["params"], out
    # a forward that cannot run on the given shape stops every capture path: one line, exit 2
    (tmp_path / "bad.py").write_text(_DATA_DEPENDENT.format(view="7, -1"))
    res = run_cli(
        "prune", "--model", f"{tmp_path / 'bad.py'}:make", "--trust-code", "--input-shape", "3,16,16",
        "--ratio", "0.5", "--out", tmp_path / "o2",
    )  # fmt: skip
    _one_line_error(res, "--input-shape 3,16,16: the model does not run on it", "shape '[7, -1]' is invalid")
    assert not (tmp_path / "o2").exists()
