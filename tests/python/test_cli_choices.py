"""The CLI's method choices are the registries' names, not lists of their own.

Consumes: the registries (sparsity criteria, regularisers, threshold rules, schedules, quantization
methods) and ``cli.main.build_parser``. Produces: failures when a flag's choices drift from its
registry, or when a name registered by a user is refused by the parser.
"""

from __future__ import annotations

import pytest

from edgeprune.cli.main import build_parser


def _choices(command: str) -> dict[str, tuple]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: tuple(a.choices) for a in sub._actions if a.choices is not None}


def test_prune_choices_are_the_registries():
    from edgeprune.prune.schedule import SCHEDULES
    from edgeprune.prune.sparsity import PATTERNS, criterion_names
    from edgeprune.prune.threshold import METHODS
    from edgeprune.recover import regularizer_names

    c = _choices("prune")
    assert c["sparsity_criterion"] == criterion_names()
    assert c["regularize"] == regularizer_names()
    assert c["threshold"] == METHODS
    assert c["sparsity_pattern"] == PATTERNS
    assert c["schedule"] == (*SCHEDULES, "adaptive", "admm")


def test_quantize_methods_are_the_configs():
    from edgeprune.quant.config import METHODS

    assert _choices("quantize")["method"] == METHODS


@pytest.fixture
def user_criterion():
    from edgeprune.prune import sparsity

    sparsity.register_criterion("user_magnitude", sparsity.get_criterion("magnitude"))
    yield "user_magnitude"
    sparsity._CRITERIA.items.pop("user_magnitude")


def test_a_registered_criterion_is_accepted_by_prune(user_criterion):
    args = build_parser("prune").parse_args(
        ["prune", "--model", "edgeprune:demo-cnn", "--sparsity", "0.5", "--data", "digits", "--out", "x"]
        + ["--sparsity-criterion", user_criterion]
    )
    assert args.sparsity_criterion == user_criterion
