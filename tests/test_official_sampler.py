"""End to end against the official score_sde sampler: the tiny official NCSN++ checkpoint
(State file) + this project's score function + PC sampler, replaying the official noise
schedule, reproduce tiny_ncsnpp_pc_samples.npz (made by the official code)."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default_configs
from score_sde_pds import checkpoints, sampling, sde_lib
from score_sde_pds.models import utils as mutils

FIX = os.path.join(os.path.dirname(__file__), 'fixtures', 'score_sde_jax')


def _config():
  cfg = default_configs.get_default_configs()
  with open(os.path.join(FIX, 'tiny_ncsnpp_config.json')) as f:
    official = json.load(f)
  for group, values in official.items():
    if isinstance(values, dict):
      for k, v in values.items():
        cfg[group][k] = tuple(v) if isinstance(v, list) else v
    else:
      cfg[group] = values
  return cfg


def _official_noise(rng, shape, N, corrector):
  """The official pc_sampler's key schedule: split for the prior, then per step a split
  for the corrector (which splits again per Langevin step) and one for the predictor."""
  rng, sub = jax.random.split(rng)
  prior = jax.random.normal(sub, shape)
  corr, pred = [], []
  for _ in range(N):
    rng, sub = jax.random.split(rng)
    if corrector == 'langevin':
      _, sub2 = jax.random.split(sub)
      corr.append(jax.random.normal(sub2, shape))
    else:
      corr.append(jnp.zeros(shape))
    rng, sub = jax.random.split(rng)
    pred.append(jax.random.normal(sub, shape))
  return prior, jnp.stack(corr), jnp.stack(pred)


@pytest.fixture(scope='module')
def setup():
  cfg = _config()
  model = mutils.get_model(cfg.model.name)(config=cfg)
  params = checkpoints.restore_official(os.path.join(FIX, 'ckpt_tiny_ncsnpp', 'checkpoint_1'),
                                        cfg)
  with np.load(os.path.join(FIX, 'tiny_ncsnpp_pc_samples.npz')) as f:
    ref = {k: f[k] for k in f.files}
  return cfg, model, params, ref


@pytest.mark.parametrize('combo', ['reverse_diffusion__langevin', 'euler_maruyama__none',
                                   'reverse_diffusion__none'])
def test_matches_official_pc_sampler(setup, combo):
  cfg, model, params, ref = setup
  pred, corr = combo.split('__')
  N = int(ref['N'])
  sde = sde_lib.VESDE(float(ref['sigma_min']), float(ref['sigma_max']), N)
  shape = ref[combo].shape
  score_fn = mutils.get_score_fn(sde, model, params, {}, continuous=True)
  rng = jnp.asarray(ref['sample_rng'][0])
  prior, cz, pz = _official_noise(rng, shape, N, corr)
  source = lambda k, tag: jnp.where(k < 0, prior, jnp.where(tag == 0, pz[k], cz[k]))
  smp = sampling.get_pc_sampler(sde, shape, pred, corr, snr=float(ref['snr']),
                                eps=float(ref['eps']), noise_source=source)
  x, nfe = smp(jax.random.PRNGKey(0), score_fn)
  assert int(nfe) == N * (1 + (corr == 'langevin'))
  err = float(np.max(np.abs(np.asarray(x) - ref[combo])) / np.max(np.abs(ref[combo])))
  assert err < 1e-4, err
