"""Tests of score_sde_pds.checkpoints and scripts/convert_checkpoint.py.

Fixtures (tests/fixtures/, copied from the official code's outputs):
  score_sde_jax/ckpt_tiny_ncsnpp/checkpoint_1   score_sde State file (msgpack)
  score_sde_jax/tiny_ncsnpp*.{json,npz,msgpack} its config, I/O and params_ema
  score_sde_pytorch/...                          score_sde_pytorch checkpoint.pth + goldens
The tests never import torch; one optional cross-check runs only when torch is installed.
"""
import collections
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from score_sde_pds import checkpoints as ckpt
from score_sde_pds.checkpoints import CheckpointError, CheckpointMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, 'tests', 'fixtures')
JAX_DIR = os.path.join(FIX, 'score_sde_jax')
JAX_CKPT_DIR = os.path.join(JAX_DIR, 'ckpt_tiny_ncsnpp')
JAX_CKPT = os.path.join(JAX_CKPT_DIR, 'checkpoint_1')
PT_DIR = os.path.join(FIX, 'score_sde_pytorch')
PT_WORKDIR = os.path.join(PT_DIR, 'tiny_ncsnpp_ffhq_style')
PTH = os.path.join(PT_WORKDIR, 'checkpoints', 'checkpoint.pth')
PT_GOLDEN = os.path.join(PT_DIR, 'tiny_ncsnpp_ffhq_style_flax_params_ema.npz')
PT_ORDER = os.path.join(PT_DIR, 'tiny_ncsnpp_ffhq_style_param_order.json')
SCRIPT = os.path.join(ROOT, 'scripts', 'convert_checkpoint.py')


def _load_script():
  spec = importlib.util.spec_from_file_location('convert_checkpoint_script', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _flat(tree):
  return {'/'.join(p): np.asarray(v) for p, v in ckpt._flatten(tree)}


def _golden_pt():
  """Golden EMA tree of the .pth fixture (official layout), in call order."""
  g = np.load(PT_GOLDEN)
  return {k: g[k] for k in g.files}


def _modern(flat):
  """Official [1,1,1,C] GroupNorm leaves -> (C,) as current flax has them."""
  out = {}
  for k, v in flat.items():
    parts = k.split('/')
    gn = parts[-1] in ('scale', 'bias') and parts[-2].startswith('GroupNorm_')
    out[k] = v.reshape(v.shape[-1:]) if gn else v
  return out


def _shapes(flat):
  return {tuple(k.split('/')): tuple(v.shape) for k, v in flat.items()}


def _jax_state():
  from flax import serialization
  with open(JAX_CKPT, 'rb') as f:
    return serialization.msgpack_restore(f.read())


def _ncsnpp_available():
  try:
    from score_sde_pds.models import utils as mutils
    return 'ncsnpp' in mutils.registered_models()
  except Exception:  # the model is being written; model tests skip meanwhile
    return False


needs_ncsnpp = pytest.mark.skipif(not _ncsnpp_available(),
                                  reason='NCSN++ (models/ncsnpp.py) not available')


def _config(name):
  return _load_script().load_config(os.path.join(FIX, name))


def _apply(config, params, x, labels):
  """Runs the config's model (jitted; no eager init, which is slow on CPU)."""
  import jax
  from score_sde_pds.models import utils as mutils
  model = mutils.get_model(config.model.name)(config=config)
  fn = jax.jit(lambda p, x, y: model.apply({'params': p}, x, y, train=False))
  return np.asarray(fn(params, x, labels))


# ----------------------------------------------------------------------------- torch reader


def test_torch_reader_reads_pth_without_torch():
  ck = ckpt.load_torch_checkpoint(PTH)
  assert set(ck) == {'optimizer', 'model', 'ema', 'step'}
  order = json.load(open(PT_ORDER))
  model = ck['model']
  assert isinstance(model, collections.OrderedDict)
  keys = list(model)
  assert keys[0] == 'module.sigmas' and model['module.sigmas'].dtype == np.float64
  params = [p for p in order['params']]
  assert keys[1:] == [p['key'] for p in params]
  shadow = ck['ema']['shadow_params']
  assert len(shadow) == sum(p['shadow_index'] is not None for p in params) == 160
  for p in params:
    assert model[p['key']].shape == tuple(p['shape'])
    assert model[p['key']].dtype == np.float32
    if p['shadow_index'] is not None:
      assert shadow[p['shadow_index']].shape == tuple(p['shape'])
  # numpy scalars in the optimizer state are rebuilt as numpy scalars
  lr = ck['optimizer']['param_groups'][0]['lr']
  assert isinstance(lr, np.float64)
  # reading only some entries does not read the others
  part = ckpt.load_torch_checkpoint(PTH, keys=('ema',))
  assert set(part) == {'ema'}


def test_pth_to_flax_matches_golden_exactly():
  golden = _golden_pt()
  # expected tree in call order with the official GroupNorm layout: exact golden tree
  params = ckpt.restore_official(PTH, None, expected=_shapes(golden))
  flat = _flat(params)
  assert list(flat) == list(golden)
  for k, v in golden.items():
    assert flat[k].dtype == np.float32
    np.testing.assert_array_equal(flat[k], v, err_msg=k)


def test_pth_mapping_does_not_depend_on_dict_order():
  golden = _modern(_golden_pt())
  # sorted keys (what jax.eval_shape returns) and current-flax GroupNorm shapes
  expected = {k: golden[k].shape for k in sorted(golden)}
  flat = _flat(ckpt.restore_official(PTH, None, expected=_shapes({k: golden[k] for k in expected})))
  assert flat['GroupNorm_1/scale'].shape == (16,)
  assert flat['ResnetBlockBigGANpp_1/Conv_2/kernel'].shape == (1, 1, 16, 16)  # 1x1 kept
  for k, v in golden.items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)


