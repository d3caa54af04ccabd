"""Restoring official score_sde (JAX) and score_sde_pytorch checkpoints on current Flax.

Three on-disk formats are understood, recognised by their content (not their name):

* a score_sde JAX ``checkpoint_<k>``: ``flax.serialization.to_bytes(State)`` (msgpack),
  read with ``flax.serialization.msgpack_restore`` (no TensorFlow, no Orbax);
* a score_sde_pytorch ``checkpoint.pth`` / ``checkpoint_<k>.pth``: a torch zip archive,
  read by a small pickle reader that does not import torch and refuses every global
  that is not a tensor, a storage, an ``OrderedDict`` or a numpy scalar;
* a Flax parameter file written by :func:`save_params` (``scripts/convert_checkpoint.py``).

The result of :func:`restore_official` is a plain nested dict of float32 numpy arrays
that ``model.apply({'params': params}, ...)`` of the config's model accepts. It is checked
against ``jax.eval_shape`` of the model's initialisation; any difference raises one
:class:`CheckpointMismatchError` that lists every missing, unexpected and wrongly shaped
parameter.

Conversion from PyTorch does not use a hand-written table. The Flax model's parameter
creation order is read off an abstract (``jax.eval_shape``) initialisation; each
``all_modules.N`` of the PyTorch model is matched to the next unused ``ClassName_k`` of a
Flax class whose parameter names fit (inside blocks both codebases use the same
submodule names ``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ...), and the layout
is converted (conv OIHW -> HWIO, linear (out, in) -> (in, out), GroupNorm weight ->
scale, everything else as is).
"""
from __future__ import annotations

import collections
import importlib
import json
import os
import pickle
import re
import warnings
import zipfile
from typing import Any, Iterable, Mapping, Optional

import numpy as np

__all__ = [
    'CheckpointError',
    'CheckpointMismatchError',
    'FLAX_PARAMS_FORMAT',
    'convert_checkpoint',
    'count_params',
    'find_checkpoint',
    'load_torch_checkpoint',
    'model_param_shapes',
    'restore_official',
    'save_params',
    'torch_state_to_flax',
    'validate_params',
]

FLAX_PARAMS_FORMAT = 'score_sde_pds.flax_params/1'

_WHERE = ('Put score_sde (JAX) checkpoints at <workdir>/checkpoints/checkpoint_<k> and '
          'score_sde_pytorch checkpoints at <workdir>/checkpoints/checkpoint.pth (or '
          'checkpoint_<k>.pth), or pass the checkpoint file itself. The official checkpoints '
          'are listed in the README.')

_NUMBERED = re.compile(r'checkpoint_(\d+)(\.pth)?')
_GROUPNORM = re.compile(r'GroupNorm_\d+')
_TORCH_BUFFERS = ('sigmas',)  # registered buffers of score_sde_pytorch models (not parameters)
_FROZEN_CLASSES = ('GaussianFourierProjection',)  # requires_grad=False: not in the EMA list
_LEGACY_TORCH_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'
_MAX_LISTED = 20


class CheckpointError(ValueError):
  """A checkpoint file is unreadable, corrupt or not of a supported kind."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint does not fit the parameter tree of the config's model.

  Attributes:
    path: the checkpoint file.
    model_name: ``config.model.name``.
    missing: parameter paths the model has and the checkpoint lacks.
    unexpected: parameter paths the checkpoint has and the model lacks.
    mismatched: ``(path, checkpoint_shape, expected_shape)`` triples.
  """

  def __init__(self, path, model_name, missing=(), unexpected=(), mismatched=(), notes=()):
    self.path = path
    self.model_name = model_name
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.mismatched = list(mismatched)
    self.notes = list(notes)
    super().__init__(self._message())

  def _message(self):
    lines = [f'Checkpoint {self.path} does not match the parameters of '
             f'config.model.name={self.model_name!r}: {len(self.missing)} missing, '
             f'{len(self.unexpected)} unexpected, {len(self.mismatched)} wrongly shaped.']
    lines += [f'  note: {n}' for n in self.notes[:_MAX_LISTED]]

    def section(title, items):
      if not items:
        return
      lines.append(f'  {title} ({len(items)}):')
      lines.extend(f'    {item}' for item in items[:_MAX_LISTED])
      if len(items) > _MAX_LISTED:
        lines.append(f'    ... and {len(items) - _MAX_LISTED} more')

    section('wrongly shaped (path: checkpoint shape vs expected shape)',
            [f'{p}: {tuple(c)} vs {tuple(e)}' for p, c, e in self.mismatched])
    section('missing (in the model, not in the checkpoint)', self.missing)
    section('unexpected (in the checkpoint, not in the model)', self.unexpected)
    lines.append('  The config must describe the architecture the checkpoint was trained with '
                 '(same model name, nf, ch_mult, num_res_blocks, attn_resolutions, '
                 'resblock_type, progressive*, fir, embedding_type, conditional, ...).')
    return '\n'.join(lines)


# --------------------------------------------------------------------------------------
# Trees


def _join(path):
  return '/'.join(path)


def _flatten(tree, prefix=()) -> list:
  """[(path tuple, leaf)] in the mapping's own iteration order (not sorted)."""
  out = []
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.extend(_flatten(v, prefix + (str(k),)))
    else:
      out.append((prefix + (str(k),), v))
  return out


def _unflatten(items) -> dict:
  tree = {}
  for path, value in items:
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return tree


