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

Data-derived constants in a model graph (a prior centred on an observed
rate, say) change its key; model.py passes those as ``pm.Data`` so the key
depends on the model's structure alone.

This relies on nutpie internals (``nutpie.compile_pymc``; pyproject pins
the minor version); if they are missing, the public (uncached)
``nutpie.compile_pymc_model`` is used.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numba
import numpy as np
import nutpie
from numba.core import cgutils, types
from nutpie import compile_pymc as nutpie_pymc

CALLBACK_VERSION = 1  # bump when the generated callback source changes meaning


@numba.extending.intrinsic
def as_voidptr(typingctx, address):
    """An integer address as a void pointer (module-level, so the callbacks using it can be cached)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@dataclasses.dataclass(frozen=True)
class CachedCompiledModel(nutpie_pymc.CompiledPyMCModel):
    """nutpie's compiled model with our pointer table as ``user_data``; ``data_arrays`` keeps the data alive."""

    data_arrays: list = dataclasses.field(default_factory=list)

    def with_data(self, **updates):
        raise NotImplementedError("build the model again with the new data: its compiled callbacks are cached")


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


def _callback(kind: str, pytensor_fn, shared: list, all_shared: list, table_len: int, views: list[str],
              n_dim: int, n_expanded: int):
    """Compile (or load from the disk cache) one callback around a PyTensor numba function."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS, compile_numba_function_src

    inner = pytensor_fn.vm.jit_fn
    args = "".join(f", s{all_shared.index(var)}" for var in shared)
    source = _callback_source(kind, n_dim, n_expanded, table_len, views, args)
    inner_key = CACHED_SRC_FUNCTIONS.get(inner.py_func)
    key = (hashlib.sha256(f"{CALLBACK_VERSION}|{numba.__version__}|{inner_key}|{source}".encode()).hexdigest()
           if inner_key else None)
    fn = compile_numba_function_src(source, "callback", {"__name__": __name__, "numba": numba, "np": np,
                                                        "inner": inner, "as_voidptr": as_voidptr},
                                    cache_key=key)
    double_ptr = types.CPointer(types.double)
    if kind == "logp":
        sig = types.int64(types.uint64, double_ptr, double_ptr, double_ptr, types.voidptr)
    else:
        sig = types.int64(types.uint64, types.uint64, double_ptr, double_ptr, types.voidptr)
    return numba.cfunc(sig, cache=key is not None)(fn)


def compile_model(model):
    """A nutpie compiled model for ``model`` whose callbacks come from the disk cache when they can."""
    from pymc.initial_point import make_initial_point_fn

    if not all(hasattr(nutpie_pymc, name) for name in ("_make_functions", "_prepare_dims_and_coords")):
        return nutpie.compile_pymc_model(model)  # another nutpie: the public path, compiled in every process
    initial_point = nutpie_pymc._wrap_with_lock(make_initial_point_fn(
        model=model, default_strategy="support_point", jitter_rvs=set(model.free_RVs), return_transformed=True))
    n_dim, n_expanded, logp_fn, expand_fn, initial_point_fn, shape_info, renamed = nutpie_pymc._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=initial_point)
    all_shared = list(dict.fromkeys([*logp_fn.get_shared(), *expand_fn.get_shared()]))
    arrays = [np.array(var.get_value(), order="C", copy=True) for var in all_shared]
    table, views = _pointer_table(arrays)
    logp = _callback("logp", logp_fn, logp_fn.get_shared(), all_shared, len(table), views, n_dim, n_expanded)
    expand = _callback("expand", expand_fn, expand_fn.get_shared(), all_shared, len(table), views, n_dim,
                       n_expanded)
    dims, coords = nutpie_pymc._prepare_dims_and_coords(model, shape_info, renamed)
    return CachedCompiledModel(
        _n_dim=n_dim, dims=dims, _coords=coords, _shapes={name: tuple(s) for name, _, s in zip(*shape_info)},
        compiled_logp_func=logp, compiled_expand_func=expand, initial_point_func=initial_point_fn,
        shared_data={}, shared_var_keys={}, user_data=table, n_expanded=n_expanded, shape_info=shape_info,
        logp_func=logp_fn, expand_func=expand_fn, reparameterized_names=renamed, data_arrays=arrays)


def sample(model, draws: int, tune: int, chains: int, seed: int, target_accept: float, cores: int,
           progress: bool):
    """Sample ``model`` with nutpie (warm-up discarded); returns an ``xarray.DataTree``."""
    return nutpie.sample(compile_model(model), draws=draws, tune=max(tune, 1), chains=chains, cores=cores,
                         seed=seed, target_accept=target_accept, save_warmup=False, progress_bar=progress)