def test_pth_which_model_gives_raw_weights():
  golden = _golden_pt()
  order = json.load(open(PT_ORDER))
  raw = ckpt.load_torch_checkpoint(PTH, keys=('model',))['model']
  flat = _flat(ckpt.restore_official(PTH, None, expected=_shapes(golden), which='model'))
  for p in order['params']:
    x = raw[p['key']]
    if x.ndim == 4:
      x = x.transpose(2, 3, 1, 0)
    elif x.ndim == 2 and p['flax_path'].endswith('kernel'):
      x = x.T
    np.testing.assert_array_equal(flat[p['flax_path']], x.reshape(p['flax_shape_official']))
  # the frozen Fourier W is the same in both; trained weights differ from EMA
  np.testing.assert_array_equal(flat['GaussianFourierProjection_0/W'],
                                golden['GaussianFourierProjection_0/W'])
  assert not np.array_equal(flat['Conv_0/kernel'], golden['Conv_0/kernel'])


def test_pth_workdir_and_checkpoints_dir_forms():
  shapes = _shapes(_golden_pt())
  a = _flat(ckpt.restore_official(PT_WORKDIR, None, expected=shapes))
  b = _flat(ckpt.restore_official(os.path.dirname(PTH), None, expected=shapes))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_pth_combine_conv_named_without_index():
  # score_sde_pytorch's Combine calls its conv `Conv` in some versions, `Conv_0` in others.
  ck = ckpt.load_torch_checkpoint(PTH, keys=('model', 'ema'))
  renamed = collections.OrderedDict(
      (k.replace('all_modules.6.Conv_0.', 'all_modules.6.Conv.'), v)
      for k, v in ck['model'].items())
  assert 'module.all_modules.6.Conv.weight' in renamed
  golden = _golden_pt()
  flat = _flat(ckpt.torch_state_to_flax(renamed, _shapes(golden),
                                        shadow_params=ck['ema']['shadow_params']))
  for k, v in golden.items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch not installed')