def _shape(x):
  if isinstance(x, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in x):
    return tuple(int(d) for d in x)
  if hasattr(x, 'shape'):
    return tuple(int(d) for d in x.shape)
  return tuple(np.shape(x))


def _as_flat_shapes(expected) -> dict:
  """Normalises an expected tree to an ordered {path tuple: shape tuple}.

  Accepts a nested mapping of arrays / ``jax.ShapeDtypeStruct`` / shape tuples, or an
  already flat mapping keyed by path tuples or 'a/b/c' strings.
  """
  if expected is None:
    return None
  items = []
  for k, v in expected.items():
    if isinstance(k, tuple):
      items.append((k, _shape(v)))
    elif isinstance(v, Mapping):
      items.extend((p, _shape(leaf)) for p, leaf in _flatten({k: v}))
    else:
      items.append((tuple(str(k).split('/')), _shape(v)))
  return dict(items)


def _to_float32(x):
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.floating) or x.dtype.name == 'bfloat16':
    return x.astype(np.float32, copy=False)
  return x


def count_params(params) -> int:
  """Number of scalars in a (nested) parameter tree."""
  return int(sum(int(np.prod(_shape(v))) for _, v in _flatten(params)))


def model_param_shapes(config) -> dict:
  """Parameter shapes of ``config.model.name`` without allocating weights.

  Returns:
    dict {path tuple: shape tuple} in the model's parameter creation order (which, for
    ``nn.compact`` modules, is call order). ``jax.eval_shape`` itself returns dicts with
    sorted keys, so the order is captured inside the traced function.
  """
  import jax
  from score_sde_pds.models import utils as mutils

  captured = []

  def init_params(rng):
    _, _, params = mutils.init_model(rng, config, jit=False)
    captured.append([p for p, _ in _flatten(params)])
    return params

  shapes = dict(_flatten(jax.eval_shape(init_params, jax.random.PRNGKey(0))))
  order = captured[0] if captured else list(shapes)
  return {p: tuple(shapes[p].shape) for p in order}


# --------------------------------------------------------------------------------------
# Locating checkpoint files


