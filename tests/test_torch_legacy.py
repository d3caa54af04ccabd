"""The torch-free reader of checkpoints.load_torch_checkpoint on both torch.save layouts.

Files are written without torch by tests/torch_files.py (zip: torch >= 1.6; legacy:
torch < 1.6, the layout of pytorch-fid's Inception weight file).
"""
import os
import pickle

import numpy as np
import pytest

from score_sde_pds import checkpoints as ckpt
from score_sde_pds.checkpoints import CheckpointError

import torch_files


def _state():
  g = np.random.default_rng(0)
  return {
      'Conv.conv.weight': g.standard_normal((4, 3, 2, 5)).astype(np.float32),
      'Conv.bn.num_batches_tracked': np.array(123456789012, np.int64),  # 0-d int64
      'fc.weight': g.standard_normal((6, 7)).astype(np.float32).T,      # non-contiguous
      'fc.bias': g.standard_normal(7),                                   # float64
  }


@pytest.mark.parametrize('writer', [torch_files.write_zip, torch_files.write_legacy])
def test_round_trip(tmp_path, writer):
  state = _state()
  path = tmp_path / 'w.pth'
  writer(path, state)
  assert ckpt._sniff(path) == ('torch_zip' if writer is torch_files.write_zip else 'torch_legacy')
  out = ckpt.load_torch_checkpoint(path)
  assert list(out) == list(state)
  for k, v in state.items():
    assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
    np.testing.assert_array_equal(out[k], v)
  assert list(ckpt.load_torch_checkpoint(path, keys=['fc.bias'])) == ['fc.bias']


def test_legacy_truncated_or_corrupt(tmp_path):
  path = tmp_path / 'w.pth'
  torch_files.write_legacy(path, _state())
  data = path.read_bytes()
  for n, what in ((len(data) - 4, 'truncated'), (len(data) // 3, 'w_cut'), (20, 'w_head')):
    bad = tmp_path / f'{what}.pth'
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=str(bad)):
      ckpt.load_torch_checkpoint(bad)


def test_legacy_refuses_foreign_globals(tmp_path):
  marker = tmp_path / 'pwned'

  class Evil:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  path = tmp_path / 'evil.pth'
  with open(path, 'wb') as f:
    for obj in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}, {'x': Evil()}, []):
      pickle.dump(obj, f, protocol=2)
  with pytest.raises(CheckpointError, match='refusing'):
    ckpt.load_torch_checkpoint(path)
  assert not marker.exists()
