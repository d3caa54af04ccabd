"""Writes ``torch.save``-format files of a state dict without torch (test helper).

Two layouts, as torch writes them (protocol-2 pickles, little-endian storages):
  * zip (torch >= 1.6): ``archive/data.pkl`` whose tensors reference storages by the
    persistent id ('storage', <torch.XStorage>, key, 'cpu', numel), the raw bytes in
    ``archive/data/<key>``, plus ``archive/version`` and ``archive/byteorder``;
  * legacy (torch < 1.6): five pickles (magic number 0x1950a86a20f9469cfc6c, protocol
    1001, system info, the object with persistent ids ('storage', type, key, 'cpu',
    numel, None), the list of storage keys), then per key an int64 element count and
    the raw bytes.
Each tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride,
False, OrderedDict())``, the reduction torch uses for a plain tensor.
"""
import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGE_NAMES = {'float32': 'FloatStorage', 'float64': 'DoubleStorage',
                  'int64': 'LongStorage', 'float16': 'HalfStorage'}


class _Global:
  def __init__(self, module, name):
    self.module, self.name = module, name


class _Storage:
  def __init__(self, key, array):
    self.key, self.array = key, array


class _Tensor:
  def __init__(self, storage, shape):
    self.storage, self.shape = storage, tuple(shape)


def _save_global(pickler, obj):
  pickler.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())


def _save_tensor(pickler, obj):
  stride = tuple(int(np.prod(obj.shape[i + 1:])) for i in range(len(obj.shape)))
  pickler.save(_Global('torch._utils', '_rebuild_tensor_v2'))
  pickler.save((obj.storage, 0, obj.shape, stride, False, collections.OrderedDict()))
  pickler.write(pickle.REDUCE)


class _Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is a dict
  dispatch = dict(pickle._Pickler.dispatch)
  dispatch[_Global] = _save_global
  dispatch[_Tensor] = _save_tensor

  def __init__(self, f, legacy):
    super().__init__(f, protocol=2)
    self.legacy = legacy

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    kind = _Global('torch', _STORAGE_NAMES[obj.array.dtype.name])
    pid = ('storage', kind, obj.key, 'cpu', int(obj.array.size))
    return pid + (None,) if self.legacy else pid


def _prepare(state):
  storages, tree = [], collections.OrderedDict()
  for name, value in state.items():
    arr = np.asarray(value)
    storage = _Storage(str(len(storages)), arr.reshape(-1).astype(arr.dtype.newbyteorder('<')))
    storages.append(storage)
    tree[name] = _Tensor(storage, arr.shape)
  # module.state_dict() carries per-module versions in an attribute (pickled as BUILD state)
  tree._metadata = collections.OrderedDict([('', {'version': 1})])
  return storages, tree


def _pickle(obj, legacy):
  buf = io.BytesIO()
  _Pickler(buf, legacy).dump(obj)
  return buf.getvalue()


def write_zip(path, state):
  """torch >= 1.6 format of the mapping name -> array `state`."""
  storages, tree = _prepare(state)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', _pickle(tree, legacy=False))
    z.writestr('archive/byteorder', 'little')
    for s in storages:
      z.writestr(f'archive/data/{s.key}', s.array.tobytes())
    z.writestr('archive/version', '3\n')


def write_legacy(path, state):
  """torch < 1.6 format of the mapping name -> array `state`."""
  storages, tree = _prepare(state)
  sys_info = {'protocol_version': 1001, 'little_endian': True,
              'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
  with open(path, 'wb') as f:
    for obj in (0x1950a86a20f9469cfc6c, 1001, sys_info):
      pickle.dump(obj, f, protocol=2)
    f.write(_pickle(tree, legacy=True))
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(np.int64(s.array.size).astype('<i8').tobytes())
      f.write(s.array.tobytes())
