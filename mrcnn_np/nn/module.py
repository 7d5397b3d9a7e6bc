"""Parameter, Module, Sequential, ModuleList: the bookkeeping around forward/backward pairs.

A `Module` holds `Parameter`s (trainable arrays with a `.grad`), buffers (arrays that are saved
but not trained, such as batch-norm statistics) and child modules, and names them the way
PyTorch does (`layer1.0.conv1.weight`), so torchvision checkpoints load by name.

A module's `forward` stores what its `backward` needs in `self._cache`; `backward(dout)`
accumulates parameter gradients into `.grad` and returns the gradient of its input.
Caches are only kept while gradients are enabled (see `no_grad`), so inference holds no
im2col buffers.
"""

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

_grad_enabled = True


def is_grad_enabled():
    """Whether modules keep the forward caches a backward pass needs."""
    return _grad_enabled


@contextmanager
def no_grad():
    """Run forwards without keeping caches (inference)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class Parameter:
    """A trainable array. `grad` is None until a backward pass accumulates into it."""

    def __init__(self, data, requires_grad=True):
        data = np.asarray(data)
        if not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"Parameter data: expected a floating dtype, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    def accumulate_grad(self, grad):
        """Add `grad` into `.grad` (nothing happens for a frozen parameter)."""
        if not self.requires_grad or grad is None:
            return
        if grad.shape != self.data.shape:
            raise ValueError(
                f"gradient shape {grad.shape} does not match parameter shape {self.data.shape}"
            )
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True)
        else:
            self.grad += grad

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, " \
               f"requires_grad={self.requires_grad})"


class IncompatibleKeys(tuple):
    """(missing_keys, unexpected_keys), as returned by a non-strict `load_state_dict`."""

    def __new__(cls, missing_keys, unexpected_keys):
        return super().__new__(cls, (list(missing_keys), list(unexpected_keys)))

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]


class Module:
    """Base class: parameters, buffers and children registered by attribute assignment."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)

    # -- registration ---------------------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() first")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter | Module):
            for store in (params, buffers, modules, self.__dict__):
                store.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
        elif name in buffers:
            buffers[name] = value
        elif name in params or name in modules:
            expected = "Parameter" if name in params else "Module"
            raise TypeError(f"{type(self).__name__}.{name}: expected a {expected}, "
                            f"got {type(value).__name__}")
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails, i.e. for registered entries.
        for store_name in ("_parameters", "_buffers", "_modules"):
            store = self.__dict__.get(store_name)
            if store is not None and name in store:
                return store[name]
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")

    def register_buffer(self, name, array):
        """A saved, untrained array (e.g. running statistics)."""
        self._buffers[name] = None if array is None else np.asarray(array)

    # -- traversal --------------------------------------------------------------------------

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) in definition order, each parameter once."""
        seen = set()
        for module_prefix, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix=""):
        for module_prefix, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), buf

    # -- state ------------------------------------------------------------------------------

    def state_dict(self):
        """Name -> copy of every parameter and buffer, in PyTorch's order
        (each module's parameters, then its buffers, then its children)."""
        state = OrderedDict()
        self._collect_state("", state)
        return state

    def _collect_state(self, prefix, state):
        for name, param in self._parameters.items():
            state[prefix + name] = param.data.copy()
        for name, buf in self._buffers.items():
            if buf is not None:
                state[prefix + name] = np.array(buf, copy=True)
        for name, child in self._modules.items():
            child._collect_state(f"{prefix}{name}.", state)

    def _state_slots(self):
        """Name -> (owner store, key) for every entry `state_dict` would produce."""
        slots = OrderedDict()
        for module_prefix, module in self.named_modules():
            base = f"{module_prefix}." if module_prefix else ""
            for name in module._parameters:
                slots[base + name] = (module._parameters, name)
            for name, buf in module._buffers.items():
                if buf is not None:
                    slots[base + name] = (module._buffers, name)
        return slots

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, by name.

        Shapes must match exactly. With `strict=True` any missing or unexpected key is an
        error; the error lists every missing, unexpected and mis-shaped key at once.
        Returns (missing_keys, unexpected_keys).
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict: expected a mapping of name -> array, "
                            f"got {type(state_dict).__name__}")
        slots = self._state_slots()
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        misshaped = []
        for key, (store, name) in slots.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            current = store[name].data if isinstance(store[name], Parameter) else store[name]
            if value.shape != np.shape(current):
                misshaped.append(f"{key}: expected {tuple(np.shape(current))}, "
                                 f"got {tuple(value.shape)}")
        if misshaped or (strict and (missing or unexpected)):
            lines = ["load_state_dict: the state_dict does not fit this model"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {_short_list(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {_short_list(unexpected)}")
            if misshaped:
                lines.append(f"  mis-shaped keys ({len(misshaped)}): {_short_list(misshaped)}")
            raise ValueError("\n".join(lines))
        for key, (store, name) in slots.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            entry = store[name]
            if isinstance(entry, Parameter):
                entry.data = value.astype(entry.data.dtype, copy=True)
            else:
                store[name] = value.astype(np.asarray(entry).dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # -- modes and gradients ----------------------------------------------------------------

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for param in self.parameters():
            param.grad = None

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def astype(self, dtype):
        """Cast every floating parameter and buffer (float64 for gradient checks)."""
        for module in self.modules():
            for param in module._parameters.values():
                param.data = param.data.astype(dtype)
                param.grad = None
            for name, buf in module._buffers.items():
                if buf is not None and np.issubdtype(np.asarray(buf).dtype, np.floating):
                    module._buffers[name] = np.asarray(buf).astype(dtype)
        return self

    # -- forward / backward -----------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def _save(self, cache):
        """Keep `cache` for the backward pass, unless gradients are disabled."""
        object.__setattr__(self, "_cache", cache if _grad_enabled else None)

    def _take_cache(self):
        """Hand the forward's cache to backward exactly once."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no forward cache; run forward first "
                "(with gradients enabled, not inside no_grad())"
            )
        object.__setattr__(self, "_cache", None)
        return cache

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


def _short_list(keys, limit=12):
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class Sequential(Module):
    """Children named '0', '1', ...; forward runs them in order, backward in reverse."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, dout):
        for module in reversed(self._modules.values()):
            dout = module.backward(dout)
        return dout


class ModuleList(Module):
    """A list of modules named '0', '1', ... (no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
