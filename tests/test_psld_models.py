"""Augmented-space (CLD / PSLD) networks, hybrid score matching and the PSLD converter.

Oracles: the Gaussian-field model (models/analytic.py) gives the exact score of the
augmented state, so the minimiser of the HSM loss and its minimum are known in closed
form per Fourier mode. Fixtures (tests/fixtures/psld/, made by running the official PSLD
network definition under torch on CPU, random weights):
  tiny_psld_ncsnpp.ckpt            torch.save of a Lightning-1.9-style dict: state_dict with
                                   score_fn.* (raw, after one Adam step) and ema_score_fn.*
                                   (different on purpose), loops/callbacks/optimizer_states/
                                   lr_schedulers (loops names torch.float32 / torch.device);
  tiny_psld_ncsnpp_io.npz          z (B,2C,H,W), t (B,), out_ema, out_model (official outputs);
  tiny_psld_ncsnpp_config.json     its score_fn config;
  cifar10_psld_ncsnpp_manifest.json  names/shapes of the official CIFAR-10 PSLD network.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.psld import cifar10_ncsnpp as psld_cifar10
from configs.psld import mnist_ncsnpp_small as psld_mnist
from score_sde_pds import checkpoints, losses, psld_checkpoints, sde_lib
from score_sde_pds.models import analytic
from score_sde_pds.models import utils as mutils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, 'tests', 'fixtures', 'psld')


def tiny_config(sde='psld', C=1, size=8):
  config = psld_mnist.get_config()
  config.training.sde = sde
  config.data.image_size = size
  config.data.num_channels = C
  m = config.model
  m.nf = 8
  m.ch_mult = (1, 2)
  m.num_res_blocks = 1
  m.attn_resolutions = ()
  m.dropout = 0.
  return config


def gaussian_field(shape=(8, 8, 1)):
  s = analytic.power_law_spectrum(shape, beta=2., k0=1., variance=0.25)
  return analytic.GaussianField(spectrum=jnp.asarray(s, jnp.float32),
                                mean=jnp.full((shape[-1],), 0.1, jnp.float32))


SDES = {'psld': sde_lib.PSLDSDE(), 'cld': sde_lib.CLDSDE()}


# ----------------------------------------------------------------------------- HSM loss


def hsm_expected_minimum(sde, field, t, momentum_only):
  """E[loss] of the exact predictor E[eps | z_t] (per-entry mean), host float64.

  eps and z_t are jointly Gaussian; per Fourier mode k the 2-vector F[z_t](k) has covariance
  H W C_k with C_k = Sigma_t + s(k) Psi e1 e1^T Psi^T and Cov(eps, z_t) = L_t^T, so
  Cov(eps | z_t) = I - L^T C_k^{-1} L per mode (Parseval with the unitary DFT).
  """
  hs = sde_lib.host_sde(sde)
  _, cov = field.mode_moments(hs, t)                      # (H,W,C,2,2)
  L = hs.chol_block(np.asarray(t, np.float64))
  cond = np.eye(2) - L.T @ np.linalg.inv(cov) @ L           # (H,W,C,2,2)
  if momentum_only:
    return float(np.mean(cond[..., 1, 1]))
  return float(np.mean(np.trace(cond, axis1=-2, axis2=-1)) / 2.)


@pytest.mark.parametrize('name,t', [('psld', 0.15), ('cld', 0.3)])
def test_hsm_minimiser_is_the_exact_augmented_eps(name, t):
  sde = SDES[name]
  field = gaussian_field()
  momentum_only = mutils.sde_has_no_data_noise(sde)
  assert momentum_only == (name == 'cld')
  n = 512
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = field.sample(k1, n)
  noise = jax.random.normal(k2, (n, 8, 8, 2))
  ts = jnp.full((n,), t)
  eps_fn = mutils.get_eps_fn(sde, field, field, {})

  def loss_at(a):
    return np.asarray(losses.hsm_losses(sde, lambda z, tt, r: a * eps_fn(z, tt, r), x0, ts,
                                        noise, reduce_mean=True))

  l0, lm, lp = loss_at(1.), loss_at(0.9), loss_at(1.1)
  # Expected minimum in closed form, within 4 standard errors of the Monte-Carlo mean.
  want = hsm_expected_minimum(sde, field, t, momentum_only)
  se = l0.std() / np.sqrt(n)
  assert abs(l0.mean() - want) < 4 * se + 1e-3 * want, (l0.mean(), want, se)
  assert want < 0.9   # the exact predictor explains a real part of eps (not a vacuous check)
  # The loss is an exact quadratic in a: its minimiser over the scale a must be 1.
  curv = lp.mean() - 2 * l0.mean() + lm.mean()
  a_star = 1. - 0.1 * (lp.mean() - lm.mean()) / (2. * curv)
  assert abs(a_star - 1.) < 0.03, a_star
  assert l0.mean() < min(lm.mean(), lp.mean())


def test_hsm_loss_fn_draws_t_and_noise_as_documented():
  sde = SDES['psld']
  field = gaussian_field()
  x0 = field.sample(jax.random.PRNGKey(1), 6)
  rng = jax.random.PRNGKey(2)
  loss_fn = losses.get_loss_fn(sde, field, train=False, reduce_mean=True)
  got, _ = loss_fn(rng, field, {}, x0)
  t_rng, z_rng, _ = losses.loss_rngs(rng)
  t = jax.random.uniform(t_rng, (6,), minval=1e-5, maxval=1.)
  noise = jax.random.normal(z_rng, (6, 8, 8, 2))
  want = losses.hsm_losses(sde, mutils.get_eps_fn(sde, field, field, {}), x0, t, noise, True)
  np.testing.assert_allclose(got, jnp.mean(want), rtol=1e-6)
  with pytest.raises(ValueError, match='likelihood_weighting'):
    losses.get_loss_fn(sde, field, train=True, likelihood_weighting=True)


# ----------------------------------------------------------------------------- score function


class OracleNet:
  """Stands in for a network: the exact epsilon at label t (so labels must equal t)."""
  is_analytic = False

  def __init__(self, sde, field, momentum_only):
    self.sde, self.field, self.momentum_only = sde, field, momentum_only

  def apply(self, variables, z, labels, train=False, rngs=None):
    eps = self.sde.score_to_eps(self.field.score(self.sde, z, labels), labels)
    return eps[..., eps.shape[-1] // 2:] if self.momentum_only else eps


@pytest.mark.parametrize('name', ['psld', 'cld'])
def test_score_fn_of_an_eps_network_is_the_augmented_score(name):
  sde = SDES[name]
  field = gaussian_field()
  momentum_only = name == 'cld'
  score_fn = mutils.get_score_fn(sde, OracleNet(sde, field, momentum_only), {}, {})
  z = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 2)) * 0.7
  t = jnp.asarray([0.9, 0.4, 0.05, 2e-3])
  got = np.asarray(score_fn(z, t))
  want = np.asarray(field.score(sde, z, t))
  assert got.shape == (4, 8, 8, 2)
  if not momentum_only:
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
  else:
    # eps_m gives the momentum score exactly; the data score is 0 (x gets no noise, so the
    # reverse drift G G^T s only reads s_m).
    np.testing.assert_allclose(got[..., 1:], want[..., 1:], rtol=2e-3,
                               atol=2e-3 * np.abs(want[..., 1:]).max())
    np.testing.assert_array_equal(got[..., :1], 0.)
    gg = np.asarray(sde.diffusion_block(t))
    np.testing.assert_allclose(np.asarray(sde_lib.apply_block(gg, got)),
                               np.asarray(sde_lib.apply_block(gg, want)), rtol=2e-3, atol=1e-3)


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize('name,sde,out', [('ncsnpp', 'psld', 6), ('ncsnpp', 'cld', 3),
                                          ('ddpm', 'psld', 6)])
def test_network_channels(name, sde, out):
  """[x; m] in (2C channels); out 2C, or C (momentum eps) for CLD. The non-augmented trees
  and outputs are checked against the official ones in test_models_ncsnpp.py."""
  config = tiny_config(sde, C=3)
  config.model.name = name
  if name == 'ddpm':
    config.model.nf = 32         # DDPM's GroupNorm has 32 groups
  shapes = checkpoints.model_param_shapes(config)
  assert shapes[('Conv_0', 'kernel')][2] == 6
  model = mutils.get_model(name)(config=config)
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
                        checkpoints._unflatten(list(shapes.items())),
                        is_leaf=lambda v: isinstance(v, tuple))
  x = jax.ShapeDtypeStruct((2, 8, 8, mutils.input_channels(config)), jnp.float32)
  y = jax.eval_shape(lambda p, x: model.apply({'params': p}, x, jnp.ones((2,)) * 0.5,
                                              train=False), params, x)
  assert y.shape == (2, 8, 8, out)


def test_augmented_config_errors_name_the_key():
  config = tiny_config()
  config.data.centered = False
  with pytest.raises(ValueError, match='config.data.centered'):
    mutils.check_model_config(config)
  config = tiny_config()
  config.model.scale_by_sigma = True
  with pytest.raises(ValueError, match='config.model.scale_by_sigma'):
    mutils.init_model(jax.random.PRNGKey(0), config)


def test_tiny_psld_network_learns():
  config = tiny_config()
  config.optim.lr = 3e-3
  config.optim.warmup = 0
  sde, _ = sde_lib.get_sde(config, N=1000)
  model, states, params = mutils.init_model(jax.random.PRNGKey(0), config)
  opt = losses.get_optimizer(config)
  state = losses.init_state(params, states, opt, 0.9, jax.random.PRNGKey(0))
  step = jax.jit(losses.get_step_fn(sde, model, True, opt, reduce_mean=True))
  evaluate = jax.jit(lambda p, r, x: losses.get_hsm_loss_fn(sde, model, False)(r, p, {}, x)[0])
  field = gaussian_field()
  data = field.sample(jax.random.PRNGKey(5), 256)
  eval_x = field.sample(jax.random.PRNGKey(6), 256)
  eval_keys = jax.random.split(jax.random.PRNGKey(7), 4)

  def eval_loss(p):
    return float(np.mean([evaluate(p, k, eval_x) for k in eval_keys]))

  before = eval_loss(state.params)
  for k in range(60):
    batch = data[(k * 32) % 256:(k * 32) % 256 + 32]
    state, _ = step(state, batch, jax.random.PRNGKey(100 + k))
  after = eval_loss(state.params)
  assert before > 0.9          # zero-initialised output: loss ~ E eps^2 = 1
  assert after < 0.8 * before, (before, after)


# ----------------------------------------------------------------------------- converter


def fixture_config():
  with open(os.path.join(FIX, 'tiny_psld_ncsnpp_config.json')) as f:
    spec = json.load(f)
  sf = spec['score_fn']
  config = tiny_config('psld', C=spec['num_channels'], size=spec['image_size'])
  m = config.model
  for key in ('nf', 'num_res_blocks', 'dropout', 'resamp_with_conv', 'fir', 'skip_rescale',
              'resblock_type', 'progressive', 'progressive_input', 'progressive_combine',
              'embedding_type', 'init_scale', 'fourier_scale', 'nonlinearity'):
    with m.ignore_type():
      m[key] = sf[key]
  m.ch_mult = tuple(sf['ch_mult'])
  m.attn_resolutions = tuple(sf['attn_resolutions'])
  m.fir_kernel = list(sf['fir_kernel'])
  m.conditional = sf['noise_cond']
  return config


@pytest.mark.parametrize('which,key', [('ema', 'out_ema'), ('model', 'out_model')])
def test_official_psld_checkpoint_reproduces_the_official_network(which, key):
  config = fixture_config()
  ckpt = os.path.join(FIX, 'tiny_psld_ncsnpp.ckpt')
  assert psld_checkpoints.is_psld_file(ckpt)
  params = checkpoints.restore_official(ckpt, config, which=which)
  io = np.load(os.path.join(FIX, 'tiny_psld_ncsnpp_io.npz'))
  model = mutils.get_model('ncsnpp')(config=config)
  z = jnp.asarray(io['z'].transpose(0, 2, 3, 1))
  out = model.apply({'params': params}, z, jnp.asarray(io['t']), train=False)
  want = io[key].transpose(0, 2, 3, 1)
  other = io['out_model' if key == 'out_ema' else 'out_ema'].transpose(0, 2, 3, 1)
  scale = np.abs(want).max()
  np.testing.assert_allclose(np.asarray(out), want, atol=2e-5 * scale, rtol=1e-4)
  assert np.abs(other - want).max() > 100 * 2e-5 * scale   # the other copy would fail


def test_psld_converter_script_and_mismatch(tmp_path):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'convert_checkpoint', os.path.join(ROOT, 'scripts', 'convert_checkpoint.py'))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  config = fixture_config()
  cfg_json = tmp_path / 'config.json'
  cfg_json.write_text(json.dumps(config.to_dict()))
  out = tmp_path / 'params.msgpack'
  ckpt = os.path.join(FIX, 'tiny_psld_ncsnpp.ckpt')
  # Lightning's extra entries name globals the strict .pth reader refuses; the PSLD reader
  # turns them into inert placeholders and reads the state dict.
  with pytest.raises(checkpoints.CheckpointError, match='refusing'):
    checkpoints.load_torch_checkpoint(ckpt)
  assert script.main(['--config', str(cfg_json), '--input', ckpt, '--output', str(out)]) == 0
  direct = checkpoints.restore_official(ckpt, config)
  again = checkpoints.restore_official(str(out), config)
  jax.tree.map(np.testing.assert_array_equal, direct, again)
  config.model.nf = 16
  with pytest.raises(checkpoints.CheckpointMismatchError, match='wrongly shaped'):
    checkpoints.restore_official(ckpt, config)


def test_official_cifar10_psld_names_and_shapes_fit_the_config():
  with open(os.path.join(FIX, 'cifar10_psld_ncsnpp_manifest.json')) as f:
    man = json.load(f)
  config = psld_cifar10.get_config()
  expected = checkpoints.model_param_shapes(config)
  n = sum(int(np.prod(s)) for s in expected.values())
  assert n == man['num_params']
  mapping = psld_checkpoints.torch_names_to_flax(man['state_dict'], expected)
  assert len(mapping) == len(man['state_dict']) == len(expected)
