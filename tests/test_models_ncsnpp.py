"""NCSN++ / DDPM++ / DDPM: official parameter trees, official numerics, dtypes, configs.

Fixtures (copied from shared/fixtures/score_sde_jax):
  manifests/<sde>__<config>.json   param paths/shapes of score_sde's models for the
                                   paper configs (+ the config values they came from);
  score_sde_jax/tiny_ncsnpp*       a tiny NCSN++ built and run by the official code.
Large models are only traced with jax.eval_shape (nothing is allocated).
"""
import importlib.util
import json
import os
import re
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from score_sde_pds.models import ddpm  # noqa: E402,F401  (registers 'ddpm')
from score_sde_pds.models import ncsnpp  # noqa: E402,F401  (registers 'ncsnpp')
from score_sde_pds.models import layerspp  # noqa: E402
from score_sde_pds.models import up_or_down_sampling as updown  # noqa: E402
from score_sde_pds.models import utils as mutils  # noqa: E402

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
MANIFESTS = os.path.join(FIXTURES, 'manifests')
TINY = os.path.join(FIXTURES, 'score_sde_jax')

# config path -> parameter count of score_sde's model (REFERENCE.md section 2).
OFFICIAL_SIZES = {
    've/cifar10_ncsnpp_continuous': 62_758_915,
    've/cifar10_ncsnpp_deep_continuous': 107_587_075,
    've/church_ncsnpp_continuous': 65_574_549,
    've/bedroom_ncsnpp_continuous': 65_574_549,
    've/ffhq_ncsnpp_continuous': 105_785_896,
    'vp/cifar10_ddpmpp_continuous': 61_804_419,
}
_GN_PARAM = re.compile(r'(^|/)GroupNorm_\d+/(scale|bias)$')


def load_config(rel_path):
  """get_config() of configs/<rel_path>.py, loaded by file path."""
  path = os.path.join(ROOT, 'configs', rel_path + '.py')
  spec = importlib.util.spec_from_file_location('cfg_' + rel_path.replace('/', '_'), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def flat_shapes(tree):
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(tree, sep='/').items()}


def abstract_params(config):
  """Param tree of mutils.init_model as ShapeDtypeStructs (nothing computed)."""
  return jax.eval_shape(lambda rng: mutils.init_model(rng, config)[2], jax.random.PRNGKey(0))


