"""Lighter imports in the sandbox: unused modules deferred, docstring building skipped.

A fresh sandbox pays every import once per job, in CPU. For a scikit-learn model that is about
one CPU-second, two thirds of it ``scipy.stats`` and what it pulls in; scikit-learn imports it
(and ``scipy.optimize``, ``scipy.interpolate``...) through ``from ... import`` lines at module
level, so no lazy loader can keep those out. What *can* go, measured in the runner image
(``python -X importtime``, ``cProfile``, rusage; figures in BENCHMARKS.md):

- **docstring building**: scipy rewrites hundreds of docstrings while it is imported: it parses
  each function's docstring with its numpydoc parser to add a note (``xp_capabilities``, the
  ``axis``/``nan_policy`` decorators) and formats one for each of its ~130 distributions. The
  hooks below replace those steps, right after the module defining them has run and before any
  other module uses them, with ones that leave the docstring as written. Only ``__doc__``
  strings differ; no computation reads them.
- **modules nobody uses**: ``DEFERRED`` modules are imported by the stack (``import numpy.testing``)
  but never used by loading or predicting. They get a module object whose body runs on first
  attribute access, from the same file by the same loader: if anything does use one, it loads.
  (Like ``importlib.util.LazyLoader`` before Python 3.12, the first load is not guarded against
  two threads; the runner imports in its one thread, and vendor threads only race their own
  process.) ``LazyLoader`` itself would not do: in 3.11 a second ``import x`` of a lazy module
  reads its ``__spec__`` and so runs it; here the import system's bookkeeping does not.

Either way the same code computes the predictions (tests/sandbox/test_light_imports.py compares
them byte for byte per estimator type). The hooks are written against the scipy version pinned
in the runner image (``SCIPY_VERSION``) and do nothing with any other.

Why this is safe (SECURITY.md section 1 holds unchanged): this is the runner's own code,
installed before any vendor byte is read; it changes only when some modules of the image's
read-only site-packages run and which docstrings they build; it reads no file and takes no
input from the job. Vendor code runs as arbitrary Python in this process anyway and could
install any import hook itself: nothing here is a boundary or grants anything; the container
profile is the boundary.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

# Loaders and the finder are plain classes (the import system duck-types them): importlib.abc
# would import importlib.resources, 30 ms of the very imports this module trims.

# Imported by numpy/scipy/scikit-learn/joblib (``import x``), used by none of loading or
# predicting the estimators tests/sandbox/test_light_imports.py checks.
DEFERRED: tuple[str, ...] = ("asyncio", "html", "numpy.f2py", "numpy.testing", "unittest")
SCIPY_VERSION = "1.17.1"  # the version whose internals the docstring hooks below replace

# The import system's own bookkeeping reads these; answering them must not run the body.
_BOOKKEEPING = frozenset({"__spec__", "__name__", "__class__", "__loader__"})
_FROM_FILES = (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)


class _Deferred(types.ModuleType):
    """A module whose body has not run yet; any other attribute access runs it."""

    def __getattribute__(self, name: str) -> Any:
        if name in _BOOKKEEPING:
            return types.ModuleType.__getattribute__(self, name)
        _execute(self)
        return getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _execute(self)
        setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        _execute(self)
        delattr(self, name)


def _execute(module: types.ModuleType) -> None:
    object.__setattr__(module, "__class__", types.ModuleType)  # first: the body's accesses must not recurse
    spec = module.__spec__
    loader = spec.loader if spec is not None else None
    if not isinstance(loader, _DeferringLoader):  # pragma: no cover - only the finder makes these
        raise ImportError(f"{module.__name__} was deferred without its loader")
    spec.loader = module.__loader__ = loader.real  # type: ignore[union-attr]
    loader.real.exec_module(module)


class _DeferringLoader:
    def __init__(self, real: Any) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a plain module object, as for any module loaded from source

    def exec_module(self, module: types.ModuleType) -> None:
        object.__setattr__(module, "__class__", _Deferred)


class _HookedLoader:
    """Runs the module, then ``after(module)`` before the importer sees it."""

    def __init__(self, real: Any, after: Callable[[types.ModuleType], None]) -> None:
        self.real = real
        self.after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.real.exec_module(module)
        module.__loader__ = self.real
        if module.__spec__ is not None:
            module.__spec__.loader = self.real
        self.after(module)


class LightImportFinder:
    """In front of ``sys.meta_path``: finds modules through the finders after it and changes
    only the loader of the names it knows."""

    def __init__(self, deferred: Sequence[str], hooks: dict[str, Callable[[types.ModuleType], None]]) -> None:
        self.deferred = frozenset(deferred)
        self.hooks = dict(hooks)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.deferred and fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        # Only modules run from source or bytecode: an extension module's work is in
        # create_module, and other loaders may not support running the body later.
        if not isinstance(spec.loader, _FROM_FILES):
            return spec
        if fullname in self.hooks:
            spec.loader = _HookedLoader(spec.loader, self.hooks[fullname])
        else:
            spec.loader = _DeferringLoader(spec.loader)
        return spec


# --- scipy's docstring building, replaced by steps that keep the docstring as written ----------


def _scipy_is_pinned() -> bool:
    version = sys.modules.get("scipy.version")
    return getattr(version, "version", None) == SCIPY_VERSION


class _KeptDoc:
    """Stands in for scipy's numpydoc parser where scipy only rewrites a docstring: sections read
    empty and take edits; ``str()`` gives a signature line and the docstring as written, which
    is what the callers keep (they drop the first line)."""

    def __init__(self, obj: Any, *args: Any, **kwargs: Any) -> None:
        self._doc = getattr(obj, "__doc__", None) or ""
        self._sections: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._sections.setdefault(key, [])

    def __setitem__(self, key: str, value: Any) -> None:
        self._sections[key] = value

    def __str__(self) -> str:
        return "\n" + self._doc


def _keep_docscrape(module: types.ModuleType) -> None:
    # Its users (_array_api, _util, stats._axis_nan_policy, stats._distribution_infrastructure)
    # `from scipy._lib._docscrape import FunctionDoc` after this runs: they get the stand-in.
    if _scipy_is_pinned():
        module.FunctionDoc = _KeptDoc  # type: ignore[attr-defined]
        module.ClassDoc = _KeptDoc  # type: ignore[attr-defined]


def _no_capabilities_note(*args: Any, **kwargs: Any) -> str:
    return ""


def _keep_array_api_docs(module: types.ModuleType) -> None:
    if _scipy_is_pinned() and hasattr(module, "_make_capabilities_note"):
        module._make_capabilities_note = _no_capabilities_note  # type: ignore[attr-defined]


def _doc_as_written(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _keep_distribution_docs(module: types.ModuleType) -> None:
    # What these methods do under `python -OO` (they check sys.flags.optimize): return early.
    generic = getattr(module, "rv_generic", None)
    if _scipy_is_pinned() and generic is not None:
        generic._construct_doc = _doc_as_written
        generic._construct_default_doc = _doc_as_written


def _combined_doc_as_written(dist_family: Any, **kwargs: Any) -> str:
    return dist_family.__doc__ or ""


def _keep_new_distribution_docs(module: types.ModuleType) -> None:
    if _scipy_is_pinned() and hasattr(module, "_combine_docs"):
        module._combine_docs = _combined_doc_as_written  # type: ignore[attr-defined]


HOOKS: dict[str, Callable[[types.ModuleType], None]] = {
    "scipy._lib._docscrape": _keep_docscrape,
    "scipy._lib._array_api": _keep_array_api_docs,
    "scipy.stats._distn_infrastructure": _keep_distribution_docs,
    "scipy.stats._distribution_infrastructure": _keep_new_distribution_docs,
}


def install() -> LightImportFinder:
    """Put the finder in front of ``sys.meta_path`` (before numpy/scipy are imported: a module
    already imported is left as it is)."""
    finder = LightImportFinder([n for n in DEFERRED if n not in sys.modules], HOOKS)
    sys.meta_path.insert(0, finder)
    return finder


def deferred_now() -> list[str]:
    """The deferred modules whose body has not run (yet)."""
    return sorted(name for name, module in list(sys.modules.items()) if type(module) is _Deferred)
