"""NUTS with nutpie, its compiled model cached on disk across processes.

nutpie samples a PyMC model through two C callbacks (log density with its
gradient, and the "expand" function that computes deterministics), which
``nutpie.compile_pymc_model`` builds as numba ``cfunc`` closures that cannot
be cached: every new process spends 5-12 s compiling them again, more than
sampling takes.  Here the same callbacks are generated as plain source with
the data passed through a pointer table, so numba caches them on disk
(in PyTensor's numba cache, keyed by PyTensor's own key for the model graph);
a later process with a model of the same structure, including a refit on new
data of any size, loads them in a fraction of a second.

Loading still rewrote and converted each PyTensor graph (0.3-1.3 s per
model part, most of a warm small fit), only to find its key.  So each
compile also writes a small index entry under the model graph's structural
fingerprint (``structure_key``: the unrewritten log density and
deterministics, ops with their properties, constants by value, data by name
and type, the sizes of its variables); a later model with the same fingerprint loads both callbacks
straight from numba's cache by their keys, and any miss takes the full path.

Data-derived constants in a model graph (a prior centred on an observed
rate, say) change its key; the model's parts pass those as ``pm.Data`` so the key
depends on the model's structure alone.

This relies on nutpie internals (``nutpie.compile_pymc``), tested against the
versions pyproject pins (pymc, pytensor, numba and nutpie, each to a minor
version); if they are missing at run time, the public (uncached)
``nutpie.compile_pymc_model`` is used: another version is slower, never broken.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import os
import sys
import types as pytypes
import weakref
from pathlib import Path

import numba
import numpy as np
from numba.core import cgutils, types


class _DeferredArviz(pytypes.ModuleType):
    """What nutpie sees as ``arviz``.  nutpie imports all of arviz (with arviz_stats and arviz_plots, hence
    scipy.stats and matplotlib: 1.4 s, a quarter of a warm one-campaign fit) for two functions of
    arviz_base; those come from arviz_base, any other name from the real arviz, imported then."""

    def __getattr__(self, name: str):
        if name in ("from_dict", "dict_to_dataset"):
            import arviz_base

            return getattr(arviz_base, name)
        return getattr(importlib.import_module("arviz"), name)


_deferred = None if "arviz" in sys.modules else sys.modules.setdefault("arviz", _DeferredArviz("arviz"))
try:
    import nutpie

    try:
        from nutpie import compile_pymc as nutpie_pymc
    except ImportError:  # another nutpie layout: compile_model takes the public path
        nutpie_pymc = pytypes.SimpleNamespace()
finally:
    if _deferred is not None and sys.modules.get("arviz") is _deferred:
        del sys.modules["arviz"]  # only nutpie holds it: everyone else imports the real arviz

CALLBACK_VERSION = 1  # bump when the generated callback source changes meaning


@numba.extending.intrinsic
def as_voidptr(typingctx, address):
    """An integer address as a void pointer (module-level, so the callbacks using it can be cached)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


INTERNALS = ("CompiledPyMCModel", "_make_functions", "_prepare_dims_and_coords", "_compute_shapes",
             "_rv_dict_to_flat_array_wrapper", "_wrap_with_lock")  # the nutpie internals this module uses


@functools.cache
def cached_model_class() -> type:
    """nutpie's compiled model with our pointer table as ``user_data`` (``data_arrays`` keeps the data alive).
    Made on first use, not at import, so that a nutpie without ``CompiledPyMCModel`` only loses the cache."""

    @dataclasses.dataclass(frozen=True)
    class CachedCompiledModel(nutpie_pymc.CompiledPyMCModel):
        data_arrays: list = dataclasses.field(default_factory=list)
        from_index: bool = False  # True when both callbacks were loaded through the index (no PyTensor functions)

        def with_data(self, **updates):
            raise NotImplementedError("build the model again with the new data: its compiled callbacks are cached")

    return CachedCompiledModel


