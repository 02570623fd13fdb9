"""Test helper: traces a model with ``edgeprune.graph.trace`` and keeps the warnings it gave.

Consumes: a model and an example input (any ``trace`` keyword). Produces: ``trace_warnings``
(the graph and the warning messages, every warning recorded however often it repeats) and
``group_of`` (the coupled channel group a named layer is a source of). Not a product API: tests only.
"""

from __future__ import annotations

import warnings

import edgeprune.graph as epg


def trace_warnings(model, x, **kw):
    """``(graph, [warning message, ...])`` of ``epg.trace(model, x, **kw)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = epg.trace(model, x, **kw)
    return g, [str(w.message) for w in caught]


def group_of(graph, source):
    """The group of ``graph`` whose sources include the layer named ``source``."""
    return next(g for g in graph.groups() if source in g.sources)
