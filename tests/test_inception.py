"""The Flax FID Inception against pytorch-fid's own outputs (tests/fixtures/fid_inception).

The fixture (README.md there) holds outputs of the unmodified pytorch-fid network in
float64 for deterministic synthetic weights (recipe.py + calibrated BatchNorm
statistics). Here those weights are written in the layout of the real weight file --
a legacy (pre-1.6) torch.save file with the real key names, including the int64
``*.num_batches_tracked`` counters -- without torch, converted to .npz by
scripts/convert_inception.py, and loaded through ``load_inception_params``: the
numbers then check the file reader, the name mapping, the architecture (pools,
paddings, concat orders, BN eps), the resize and the normalisation at once.
Tolerance 5e-4 (max abs vs float64; the fixture's README: about 10x the float32 error,
far below the effect of any simulated port bug).

All float32 feature checks share one compiled network (batch 2) in one test, so a
parallel run (pytest -n 2) compiles it once.
"""
import hashlib
import importlib.util
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_pds import checkpoints
from score_sde_pds.evaluation import inception

import torch_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, 'tests', 'fixtures', 'fid_inception')
TOL = 5e-4
SETS = ('small', 'large', 'large0_resized299')


def _recipe():
  spec = importlib.util.spec_from_file_location('fid_inception_recipe',
                                                os.path.join(FIX, 'recipe.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


MANIFEST = json.load(open(os.path.join(FIX, 'manifest.json')))
RECIPE = _recipe()


def _file_state(weights):
  """weights in the real file's key order, with its num_batches_tracked counters."""
  state = {}
  for t in MANIFEST['tensors']:
    state[t['name']] = weights[t['name']]
    if t['name'].endswith('.bn.running_var'):
      state[t['name'][:-len('running_var')] + 'num_batches_tracked'] = np.array(0, np.int64)
  return state


@pytest.fixture(scope='module')
def weights0():
  weights = RECIPE.make_weights(MANIFEST, 0)
  weights.update(np.load(os.path.join(FIX, 'bn_stats_v0.npz')))
  return weights


@pytest.fixture(scope='module')
def weight_files(weights0, tmp_path_factory):
  """(.pth in the legacy torch layout, its .npz conversion by the script)."""
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  try:
    import convert_inception
  finally:
    sys.path.pop(0)
  folder = tmp_path_factory.mktemp('fid_weights')
  pth = str(folder / inception.WEIGHTS_FILE_NAME)
  npz = str(folder / 'inception_fid.npz')
  torch_files.write_legacy(pth, _file_state(weights0))
  assert convert_inception.main(['--input', pth, '--output', npz]) == 0
  return pth, npz


@pytest.fixture(scope='module')
def variables(weight_files):
  return inception.load_inception_params(weight_files[1])


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
  return out


# ----------------------------------------------------------------------------- weights


def test_layout_is_the_weight_files():
  expected = inception.expected_state_dict_shapes()
  manifest = {t['name']: tuple(t['shape']) for t in MANIFEST['tensors']}
  assert expected == manifest and len(expected) == MANIFEST['num_tensors'] == 472
  assert sum(int(np.prod(s)) for s in expected.values()) == MANIFEST['total_numel']
  assert MANIFEST['weights_url'] == inception.WEIGHTS_URL
  assert inception.WEIGHTS_FILE_NAME.endswith(inception.WEIGHTS_SHA256[:8] + '.pth')
  # every conv's kernel size and channels as the torch modules declare them
  for name, conv in MANIFEST['convs'].items():
    assert expected[name + '.weight'] == (conv['out'], conv['in'], *conv['kernel']), name


def test_recipe_regenerates_the_fixture_weights(weights0):
  check = MANIFEST['recipe_check_variant0']
  blob = b''.join(weights0[t['name']].astype('<f4').tobytes() for t in MANIFEST['tensors']
                  if not t['name'].endswith(('running_mean', 'running_var')))
  assert hashlib.sha256(blob).hexdigest() == \
      check['sha256_of_generated_float32_le_bytes_in_manifest_order']


def test_pth_npz_and_dict_give_the_same_params(weights0, weight_files, variables):
  pth, npz = weight_files
  assert checkpoints._sniff(pth) == 'torch_legacy'
  from_pth = _flat(inception.load_inception_params(pth))
  from_dict = _flat(inception.params_from_state_dict(weights0))
  from_npz = _flat(variables)
  assert from_pth.keys() == from_dict.keys() == from_npz.keys()
  for k in from_dict:
    assert from_npz[k].dtype == np.float32
    np.testing.assert_array_equal(from_pth[k], from_dict[k])
    np.testing.assert_array_equal(from_npz[k], from_dict[k])
  with np.load(npz) as z:
    meta = json.loads(str(z[inception.NPZ_META_KEY]))
    assert not any(k.endswith('num_batches_tracked') for k in z.files)
  assert meta['source_sha256'] == inception.weights_hash(pth)
  assert meta['source_sha256'] == hashlib.sha256(open(pth, 'rb').read()).hexdigest()
  assert inception.weights_hash(npz) == meta['source_sha256']  # same weights, same hash
  assert meta['official_file'] is False


def test_second_weight_draw_maps_every_tensor_by_name(weights0):
  """Variant-1 weights and random BN statistics: each Flax leaf is its own tensor."""
  state = RECIPE.make_weights(MANIFEST, 1)
  g = np.random.default_rng(1)
  for t in MANIFEST['tensors']:
    if t['name'].endswith('running_mean'):
      state[t['name']] = g.standard_normal(t['shape']).astype(np.float32)
    elif t['name'].endswith('running_var'):
      state[t['name']] = g.uniform(0.5, 2., t['shape']).astype(np.float32)
  flat = _flat(inception.params_from_state_dict(state))
  assert len(flat) == len(state) == 472
  leaf = {'conv.weight': ('params', 'kernel'), 'bn.weight': ('params', 'scale'),
          'bn.bias': ('params', 'bias'), 'bn.running_mean': ('batch_stats', 'mean'),
          'bn.running_var': ('batch_stats', 'var'), 'fc.weight': ('params', 'kernel'),
          'fc.bias': ('params', 'bias')}
  for name, w in state.items():
    parts = name.split('.')
    collection, flax_leaf = leaf['.'.join(parts[-2:])]
    got = flat[(collection,) + tuple(parts[:-1]) + (flax_leaf,)]
    want = w.transpose(2, 3, 1, 0) if w.ndim == 4 else (w.T if name == 'fc.weight' else w)
    np.testing.assert_array_equal(got, want, err_msg=name)
  assert not np.array_equal(weights0['fc.weight'], state['fc.weight'])  # another draw


def test_bad_state_dict_lists_every_problem(weights0):
  state = dict(weights0)
  del state['Mixed_6c.branch7x7_2.conv.weight'], state['fc.bias']
  state['Mixed_7c.branch_pool.bn.running_var'] = np.ones(193, np.float32)
  state['fc.weight'] = weights0['fc.weight'].T
  state['AuxLogits.fc.weight'] = np.zeros((1000, 768), np.float32)
  state['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.array(3)  # ignored
  with pytest.raises(inception.InceptionWeightsError) as e:
    inception.params_from_state_dict(state, source='w.pth')
  err = e.value
  assert isinstance(err, ValueError)
  assert err.missing == ['Mixed_6c.branch7x7_2.conv.weight', 'fc.bias']
  assert err.unexpected == ['AuxLogits.fc.weight']
  assert sorted(err.mismatched) == [('Mixed_7c.branch_pool.bn.running_var', (193,), (192,)),
                                    ('fc.weight', (2048, 1008), (1008, 2048))]
  msg = str(err)
  for needle in ('w.pth', 'Mixed_6c.branch7x7_2.conv.weight', 'fc.bias', 'AuxLogits.fc.weight',
                 '(193,) vs (192,)', '(2048, 1008) vs (1008, 2048)', '2 missing'):
    assert needle in msg, needle


def test_missing_or_wrong_file(tmp_path):
  for path in (str(tmp_path / inception.WEIGHTS_FILE_NAME), '', None):
    with pytest.raises(FileNotFoundError) as e:
      inception.load_inception_params(path)
    msg = str(e.value)
    for needle in (inception.WEIGHTS_URL, 'config.eval.inception_path', 'convert_inception.py'):
      assert needle in msg
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  try:
    import convert_inception
  finally:
    sys.path.pop(0)
  with pytest.raises(SystemExit, match='pytorch-fid/releases'):
    convert_inception.main(['--input', str(tmp_path / 'nope.pth'), '--output',
                            str(tmp_path / 'out.npz')])
  assert not (tmp_path / 'out.npz').exists()
  other = tmp_path / 'other.pth'  # a readable torch file with other tensors
  torch_files.write_zip(other, {'conv.weight': np.zeros((2, 3, 1, 1), np.float32)})
  with pytest.raises(inception.InceptionWeightsError, match='472 missing'):
    inception.load_inception_params(other)
  junk = tmp_path / 'junk.npz'
  junk.write_bytes(b'not a weight file')
  with pytest.raises(checkpoints.CheckpointError, match='junk.npz'):
    inception.load_inception_params(junk)


def test_bad_arguments_and_inputs():
  tiny = {'params': {}, 'batch_stats': {}}  # validation happens before any compile
  with pytest.raises(ValueError, match='dtype'):
    inception.get_feature_fn(tiny, dtype='float16')
  for bad in (0, -2, 2.5, True):
    with pytest.raises(ValueError, match='batch_size'):
      inception.get_feature_fn(tiny, batch_size=bad)
  fn = inception.get_feature_fn(tiny, batch_size=2)
  cases = [(np.zeros((2, 8, 8, 4), np.float32), 'shape'),
           (np.zeros((8, 8, 3), np.float32), 'shape'),
           (np.zeros((2, 8, 8, 3), np.int32), 'dtype'),
           (np.full((2, 8, 8, 3), -1., np.float32), r'\[0, 1\]'),
           (np.full((2, 8, 8, 3), np.nan, np.float32), r'\[0, 1\]')]
  for x, match in cases:
    with pytest.raises(ValueError, match=match):
      fn(x)
  empty = fn(np.zeros((0, 8, 8, 3), np.float32))
  assert empty['pool3'].shape == (0, 2048) and empty['logits'].shape == (0, 1008)


def test_batch_sizes_are_bounded():
  assert [inception._batch_for(n, 50, 1) for n in (1, 2, 3, 5, 17, 33, 50, 51, 1000)] == \
      [1, 2, 4, 8, 32, 50, 50, 50, 50]
  assert [inception._batch_for(n, 8, 4) for n in (1, 4, 5, 9)] == [4, 4, 8, 8]


# ----------------------------------------------------------------------------- features


def test_matches_pytorch_fid_reference(variables):
  """pool3 and logits of all fixture sets vs pytorch-fid in float64; batching, padding,
  grayscale and uint8 input on the same compiled network."""
  inputs = np.load(os.path.join(FIX, 'inputs.npz'))
  ref = np.load(os.path.join(FIX, 'outputs_v0.npz'))
  fn = inception.get_feature_fn(variables, batch_size=2)
  out = {}
  for s in SETS:
    x = inputs[s + '_f32']
    if s == 'large0_resized299':
      x = np.concatenate([x, x])  # batch 2 like the others: one compiled network
    out[s] = fn(x)
    n = len(ref[s + '_pool3_f64'])
    for key, size in (('pool3', 2048), ('logits', 1008)):
      got, want = out[s][key], ref[f'{s}_{key}_f64']
      assert got.dtype == np.float32 and got.shape == (len(x), size)
      err = np.abs(got[:n] - want).max()
      assert err <= TOL, (s, key, err)
  # the two copies of the resized image, and the resize of large[0] to it
  np.testing.assert_array_equal(out['large0_resized299']['pool3'][0],
                                out['large0_resized299']['pool3'][1])
  assert np.abs(out['large']['pool3'][0] - out['large0_resized299']['pool3'][0]).max() < 1e-4

  small = inputs['small_f32']
  # 3 images with batch 2: the last batch is padded; rows are independent of it
  part = fn(small[:3])
  for key in ('pool3', 'logits'):
    np.testing.assert_allclose(part[key], out['small'][key][:3], rtol=0, atol=1e-6)
  # uint8 is x / 255 (inputs small_f32 == small / 255 in float32)
  as_u8 = fn(inputs['small'][4:6])
  np.testing.assert_allclose(as_u8['pool3'], out['small']['pool3'][4:6], rtol=0, atol=1e-6)
  # grayscale (N, H, W, 1) is the same as its 3-channel repetition
  gray = small[:2, :, :, 1:2]
  np.testing.assert_allclose(fn(gray)['pool3'], fn(np.repeat(gray, 3, -1))['pool3'],
                             rtol=0, atol=1e-6)


def test_bfloat16_option(weights0):
  """bfloat16 convs: pool3 within the fixture README's emulated-bf16 error (0.084 on the
  large set; bound 0.3), and not float32 (error > 1e-3)."""
  inputs = np.load(os.path.join(FIX, 'inputs.npz'))
  ref = np.load(os.path.join(FIX, 'outputs_v0.npz'))
  fn = inception.get_feature_fn(inception.params_from_state_dict(weights0), dtype=jnp.bfloat16,
                                batch_size=2)
  out = fn(inputs['large_f32'])
  err = np.abs(out['pool3'] - ref['large_pool3_f64']).max()
  assert out['pool3'].dtype == np.float32 and 1e-3 < err < 0.3, err