def test_reader_agrees_with_torch_load():
  ours = ckpt.load_torch_checkpoint(PTH)
  theirs = ckpt.load_torch_checkpoint(PTH, use_torch=True)
  for k, v in theirs['model'].items():
    np.testing.assert_array_equal(ours['model'][k], v)
  for a, b in zip(ours['ema']['shadow_params'], theirs['ema']['shadow_params']):
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch not installed')
def test_reader_handles_views_dtypes_and_scalars(tmp_path):
  import torch
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  obj = {
      'transposed': base.transpose(0, 2), 'sliced': base[1:, 2:, 1:4], 'base': base,
      'expanded': torch.ones(3, 1).expand(3, 4), 'f16': torch.randn(3, 2).half(),
      'bf16': torch.randn(4).bfloat16(), 'i64': torch.arange(5), 'bool': torch.tensor([True]),
      'param': torch.nn.Parameter(torch.randn(2, 2)), 'f64': torch.tensor(3.5, dtype=torch.float64),
      'empty': torch.zeros(0, 3), 'np': np.float64(0.1), 'list': [torch.ones(2)],
  }
  path = tmp_path / 'views.pth'
  torch.save(obj, path)
  ours = ckpt.load_torch_checkpoint(path)
  for k, v in obj.items():
    if isinstance(v, torch.Tensor):
      ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
      got = ours[k].astype(np.float32) if v.dtype == torch.bfloat16 else ours[k]
      assert got.dtype == ref.dtype and got.shape == ref.shape, k
      np.testing.assert_array_equal(got, ref, err_msg=k)
  assert ours['np'] == np.float64(0.1)
  np.testing.assert_array_equal(ours['list'][0], np.ones(2, np.float32))


# ----------------------------------------------------------------------------- JAX files


def test_jax_state_gives_params_ema_with_fixed_groupnorm():
  state = _jax_state()
  params = _flat(ckpt.restore_official(JAX_CKPT, None))
  ema = _flat(state['params_ema'])
  target = _flat(state['optimizer']['target'])
  assert set(params) == set(ema)
  differs = False
  for k, v in ema.items():
    if k.split('/')[-2].startswith('GroupNorm_'):
      assert v.shape[:-1] == (1, 1, 1) and params[k].shape == v.shape[-1:], k
    else:
      assert params[k].shape == v.shape, k
    np.testing.assert_array_equal(params[k], v.reshape(params[k].shape))
    differs |= not np.array_equal(target[k], v)
  assert differs  # params_ema, not optimizer.target
  assert params['ResnetBlockBigGANpp_1/Conv_2/kernel'].shape == (1, 1, 16, 16)
  assert params['Combine_0/Conv_0/kernel'].shape == (1, 1, 3, 16)
  raw = _flat(ckpt.restore_official(JAX_CKPT, None, which='model'))
  for k, v in target.items():
    np.testing.assert_array_equal(raw[k], v.reshape(raw[k].shape))


def test_jax_state_validates_against_manifest():
  manifest = json.load(open(os.path.join(JAX_DIR, 'tiny_ncsnpp_manifest.json')))
  expected = {tuple(k.split('/')): tuple(v) for k, v in manifest['params_modern_flax'].items()}
  params = ckpt.restore_official(JAX_CKPT_DIR, None, expected=expected)
  assert ckpt.count_params(params) == manifest['total_params']
  # the official layout is honoured too when that is what is expected
  official = {tuple(k.split('/')): tuple(v) for k, v in manifest['params'].items()}
  params = _flat(ckpt.restore_official(JAX_CKPT, None, expected=official))
  assert params['GroupNorm_0/scale'].shape == (1, 1, 1, 32)


def _write_state(path, scale):
  from flax import serialization
  state = _jax_state()
  state['params_ema'] = {k: v for k, v in state['params_ema'].items()}
  state['params_ema']['Conv_0'] = {'kernel': np.asarray(state['params_ema']['Conv_0']['kernel'])
                                   * scale, 'bias': state['params_ema']['Conv_0']['bias']}
  with open(path, 'wb') as f:
    f.write(serialization.to_bytes(state))