def tiny_config(**model_overrides):
  with open(os.path.join(TINY, 'tiny_ncsnpp_config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  for k, v in model_overrides.items():
    config.model[k] = v
  return config


def official_to_modern(params):
  """Reshape only */GroupNorm_k/{scale,bias} from [1,1,1,C] to (C,)."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  out = {k: (np.reshape(v, (v.shape[-1],)) if _GN_PARAM.search(k) else v) for k, v in flat.items()}
  return flax.traverse_util.unflatten_dict(out, sep='/')


@pytest.fixture(scope='module')
def tiny():
  """(config, params, io) of the official tiny NCSN++."""
  with open(os.path.join(TINY, 'tiny_ncsnpp.msgpack'), 'rb') as f:
    state = flax.serialization.msgpack_restore(f.read())
  params = official_to_modern(state['params_ema'])
  io = dict(np.load(os.path.join(TINY, 'tiny_ncsnpp_io.npz')))
  return tiny_config(), params, io


def jitted_apply(config):
  """jit of model.apply(params, x, labels, train=False) for `config`."""
  model = mutils.get_model(config.model.name)(config=config)
  return jax.jit(lambda p, x, labels: model.apply({'params': p}, x, labels, train=False))


@pytest.fixture(scope='module')
def tiny_outputs(tiny):
  """Network outputs on the fixture inputs with float32 and bfloat16 compute."""
  config, params, io = tiny
  out32 = jitted_apply(config)(params, io['x'], io['labels'])
  out16 = jitted_apply(tiny_config(dtype='bfloat16'))(params, io['x'], io['labels'])
  return np.asarray(out32), out16


def _rel_l2(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ---------------------------------------------------------------------------------------
# 1. Parameter trees of the paper configs equal score_sde's.

@pytest.mark.parametrize('rel_path', sorted(OFFICIAL_SIZES))
def test_param_tree_matches_official_manifest(rel_path):
  with open(os.path.join(MANIFESTS, rel_path.replace('/', '__') + '.json')) as f:
    manifest = json.load(f)
  config = load_config(rel_path)
  ours = flat_shapes(abstract_params(config))
  official = {k: tuple(v) for k, v in manifest['params'].items()}

  assert set(ours) == set(official), (sorted(set(ours) - set(official))[:5],
                                      sorted(set(official) - set(ours))[:5])
  for path, shape in official.items():
    if _GN_PARAM.search(path):  # official files: [1,1,1,C]; current flax: (C,)
      assert len(shape) == 4 and shape[:3] == (1, 1, 1), path
      assert ours[path] == (shape[-1],), path
    else:
      assert ours[path] == shape, path
  assert ours == {k: tuple(v) for k, v in manifest['params_modern_flax'].items()}

  n_params = sum(int(np.prod(s)) for s in ours.values())
  assert n_params == OFFICIAL_SIZES[rel_path] == manifest['total_params']


def _as_plain(v):
  if isinstance(v, tuple):
    return list(v)
  return v


@pytest.mark.parametrize('rel_path', sorted(OFFICIAL_SIZES))
def test_config_values_match_official(rel_path):
  """Every value the manifest records from score_sde's config is the same in ours."""
  with open(os.path.join(MANIFESTS, rel_path.replace('/', '__') + '.json')) as f:
    official = json.load(f)['config_values']
  config = load_config(rel_path).to_dict()
  skip = {('device',), ('data', 'tfrecords_path'), ('optim', 'amsgrad')}  # torch / user path
  mismatches = []
  for section, values in official.items():
    if (section,) in skip:
      continue
    if not isinstance(values, dict):
      if config.get(section) != values:
        mismatches.append((section, config.get(section), values))
      continue
    for key, value in values.items():
      if (section, key) in skip:
        continue
      ours = _as_plain(config[section].get(key, '<missing>'))
      if ours != value:
        mismatches.append((f'{section}.{key}', ours, value))
  assert not mismatches, mismatches


def test_ddpm_cifar10_param_count():
  """Original DDPM on CIFAR-10 (score_sde configs/vp/ddpm/cifar10.py model values)."""
  config = load_config('vp/cifar10_ddpmpp_continuous')
  m = config.model
  m.name = 'ddpm'
  m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 128, (1, 2, 2, 2), 2, (16,)
  m.resamp_with_conv, m.conditional, m.scale_by_sigma = True, True, False
  shapes = flat_shapes(abstract_params(config))
  # 35,218,947 = what score_sde's models/ddpm.py creates for this config.
  assert sum(int(np.prod(s)) for s in shapes.values()) == 35_218_947
  assert {'Conv_0/kernel', 'Dense_0/kernel', 'Dense_1/kernel', 'GroupNorm_0/scale',
          'ResnetBlockDDPM_2/NIN_0/W', 'AttnBlock_0/NIN_3/W',
          'Downsample_0/Conv_0/kernel', 'Upsample_0/Conv_0/kernel'} <= set(shapes)


# ---------------------------------------------------------------------------------------
# 2. Numerics of the official tiny NCSN++.

def test_tiny_fixture_matches_official_output(tiny, tiny_outputs):
  config, params, io = tiny
  assert 'dtype' not in config.model  # the official config has no dtype key
  with open(os.path.join(TINY, 'tiny_ncsnpp_manifest.json')) as f:
    manifest = json.load(f)
  assert flat_shapes(params) == {k: tuple(v) for k, v in manifest['params_modern_flax'].items()}
  out = tiny_outputs[0]
  assert out.shape == io['out'].shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, io['out'], rtol=1e-4, atol=1e-4 * np.abs(io['out']).max())
  # VE continuous: the network output is the score (labels are the sigmas).
  np.testing.assert_allclose(io['labels'], io['sigmas'])
  np.testing.assert_allclose(out, io['score'], rtol=1e-4, atol=1e-4 * np.abs(io['out']).max())


def test_tiny_fixture_through_score_fn(tiny):
  """The lead's get_score_fn on a VESDE gives the official score_fn output."""
  from score_sde_pds import sde_lib
  config, params, io = tiny
  model = mutils.get_model('ncsnpp')(config=config)
  sde = sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                      N=config.model.num_scales)
  score_fn = mutils.get_score_fn(sde, model, params, {}, train=False, continuous=True)
  score = jax.jit(score_fn)(jnp.asarray(io['x']), jnp.asarray(io['t']))
  np.testing.assert_allclose(score, io['score'], rtol=1e-4,
                             atol=1e-4 * np.abs(io['score']).max())


