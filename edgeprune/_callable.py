"""Make a module callable as the public function of the same name.

Consumes: a module name and its function. Produces: nothing but the module's new class.

``ep.export``, ``ep.estimate`` and ``ep.bench`` are public functions living in modules of the same
names. Once ``edgeprune.export`` (say) is imported, Python binds the *module* as the package
attribute, shadowing the lazily re-exported function; making the module callable keeps
``ep.export(...)`` working whichever of the two a caller ends up holding.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable


def make_module_callable(module_name: str, function: Callable) -> None:
    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
