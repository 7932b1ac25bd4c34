"""llama.cpp's C API: llama-cpp-python's ctypes bindings of llama.h (`llama_cpp.llama_cpp`).

Importing `llama_cpp.llama_cpp` the usual way first runs the package's `__init__`, which also
imports llama-cpp-python's high-level API (`Llama`, its chat formats, numpy, jinja2): 0.08 s on
a quiet 2-core machine, on the way to the model's load at every cold start, for code this
service never calls. So the bindings are imported into the package without its `__init__`; the
package runs its `__init__` the first time anything else of it is asked for (`llama_cpp.Llama`,
`from llama_cpp import __version__`), so other users of the package in the process see it whole.
Its submodules (`llama_cpp.llama_grammar`) import as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

PACKAGE = "llama_cpp"
_completing = threading.RLock()


def _complete_on_first_use(package: ModuleType) -> None:
    """Give `package` (its `__init__` not run) a module `__getattr__` that runs the `__init__`
    once, then answers from the whole package. Other threads asking meanwhile wait for it; the
    `__init__` asking for a name it has not set yet gets the usual AttributeError; an `__init__`
    that fails raises its error, and the next use tries again (as a failed import does)."""
    running = False

    def __getattr__(name: str):
        nonlocal running
        with _completing:
            if not running and package.__dict__.get("__getattr__") is __getattr__:
                running = True
                try:
                    package.__spec__.loader.exec_module(package)
                    del package.__getattr__
                finally:
                    running = False
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    package.__getattr__ = __getattr__


def _import_bindings() -> ModuleType:
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.loader is None:
            raise ImportError(f"{PACKAGE} is not installed (scripts/build_llama_cpp.sh builds it)")
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        _complete_on_first_use(package)
    return importlib.import_module(f"{PACKAGE}.llama_cpp")


llama = _import_bindings()