TORCH_FIXTURE = os.path.join(FIXTURES, 'score_sde_pytorch')


@pytest.mark.skipif(not os.path.exists(
    os.path.join(TORCH_FIXTURE, 'tiny_ncsnpp_ffhq_style_flax_params_ema.npz')),
                    reason='score_sde_pytorch fixture not present')
def test_tiny_pytorch_fixture_matches():
  """score_sde_pytorch's tiny NCSN++ (EMA weights already in the JAX tree) gives the
  PyTorch output (NCHW there, NHWC here)."""
  params = np.load(os.path.join(TORCH_FIXTURE, 'tiny_ncsnpp_ffhq_style_flax_params_ema.npz'))
  params = official_to_modern(flax.traverse_util.unflatten_dict(dict(params), sep='/'))
  with open(os.path.join(TORCH_FIXTURE, 'tiny_ncsnpp_ffhq_style_config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  io = np.load(os.path.join(TORCH_FIXTURE, 'tiny_ncsnpp_ffhq_style_io.npz'))
  apply = jitted_apply(config)
  for x_key, out_key in (('x', 'out'), ('x_noisy', 'out_noisy')):
    out = apply(params, io[x_key].transpose(0, 2, 3, 1), io['labels'])
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), io[out_key], rtol=1e-4,
                               atol=1e-5 * np.abs(io[out_key]).max())


# ---------------------------------------------------------------------------------------
# 3. bfloat16 compute.

BF16_MAX_REL_L2 = 0.05  # observed ~0.016 on the tiny fixture


def test_bfloat16_close_to_float32(tiny_outputs):
  out32, out16 = tiny_outputs
  assert out16.dtype == jnp.float32
  assert np.all(np.isfinite(out16))
  for i in range(out16.shape[0]):
    assert _rel_l2(out16[i], out32[i]) < BF16_MAX_REL_L2
  # bf16 really changes the computation (it is not silently float32).
  assert _rel_l2(out16, out32) > 1e-5


def test_bfloat16_params_stay_float32():
  config = tiny_config(dtype='bfloat16')
  params = abstract_params(config)
  assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------------------------------
# 4. Real init of small models; jit and eager agree.

def _small_config(variant):
  """(config, labels (2,)) of a small model of each family."""
  if variant == 'ncsnpp':  # FFHQ-style tiny NCSN++ (fourier, sigmas as labels)
    return tiny_config(), jnp.array([0.05, 12.0])
  config = load_config('vp/cifar10_ddpmpp_continuous')
  m = config.model
  if variant == 'ddpmpp':  # CIFAR-10 DDPM++ flags, shrunk
    m.nf, m.ch_mult, m.num_res_blocks = 16, (1, 2), 1
    return config, jnp.array([10.0, 950.0])
  m.name, m.nf, m.ch_mult, m.num_res_blocks = 'ddpm', 32, (1, 2), 1  # original DDPM
  return config, jnp.array([10, 950])


def _perturb(params, seed=2, scale=0.02):
  """Adds numpy noise so zero-initialised (init_scale 0) layers are not trivially zero."""
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda p: np.asarray(p) + scale * rs.randn(*p.shape).astype(np.float32),
                      params)


# Typed keys with the 'unsafe_rbg' PRNG compile much faster on CPU than threefry; the
# model code is agnostic to the PRNG implementation.
def _key(seed):
  return jax.random.key(seed, impl='unsafe_rbg')


