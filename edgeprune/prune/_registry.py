"""A named registry of scorers that declare what data they need.

Consumes: objects of one base class (or plain callables, wrapped), each with a ``needs``
frozenset among "weights", "gradients", "activations". Produces: lookup by name with one-line
``UserError`` messages listing the choices, the registered names in order, and ``needs_data``.
Channel importances (``importance.py``) and weight criteria (``sparsity.py``) are two instances.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError

NEEDS = frozenset({"weights", "gradients", "activations"})


class Registry:
    def __init__(self, what: str, base: type, wrap: Callable):
        self.what, self.base, self.wrap = what, base, wrap
        self.items: dict = {}

    def register(self, name: str, obj, needs=None, replace: bool = False):
        if not isinstance(name, str) or not name:
            raise UserError(f"{self.what} name must be a non-empty string, got {name!r}")
        if name in self.items and not replace:
            raise UserError(f"{self.what} {name!r} is already registered; pass replace=True to override it")
        if not isinstance(obj, self.base):
            if not callable(obj):
                raise UserError(f"{self.what} {name!r}: expected a {self.base.__name__} or a callable")
            obj = self.wrap(obj, needs or ("weights",))
        bad = set(obj.needs) - NEEDS
        if bad:
            raise UserError(f"{self.what} {name!r} needs {sorted(bad)}; choose among {sorted(NEEDS)}")
        self.items[name] = obj
        return obj

    def names(self) -> tuple[str, ...]:
        return tuple(self.items)

    def get(self, name: str):
        try:
            return self.items[name]
        except (KeyError, TypeError):
            raise UserError(f"unknown {self.what} {name!r}; choose one of {', '.join(self.items)}") from None

    def needs_data(self, name: str) -> bool:
        return bool(self.get(name).needs & {"gradients", "activations"})