def find_checkpoint(path, ckpt_id: Optional[int] = None) -> str:
  """Resolves a file, a ``checkpoints/`` dir or a workdir to one checkpoint file.

  In a directory (or its ``checkpoints/`` subdirectory) ``checkpoint_<k>`` and
  ``checkpoint_<k>.pth`` are found; the largest k (numeric order) is taken unless
  ``ckpt_id`` is given (``None`` or 0 mean the newest). Without numbered files
  ``checkpoint.pth`` is used. Anything else (temporary files, ``checkpoint_5.tmp``) is
  ignored.

  Raises:
    FileNotFoundError: nothing suitable exists; the message says where files must be.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No checkpoint at {path!r}. {_WHERE}')
  if os.path.isfile(path):
    return path
  ckpt_id = None if ckpt_id in (None, 0) else int(ckpt_id)
  dirs = [path]
  sub = os.path.join(path, 'checkpoints')
  if os.path.isdir(sub):
    dirs.append(sub)
  seen = []
  for d in dirs:
    numbered = {}
    for name in os.listdir(d):
      m = _NUMBERED.fullmatch(name)
      full = os.path.join(d, name)
      if m and os.path.isfile(full):
        k = int(m.group(1))
        # On a tie prefer the JAX State file (no .pth suffix).
        if k not in numbered or not m.group(2):
          numbered[k] = full
    seen.extend(sorted(numbered))
    if ckpt_id is not None:
      if ckpt_id in numbered:
        return numbered[ckpt_id]
      continue
    if numbered:
      return numbered[max(numbered)]
    pth = os.path.join(d, 'checkpoint.pth')
    if os.path.isfile(pth):
      return pth
  wanted = f'checkpoint_{ckpt_id}' if ckpt_id is not None else 'a checkpoint'
  found = f' (found checkpoint ids {sorted(set(seen))})' if seen else ''
  raise FileNotFoundError(f'No {wanted} in {path!r} or {sub!r}{found}. {_WHERE}')


def _sniff(file) -> str:
  with open(file, 'rb') as f:
    head = f.read(16)
  if not head:
    raise CheckpointError(f'{file}: the file is empty (expected a score_sde checkpoint_<k>, '
                          'a score_sde_pytorch checkpoint.pth or a converted Flax params file).')
  if head.startswith(b'PK\x03\x04') or head.startswith(b'PK\x05\x06'):
    return 'torch_zip'
  if head.startswith(_LEGACY_TORCH_MAGIC):
    return 'torch_legacy'
  return 'msgpack'


# --------------------------------------------------------------------------------------
# Torch-free reader of torch zip checkpoints

_STORAGE_DTYPES = {
    'DoubleStorage': 'float64', 'FloatStorage': 'float32', 'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16', 'LongStorage': 'int64', 'IntStorage': 'int32',
    'ShortStorage': 'int16', 'CharStorage': 'int8', 'ByteStorage': 'uint8',
    'BoolStorage': 'bool', 'ComplexFloatStorage': 'complex64',
    'ComplexDoubleStorage': 'complex128', 'UntypedStorage': 'uint8',
}


def _np_dtype(name):
  if name == 'bfloat16':
    import ml_dtypes  # a JAX dependency
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


class _StorageType:
  """Stands in for a torch storage class (``torch.FloatStorage`` ...) in the pickle."""

  def __init__(self, name, dtype):
    self.name = name
    self.dtype = dtype  # numpy dtype name, or None for a dtype-less TypedStorage

  def __repr__(self):
    return f'<torch.{self.name}>'


class _Storage:
  """A storage record: archive key, dtype and element count; read on demand."""

  def __init__(self, reader, key, dtype, numel):
    self.reader, self.key, self.dtype, self.numel = reader, key, dtype, numel

  def array(self) -> np.ndarray:
    return self.reader.storage_array(self)


class TorchTensor:
  """A tensor of a torch checkpoint, materialised lazily with :meth:`numpy`.

  Only the tensors that are asked for are read from the archive, so restoring the EMA
  weights of a large checkpoint does not read its optimizer moments.
  """

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.shape, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

  def numpy(self) -> np.ndarray:
    flat = self.storage.array()
    if any(d == 0 for d in self.shape):
      return np.zeros(self.shape, flat.dtype)
    last = self.offset + sum((d - 1) * s for d, s in zip(self.shape, self.stride))
    if self.offset < 0 or any(s < 0 for s in self.stride) or last >= flat.size:
      raise CheckpointError(
          f'{self.storage.reader.file}: tensor (storage {self.storage.key!r}, offset '
          f'{self.offset}, shape {self.shape}, stride {self.stride}) lies outside its '
          f'storage of {flat.size} elements (truncated or corrupt file?).')
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.shape,
        strides=tuple(s * flat.itemsize for s in self.stride), writeable=False)
    return np.array(view)  # an owned, C-contiguous copy

  def __repr__(self):
    return f'TorchTensor(shape={self.shape}, dtype={self.storage.dtype})'


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError('_rebuild_tensor_v2 expects a storage as first argument')
  return TorchTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  del requires_grad, backward_hooks, unused
  return data


def _codecs_encode(obj, encoding='utf-8', errors='strict'):
  # Protocol-2 pickles store bytes as _codecs.encode(latin-1 str, 'latin1').
  if not isinstance(obj, str) or encoding.replace('-', '').lower() != 'latin1':
    raise pickle.UnpicklingError('only _codecs.encode(str, "latin1") is allowed')
  return obj.encode('latin1', errors)


def _numpy_scalar(dtype, data=None):
  dtype = np.dtype(dtype)
  if dtype.hasobject:
    raise pickle.UnpicklingError('numpy object scalars are not allowed')
  if isinstance(data, str):
    data = data.encode('latin1')
  return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype, shape, dtype):
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError('only plain numpy.ndarray may be reconstructed')
  return np.ndarray.__new__(np.ndarray, shape, dtype)


def _allowed_globals():
  table = {
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('_codecs', 'encode'): _codecs_encode,
      ('numpy', 'dtype'): np.dtype,
      ('numpy', 'ndarray'): np.ndarray,
  }
  for np_mod in ('numpy._core.multiarray', 'numpy.core.multiarray'):
    table[(np_mod, 'scalar')] = _numpy_scalar
    table[(np_mod, '_reconstruct')] = _numpy_reconstruct
  for np_mod in ('numpy._core', 'numpy.core', 'numpy'):
    table[(np_mod, 'dtype')] = np.dtype
  for name, dtype in _STORAGE_DTYPES.items():
    table[('torch', name)] = _StorageType(name, dtype)
  table[('torch.storage', 'UntypedStorage')] = _StorageType('UntypedStorage', 'uint8')
  table[('torch', 'TypedStorage')] = _StorageType('TypedStorage', None)
  table[('torch.storage', 'TypedStorage')] = _StorageType('TypedStorage', None)
  # numpy dtype classes as pickled by numpy >= 1.25 (e.g. numpy.dtypes.Float64DType).
  for cls_name in ('Float64DType', 'Float32DType', 'Float16DType', 'Int64DType', 'Int32DType',
                   'BoolDType'):
    if hasattr(np, 'dtypes') and hasattr(np.dtypes, cls_name):
      table[('numpy.dtypes', cls_name)] = getattr(np.dtypes, cls_name)
  return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler of torch files: only `_ALLOWED` globals; storages become lazy records of
  `reader` (``reader.storage(key, dtype, numel)``)."""

  def __init__(self, f, reader):
    super().__init__(f, encoding='utf-8')
    self.reader = reader

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise CheckpointError(
          f'{self.reader.file}: refusing to load: its pickle references the global '
          f'{module}.{name}, which a score_sde_pytorch checkpoint does not contain '
          '(allowed: torch tensors and storages, collections.OrderedDict, numpy scalars '
          'and dtypes). A .pth file is a pickle and unknown globals could run code; '
          'if you trust the file, re-save just its tensors with torch.') from None

  def persistent_load(self, pid):
    # zip: ('storage', type, key, location, numel); legacy: the same + view_metadata
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r:.80}')
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'unsupported storage type {storage_type!r:.80}')
    if storage_type.dtype is None:
      raise pickle.UnpicklingError('a TypedStorage without dtype cannot be read')
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError('storage views (pre-1.0 torch files) are not supported')
    return self.reader.storage(str(key), storage_type.dtype, int(numel))