def test_small_init_jit_and_eager_agree():
  """Real init of the tiny NCSN++ through mutils.init_model (jitted to keep the test
  fast): the official parameter tree, a finite non-trivial output, dropout in training."""
  config, labels = _small_config('ncsnpp')
  state, params = jax.jit(lambda rng: mutils.init_model(rng, config)[1:])(_key(0))
  assert state == {}
  assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  with open(os.path.join(TINY, 'tiny_ncsnpp_manifest.json')) as f:
    manifest = json.load(f)
  assert flat_shapes(params) == {k: tuple(v) for k, v in manifest['params_modern_flax'].items()}
  params = _perturb(params)
  model = mutils.get_model(config.model.name)(config=config)
  x = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32)

  jitted = jitted_apply(config)(params, x, labels)
  assert jitted.shape == x.shape and jitted.dtype == jnp.float32
  assert np.all(np.isfinite(jitted)) and float(jnp.abs(jitted).max()) > 0
  # (eager op-by-op application is not compared here: it took ~40 s and tests XLA's
  # re-association, not this code; the official-output fixtures pin the numbers)

  # train=True uses dropout (config.model.dropout = 0.1) with a 'dropout' rng.
  train_apply = jax.jit(lambda p, x, labels, rng: model.apply(
      {'params': p}, x, labels, train=True, rngs={'dropout': rng}))
  out_train = train_apply(params, x, labels, _key(3))
  assert out_train.shape == x.shape and not np.allclose(out_train, jitted)


@pytest.mark.parametrize('variant', ['ddpmpp', 'ddpm'])
def test_small_ddpmpp_and_ddpm_apply(variant):
  """DDPM++ (ncsnpp with positional embedding, no FIR) and the original DDPM run under
  jit with random params of the init shapes (bfloat16 too)."""
  config, labels = _small_config(variant)
  shapes = abstract_params(config)
  params = _perturb(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), scale=0.05)
  x = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32) * 2 - 1
  out = jitted_apply(config)(params, x, labels)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and float(jnp.abs(out).max()) > 0


# ---------------------------------------------------------------------------------------
# PDS paper configs.

@pytest.mark.parametrize('rel_path,n_steps,freq,space', [
    ('ve/ffhq_ncsnpp', 66, 'pds_stats/ffhq_freq.npy', 'pds_stats/ffhq_space.npy'),
    ('ve/bedroom_ncsnpp', 166, 'pds_stats/bedroom_freq.npy', ''),
    ('ve/church_ncsnpp', 166, 'pds_stats/church_freq.npy', ''),
    ('ve/cifar10_ncsnpp_deep', 100, 'pds_stats/cifar10_freq.npy', ''),
])
def test_pds_paper_configs(rel_path, n_steps, freq, space):
  config = load_config(rel_path)
  base = load_config(rel_path.replace('_deep', '_deep_continuous') if 'deep' in rel_path
                     else rel_path + '_continuous')
  assert int(config.model.num_scales / config.sampling.speed_up) == n_steps
  pds = config.sampling.pds
  assert pds.enabled and pds.alpha == 5. and pds.filter == 'statistics'
  assert (pds.freq_stats, pds.space_stats) == (freq, space)
  assert config.model.to_dict() == base.model.to_dict()  # the official model, unchanged
  assert config.training.sde == 'vesde'
  assert (config.sampling.predictor, config.sampling.corrector) == ('reverse_diffusion',
                                                                    'langevin')
  # a PDS config has exactly the keys of the common defaults (plus the dataset's own)
  from configs import default_configs
  for section, values in default_configs.get_default_configs().items():
    if isinstance(values, ml_collections.ConfigDict):
      assert set(values.keys()) <= set(config[section].keys()), section


def test_cifar10_t200_is_speed_up_5():
  config = load_config('ve/cifar10_ncsnpp_deep')
  config.sampling.speed_up = 5
  assert int(config.model.num_scales / config.sampling.speed_up) == 200


# ---------------------------------------------------------------------------------------
# FIR resampling primitives.

