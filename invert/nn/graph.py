"""The model as a graph: one ``torch.fx`` trace, read by everything that runs a model.

:func:`model_graph` traces a model once (symbolic tracing; modules without children and
``torch.nn``'s own layers are kept as calls) and names every *place* in it the way
torchvision's ``feature_extraction.get_graph_node_names`` does, names users already know:

* a module call is its module path (``features.4``, ``layer1.0.conv1``); a later call of
  the same module gets ``_1``, ``_2`` ... (``layer1.0.relu_1``: ResNet's one ReLU module,
  called twice in a block);
* a functional op is its function name inside the module whose ``forward`` called it
  (``layer1.0.add`` for ``out += identity``, ``flatten`` for ``torch.flatten(x, 1)`` in
  the model's own ``forward``), with the same suffixes;
* the input is named after ``forward``'s argument (``x``; ``input`` for ``nn.Sequential``);
* a container's name (``layer1``, ``features``, a zoo block ``conv3``) means its output.
  One deviation: torchvision strips a trailing ``_<digits>`` from module names too; here a
  module called ``block_2`` stays ``block_2``.

Running the graph (:meth:`ModelGraph.run`) evaluates only the places the requested ones
depend on, so asking for ``conv1`` of a deep network costs one layer, and it can record
every place it runs or substitute a place's output (max-pooling held at recorded
switches). In-place operations run out of place: ``nn.ReLU(inplace=True)`` through a copy
with ``inplace=False``, ``F.relu(x, inplace=True)``, ``torch.relu_``, ``x.add_(y)`` and
``x += y`` through their out-of-place forms, and later readers of the tensor an in-place op
changed read its result instead (what the in-place program computes). The model is never
modified: no flag, weight or mode changes.

Every place also carries, where one exists, the ``nn.Module`` that computes it: the module
called, or for a functional op with constant arguments its module equivalent (``F.relu``
is ``nn.ReLU()``, ``F.max_pool2d(x, 2)`` is ``nn.MaxPool2d(2)``, ``torch.flatten(x, 1)``
is ``nn.Flatten(1)``). The rules of :mod:`invert.reconstruction.rules` read that module,
so a functional ReLU is undone like a ReLU module.

Models ``torch.fx`` cannot trace (control flow on tensor values) fall back to forward
hooks on the leaf modules (``graph.traced`` is False, ``graph.note`` says why, and a
:class:`TracingFallbackWarning` is issued): places are then the leaf module calls and the
containers' outputs, and functional ops between them are not places.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import operator
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from invert.errors import UserError, UserTypeError

__all__ = ["ModelGraph", "Place", "TracingFallbackWarning", "model_graph"]


class TracingFallbackWarning(UserWarning):
    """``torch.fx`` could not trace the model; it runs through forward hooks instead."""


@dataclass(eq=False)
class Place:
    """One place of a model: a module call, a functional op, the input.

    Attributes
    ----------
    name : str
        torchvision-style name (see the module notes).
    op : str
        ``"input"``, ``"module"``, ``"function"``, ``"method"``, ``"attribute"`` (a
        parameter or buffer read in ``forward``) or, without tracing, ``"container"``.
    target : str
        The module path (module calls), the function or method name, or the attribute path.
    module : nn.Module or None
        What computes the place as a module: the module called, or the module equivalent
        of a functional op with constant arguments; None for other ops.
    inputs : tuple of str
        The places whose values the op reads, in argument order.
    """

    name: str
    op: str
    target: str
    module: nn.Module | None = None
    inputs: tuple[str, ...] = ()
    node: fx.Node | None = field(default=None, repr=False)
    call: Callable | None = field(default=None, repr=False)  # out-of-place callable

    @property
    def operation(self) -> str:
        """The module's type name, else the function or method name."""
        return type(self.module).__name__ if self.module is not None else self.target


_NOT_TENSORS = ("size", "dim", "numel", "getattr")


class _Stop(Exception):
    """Ends a hooked forward pass once everything asked for was seen."""


# --- functional ops and their module equivalents ---------------------------------------------