class _TorchZipReader:
  """Reads a torch zip archive (``torch.save`` since torch 1.6) without torch."""

  def __init__(self, file):
    self.file = file
    try:
      self.zf = zipfile.ZipFile(file)
      names = self.zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
      raise CheckpointError(f'{file}: not a readable torch zip archive (expected a '
                            f'score_sde_pytorch checkpoint.pth written by torch.save): {e}') from e
    pkls = sorted((n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')), key=len)
    if not pkls:
      self.zf.close()
      raise CheckpointError(f'{file}: zip archive without data.pkl; expected a torch.save '
                            'archive (<name>/data.pkl + <name>/data/<key>), e.g. a '
                            'score_sde_pytorch checkpoint.pth.')
    self.pkl_name = pkls[0]
    self.prefix = self.pkl_name[:-len('data.pkl')]
    self.names = set(names)
    order = 'little'
    if self.prefix + 'byteorder' in self.names:
      order = self.zf.read(self.prefix + 'byteorder').decode('ascii', 'replace').strip()
    self.byteorder = '>' if order == 'big' else '<'
    self._last = (None, None)  # the most recent storage (views of one storage are adjacent)

  def close(self):
    self.zf.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def load(self):
    """Unpickles data.pkl with the restricted unpickler; tensors stay lazy."""
    try:
      with self.zf.open(self.pkl_name) as f:
        return _RestrictedUnpickler(f, self).load()
    except CheckpointError:
      raise
    except Exception as e:  # truncated / corrupt pickle, bad zip member, ...
      raise CheckpointError(f'{self.file}: cannot read {self.pkl_name} of the torch archive '
                            f'(corrupt or truncated?): {type(e).__name__}: {e}') from e

  def storage(self, key, dtype, numel):
    return _Storage(self, key, dtype, numel)

  def storage_array(self, storage) -> np.ndarray:
    if self._last[0] == storage.key:
      return self._last[1]
    name = f'{self.prefix}data/{storage.key}'
    if name not in self.names:
      raise CheckpointError(f'{self.file}: storage {name!r} is missing from the archive '
                            '(truncated or corrupt checkpoint?).')
    dtype = _np_dtype(storage.dtype)
    if dtype.itemsize > 1 and dtype.name != 'bfloat16':
      dtype = dtype.newbyteorder(self.byteorder)
    try:
      raw = self.zf.read(name)
    except Exception as e:
      raise CheckpointError(f'{self.file}: cannot read {name!r} (corrupt archive?): {e}') from e
    if len(raw) < storage.numel * dtype.itemsize:
      raise CheckpointError(f'{self.file}: storage {name!r} holds {len(raw)} bytes, expected '
                            f'{storage.numel * dtype.itemsize} (truncated file?).')
    arr = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    if dtype.byteorder == '>':
      arr = arr.astype(dtype.newbyteorder('='))
    self._last = (storage.key, arr)
    return arr


_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class _TorchLegacyReader:
  """Reads a pre-1.6 ``torch.save`` file (not a zip) without torch.

  Layout: five consecutive pickles -- the magic number, the protocol version 1001, a
  system-info dict, the object (storages as persistent ids) and the list of storage
  keys -- then, for each key in that order, the storage's element count (int64) and its
  raw little-endian bytes. The pytorch-fid Inception weights are such a file.
  """

  def __init__(self, file):
    self.file = file
    self.f = open(file, 'rb')
    self.storages, self.offsets = {}, {}
    self._last = (None, None)

  def close(self):
    self.f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def load(self):
    f = self.f
    try:
      head = [_RestrictedUnpickler(f, self).load() for _ in range(3)]
      if head[0] != _LEGACY_MAGIC_NUMBER or head[1] != _LEGACY_PROTOCOL:
        raise CheckpointError(f'{self.file}: not a legacy torch file (magic number '
                              f'{head[0]!r:.40}, protocol {head[1]!r:.40}).')
      obj = _RestrictedUnpickler(f, self).load()
      keys = _RestrictedUnpickler(f, self).load()
      size = os.fstat(f.fileno()).st_size
      for key in keys:
        storage = self.storages[str(key)]
        header = f.read(8)
        numel = int.from_bytes(header, 'little', signed=True) if len(header) == 8 else -1
        nbytes = storage.numel * _np_dtype(storage.dtype).itemsize
        if numel != storage.numel or f.tell() + nbytes > size:
          raise CheckpointError(
              f'{self.file}: storage {key!r} holds {max(numel, 0)} elements and ends at byte '
              f'{f.tell() + nbytes} of {size}; expected {storage.numel} elements '
              '(truncated or corrupt file?).')
        self.offsets[storage.key] = f.tell()
        f.seek(nbytes, os.SEEK_CUR)
      return obj
    except CheckpointError:
      raise
    except Exception as e:  # truncated / corrupt pickles, unknown storage key, ...
      raise CheckpointError(f'{self.file}: cannot read this legacy (pre-1.6) torch file '
                            f'(corrupt or truncated?): {type(e).__name__}: {e}') from e

  def storage(self, key, dtype, numel):
    if key not in self.storages:
      self.storages[key] = _Storage(self, key, dtype, numel)
    return self.storages[key]

  def storage_array(self, storage) -> np.ndarray:
    if self._last[0] == storage.key:
      return self._last[1]
    dtype = _np_dtype(storage.dtype)
    if dtype.itemsize > 1 and dtype.name != 'bfloat16':
      dtype = dtype.newbyteorder('<')
    self.f.seek(self.offsets[storage.key])
    arr = np.frombuffer(self.f.read(storage.numel * dtype.itemsize), dtype=dtype)
    if not arr.dtype.isnative:
      arr = arr.astype(dtype.newbyteorder('='))
    self._last = (storage.key, arr)
    return arr


def _materialize(obj):
  if isinstance(obj, TorchTensor):
    return obj.numpy()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialize(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(v) for v in obj)
  return obj


def load_torch_checkpoint(path, keys: Optional[Iterable[str]] = None, *, use_torch: bool = False):
  """Loads a ``torch.save`` zip archive into numpy arrays, without importing torch.

  Args:
    path: the .pth file.
    keys: if the archive holds a dict, only these top-level entries are read (missing
      ones are left out); ``None`` reads everything.
    use_torch: use ``torch.load(weights_only=True)`` (numpy globals allowed) instead of
      the built-in reader, which reads zip archives (torch >= 1.6) and legacy (pre-1.6,
      non-zip) files; needs torch.

  Returns:
    The unpickled object with every tensor replaced by a numpy array.

  Raises:
    CheckpointError: unreadable file, or a pickle referencing anything but tensors,
      storages, ``OrderedDict`` and numpy scalars.
  """
  path = os.fspath(path)
  kind = _sniff(path)
  if use_torch:
    obj = _torch_load(path, legacy=kind == 'torch_legacy')
  else:
    if kind not in ('torch_zip', 'torch_legacy'):
      raise CheckpointError(f'{path}: not a torch zip archive (expected a score_sde_pytorch '
                            'checkpoint.pth written by torch.save).')
    with (_TorchZipReader if kind == 'torch_zip' else _TorchLegacyReader)(path) as reader:
      obj = reader.load()
      if keys is not None and isinstance(obj, Mapping):
        obj = {k: obj[k] for k in keys if k in obj}
      return _materialize(obj)
  if keys is not None and isinstance(obj, Mapping):
    obj = {k: obj[k] for k in keys if k in obj}
  return obj


def _torch_load(path, legacy):
  try:
    import torch  # optional, never needed for zip archives
  except ImportError:
    if legacy:
      raise CheckpointError(
          f'{path}: legacy (pre-1.6, non-zip) torch serialization; reading it needs torch. '
          'Re-save it with torch >= 1.6 (torch.save(torch.load(f), f2)) or install torch.'
      ) from None
    raise
  safe = [np.dtype, np.ndarray]
  for mod in ('numpy._core.multiarray', 'numpy.core.multiarray'):
    try:
      with warnings.catch_warnings():  # numpy 2 deprecates the numpy.core name
        warnings.simplefilter('ignore')
        safe.append(importlib.import_module(mod).scalar)
    except ImportError:
      pass
  safe.extend(type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32'))
  try:
    with torch.serialization.safe_globals(safe):
      obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:
    raise CheckpointError(f'{path}: torch.load(weights_only=True) failed: {e}') from e

  def conv(o):
    if isinstance(o, torch.Tensor):
      return o.detach().cpu().numpy() if o.dtype != torch.bfloat16 else \
          o.detach().float().cpu().numpy()
    if isinstance(o, collections.OrderedDict):
      return collections.OrderedDict((k, conv(v)) for k, v in o.items())
    if isinstance(o, dict):
      return {k: conv(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return type(o)(conv(v) for v in o)
    return o

  return conv(obj)


# --------------------------------------------------------------------------------------
# PyTorch state dict -> Flax tree


def _leaf_rule(torch_leaf, torch_ndim, flax_leaf, flax_ndim):
  """How a torch tensor becomes a flax leaf, or None if they cannot correspond."""
  if torch_leaf == 'weight':
    if flax_leaf in ('kernel', 'weight') and torch_ndim == 4 and flax_ndim == 4:
      return 'conv'     # OIHW -> HWIO (FIR Conv2d_0 keeps the name 'weight')
    if flax_leaf == 'kernel' and torch_ndim == 2 and flax_ndim == 2:
      return 'linear'   # (out, in) -> (in, out)
    if flax_leaf == 'scale' and torch_ndim == 1:
      return 'norm'     # GroupNorm weight -> scale
    if flax_leaf == 'weight' and torch_ndim == flax_ndim:
      return 'copy'
    return None
  if torch_leaf == 'bias' and flax_leaf == 'bias':
    return 'norm' if torch_ndim == 1 and flax_ndim != 1 else 'copy'
  if torch_leaf == flax_leaf and torch_ndim == flax_ndim:
    return 'copy'       # NIN W / b, Fourier W
  return None


def _apply_rule(rule, x):
  if rule == 'conv':
    return np.transpose(x, (2, 3, 1, 0))
  if rule == 'linear':
    return np.transpose(x)
  return x


def _is_groupnorm_leaf(path):
  return len(path) >= 2 and path[-1] in ('scale', 'bias') and _GROUPNORM.fullmatch(path[-2])


def _fit_groupnorm(path, x, expected_shape):
  """Reshapes a GroupNorm scale/bias between (C,) and [1,1,1,C] to the expected shape."""
  shape = tuple(x.shape)
  if (expected_shape is None or shape == tuple(expected_shape) or not _is_groupnorm_leaf(path)):
    return x
  squeeze = lambda s: tuple(d for d in s if d != 1) or (1,)
  if (int(np.prod(shape)) == int(np.prod(expected_shape)) and
      squeeze(shape) == squeeze(expected_shape) and
      (len(shape) == 1 or all(d == 1 for d in shape[:-1])) and
      (len(expected_shape) == 1 or all(d == 1 for d in expected_shape[:-1]))):
    return np.reshape(x, expected_shape)
  return x


def _match_module(torch_entries, flax_leaves, by_order=False):
  """Maps one torch module's parameters onto one flax module's leaves.

  Args:
    torch_entries: [(sub-name tuple, ndim)] e.g. (('GroupNorm_0', 'weight'), 1).
    flax_leaves: [(subpath tuple, ndim)] e.g. (('GroupNorm_0', 'scale'), 1).
    by_order: pair them in order instead of by name.

  Returns:
    {torch sub-name: (flax subpath, rule)} for a complete one-to-one match, else None.
  """
  if len(torch_entries) != len(flax_leaves):
    return None
  result = {}
  if by_order:
    for (tname, tnd), (fpath, fnd) in zip(torch_entries, flax_leaves):
      rule = _leaf_rule(tname[-1], tnd, fpath[-1], fnd)
      if rule is None:
        return None
      result[tname] = (fpath, rule)
    return result
  # Exact submodule names first; then a torch submodule `X` may stand for flax `X_0`
  # (score_sde_pytorch's Combine names its conv `Conv` in some versions).
  used = set()
  for alias in (False, True):
    for tname, tnd in torch_entries:
      if tname in result:
        continue
      hits = [(fpath, r) for fpath, fnd in flax_leaves
              if fpath not in used and _same_module(tname[:-1], fpath[:-1], alias)
              for r in [_leaf_rule(tname[-1], tnd, fpath[-1], fnd)] if r is not None]
      if len(hits) > 1:
        return None
      if hits:
        used.add(hits[0][0])
        result[tname] = hits[0]
  return result if len(result) == len(torch_entries) else None


def _same_module(tpath, fpath, alias):
  if len(tpath) != len(fpath):
    return False
  return all(t == f or (alias and f == f'{t}_0') for t, f in zip(tpath, fpath))


def _torch_groups(names_shapes):
  """Groups torch parameter names into top-level modules, in order."""
  groups = collections.OrderedDict()
  for name, shape in names_shapes:
    parts = name.split('.')
    if parts[0] == 'all_modules' and len(parts) >= 3:
      key, rest = '.'.join(parts[:2]), tuple(parts[2:])
    elif len(parts) >= 2:
      key, rest = parts[0], tuple(parts[1:])
    else:
      key, rest = '', tuple(parts)
    groups.setdefault(key, []).append((name, rest, len(shape)))
  return groups


def _split_class(name):
  m = re.fullmatch(r'(.+)_(\d+)', name)
  return (m.group(1), int(m.group(2))) if m else (name, 0)


def _map_torch_names(names_shapes, expected):
  """Maps torch parameter names to flax paths.

  Each torch top-level module (``all_modules.N`` in order) is given the next unused
  flax ``ClassName_k`` (k ascending = call order) among the classes whose parameter
  names and ranks fit; ties are broken by the flax creation order.

  Returns:
    (mapping {torch name: (flax path, rule)}, unmatched torch names, notes)
  """
  flax_modules = collections.OrderedDict()
  for pos, (path, shape) in enumerate(expected.items()):
    flax_modules.setdefault(path[0], []).append((path[1:], len(shape), pos))
  queues = collections.defaultdict(list)
  for name, leaves in flax_modules.items():
    cls, k = _split_class(name)
    queues[cls].append((k, leaves[0][2], name))
  for q in queues.values():
    q.sort()

  mapping, unmatched, notes = {}, [], []
  for key, entries in _torch_groups(names_shapes).items():
    t_entries = [(rest, nd) for _, rest, nd in entries]
    choice = None
    for by_order in (False, True):
      cands = []
      for cls, q in queues.items():
        if not q:
          continue
        _, pos, fname = q[0]
        fl = [(p, nd) for p, nd, _ in flax_modules[fname]]
        m = _match_module(t_entries, fl, by_order=by_order)
        if m is not None:
          cands.append((pos, cls, fname, m))
      if cands:
        choice = min(cands, key=lambda c: c[0])
        break
    if choice is None:
      unmatched.extend(name for name, _, _ in entries)
      notes.append(f'torch module {key or "<root>"} ({len(entries)} tensors) fits no remaining '
                   'flax module')
      continue
    _, cls, fname, m = choice
    queues[cls].pop(0)
    for name, rest, _ in entries:
      fpath, rule = m[rest]
      mapping[name] = ((fname,) + fpath, rule)
  return mapping, unmatched, notes


def torch_state_to_flax(state_dict, expected, *, shadow_params=None, source='<state_dict>',
                        model_name='?') -> dict:
  """Converts a score_sde_pytorch state dict (+ optional EMA list) to a flax param tree.

  Args:
    state_dict: ordered {torch name: array or TorchTensor} as in ``ckpt['model']``
      (``module.`` prefix and the ``sigmas`` buffer allowed; lazy tensors are read only
      when converted).
    expected: the flax model's parameter shapes in creation order (see
      :func:`model_param_shapes`; any nested mapping of shaped leaves works, in which case
      its iteration order is used as creation order).
    shadow_params: the EMA ``shadow_params`` list (parameters with requires_grad, in
      ``model.parameters()`` order) to copy onto the parameters, or None for raw weights.
    source: file name for error messages.
    model_name: model name for error messages.

  Returns:
    Nested dict of float32 arrays shaped exactly like ``expected``.

  Raises:
    CheckpointMismatchError: parameters that do not fit (all listed at once).
    CheckpointError: the EMA list does not fit the parameters.
  """
  expected = _as_flat_shapes(expected)
  items = list(state_dict.items())
  if items and all(k.startswith('module.') for k, _ in items):
    items = [(k[len('module.'):], v) for k, v in items]
  params = collections.OrderedDict(  # values may be lazy TorchTensors: read when used
      (k, v if isinstance(v, TorchTensor) else np.asarray(v))
      for k, v in items if k not in _TORCH_BUFFERS)

  mapping, unmatched, notes = _map_torch_names([(k, v.shape) for k, v in params.items()],
                                               expected)

  if shadow_params is not None:
    frozen = [k for k in params if k in mapping and
              _split_class(mapping[k][0][0])[0] in _FROZEN_CLASSES]
    trainable = [k for k in params if k not in frozen]
    if len(trainable) != len(shadow_params):
      raise CheckpointError(
          f'{source}: the EMA holds {len(shadow_params)} shadow tensors but the model has '
          f'{len(trainable)} trainable parameters ({len(params)} parameters, frozen: '
          f'{frozen}); cannot pair them. Use which="model" for the raw weights.')
    for j, (k, ema) in enumerate(zip(trainable, shadow_params)):
      ema = ema if isinstance(ema, TorchTensor) else np.asarray(ema)
      if tuple(ema.shape) != tuple(params[k].shape):
        raise CheckpointError(f'{source}: EMA shadow_params[{j}] has shape {ema.shape} but '
                              f'parameter {k} has shape {params[k].shape}.')
      params[k] = ema

  out, mismatched, used = [], [], set()
  for name, x in params.items():
    if name not in mapping:
      continue
    fpath, rule = mapping[name]
    x = x.numpy() if isinstance(x, TorchTensor) else x
    y = _fit_groupnorm(fpath, _apply_rule(rule, x), expected[fpath])
    used.add(fpath)
    if tuple(y.shape) != tuple(expected[fpath]):
      mismatched.append((f'{_join(fpath)} (torch {name})', tuple(y.shape), expected[fpath]))
    out.append((fpath, _to_float32(y)))
  missing = [_join(p) for p in expected if p not in used]
  unexpected = [f'{n} (torch)' for n in unmatched]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(source, model_name, missing, unexpected, mismatched, notes)
  order = {p: i for i, p in enumerate(expected)}
  out.sort(key=lambda item: order[item[0]])
  return _unflatten(out)


# --------------------------------------------------------------------------------------
# Flax msgpack files (score_sde State and converted params)


def _read_msgpack(file):
  from flax import serialization
  with open(file, 'rb') as f:
    data = f.read()
  try:
    obj = serialization.msgpack_restore(data)
  except Exception as e:
    raise CheckpointError(
        f'{file}: cannot decode it as a Flax msgpack checkpoint (expected a score_sde '
        'checkpoint_<k> written by flax.serialization.to_bytes(State), a score_sde_pytorch '
        f'.pth zip or a converted params file; corrupt or truncated?): {type(e).__name__}: {e}'
    ) from e
  if not isinstance(obj, Mapping):
    raise CheckpointError(f'{file}: decoded to a {type(obj).__name__}, not a dict: not a '
                          'score_sde checkpoint (corrupt file?).')
  return obj


def _select_params(obj, file, which):
  """Picks the parameter tree out of a decoded msgpack checkpoint."""
  keys = set(obj)
  if 'optimizer' in keys or 'step' in keys:  # score_sde State
    if which == 'ema':
      tree = obj.get('params_ema')
    else:
      opt = obj.get('optimizer')
      tree = opt.get('target') if isinstance(opt, Mapping) else obj.get('params')
    what = 'params_ema' if which == 'ema' else 'optimizer.target'
  elif 'params_ema' in keys:  # converted params file (or {'params_ema': ...})
    meta = obj.get('meta') or {}
    stored = meta.get('which', 'ema') if isinstance(meta, Mapping) else 'ema'
    if stored != which:
      raise CheckpointError(f'{file}: this converted params file holds the {stored!r} '
                            f'weights, which={which!r} was asked for.')
    tree, what = obj['params_ema'], 'params_ema'
  elif 'params' in keys:  # a flax variables dict
    tree, what = obj['params'], 'params'
  elif keys and all(isinstance(v, Mapping) for v in obj.values()):
    tree, what = obj, 'a bare parameter tree'
  else:
    tree, what = None, 'params_ema'
  if not isinstance(tree, Mapping) or not tree:
    raise CheckpointError(f'{file}: no parameter tree {what!r} in it (top-level keys '
                          f'{sorted(keys)[:10]}); expected a score_sde State with '
                          "'params_ema' and 'optimizer', or a converted params file.")
  return tree


def _fix_jax_tree(tree, expected):
  """float32 leaves; GroupNorm scale/bias reshaped to the expected (or modern) layout."""
  out = []
  for path, x in _flatten(tree):
    x = _to_float32(x)
    if expected is not None:
      x = _fit_groupnorm(path, x, expected.get(path))
    elif _is_groupnorm_leaf(path) and x.ndim > 1 and all(d == 1 for d in x.shape[:-1]):
      x = np.reshape(x, x.shape[-1:])
    out.append((path, x))
  return _unflatten(out)


def validate_params(params, expected, *, ckpt_file='<params>', model_name='?'):
  """Raises one CheckpointMismatchError if ``params`` and ``expected`` differ."""
  expected = _as_flat_shapes(expected)
  got = {p: _shape(x) for p, x in _flatten(params)}
  missing = [_join(p) for p in expected if p not in got]
  unexpected = [_join(p) for p in got if p not in expected]
  mismatched = [(_join(p), got[p], s) for p, s in expected.items()  # model (call) order
                if p in got and tuple(got[p]) != tuple(s)]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(ckpt_file, model_name, missing, unexpected, mismatched)


# --------------------------------------------------------------------------------------
# Public entry points


def restore_official(path, config, *, ckpt_id: Optional[int] = None, which: str = 'ema',
                     expected=None) -> dict:
  """Restores official score_sde / score_sde_pytorch weights for current Flax.

  Args:
    path: a checkpoint file (score_sde ``checkpoint_<k>``, score_sde_pytorch ``.pth``, or a
      params file of :func:`save_params`), a ``checkpoints/`` directory or a workdir.
    config: the model's config (``config.model.name`` and its architecture keys). May be
      None for score_sde and converted files if ``expected`` is None: no validation then.
    ckpt_id: pick ``checkpoint_<ckpt_id>`` in a directory (None/0: the newest).
    which: 'ema' (default; the EMA weights sampling uses) or 'model' (raw weights:
      ``optimizer.target`` / the .pth ``model`` entry).
    expected: optional parameter shapes to check against instead of initialising the
      config's model abstractly.

  Returns:
    Nested dict of float32 numpy arrays for ``model.apply({'params': params}, ...)``.

  Raises:
    FileNotFoundError: no checkpoint at ``path`` (the message says where to put them).
    CheckpointError: unreadable, corrupt or unsupported file.
    CheckpointMismatchError: the weights do not fit the config's model.
  """
  if which not in ('ema', 'model'):
    raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
  file = find_checkpoint(path, ckpt_id)
  model_name = getattr(getattr(config, 'model', None), 'name', '?') if config is not None \
      else '?'
  if expected is None and config is not None:
    expected = model_param_shapes(config)
  expected = _as_flat_shapes(expected)

  kind = _sniff(file)
  if kind.startswith('torch'):
    if expected is None:
      raise ValueError(f'{file}: converting a PyTorch checkpoint needs the config (or '
                       'expected shapes) of its model.')
    from score_sde_pds import psld_checkpoints  # PSLD Lightning .ckpt (its own reader)
    if kind == 'torch_zip' and psld_checkpoints.is_psld_file(file):
      params = psld_checkpoints.restore_psld(file, config, which=which, expected=expected)
    elif kind == 'torch_zip':  # lazy: only the tensors that are converted are read
      with _TorchZipReader(file) as reader:
        params = _params_from_torch(reader.load(), file, which, expected, model_name)
    else:
      ckpt = load_torch_checkpoint(file, keys=('model', 'ema'))
      params = _params_from_torch(ckpt, file, which, expected, model_name)
  else:
    tree = _select_params(_read_msgpack(file), file, which)
    params = _fix_jax_tree(tree, expected)
  if expected is not None:
    validate_params(params, expected, ckpt_file=file, model_name=model_name)
  return params


def _params_from_torch(ckpt, file, which, expected, model_name):
  if not isinstance(ckpt, Mapping):
    raise CheckpointError(f'{file}: holds a {type(ckpt).__name__}, expected the dict '
                          "{'optimizer', 'model', 'ema', 'step'} of score_sde_pytorch.")
  if 'model' in ckpt:
    state = ckpt['model']
  elif ckpt and all(isinstance(v, (np.ndarray, TorchTensor)) for v in ckpt.values()):
    state = ckpt  # a bare state_dict (no EMA entry)
  else:
    raise CheckpointError(f'{file}: no \'model\' state dict in it (keys {list(ckpt)[:10]}); '
                          'expected a score_sde_pytorch checkpoint.')
  if not isinstance(state, Mapping):
    raise CheckpointError(f"{file}: 'model' is a {type(state).__name__}, not a state dict.")
  shadow = None
  if which == 'ema':
    ema = ckpt.get('ema') if state is not ckpt else None
    if not isinstance(ema, Mapping) or 'shadow_params' not in ema:
      raise CheckpointError(f"{file}: no EMA weights ('ema' with 'shadow_params') in it; "
                            "pass which='model' for the raw weights.")
    shadow = list(ema['shadow_params'])
  return torch_state_to_flax(state, expected, shadow_params=shadow, source=file,
                             model_name=model_name)


def save_params(path, params, meta: Optional[Mapping[str, Any]] = None) -> str:
  """Writes ``to_bytes({'params_ema': params, 'meta': meta})`` atomically.

  ``meta`` values that are not str/int/float/bool/None are stored as JSON strings.
  :func:`restore_official` recognises the file.
  """
  from flax import serialization
  path = os.fspath(path)
  clean = {'format': FLAX_PARAMS_FORMAT, 'which': 'ema'}
  for k, v in (meta or {}).items():
    if isinstance(v, np.generic):
      v = v.item()
    clean[str(k)] = v if isinstance(v, (str, int, float, bool)) or v is None else \
        json.dumps(v, default=str)
  tree = _unflatten((p, np.asarray(x)) for p, x in _flatten(params))
  data = serialization.to_bytes({'params_ema': tree, 'meta': clean})
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def convert_checkpoint(input_path, config, output_path, *, ckpt_id: Optional[int] = None,
                       which: str = 'ema'):
  """Restores ``input_path`` for ``config``, validates it and saves a Flax params file.

  Returns:
    (params, meta) as written.
  """
  from score_sde_pds import psld_checkpoints
  file = find_checkpoint(input_path, ckpt_id)
  params = restore_official(file, config, which=which)
  kind = _sniff(file)
  meta = {
      'source': os.path.abspath(file),
      'source_format': ('score_sde' if not kind.startswith('torch') else 'psld' if
                        psld_checkpoints.is_psld_file(file) else 'score_sde_pytorch'),
      'which': which,
      'model_name': config.model.name,
      'num_params': count_params(params),
  }
  save_params(output_path, params, meta)
  return params, meta
