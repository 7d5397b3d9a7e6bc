"""Weights on disk: our `.npz` files, and torchvision `.pth` checkpoints read without torch.

A `.pth` file written by `torch.save` is a pickle whose tensors point at raw storage bytes.
Two layouts exist: the zip archive (torch >= 1.6: `<name>/data.pkl` plus one file per
storage under `<name>/data/`) and the legacy stream (torchvision's 2019 COCO checkpoints:
magic number, protocol, system info, the pickle, the list of storage keys, then each
storage's element count and bytes). Both are read here with a restricted unpickler that
rebuilds tensors as NumPy arrays and refuses every other global, so a checkpoint cannot run
code on load.

torchvision renamed some modules over time; `upgrade_torchvision_keys` maps the released
COCO checkpoints' names (`backbone.fpn.inner_blocks.0.weight`, `rpn.head.conv.weight`,
`roi_heads.mask_head.mask_fcn1.weight`) to current torchvision's (`...inner_blocks.0.0.weight`,
`rpn.head.conv.0.0.weight`, `roi_heads.mask_head.0.0.weight`).
"""

import io
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

# torch storage classes (legacy typed storages) and dtypes, by their pickled global names
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A file that is not a readable torch checkpoint of plain tensors."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy layout)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.array = None


class _PendingTensor:
    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(size), tuple(stride)
        self.dtype = np.dtype(dtype) if dtype is not None else storage.dtype

    def materialize(self):
        flat = self.storage.array
        if flat is None:
            raise CheckpointError("a tensor refers to a storage whose bytes are missing")
        if flat.dtype != self.dtype:
            flat = flat.view(self.dtype)
        if not self.size:
            return np.array(flat[self.offset])
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, self.dtype)
        extent = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if extent > flat.size or min(self.stride) < 0:
            raise CheckpointError(f"tensor of size {self.size} does not fit its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size,
            strides=[s * flat.itemsize for s in self.stride], writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return _PendingTensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_ignored):
    return _PendingTensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors from storages; anything else in the pickle is refused."""

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return np.dtype(_TORCH_DTYPES[name])
        raise CheckpointError(
            f"checkpoint refers to {module}.{name}; only tensors, dicts and lists can be "
            "read without torch (load it with torch and save model.state_dict() instead)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id in checkpoint: {pid!r}")
        return self._load_storage(pid)


def _resolve(obj):
    if isinstance(obj, _PendingTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _storage_dtype(storage_type):
    if isinstance(storage_type, _StorageType):
        return storage_type.dtype
    raise CheckpointError(f"unsupported storage type in checkpoint: {storage_type!r}")


def _load_zip(archive):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError("zip checkpoint without exactly one data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder_name = prefix + "byteorder"
    if byteorder_name in names and archive.read(byteorder_name).strip() != b"little":
        raise CheckpointError("big-endian checkpoints are not supported")
    storages = {}

    def load_storage(pid):
        _, storage_type, key, _location, _numel = pid[:5]
        if key not in storages:
            storage = _Storage(_storage_dtype(storage_type))
            raw = archive.read(f"{prefix}data/{key}")
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
            storages[key] = storage
        return storages[key]

    with archive.open(pickles[0]) as handle:
        return _RestrictedUnpickler(io.BytesIO(handle.read()), load_storage).load()


def _load_legacy(stream):
    """torch's pre-1.6 layout: several pickles in one stream, storage bytes at the end."""

    def plain_load():
        return _RestrictedUnpickler(stream, _refuse_storage).load()

    if plain_load() != _LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (bad magic number)")
    plain_load()  # protocol version
    sys_info = plain_load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    storages = {}

    def load_storage(pid):
        _, storage_type, key, _location, _numel, view = pid[:6]
        if view is not None:
            raise CheckpointError("storage views in legacy checkpoints are not supported")
        if key not in storages:
            storages[key] = _Storage(_storage_dtype(storage_type))
        return storages[key]

    result = _RestrictedUnpickler(stream, load_storage).load()
    for key in plain_load():
        storage = storages[key]
        (count,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError("checkpoint ends inside a storage: the file is truncated")
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return result


def _refuse_storage(pid):
    raise CheckpointError("unexpected storage reference in a checkpoint header")


def load_torchvision_checkpoint(path, upgrade_keys=True, drop_num_batches_tracked=True):
    """Read a `.pth` state_dict written by `torch.save`, without importing torch.

    Returns an ordered dict name -> NumPy array (float32 weights stay float32). Checkpoints
    that wrap the state_dict (`{"model": state_dict}` or `{"state_dict": ...}`) are unwrapped.
    With `upgrade_keys`, names from older torchvision releases are renamed to today's (see
    `upgrade_torchvision_keys`); `num_batches_tracked` counters are dropped unless asked for.

    Note: torchvision's COCO checkpoints are meant to run with FrozenBatchNorm2d eps = 0.0;
    the model presets set that when they load them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                result = _load_zip(archive)
        else:
            with open(path, "rb") as stream:
                result = _load_legacy(stream)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, KeyError) as e:
        raise CheckpointError(f"path: {path} is not a readable torch checkpoint ({e})") from e
    state = _resolve(result)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointError(f"path: {path} does not hold a state_dict of tensors")
    state = OrderedDict(state)
    if drop_num_batches_tracked:
        state = OrderedDict((k, v) for k, v in state.items()
                            if not k.endswith("num_batches_tracked"))
    return upgrade_torchvision_keys(state) if upgrade_keys else state


_KEY_UPGRADES = [
    # FPN blocks became Conv2dNormActivation (a Sequential): one more ".0".
    (re.compile(r"^(.*fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    # The RPN head's conv became a Sequential of Conv2dNormActivation.
    (re.compile(r"^(.*rpn\.head\.conv)\.(weight|bias)$"), r"\1.0.0.\2"),
]
_MASK_FCN = re.compile(r"^(.*mask_head)\.mask_fcn(\d+)\.(weight|bias)$")


def upgrade_torchvision_keys(state):
    """Rename old torchvision names to the current ones; current names pass unchanged."""
    upgraded = OrderedDict()
    for key, value in state.items():
        new = key
        for pattern, replacement in _KEY_UPGRADES:
            new = pattern.sub(replacement, new)
        mask = _MASK_FCN.match(new)
        if mask:
            new = f"{mask.group(1)}.{int(mask.group(2)) - 1}.0.{mask.group(3)}"
        if new in upgraded:
            raise CheckpointError(f"state_dict has both {key} and its current name {new}")
        upgraded[new] = value
    return upgraded


def save_npz(path, state_dict):
    """Save a state_dict (name -> array) as an uncompressed `.npz`."""
    np.savez(path, **{k: np.asarray(v) for k, v in state_dict.items()})


def load_npz(path):
    """Load a `.npz` state_dict as an ordered dict name -> array, in file order."""
    with np.load(path, allow_pickle=False) as data:
        return OrderedDict((k, data[k]) for k in data.files)