def _pointer_table(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """int64 table [address, *shape] per array, and source lines that view each as ``s{i}`` inside numba."""
    table, lines = [], []
    for i, arr in enumerate(arrays):
        pos = len(table)
        table += [arr.ctypes.data, *arr.shape]
        shape = "(" + "".join(f"table[{pos + 1 + k}], " for k in range(arr.ndim)) + ")"
        lines.append(f"    s{i} = numba.carray(as_voidptr(table[{pos}]), {shape}, np.{arr.dtype.name})")
    return np.array(table or [0], dtype=np.int64), lines


def _callback_source(kind: str, n_dim: int, n_expanded: int, table_len: int, views: list[str],
                     args: str) -> str:
    """Source of the C callback nutpie calls: ``logp`` (log density and gradient) or ``expand``."""
    head = [f"    table = numba.carray(user_data_, ({table_len},), np.int64)", *views,
            "    try:", f"        x = numba.carray(x_, ({n_dim},))"]
    if kind == "logp":
        return "\n".join([
            "def callback(dim, x_, out_, logp_, user_data_):",
            f"    if dim != {n_dim}:", "        return -1", *head,
            f"        out = numba.carray(out_, ({n_dim},))", "        logp = numba.carray(logp_, ())",
            f"        value, grad = inner(x{args})", "        logp[()] = value", "        out[...] = grad",
            "        if not np.all(np.isfinite(out)):", "            return 3",
            "        if not np.isfinite(value):", "            return 4",
            "    except Exception:", "        return 1", "    return 0"])
    return "\n".join([
        "def callback(dim, expanded, x_, out_, user_data_):",
        f"    if dim != {n_dim} or expanded != {n_expanded}:", "        return -1", *head,
        f"        out = numba.carray(out_, ({n_expanded},))",
        f"        (values,) = inner(x{args})", "        out[...] = values",
        "    except Exception:", "        return -2", "    return 0"])


_SIGNATURES = {"logp": "int64(uint64, CPointer(double), CPointer(double), CPointer(double), voidptr)",
               "expand": "int64(uint64, uint64, CPointer(double), CPointer(double), voidptr)"}


def _not_cached(*args):
    """Stands in for the PyTensor function inside a callback loaded from the cache: typing it fails, so a
    callback that is not in the cache raises instead of compiling."""
    raise RuntimeError("callback not cached")


def _callback(kind: str, inner, inner_key: str | None, args: str, table_len: int, views: list[str], n_dim: int,
              n_expanded: int):
    """Compile (or load from the disk cache) one callback around a PyTensor numba function ``inner``
    (``_not_cached``: the callback must come from the cache)."""
    from pytensor.link.numba.cache import compile_numba_function_src

    source = _callback_source(kind, n_dim, n_expanded, table_len, views, args)
    key = (hashlib.sha256(f"{CALLBACK_VERSION}|{numba.__version__}|{inner_key}|{source}".encode()).hexdigest()
           if inner_key else None)
    fn = compile_numba_function_src(source, "callback", {"__name__": __name__, "numba": numba, "np": np,
                                                        "inner": inner, "as_voidptr": as_voidptr},
                                    cache_key=key)
    return numba.cfunc(_SIGNATURES[kind], cache=key is not None)(fn)


def _graphs(model) -> list:
    """The model's unrewritten log density and the variables nutpie stores (free, then deterministic)."""
    return [model.logp(), *model.unobserved_value_vars]


def structure_key(model, outputs: list, shapes: dict | None = None) -> str:
    """sha256 of a PyMC model's structure: its unrewritten log density and deterministics (each op with its
    properties, each constant by value, each data variable by name and type, values excluded), the order and
    sizes of its variables (``shapes``: nutpie's, computed here when not given) and the versions of everything
    that compiles them."""
    import pymc
    import pytensor
    from pytensor import config
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import graph_inputs, io_toposort

    names: dict = {}
    lines = [f"{CALLBACK_VERSION} numba {numba.__version__} nutpie {nutpie.__version__} "
             f"pytensor {pytensor.__version__} pymc {pymc.__version__} bounds {model.check_bounds} "
             f"config {[str(getattr(config, flag, None)) for flag in _CONFIG_FLAGS]}",
             "free " + " ".join(model.rvs_to_values[v].name for v in model.free_RVs),
             # nutpie's functions take one flat vector and slice it at constant offsets: the sizes of the
             # variables are part of the compiled code, even where the graph's shapes are symbolic
             "layout " + json.dumps({name: [int(n) for n in shape]
                                     for name, shape in (shapes or nutpie_pymc._compute_shapes(model)).items()},
                                    sort_keys=True)]

    def name(var) -> str:
        if var not in names:
            names[var] = f"v{len(names)}"
            if isinstance(var, Constant):
                value = np.asarray(var.data)
                lines.append(f"{names[var]} = constant {var.type} {value.shape} "
                             f"{hashlib.sha256(value.tobytes()).hexdigest()}")
            elif var.owner is None:
                lines.append(f"{names[var]} = {'data' if isinstance(var, SharedVariable) else 'input'} "
                             f"{var.name} {var.type}")
        return names[var]

    def describe(op) -> str:
        props = [(p, getattr(op, p)) for p in getattr(op, "__props__", ())]
        props = [(p, hashlib.sha256(v.tobytes()).hexdigest() if isinstance(v, np.ndarray) else repr(v))
                 for p, v in props]
        return f"{type(op).__module__}.{type(op).__qualname__}{props if props else str(op)}"

    for node in io_toposort(list(graph_inputs(outputs)), outputs):
        inputs = ",".join(name(var) for var in node.inputs)
        results = ",".join(f"{name(var)}:{var.type}" for var in node.outputs)
        lines.append(f"{results} = {describe(node.op)}({inputs})")
    lines.append("outputs " + ",".join(name(var) for var in outputs))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# PyTensor settings that change the rewritten graphs or the code generated for them
_CONFIG_FLAGS = ("floatX", "optimizer_including", "optimizer_excluding", "optimizer_requiring", "numba__fastmath")


def _index_path(key: str):
    from pytensor.link.numba.cache import NUMBA_CACHE_PATH

    return NUMBA_CACHE_PATH / "gaelp_nutpie_index" / f"{key}.json"


_STRUCTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (outputs, shapes, index path)


def _structure(model) -> tuple[list, dict, Path]:
    """The model's graphs, nutpie's shapes and its index path (computed once per model object)."""
    if model not in _STRUCTURES:
        outputs = _graphs(model)
        shapes = nutpie_pymc._compute_shapes(model)
        _STRUCTURES[model] = outputs, shapes, _index_path(structure_key(model, outputs, shapes))
    return _STRUCTURES[model]


def can_cache() -> bool:
    """Whether this nutpie has the internals the disk cache of compiled models relies on."""
    return all(hasattr(nutpie_pymc, name) for name in INTERNALS)


def is_cached(model) -> bool:
    """Whether ``compile_model`` would load ``model``'s callbacks from the disk cache (no compiling)."""
    return can_cache() and _structure(model)[2].exists()


def compile_model(model):
    """A nutpie compiled model for ``model`` whose callbacks come from the disk cache when they can."""
    if not can_cache():
        return nutpie.compile_pymc_model(model)  # another nutpie: the public path, compiled in every process
    outputs, shapes, path = _structure(model)
    if path.exists():
        try:
            return _load_indexed(model, json.loads(path.read_text()), outputs, shapes)
        except Exception:  # not in numba's cache any more, or an unreadable entry: compile it again
            pass
    compiled, entry = _compile(model)
    if entry is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
    return compiled


def _initial_point(model):
    from pymc.initial_point import make_initial_point_fn

    return nutpie_pymc._wrap_with_lock(make_initial_point_fn(
        model=model, default_strategy="support_point", jitter_rvs=set(model.free_RVs), return_transformed=True))


def _compile(model):
    """The full path: PyTensor rewrites and converts the graphs, the callbacks come from numba's cache or are
    compiled.  Returns the compiled model and its index entry (None when PyTensor gave no cache key)."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    n_dim, n_expanded, logp_fn, expand_fn, initial_point_fn, shape_info, renamed = nutpie_pymc._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=_initial_point(model))
    all_shared = list(dict.fromkeys([*logp_fn.get_shared(), *expand_fn.get_shared()]))
    arrays = [np.array(var.get_value(), order="C", copy=True) for var in all_shared]
    table, views = _pointer_table(arrays)
    entry = {"shared": [var.name for var in all_shared]}
    callbacks = {}
    for kind, fn in (("logp", logp_fn), ("expand", expand_fn)):
        inner = fn.vm.jit_fn
        inner_key = CACHED_SRC_FUNCTIONS.get(inner.py_func)
        args = "".join(f", s{all_shared.index(var)}" for var in fn.get_shared())
        callbacks[kind] = _callback(kind, inner, inner_key, args, len(table), views, n_dim, n_expanded)
        entry[kind] = {"inner_key": inner_key, "args": args}
    if any(entry[kind]["inner_key"] is None for kind in callbacks) or len(set(entry["shared"])) != len(all_shared):
        entry = None
    return _compiled_model(model, n_dim, n_expanded, callbacks, initial_point_fn, shape_info, renamed, table,
                           arrays, logp_fn, expand_fn), entry


def _load_indexed(model, entry: dict, outputs: list, shapes: dict):
    """The fast path: the model's layout from its (cheap) shapes, both callbacks from numba's cache by key."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import graph_inputs

    free = [model.rvs_to_values[var].name for var in model.free_RVs]
    rest = [var.name for var in model.unobserved_value_vars if var.name not in free]
    names, slices, dims, start = [], [], [], 0
    for var in free + rest:
        size = int(np.prod(shapes[var]))
        names.append(var)
        slices.append(slice(start, start + size))
        dims.append(tuple(int(s) for s in shapes[var]))
        start += size
    n_dim = slices[len(free) - 1].stop if free else 0
    renamed = [model.rvs_to_values[var].name for var in model.free_RVs if model.rvs_to_transforms.get(var) is not None]
    shared = [var for var in graph_inputs(outputs) if isinstance(var, SharedVariable)]
    if len({var.name for var in shared}) != len(shared):
        raise ValueError("two data variables share a name: the index cannot tell them apart")
    shared = {var.name: var for var in shared}
    arrays = [np.array(shared[name].get_value(), order="C", copy=True) for name in entry["shared"]]
    table, views = _pointer_table(arrays)
    callbacks = {kind: _callback(kind, _not_cached, entry[kind]["inner_key"], entry[kind]["args"], len(table), views,
                                 n_dim, start) for kind in ("logp", "expand")}
    initial_point_fn = nutpie_pymc._rv_dict_to_flat_array_wrapper(_initial_point(model), names=free,
                                                                 shapes=dims[:len(free)])
    return _compiled_model(model, n_dim, start, callbacks, initial_point_fn, (names, slices, dims), renamed, table,
                           arrays, None, None, from_index=True)


def _compiled_model(model, n_dim, n_expanded, callbacks, initial_point_fn, shape_info, renamed, table, arrays,
                    logp_fn, expand_fn, from_index: bool = False):
    dims, coords = nutpie_pymc._prepare_dims_and_coords(model, shape_info, renamed)
    return cached_model_class()(
        _n_dim=n_dim, dims=dims, _coords=coords, _shapes={name: tuple(s) for name, _, s in zip(*shape_info)},
        compiled_logp_func=callbacks["logp"], compiled_expand_func=callbacks["expand"],
        initial_point_func=initial_point_fn, shared_data={}, shared_var_keys={}, user_data=table,
        n_expanded=n_expanded, shape_info=shape_info, logp_func=logp_fn, expand_func=expand_fn,
        reparameterized_names=renamed, data_arrays=arrays, from_index=from_index)


def sample(model, draws: int, tune: int, chains: int, seed: int, target_accept: float, cores: int,
           progress: bool):
    """Sample ``model`` with nutpie (warm-up discarded); returns an ``xarray.DataTree``."""
    return nutpie.sample(compile_model(model), draws=draws, tune=max(tune, 1), chains=chains, cores=cores,
                         seed=seed, target_accept=target_accept, save_warmup=False, progress_bar=progress)