def _upfirdn_reference(x, k, up, down, p0, p1):
  """Direct numpy definition: zero insertion, pad/crop, true 2-D convolution, subsample."""
  n, h, w, c = x.shape
  z = np.zeros((n, h * up, w * up, c), x.dtype)
  z[:, ::up, ::up, :] = x

  def pad_axis(a, axis):
    if p0 > 0:
      a = np.concatenate([np.zeros_like(a.take(range(p0), axis=axis)), a], axis=axis)
    elif p0 < 0:
      a = a.take(range(-p0, a.shape[axis]), axis=axis)
    if p1 > 0:
      a = np.concatenate([a, np.zeros_like(a.take(range(p1), axis=axis))], axis=axis)
    elif p1 < 0:
      a = a.take(range(0, a.shape[axis] + p1), axis=axis)
    return a

  z = pad_axis(pad_axis(z, 1), 2)
  kh, kw = k.shape
  oh, ow = z.shape[1] - kh + 1, z.shape[2] - kw + 1
  out = np.zeros((n, oh, ow, c), np.float64)
  kf = k[::-1, ::-1]
  for i in range(kh):
    for j in range(kw):
      out += kf[i, j] * z[:, i:i + oh, j:j + ow, :]
  return out[:, ::down, ::down, :]


@pytest.mark.parametrize('up,down,p0,p1', [(1, 1, 0, 0), (2, 1, 2, 1), (1, 2, 1, 2),
                                           (3, 1, 1, 1), (2, 2, -1, 3)])
def test_upfirdn2d_matches_definition(up, down, p0, p1):
  rng = np.random.RandomState(0)
  x = rng.randn(2, 7, 7, 3).astype(np.float32)
  k = rng.rand(3, 4).astype(np.float32)  # asymmetric: catches flips and offsets
  ours = updown.upfirdn2d(jnp.asarray(x), k, up=up, down=down, pad=(p0, p1))
  np.testing.assert_allclose(ours, _upfirdn_reference(x, k, up, down, p0, p1), rtol=1e-5,
                             atol=1e-5)


def test_fir_resampling_properties():
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(2, 8, 8, 4).astype(np.float32))
  # default kernels reduce to nearest upsampling / box downsampling
  np.testing.assert_allclose(updown.upsample_2d(x), updown.naive_upsample_2d(x), atol=1e-6)
  np.testing.assert_allclose(updown.downsample_2d(x), updown.naive_downsample_2d(x), atol=1e-6)
  # FIR [1,3,3,1] keeps constants away from the border and gives the right shapes
  ones = jnp.ones((1, 16, 16, 2))
  up = updown.upsample_2d(ones, (1, 3, 3, 1))
  down = updown.downsample_2d(ones, (1, 3, 3, 1))
  assert up.shape == (1, 32, 32, 2) and down.shape == (1, 8, 8, 2)
  np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1., atol=1e-6)
  np.testing.assert_allclose(down[:, 1:-1, 1:-1], 1., atol=1e-6)
  # fused conv variants: a 3x3 kernel with only a centre tap of the identity reduces
  # conv_downsample_2d to FIR downsampling (same padding) and keeps shapes for up.
  w = np.zeros((3, 3, 4, 4), np.float32)
  w[1, 1] = np.eye(4)
  fused_down = updown.conv_downsample_2d(x, jnp.asarray(w), k=(1, 3, 3, 1))
  np.testing.assert_allclose(fused_down, updown.downsample_2d(x, (1, 3, 3, 1)), atol=1e-5)
  assert updown.upsample_conv_2d(x, jnp.asarray(w), k=(1, 3, 3, 1)).shape == (2, 16, 16, 4)


def test_resampling_modules_param_names():
  x = jnp.ones((1, 8, 8, 4))
  for cls, kwargs in [(layerspp.Downsample, {}), (layerspp.Upsample, {})]:
    module = cls(out_ch=6, with_conv=True, fir=True, **kwargs)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)['params']
    assert flat_shapes(params) == {'Conv2d_0/weight': (3, 3, 4, 6), 'Conv2d_0/bias': (6,)}
    module = cls(out_ch=6, with_conv=True, fir=False, **kwargs)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)['params']
    assert flat_shapes(params) == {'Conv_0/kernel': (3, 3, 4, 6), 'Conv_0/bias': (6,)}