_INPLACE_FUNCTIONS = {
    torch.relu_: torch.relu,
    F.relu_: F.relu,
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _bind(params: Sequence[tuple[str, object]], args, kwargs) -> dict | None:
    """``args``/``kwargs`` (after the tensor) bound to ``(name, default)`` pairs."""
    if len(args) > len(params) or any(k not in dict(params) for k in kwargs):
        return None
    bound = dict(params)
    bound.update(zip([p for p, _ in params], args))
    bound.update(kwargs)
    return bound


def _equivalent(fn, args, kwargs) -> nn.Module | None:
    """The module that computes ``fn(*args, **kwargs)`` on its first argument, when the other
    arguments are constants; None otherwise."""
    rest = args[1:]
    if any(isinstance(a, fx.Node) for a in (*rest, *kwargs.values())):
        return None
    if fn in (F.relu, torch.relu, "relu"):
        return nn.ReLU()
    if fn in (F.leaky_relu, "leaky_relu"):
        b = _bind([("negative_slope", 0.01), ("inplace", False)], rest, kwargs)
        return None if b is None else nn.LeakyReLU(b["negative_slope"])
    if fn is F.max_pool2d or fn is torch.max_pool2d:
        b = _bind([("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
                   ("ceil_mode", False), ("return_indices", False)], rest, kwargs)  # fmt: skip
        if b is None or b["return_indices"]:
            return None
        b.pop("return_indices")
        return nn.MaxPool2d(**b)
    if fn is F.avg_pool2d:
        params = [("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
                  ("count_include_pad", True), ("divisor_override", None)]  # fmt: skip
        b = _bind(params, rest, kwargs)
        return None if b is None else nn.AvgPool2d(**b)
    if fn is F.adaptive_avg_pool2d:
        b = _bind([("output_size", None)], rest, kwargs)
        return None if b is None else nn.AdaptiveAvgPool2d(b["output_size"])
    if fn in (torch.flatten, "flatten"):
        b = _bind([("start_dim", 0), ("end_dim", -1)], rest, kwargs)
        return None if b is None else nn.Flatten(b["start_dim"], b["end_dim"])
    if fn in (F.dropout, F.dropout2d, F.dropout1d):
        b = _bind([("p", 0.5), ("training", True), ("inplace", False)], rest, kwargs)
        return nn.Identity() if b is not None and not b["training"] else None
    return None


def _out_of_place(node: fx.Node):
    """``(call, module, inplace)`` for a traced node: an out-of-place callable, the module
    equivalent, and whether the original op changed its first argument in place."""
    args, kwargs = node.args, dict(node.kwargs)
    if node.op == "call_method":
        name = node.target
        inplace = (
            name.endswith("_") and not name.startswith("_") and hasattr(torch.Tensor, name[:-1])
        )
        name = name[:-1] if inplace else name
        return (
            (lambda t, *a, _n=name, **k: getattr(t, _n)(*a, **k)),
            _equivalent(name, args, kwargs),
            inplace,
        )
    fn = node.target
    inplace = fn in _INPLACE_FUNCTIONS
    fn = _INPLACE_FUNCTIONS.get(fn, fn)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "inplace" in params:
        names = list(params)
        position = names.index("inplace")
        if kwargs.get("inplace") is True or (len(args) > position and args[position] is True):
            inplace = True
        if len(args) > position:
            args = (*args[:position], False, *args[position + 1 :])
        else:
            kwargs["inplace"] = False
        node.args, node.kwargs = args, kwargs
    return fn, _equivalent(fn, args, kwargs), inplace


# --- tracing, with torchvision's names -----------------------------------------------------


def _is_leaf(module: nn.Module) -> bool:
    if not list(module.children()):
        return True
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    return module.__module__.startswith("torch.nn") and not isinstance(module, containers)


class _Tracer(fx.Tracer):
    """Symbolic tracing that records, per node, the module whose ``forward`` made it, and
    each container call's output node."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = [""]
        self.scope_of: dict[fx.Node, str] = {}
        self.containers: list[tuple[str, fx.Node]] = []

    def is_leaf_module(self, m, module_qualified_name):
        return _is_leaf(m)

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        self.scope_of[node] = self.stack[-1]
        return node

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        if self.is_leaf_module(m, path):
            return super().call_module(m, forward, args, kwargs)
        self.stack.append(path)
        try:
            out = super().call_module(m, forward, args, kwargs)
        finally:
            self.stack.pop()
        if isinstance(out, fx.Proxy):
            self.containers.append((path, out.node))
        return out


def _unique(base: str, counts: dict[str, int]) -> str:
    k = counts.get(base, 0)
    counts[base] = k + 1
    return base if k == 0 else f"{base}_{k}"


def _trace(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str], dict[str, fx.Node]]:
    tracer = _Tracer()
    from .net import eval_mode

    with eval_mode(model):
        graph = tracer.trace(model)
    counts: dict[str, int] = {}
    names: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op == "output":
            continue
        if node.op in ("placeholder", "call_module", "get_attr"):
            base = str(node.target)
        else:
            base = re.sub(r"_[0-9]+$", "", node.name)
            scope = tracer.scope_of.get(node, "")
            base = f"{scope}.{base}" if scope else base
        names[node] = _unique(base, counts)
    containers: dict[str, fx.Node] = {}
    ccounts: dict[str, int] = {}
    for path, node in tracer.containers:
        if path:
            containers[_unique(path, ccounts)] = node
    return graph, names, containers


# --- the graph -------------------------------------------------------------------------------


class ModelGraph:
    """The places of a model and how to run it to any of them (see the module notes).

    Build it with :func:`model_graph`. ``places`` is ordered as the forward pass runs.
    """

    def __init__(self, model: nn.Module, places: list[Place], containers: dict[str, str], *,
                 traced: bool, note=None, name_of=None, hook_places=None):  # fmt: skip
        self.model = model
        self._name_of = name_of or {}  # traced: fx node -> place name
        self._hook_places = hook_places or {}  # hooked: module -> the place of each call
        self.places = {p.name: p for p in places}
        self.containers = containers
        self.traced, self.note = traced, note
        #: the name of the model input's place (``forward``'s first argument)
        self.input = next(p.name for p in places if p.op == "input")
        self._needed: dict[tuple[str, ...], list[Place]] = {}

    # --- names ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every place a user can name, in execution order (the input first)."""
        return [p.name for p in self.places.values() if p.op != "attribute"]

    def resolve(self, name: str) -> str:
        """The place a user's name means: a place, or a container's output.

        A ``ValueError`` lists the valid names, the closest first.
        """
        if not isinstance(name, str):
            raise UserTypeError(f"a layer is named by a string; got {type(name).__name__}")
        if name in self.places and self.places[name].op != "attribute":
            return name
        if name in self.containers:
            return self.containers[name]
        valid = [n for n in [*self.names(), *self.containers] if n != self.input]
        ranked = sorted(valid, key=lambda n: -difflib.SequenceMatcher(None, name, n).ratio())
        shown = ", ".join(ranked[:12]) + (
            f", ... ({len(ranked)} in all)" if len(ranked) > 12 else ""
        )
        raise UserError(f"unknown layer {name!r}; valid layers: {shown} (closest first; "
                         "invert.nn.model_graph(model).names() lists them all)")  # fmt: skip

    def __getitem__(self, name: str) -> Place:
        return self.places[self.resolve(name)]

    # --- structure ------------------------------------------------------------------------

    def path(self, name: str) -> list[Place]:
        """The places ``name`` depends on, itself included, in execution order."""
        return self._plan((self.resolve(name),))

    def _plan(self, targets: tuple[str, ...]) -> list[Place]:
        if not self.traced:  # no data flow known: everything up to the last target
            order = list(self.places)
            return list(self.places.values())[: max(order.index(t) for t in targets) + 1]
        if targets not in self._needed:
            needed, todo = set(), list(targets)
            while todo:
                name = todo.pop()
                if name not in needed:
                    needed.add(name)
                    todo.extend(self.places[name].inputs)
            self._needed[targets] = [p for p in self.places.values() if p.name in needed]
        return self._needed[targets]

    def input_dependent(self, places: Iterable[Place]) -> list[Place]:
        """The places among ``places`` whose value depends on the model input."""
        live: set[str] = set()
        out = []
        for p in places:
            if p.target in _NOT_TENSORS:
                continue  # x.size(0), x.shape: numbers, not values of the map
            if p.op == "input" or "?" in p.inputs or any(i in live for i in p.inputs):
                live.add(p.name)
                out.append(p)
        return out

    def is_chain(self, name: str) -> bool:
        """Whether the input-dependent places up to ``name`` form a plain chain: each reads
        the previous one's output and nothing else that depends on the input."""
        steps = self.input_dependent(self.path(name))
        if self.traced:
            live = {q.name for q in steps}
            return all([i for i in p.inputs if i in live] == [steps[k].name]
                       for k, p in enumerate(steps[1:]))  # fmt: skip
        return all(p.inputs == (steps[k].name,) for k, p in enumerate(steps[1:]))

    # --- running --------------------------------------------------------------------------

    def run(
        self,
        x: torch.Tensor,
        outputs: Sequence[str],
        *,
        substitute: dict[str, Callable] | None = None,
        record: Callable[[Place, list, object], None] | None = None,
    ) -> dict[str, object]:
        """Run the model on ``x`` as far as ``outputs`` (place names) need.

        ``substitute[name](inputs, output)`` replaces a place's output; ``record(place,
        inputs, output)`` is called for every place run (``inputs``: the values of
        ``place.inputs``). Differentiable (autograd, ``torch.func``); no mode change.
        """
        outputs = tuple(self.resolve(n) for n in outputs)
        if not self.traced:
            return self._run_hooked(x, outputs, substitute or {}, record)
        env: dict[str, object] = {self.input: x}
        substitute = substitute or {}
        for place in self._plan(outputs):
            out = self.evaluate(place, env)
            if place.name in substitute or record is not None:
                ins = [env[i] for i in place.inputs]
                if place.name in substitute:
                    out = substitute[place.name](ins, out)
                if record is not None:
                    record(place, ins, out)
            env[place.name] = out
        return {name: env[name] for name in outputs}

    def rebind(self, model: nn.Module) -> ModelGraph:
        """This graph for ``model``, a copy of this graph's model (e.g. in another dtype)."""
        if model is self.model:
            return self
        if self.traced:
            return model_graph(model)
        modules = dict(model.named_modules())
        old = {m: n for n, m in self.model.named_modules()}
        places = [Place(p.name, p.op, p.target, modules.get(p.target, p.module), p.inputs)
                  for p in self.places.values()]  # fmt: skip
        calls = {modules[old[m]]: names for m, names in self._hook_places.items()}
        return ModelGraph(model, places, dict(self.containers), traced=False, note=self.note,
                          hook_places=calls)  # fmt: skip

    def evaluate(self, place: Place, env: dict[str, object]):
        """The value of one place given the values of its inputs (``env``, by place name)."""
        if place.op == "input":  # a further argument of forward: its default
            return env[place.name] if place.name in env else (place.node.args or (None,))[0]
        if place.op == "attribute":
            return _fetch(self.model, place.target)
        if place.node is None:  # hook fallback: a module call on its one input
            return place.module(env[place.inputs[0]])
        node = place.node
        args = fx.node.map_arg(node.args, lambda n: env[self._name_of[n]])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[self._name_of[n]])
        return place.call(*args, **kwargs)

    def _run_hooked(self, x, outputs, substitute, record):
        seen: dict[str, object] = {self.input: x}
        wanted = set(outputs)
        calls: dict[nn.Module, int] = {}
        by_module = self._hook_places

        def after(module, args, output):
            k = calls.get(module, 0)
            calls[module] = k + 1
            names = by_module.get(module, [])
            if k >= len(names) or names[k] is None:
                return None
            place = self.places[names[k]]
            if place.name in substitute:
                output = substitute[place.name](list(args[:1]), output)
            if record is not None and place.op == "module":
                record(place, list(args[:1]), output)
            seen[place.name] = output
            if wanted <= seen.keys():
                raise _Stop
            return output

        with _inplace_off(self.model):
            handles = [m.register_forward_hook(after) for m in by_module]
            try:
                self.model(x)
            except _Stop:
                pass
            finally:
                for h in handles:
                    h.remove()
        missing = wanted - seen.keys()
        if missing:
            raise UserError(f"layers {sorted(missing)} did not run in the forward pass")
        return {name: seen[name] for name in outputs}


def _fetch(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def _inplace_off(model):
    """Temporarily ``inplace = False`` on every module that has the flag (hook fallback)."""
    flags = [(m, m.inplace) for m in model.modules() if getattr(m, "inplace", False) is True]
    for m, _ in flags:
        m.inplace = False
    try:
        yield
    finally:
        for m, flag in flags:
            m.inplace = flag


def _build_traced(model: nn.Module) -> ModelGraph:
    graph, names, containers = _trace(model)
    modules = dict(model.named_modules())
    alias: dict[fx.Node, fx.Node] = {}
    places: list[Place] = []
    name_of: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op == "output":
            continue
        node.args = fx.node.map_arg(node.args, lambda n: alias.get(n, n))
        node.kwargs = fx.node.map_arg(node.kwargs, lambda n: alias.get(n, n))
        ins = [name_of[n] for n in node.all_input_nodes]
        op = {"placeholder": "input", "call_module": "module", "call_function": "function",
              "call_method": "method", "get_attr": "attribute"}[node.op]  # fmt: skip
        module, call, inplace = None, None, False
        if node.op == "call_module":
            module = modules[node.target]
            call = module
            if getattr(module, "inplace", False) is True:
                call = copy.copy(module)
                call.inplace = False
                inplace = True
        elif node.op in ("call_function", "call_method"):
            call, module, inplace = _out_of_place(node)
        target = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))  # fmt: skip
        place = Place(names[node], op, target, module, tuple(dict.fromkeys(ins)), node, call)
        places.append(place)
        name_of[node] = place.name
        if inplace and node.args and isinstance(node.args[0], fx.Node):
            alias[node.args[0]] = node  # later readers of the changed tensor read this
            for before, after in list(alias.items()):
                if after is node.args[0]:
                    alias[before] = node
    containers = {c: name_of[alias.get(n, n)] for c, n in containers.items()}
    return ModelGraph(model, places, containers, traced=True, name_of=name_of)


def _build_hooked(model: nn.Module, x: torch.Tensor, why: str) -> ModelGraph:
    """Places from one hooked forward pass: leaf module calls and container outputs."""
    from .net import eval_mode

    paths = {m: n for n, m in model.named_modules()}
    counts: dict[str, int] = {}
    places = [Place("x", "input", "x")]
    by_module: dict[nn.Module, list[str]] = {}
    made_by: dict[int, str] = {id(x): "x"}
    containers: dict[str, str] = {}

    def after(module, args, output):
        path = paths[module]
        if not path:
            return
        leaf = _is_leaf(module)
        name = _unique(path, counts)
        first = args[0] if args else None
        source = made_by.get(id(first), "?") if isinstance(first, torch.Tensor) else "?"
        if leaf:
            places.append(Place(name, "module", path, module, (source,)))
        else:
            origin = made_by.get(id(output))
            if origin is not None:
                containers[name] = origin
                by_module.setdefault(module, []).append(None)
                return
            places.append(Place(name, "container", path, None, ("?",)))
        by_module.setdefault(module, []).append(name)
        if isinstance(output, torch.Tensor):
            made_by[id(output)] = name

    handles = [m.register_forward_hook(after) for m in model.modules()]
    try:
        with eval_mode(model), torch.no_grad(), _inplace_off(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    # per module, the place of each call (None: a container whose output is another place's)
    return ModelGraph(model, places, containers, traced=False, note=why, hook_places=by_module)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARNED: weakref.WeakSet = weakref.WeakSet()  # the fallback is said once per model


def _default_example(model: nn.Module) -> torch.Tensor | None:
    """Zeros of the model's input size (32 when unknown), channels of its first conv."""
    from .net import model_input_size

    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if conv is None or param is None:
        return None
    size = model_input_size(model) or 32
    return torch.zeros(1, conv.in_channels, size, size, dtype=param.dtype, device=param.device)


def model_graph(model: nn.Module, example: torch.Tensor | None = None) -> ModelGraph:
    """The graph of ``model``: traced once and cached while its modules stay the same.

    Parameters
    ----------
    model : nn.Module
        Any module; it is not modified.
    example : torch.Tensor, optional
        An input, needed only when ``torch.fx`` cannot trace the model (the hook
        fallback learns the places from one forward pass).

    Returns
    -------
    ModelGraph

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.relu = nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(inplace=True)
    ...     def forward(self, x):
    ...         out = self.relu(self.conv(x))
    ...         out += x
    ...         return self.relu(out)
    >>> g = model_graph(nn.Sequential(Block(), nn.Flatten()))
    >>> g.names()
    ['input', '0.conv', '0.relu', '0.add', '0.relu_1', '1']
    >>> g.resolve("0")  # a container means its output
    '0.relu_1'
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be an nn.Module; got {type(model).__name__}")
    key = tuple(id(m) for m in model.modules())
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        graph = _build_traced(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure falls back to hooks
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        why = (f"torch.fx cannot trace {type(model).__name__} ({first[:160]}); its places are "
               "the leaf module calls, found with forward hooks")  # fmt: skip
        if example is None:
            example = _default_example(model)
            if example is None:
                raise UserError(f"{why}; pass an example input") from error
        if model not in _WARNED:
            _WARNED.add(model)
            warnings.warn(why, TracingFallbackWarning, stacklevel=2)
        return _build_hooked(model, example, why)  # not cached: it depends on the input
    _CACHE[model] = (key, graph)
    return graph