def test_directory_forms_pick_newest_numerically(tmp_path):
  ckdir = tmp_path / 'workdir' / 'checkpoints'
  ckdir.mkdir(parents=True)
  for k in (1, 2, 10):
    _write_state(ckdir / f'checkpoint_{k}', float(k))
  (ckdir / 'checkpoint_11.tmp').write_bytes(b'partial')
  (ckdir / 'checkpoint_tmp').write_bytes(b'partial')
  (ckdir / 'tmp_checkpoint_12').write_bytes(b'partial')
  base = np.asarray(_jax_state()['params_ema']['Conv_0']['kernel'])

  def k_of(params):
    return float(np.asarray(params['Conv_0']['kernel']).ravel()[0] / base.ravel()[0])

  assert ckpt.find_checkpoint(tmp_path / 'workdir') == str(ckdir / 'checkpoint_10')
  assert k_of(ckpt.restore_official(tmp_path / 'workdir', None)) == pytest.approx(10)
  assert k_of(ckpt.restore_official(ckdir, None)) == pytest.approx(10)
  assert k_of(ckpt.restore_official(ckdir, None, ckpt_id=2)) == pytest.approx(2)
  assert k_of(ckpt.restore_official(tmp_path / 'workdir', None, ckpt_id=1)) == pytest.approx(1)
  with pytest.raises(FileNotFoundError, match='checkpoint_5'):
    ckpt.restore_official(ckdir, None, ckpt_id=5)


