"""edgeprune.models: spec resolution, the demo CNN's structure, safe weight loading, training
accuracy and determinism, evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

import edgeprune as ep
from edgeprune.data import DataSplits


def test_demo_cnn_structure_and_tags():
    m = ep.models.build("edgeprune:demo-cnn")
    assert m.edgeprune_spec == "edgeprune:demo-cnn" and m.input_shape == (1, 32, 32)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    kinds = {type(x) for x in m.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear} <= kinds
    depthwise = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert depthwise and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    # the residual add: the block's output moves when only the shortcut input changes through conv-free path
    block = m.block1.eval()
    for p in block.parameters():
        nn.init.zeros_(p)
    x = torch.rand(1, 16, 4, 4)
    assert torch.allclose(block(x), x)  # conv branch zeroed: out = relu(0 + x) = x for x >= 0


def test_build_kwargs_recorded():
    m = ep.models.build("edgeprune:demo-cnn", num_classes=5, in_channels=3)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert m.edgeprune_build_kwargs == {"num_classes": 5, "in_channels": 3} and m.input_shape == (3, 32, 32)


FACTORY_SRC = (
    "import torch.nn as nn\n"
    "def tiny(n=3):\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(4, n))\n"
    "def shaped():\n"
    "    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)); m.input_shape = (1, 2, 2); return m\n"
    "def not_a_model():\n"
    "    return 'hello'\n"
)


def test_build_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "zoo_h2.py").write_text(FACTORY_SRC)
    monkeypatch.chdir(tmp_path)
    m = ep.models.build("zoo_h2.py:tiny", n=7)
    assert m.edgeprune_spec == f"{tmp_path / 'zoo_h2.py'}:tiny"  # absolute, so it rebuilds anywhere
    assert m(torch.zeros(1, 4)).shape == (1, 7) and getattr(m, "input_shape", None) is None
    assert ep.models.build("zoo_h2.py:shaped").input_shape == (1, 2, 2)
    monkeypatch.syspath_prepend(str(tmp_path))
    m2 = ep.models.build("zoo_h2:tiny")
    assert m2.edgeprune_spec == "zoo_h2:tiny" and m2(torch.zeros(1, 4)).shape == (1, 3)
    with pytest.raises(ValueError, match="factory returned str, expected an nn.Module"):
        ep.models.build("zoo_h2:not_a_model")


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "resnet-unknown",
            r"unknown model spec 'resnet-unknown'; accepted forms: 'edgeprune:demo-cnn', 'path/file.py:factory'",
        ),
        ("edgeprune:nope", r"unknown built-in model; built-ins: edgeprune:demo-cnn"),
        ("no_such_pkg_h2:fn", r"cannot import module 'no_such_pkg_h2'"),
        ("missing_file_h2.py:fn", r"file .*missing_file_h2.py not found"),
    ],
)
def test_unknown_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        ep.models.build(spec)


def test_torchvision_spec():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="torchvision is not installed"):
            ep.models.build("torchvision:resnet18")
    else:
        m = ep.models.build("torchvision:resnet18", num_classes=3)
        assert m.input_shape == (3, 224, 224) and m(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_load_weights_state_dict_and_checkpoint(tmp_path):
    src = ep.models.build("edgeprune:demo-cnn").eval()
    torch.save(src.state_dict(), tmp_path / "sd.pt")
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    x = torch.randn(2, 1, 32, 32)
    for f in ("sd.pt", "ckpt.pt"):
        dst = ep.models.build("edgeprune:demo-cnn").eval()
        ep.models.load_weights(dst, tmp_path / f)
        assert torch.equal(dst(x), src(x))


def test_load_weights_refuses_pickled_model(tmp_path):
    src = ep.models.build("edgeprune:demo-cnn").eval()
    torch.save(src, tmp_path / "whole.pt")  # a pickled nn.Module: unpickling runs code
    dst = ep.models.build("edgeprune:demo-cnn").eval()
    with pytest.raises(ValueError, match=r"whole.pt: contains pickled Python objects.*trust_pickle=True"):
        ep.models.load_weights(dst, tmp_path / "whole.pt")
    ep.models.load_weights(dst, tmp_path / "whole.pt", trust_pickle=True)
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(dst(x), src(x))


def test_load_weights_errors(tmp_path):
    torch.save(ep.models.build("edgeprune:demo-cnn", num_classes=4).state_dict(), tmp_path / "four.pt")
    with pytest.raises(ValueError, match=r"shape mismatch .*classifier.weight: file \(4, 64\) vs model \(10, 64\)"):
        ep.models.load_weights(ep.models.build("edgeprune:demo-cnn"), tmp_path / "four.pt")
    with pytest.raises(ValueError, match="nothere.pt: weights file not found"):
        ep.models.load_weights(ep.models.build("edgeprune:demo-cnn"), tmp_path / "nothere.pt")
    torch.save({"stem.0.weight": torch.zeros(16, 1, 3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"does not match the model \(missing \["):
        ep.models.load_weights(ep.models.build("edgeprune:demo-cnn"), tmp_path / "partial.pt")


def test_trained_demo_cnn_reaches_97_percent(trained_demo_cnn, digits):
    top1 = ep.models.evaluate(trained_demo_cnn, digits.test)["top1"]
    assert top1 >= 0.97
    assert top1 == trained_demo_cnn.edgeprune_metadata["train"]["test_top1"]


def _subset(d: DataSplits, n: int) -> DataSplits:
    return DataSplits(Subset(d.train, range(n)), d.val, d.test, d.num_classes, d.input_shape)


def test_training_is_deterministic_for_a_seed(digits):
    small = _subset(digits, 400)

    def run(seed):
        torch.manual_seed(seed)
        m = ep.models.build("edgeprune:demo-cnn")
        return ep.models.train(m, small, epochs=2, seed=seed, progress=False)

    (m1, r1), (m2, r2), (_, r3) = run(5), run(5), run(6)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert r1["train_loss"] == r2["train_loss"] and r1["test_top1"] == r2["test_top1"]
    assert r1["train_loss"] != r3["train_loss"]
    assert r1["test_top1"] > 0.25  # well above chance (0.1) after two short epochs
    assert not torch.are_deterministic_algorithms_enabled()  # setting restored after training


def test_evaluate_metrics():
    class Fixed(nn.Module):
        def forward(self, x):
            return x[:, 0, 0, :]  # logits are the first row of the image

    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 1, 0]])
    ds = torch.utils.data.TensorDataset(logits[:, None, None, :], torch.tensor([0, 1, 1, 2]))
    assert ep.models.evaluate(Fixed(), ds) == {"top1": 0.5}
    assert ep.models.evaluate(Fixed(), ds, metric="top5") == {"top5": 1.0}

    def wrong(outputs, targets):
        return float((outputs.argmax(1) != targets).float().mean())

    assert ep.models.evaluate(Fixed(), ds, metric=wrong) == {"wrong": 0.5}
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        ep.models.evaluate(Fixed(), ds, metric="f1")


def test_train_argument_errors(digits):
    m = ep.models.build("edgeprune:demo-cnn")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        ep.models.train(m, digits, epochs=1, optimizer="lion", progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ep.models.train(m, digits, epochs=1, batch_size=0, progress=False)


def test_thread_setting_restored(digits):
    before = torch.get_num_threads()
    ep.models.train(ep.models.build("edgeprune:demo-cnn"), _subset(digits, 32), epochs=1, progress=False, threads=1)
    assert torch.get_num_threads() == before


def test_training_reports_progress_events_and_draws_nothing(digits, capsys, progress_events):
    from edgeprune.cli._progress import RichProgress, renderer
    from edgeprune.progress import NO_PROGRESS, Progress

    rec = progress_events
    ep.models.train(ep.models.build("edgeprune:demo-cnn"), _subset(digits, 64), epochs=2, batch_size=32, progress=rec)
    assert rec.events[0] == ("start", 4, "training") and rec.events[-1] == ("close",)
    steps = [e for e in rec.events if e[0] == "advance"]
    assert sum(e[1] for e in steps) == 4 and [e[2].split(" loss")[0] for e in steps if e[2]] == [
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert capsys.readouterr() == ("", "")  # the library itself never writes
    assert isinstance(rec, Progress) and renderer(False) is NO_PROGRESS and isinstance(renderer(True), RichProgress)
