"""Fixtures shared by the tests that run on the tiny synthetic blobs and CNN of test_recover.

Consumes: ``tiny_data`` and ``make_model`` (test_recover.py). Produces, module-scoped in each
importing module: ``data`` (``tiny_data()``) and ``trained`` (``make_model()`` fine-tuned 2 epochs
at lr 0.05 on it; shared by the module's tests, so they copy it before changing it).
Import explicitly: ``from conftest_tiny import *`` (a module may define its own ``trained`` after it).
"""

from __future__ import annotations

import pytest
from test_recover import make_model, tiny_data

from edgeprune import recover

__all__ = ["data", "trained"]


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def trained(data):
    model, _ = recover.finetune(make_model(), data, epochs=2, lr=0.05)
    return model
