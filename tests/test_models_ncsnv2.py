"""NCSNv2 (ncsnv2_64/128/256): official parameter tree, numerics of a small model, errors."""
import importlib.util
import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from score_sde_pds.models import ncsnv2  # noqa: E402  (registers the models)
from score_sde_pds.models import utils as mutils  # noqa: E402

MANIFEST = os.path.join(ROOT, 'tests', 'fixtures', 'manifests', 've__ncsnv2__cifar10.json')


def load_config(name):
  """get_config() of configs/ve/ncsnv2/<name>.py, loaded by file path."""
  path = os.path.join(ROOT, 'configs', 've', 'ncsnv2', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'ncsnv2_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def abstract_init(config):
  """(model_state, params) of mutils.init_model as ShapeDtypeStructs (nothing computed)."""
  return jax.eval_shape(lambda rng: mutils.init_model(rng, config)[1:], jax.random.PRNGKey(0))


def flat_shapes(tree):
  return {k: list(v.shape) for k, v in flax.traverse_util.flatten_dict(tree, sep='/').items()}


def small_config(nf=16, image_size=32, name='ncsnv2_64', num_scales=10):
  config = load_config('cifar10')
  config.model.name = name
  config.model.nf = nf
  config.model.num_scales = num_scales
  config.data.image_size = image_size
  return config


# ----------------------------------------------------------------------------------
# 1. Official parameter tree
# ----------------------------------------------------------------------------------


def test_cifar10_tree_matches_official_manifest():
  manifest = json.load(open(MANIFEST))
  config = load_config('cifar10')
  assert config.model.name == manifest['model_name']
  state, params = abstract_init(config)
  got = flat_shapes(params)
  assert set(got) == set(manifest['params'])
  assert got == manifest['params']
  # InstanceNorm++ parameters are (1,1,1,C) arrays on every flax version.
  assert got == manifest['params_modern_flax']
  assert state == manifest['model_state'] == {}
  assert sum(int(np.prod(s)) for s in got.values()) == manifest['total_params']
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))


def test_cifar10_config_values_match_official():
  manifest = json.load(open(MANIFEST))
  config = load_config('cifar10').to_dict()
  for section, values in manifest['config_values'].items():
    if not isinstance(values, dict):
      assert config[section] == values, section
      continue
    for key, value in values.items():
      assert config[section][key] == value, f'{section}.{key}'


@pytest.mark.parametrize('name,model_name,size,n_res,n_ref', [
    ('celeba', 'ncsnv2_64', 64, 8, 4),
    ('bedroom', 'ncsnv2_128', 128, 10, 5),
])
def test_other_configs_full_size_shapes(name, model_name, size, n_res, n_ref):
  config = load_config(name)
  assert config.model.name == model_name and config.data.image_size == size
  assert config.sampling.predictor == 'none' and config.sampling.corrector == 'ald'
  assert config.training.continuous is False and config.training.sde == 'vesde'
  _, params = abstract_init(config)
  top = set(params)
  assert top == ({'Conv_0', 'Conv_1', 'InstanceNorm2dPlus_0'}
                 | {f'ResidualBlock_{i}' for i in range(n_res)}
                 | {f'RefineBlock_{i}' for i in range(n_ref)})
  model = mutils.get_model(model_name)(config=config)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((2,), jnp.int32)
  out = jax.eval_shape(lambda p, a, b: model.apply({'params': p}, a, b), params, x, y)
  assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32


def test_registered_names():
  names = mutils.registered_models()
  assert {'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256'} <= set(names)
  assert mutils.get_model('ncsnv2_64') is ncsnv2.NCSNv2
  assert ncsnv2.get_network_name(32) == 'ncsnv2_64'
  assert ncsnv2.get_network_name(128) == 'ncsnv2_128'
  assert ncsnv2.get_network_name(256) == 'ncsnv2_256'


# ----------------------------------------------------------------------------------
# 2. A small model, for real
# ----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def small():
  config = small_config()
  model, state, params = mutils.init_model(jax.random.PRNGKey(0), config)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 3))
  return config, model, state, params, x


def test_small_output_is_divided_by_sigma(small):
  config, model, state, params, x = small
  sigmas = mutils.get_sigmas(config)
  assert sigmas.shape == (config.model.num_scales,) and np.all(np.diff(sigmas) < 0)
  labels = jnp.array([0, 3, 9], jnp.int32)
  out = np.asarray(model.apply({'params': params}, x, labels))
  # The network is not noise-conditional, so without the division its output does not
  # depend on the labels: out[i] * sigmas[labels[i]] must equal it for every label.
  raw_config = small_config()
  raw_config.model.scale_by_sigma = False
  raw_model = mutils.get_model('ncsnv2_64')(config=raw_config)
  raw = np.asarray(raw_model.apply({'params': params}, x, labels))
  raw_other = np.asarray(raw_model.apply({'params': params}, x, labels[::-1]))
  np.testing.assert_array_equal(raw, raw_other)
  for i, label in enumerate(np.asarray(labels)):
    np.testing.assert_allclose(out[i] * sigmas[label], raw[i], rtol=1e-5,
                               atol=1e-6 * np.abs(raw[i]).max())