def test_missing_path_says_where_checkpoints_go(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    ckpt.restore_official(tmp_path / 'nowhere', None)
  msg = str(e.value)
  assert 'nowhere' in msg and 'checkpoints/checkpoint_<k>' in msg
  assert 'checkpoints/checkpoint.pth' in msg and 'README' in msg
  with pytest.raises(FileNotFoundError, match='checkpoint.pth'):
    ckpt.restore_official(tmp_path, None)  # exists, but holds nothing


# ----------------------------------------------------------------------------- bad input


def test_truncated_and_random_files_raise_checkpoint_error(tmp_path):
  data = open(JAX_CKPT, 'rb').read()
  truncated = tmp_path / 'checkpoint_3'
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError) as e:
    ckpt.restore_official(truncated, None)
  assert str(truncated) in str(e.value) and 'msgpack' in str(e.value)

  rand = tmp_path / 'random.bin'
  rand.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  with pytest.raises(CheckpointError, match='random.bin'):
    ckpt.restore_official(rand, None)

  empty = tmp_path / 'empty'
  empty.write_bytes(b'')
  with pytest.raises(CheckpointError, match='empty'):
    ckpt.restore_official(empty, None)

  pth = open(PTH, 'rb').read()
  half = tmp_path / 'half.pth'
  half.write_bytes(pth[:len(pth) // 2])
  with pytest.raises(CheckpointError, match='half.pth'):
    ckpt.load_torch_checkpoint(half)

  nopkl = tmp_path / 'nopkl.pth'
  with zipfile.ZipFile(nopkl, 'w') as z:
    z.writestr('archive/data/0', b'\0' * 16)
  with pytest.raises(CheckpointError, match='data.pkl'):
    ckpt.load_torch_checkpoint(nopkl)

  legacy = tmp_path / 'legacy.pth'  # pre-1.6 torch.save format (magic number, no zip)
  legacy.write_bytes(b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.' + b'\0' * 32)
  with pytest.raises(CheckpointError, match='legacy.pth'):
    ckpt.load_torch_checkpoint(legacy)

  nostorage = tmp_path / 'nostorage.pth'
  with zipfile.ZipFile(PTH) as src, zipfile.ZipFile(nostorage, 'w') as dst:
    for name in src.namelist():
      if not name.endswith('/data/5'):
        dst.writestr(name, src.read(name))
  with pytest.raises(CheckpointError, match='data/5'):
    ckpt.load_torch_checkpoint(nostorage)


class _Evil:

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f'touch {self.path}',))


def test_pth_with_forbidden_global_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  payload = pickle.dumps({'model': collections.OrderedDict(), 'evil': _Evil(marker)},
                         protocol=2)
  bad = tmp_path / 'checkpoint.pth'
  with zipfile.ZipFile(bad, 'w') as z:
    z.writestr('archive/data.pkl', payload)
    z.writestr('archive/version', b'3\n')
  with pytest.raises(CheckpointError) as e:
    ckpt.restore_official(tmp_path, None, expected={('Conv_0', 'kernel'): (3, 3, 3, 16)})
  msg = str(e.value)
  assert str(bad) in msg and 'system' in msg and 'refusing' in msg
  assert not marker.exists()


def test_mismatched_expected_tree_lists_paths():
  golden = _golden_pt()
  shapes = _shapes(golden)
  wrong = {p: tuple(2 * d if d in (16, 32, 64) else d for d in s) for p, s in shapes.items()}
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_official(PTH, None, expected=wrong)
  msg = str(e.value)
  assert PTH in msg and 'Conv_0/kernel' in msg and '(3, 3, 3, 16) vs (3, 3, 3, 32)' in msg
  assert '... and' in msg  # long lists are truncated with a count
  assert len(e.value.mismatched) > 100 and isinstance(e.value, ValueError)

  manifest = json.load(open(os.path.join(JAX_DIR, 'tiny_ncsnpp_manifest.json')))
  expected = {tuple(k.split('/')): tuple(v) for k, v in manifest['params_modern_flax'].items()}
  expected.pop(('Conv_2', 'bias'))
  expected[('Conv_3', 'kernel')] = (3, 3, 16, 3)
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_official(JAX_CKPT, None, expected=expected)
  assert e.value.missing == ['Conv_3/kernel'] and e.value.unexpected == ['Conv_2/bias']
  assert JAX_CKPT in str(e.value) and 'Conv_3/kernel' in str(e.value)


# ----------------------------------------------------------------------------- Flax files


def test_save_params_round_trip(tmp_path):
  params = ckpt.restore_official(JAX_CKPT, None)
  out = tmp_path / 'sub' / 'params.msgpack'
  ckpt.save_params(out, params, {'source': 'x', 'num_params': np.int64(3), 'tags': [1, 2]})
  assert sorted(os.listdir(out.parent)) == ['params.msgpack']  # no temp file left
  again = _flat(ckpt.restore_official(out, None))
  for k, v in _flat(params).items():
    np.testing.assert_array_equal(again[k], v)
  with pytest.raises(CheckpointError, match="'ema'"):
    ckpt.restore_official(out, None, which='model')
  # the fixture msgpack ({'params_ema': ...}, official layout) is read as well
  fixture = _flat(ckpt.restore_official(os.path.join(JAX_DIR, 'tiny_ncsnpp.msgpack'), None))
  assert fixture['GroupNorm_0/scale'].shape == (32,)


# ----------------------------------------------------------------------------- with NCSN++


@needs_ncsnpp
def test_model_shapes_follow_call_order():
  config = _config('score_sde_pytorch/tiny_ncsnpp_ffhq_style_config.json')
  shapes = ckpt.model_param_shapes(config)
  order = json.load(open(PT_ORDER))
  tops = list(dict.fromkeys(p[0] for p in shapes))
  assert tops == list(order['all_modules_to_flax'].values())
  golden = _modern(_golden_pt())
  assert {'/'.join(p): s for p, s in shapes.items()} == {k: v.shape for k, v in golden.items()}


@needs_ncsnpp
def test_pth_conversion_of_ddpmpp_style_tree():
  """Mechanism check on another NCSN++ variant (DDPM blocks, FIR conv pyramids).

  A fake score_sde_pytorch state dict is built from the flax tree (all_modules.N in call
  order, torch layouts, module. prefix, sigmas buffer) and converted back.
  """
  config = _config('score_sde_pytorch/tiny_ncsnpp_ffhq_style_config.json')
  config.model.resblock_type = 'ddpm'
  config.model.progressive = 'residual'
  config.model.progressive_input = 'residual'
  config.model.embedding_type = 'positional'
  shapes = ckpt.model_param_shapes(config)
  tops = list(dict.fromkeys(p[0] for p in shapes))
  assert any(p[0].startswith('Downsample_') and p[1] == 'Conv2d_0' for p in shapes)
  assert any(p[-2] == 'NIN_0' and p[0].startswith('ResnetBlockDDPMpp_') for p in shapes)
  rng = np.random.default_rng(0)
  flax_values = {p: rng.standard_normal(s).astype(np.float32) for p, s in shapes.items()}
  state = collections.OrderedDict([('module.sigmas', np.ones(3))])
  for path, x in flax_values.items():
    leaf = path[-1]
    if leaf in ('kernel', 'weight') and x.ndim == 4:
      x, leaf = x.transpose(3, 2, 0, 1), 'weight'
    elif leaf == 'kernel':
      x, leaf = x.T, 'weight'
    elif leaf == 'scale':
      leaf = 'weight'
    name = '.'.join(('module', 'all_modules', str(tops.index(path[0]))) + path[1:-1] + (leaf,))
    state[name] = np.ascontiguousarray(x)
  shadow = [v * 2 for k, v in state.items() if k != 'module.sigmas']
  sorted_shapes = {p: shapes[p] for p in sorted(shapes)}
  for shadow_params, factor in ((None, 1), (shadow, 2)):
    flat = ckpt.torch_state_to_flax(state, sorted_shapes, shadow_params=shadow_params)
    flat = dict(ckpt._flatten(flat))
    for p, v in flax_values.items():
      np.testing.assert_array_equal(flat[p], v * factor, err_msg='/'.join(p))


@needs_ncsnpp
def test_end_to_end_jax_checkpoint_reproduces_output():
  config = _config('score_sde_jax/tiny_ncsnpp_config.json')
  params = ckpt.restore_official(JAX_CKPT_DIR, config)
  data = np.load(os.path.join(JAX_DIR, 'tiny_ncsnpp_io.npz'))
  out = _apply(config, params, data['x'], data['labels'])
  ref = data['out']
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@needs_ncsnpp
def test_end_to_end_pth_checkpoint_reproduces_output():
  config = _config('score_sde_pytorch/tiny_ncsnpp_ffhq_style_config.json')
  params = ckpt.restore_official(PT_WORKDIR, config)
  golden = _modern(_golden_pt())
  for k, v in _flat(params).items():
    np.testing.assert_array_equal(v, golden[k], err_msg=k)
  data = np.load(os.path.join(PT_DIR, 'tiny_ncsnpp_ffhq_style_io.npz'))
  out = _apply(config, params, data['x'].transpose(0, 2, 3, 1), data['labels'])
  ref = data['out'].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@needs_ncsnpp
def test_checkpoint_for_other_config_is_rejected():
  config = _config('score_sde_jax/tiny_ncsnpp_config.json')
  config.model.nf = 32
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_official(JAX_CKPT, config)
  msg = str(e.value)
  assert JAX_CKPT in msg and "'ncsnpp'" in msg and 'Conv_0/kernel: (3, 3, 3, 16) vs' in msg
  assert 'ResnetBlockBigGANpp_9/Conv_2/kernel' in [p for p, _, _ in e.value.mismatched]
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_official(PTH, config)
  assert PTH in str(e.value) and 'all_modules.3.weight' in str(e.value)


@needs_ncsnpp
def test_convert_script_round_trip(tmp_path):
  out = tmp_path / 'tiny_ema.msgpack'
  cfg = os.path.join(PT_DIR, 'tiny_ncsnpp_ffhq_style_config.json')
  res = subprocess.run([sys.executable, SCRIPT, '--config', cfg, '--input', PTH,
                        '--output', str(out)], capture_output=True, text=True, cwd=ROOT)
  assert res.returncode == 0, res.stderr
  golden = _modern(_golden_pt())
  n = sum(v.size for v in golden.values())
  assert f'{n:,} parameters' in res.stdout
  config = _config('score_sde_pytorch/tiny_ncsnpp_ffhq_style_config.json')
  again = _flat(ckpt.restore_official(out, config))
  assert set(again) == set(golden)
  for k, v in golden.items():
    np.testing.assert_array_equal(again[k], v, err_msg=k)
  # a failing conversion reports the error and writes nothing
  bad = tmp_path / 'bad.msgpack'
  res = subprocess.run([sys.executable, SCRIPT, '--config', cfg, '--input', JAX_CKPT + 'x',
                        '--output', str(bad)], capture_output=True, text=True, cwd=ROOT)
  assert res.returncode == 1 and 'checkpoint' in res.stderr and not bad.exists()
