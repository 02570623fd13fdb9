"""The build's parts: BuildSpec validation (API and CLI names), the stage events, an interrupt,
formats handled by their table row, the one user-error type and the plan-list helper.

Consumes: the cached demo CNN, target profiles, the export format table. Produces: pass/fail.
"""

from __future__ import annotations

import dataclasses

import pytest

import edgeprune as ep
from edgeprune import pipeline as P
from edgeprune.cli.common import UsageError
from edgeprune.errors import UserError
from edgeprune.export import formats
from edgeprune.prune.plan import PrunePlan, as_plan_list
from edgeprune.prune.search import RecipeInputError


def test_one_user_error_type():
    assert P.BuildError is UserError and UsageError is UserError and RecipeInputError is UserError


@pytest.mark.parametrize(
    "kwargs,api,cli",
    [
        ({"recover_epochs": -1}, "recover_epochs -1 must be >= 0", "--epochs -1 must be >= 0"),
        ({"bench_threads": 0}, "bench_threads 0 must be >= 1", "--threads 0 must be >= 1"),
        ({"ratio": 1.0}, "ratio 1.0 is outside [0, 1)", "--ratio 1.0 is outside [0, 1)"),
        ({"max_acc_drop": 1.0}, "max_acc_drop needs data", "--max-acc-drop needs --data"),
        ({"importance": "l7"}, "importance 'l7' is unknown", "--importance 'l7' is unknown"),
    ],
)
def test_validate_names_the_input_as_the_caller_spells_it(tmp_path, kwargs, api, cli):
    spec = P.BuildSpec("edgeprune:demo-cnn", "rpi4", tmp_path / "out", **kwargs)
    with pytest.raises(UserError) as e:
        spec.validate()
    assert str(e.value).startswith(api) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        spec.validate(
            {
                "recover_epochs": "--epochs",
                "bench_threads": "--threads",
                "ratio": "--ratio",
                "max_acc_drop": "--max-acc-drop",
                "data": "--data",
                "importance": "--importance",
            }
        )
    assert str(e.value).startswith(cli)


def test_validate_accepts_a_good_spec_and_resolves_its_formats(tmp_path):
    spec = P.BuildSpec("edgeprune:demo-cnn", "jetson-nano", tmp_path / "out", data="digits")
    assert spec.validate() is None and spec.goal_ratio == 0.5
    assert spec.resolve_formats(spec.load_target()) == (["onnx", "onnx-fp16"], [])


class _Recorder(P.BuildEvents):
    def __init__(self):
        self.events = []

    def stage_started(self, name, detail, index, total):
        self.events.append(("start", name, index, total))

    def stage_finished(self, name, seconds):
        assert seconds >= 0
        self.events.append(("done", name))

    def stage_interrupted(self, name):
        self.events.append(("interrupted", name))


def test_every_stage_is_announced_timed_and_reported(trained_demo_cnn, tmp_out):
    rec = _Recorder()
    res = ep.build(trained_demo_cnn, "x86-avx2", tmp_out, data="digits", recover_epochs=0, bench_runs=0, progress=rec)
    starts = [e for e in rec.events if e[0] == "start"]
    assert [e[1] for e in starts] == list(P.STAGES)
    assert [e[2] for e in starts] == list(range(1, len(P.STAGES) + 1)) and {e[3] for e in starts} == {len(P.STAGES)}
    assert [e[1] for e in rec.events if e[0] == "done"] == list(P.STAGES)
    assert list(res.report["stage_seconds"]) == list(P.STAGES[:-1])  # the report stage is still running
    assert res.report["stages_skipped"]["bench"] == "bench_runs is 0"


def test_an_interrupt_names_its_stage_and_leaves_nothing(trained_demo_cnn, tmp_path):
    rec = _Recorder()

    def stop(name):
        if name == "export":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ep.build(
            trained_demo_cnn,
            "rpi4",
            tmp_path / "out",
            data="digits",
            recover_epochs=0,
            bench_runs=0,
            progress=rec,
            on_stage=stop,
        )
    assert rec.events[-1] == ("interrupted", "export")
    assert list(tmp_path.iterdir()) == []


def test_a_family_without_an_accuracy_check_is_skipped_with_its_reason(tmp_path):
    other = dataclasses.replace(formats.get("onnx"), name="other-fp32", family="other")
    state = P.BuildState(spec=None, profile=None, formats=[], events=P.BuildEvents())
    assert P._file_accuracy(state, other, tmp_path / "x") is None
    assert state.skipped == {"accuracy other-fp32": "no accuracy check for other files yet"}


def test_as_plan_list():
    a, b = PrunePlan(signature="a"), PrunePlan(signature="b")
    assert as_plan_list(None) == [] and as_plan_list(a) == [a]
    assert as_plan_list([a, b]) == [a, b] and as_plan_list((a, b)) == [a, b]