def test_small_uncentered_input_is_mapped_to_2x_minus_1(small):
  config, model, state, params, x = small
  labels = jnp.zeros((3,), jnp.int32)
  centered = small_config()
  centered.data.centered = True
  out_u = model.apply({'params': params}, x, labels)
  out_c = mutils.get_model('ncsnv2_64')(config=centered).apply({'params': params}, 2 * x - 1,
                                                              labels)
  np.testing.assert_allclose(np.asarray(out_u), np.asarray(out_c), rtol=1e-6, atol=1e-6)


def test_small_bfloat16_compute(small):
  _, model32, _, params, x = small
  config = small_config()
  config.model.dtype = 'bfloat16'
  model = mutils.get_model('ncsnv2_64')(config=config)
  labels = jnp.zeros((3,), jnp.int32)
  out = model.apply({'params': params}, x, labels)
  ref = model32.apply({'params': params}, x, labels)
  assert out.dtype == jnp.float32
  rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
  assert 0 < rel < 0.1
  _, p16 = abstract_init(config)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(p16))


@pytest.mark.parametrize('name,n_res,n_ref', [('ncsnv2_64', 8, 4), ('ncsnv2_128', 10, 5),
                                              ('ncsnv2_256', 12, 6)])
def test_small_variants_shapes(name, n_res, n_ref):
  config = small_config(nf=4, image_size=16, name=name)
  _, params = abstract_init(config)
  assert {k for k in params if k.startswith('ResidualBlock_')} == {
      f'ResidualBlock_{i}' for i in range(n_res)}
  assert {k for k in params if k.startswith('RefineBlock_')} == {
      f'RefineBlock_{i}' for i in range(n_ref)}
  # Only the last RefineBlock has the 3-unit output RCU (Conv_0..Conv_5).
  last = params[f'RefineBlock_{n_ref - 1}']['RCUBlock_2']
  assert sorted(last) == [f'Conv_{i}' for i in range(6)]
  model = mutils.get_model(name)(config=config)
  out = jax.eval_shape(lambda p, a, b: model.apply({'params': p}, a, b), params,
                       jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32),
                       jax.ShapeDtypeStruct((2,), jnp.int32))
  assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32


def test_instance_norm_plus_formula():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 3)) * 3. + 1.
  norm = ncsnv2.InstanceNorm2dPlus()
  p = jax.eval_shape(norm.init, jax.random.PRNGKey(1), x)['params']
  assert {k: v.shape for k, v in p.items()} == {k: (1, 1, 1, 3) for k in ('alpha', 'beta', 'gamma')}
  p = {'alpha': jnp.full((1, 1, 1, 3), 0.7), 'gamma': jnp.full((1, 1, 1, 3), 1.3),
       'beta': jnp.full((1, 1, 1, 3), 0.2)}
  out = norm.apply({'params': p}, x)
  xn = np.asarray(x, np.float64)
  mu = xn.mean(axis=(1, 2))                                        # (B, C)
  mu_plus = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, keepdims=True) + 1e-5)
  ref = (xn - mu[:, None, None]) / np.sqrt(xn.var(axis=(1, 2))[:, None, None] + 1e-5)
  ref = 1.3 * (ref + 0.7 * mu_plus[:, None, None]) + 0.2
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------
# 3. Clear errors
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize('name,size', [('ncsnv2_64', 33), ('ncsnv2_128', 30),
                                       ('ncsnv2_256', 36), ('ncsnv2_64', 0)])
def test_unsupported_image_size_names_config_key(name, size):
  config = small_config(nf=4, image_size=size, name=name)
  with pytest.raises(ValueError, match=f'config.data.image_size={size}'):
    abstract_init(config)


def test_input_not_matching_image_size():
  config = small_config(nf=4)
  model = mutils.get_model('ncsnv2_64')(config=config)
  with pytest.raises(ValueError, match='config.data.image_size=32'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)),
                   jnp.zeros((1,), jnp.int32))


def test_network_name_for_unknown_size():
  with pytest.raises(ValueError, match='config.data.image_size=512'):
    ncsnv2.get_network_name(512)


def test_float_labels_rejected():
  config = small_config(nf=4)
  model = mutils.get_model('ncsnv2_64')(config=config)
  with pytest.raises(TypeError, match='integer'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                   jnp.zeros((1,), jnp.float32))
