"""Probability-flow ODE sampler (diffrax) against the exact flow of the Gaussian oracle.

For Gaussian data the probability-flow ODE (Song et al. Eq. 13) is linear and diagonal
in Fourier space: with lam_t(k) = a_t^2 s(k) + std_t^2 the variance of mode k of x_t,
  d/dt (x_t - a_t mu)_k = (f_t + g_t^2 / (2 lam_t)) (x_t - a_t mu)_k = (d/dt log sqrt lam_t) (.)_k,
so x_eps - a_eps mu = F^-1[ sqrt(lam_eps / lam_T) F[x_T - a_T mu] ] exactly (`exact_flow`).
The sampler's prior draw x_T is rebuilt here from the documented key contract, so the
accuracy tests compare whole sampler outputs with that closed form. Every score function is
wrapped in `Counted`, which counts batched evaluations at run time (a host callback),
and every run checks that the reported NFE is exactly that count.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde_pds import sampling, sde_lib
from score_sde_pds.models import analytic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, C, B = 8, 1, 4
SDES = {'ve': (lambda: sde_lib.VESDE(0.01, 50., 1000), 1e-5),
        'vp': (lambda: sde_lib.VPSDE(0.1, 20., 1000), 1e-3),
        'subvp': (lambda: sde_lib.subVPSDE(0.1, 20., 1000), 1e-3)}


def _field():
  cfg = ml_collections.ConfigDict({
      'model': {'field_beta': 3.0, 'field_k0': 1., 'field_mean': 0.5, 'field_std': 0.25},
      'data': {'image_size': H, 'num_channels': C}})
  return analytic.GaussianField.from_config(cfg)


class Counted:
  """score_fn(x (B,...), t (B,)) that counts its batched evaluations when it runs."""

  def __init__(self, fn):
    self.fn, self.calls = fn, 0

  def _bump(self):
    self.calls += 1

  def __call__(self, x, t):
    jax.debug.callback(self._bump)
    return self.fn(x, t)


def _run(smp, score, rng=0, offset=0):
  """Runs the jitted sampler once -> (x, nfe, info) as numpy; NFE == counted calls."""
  score.calls = 0
  x, nfe, info = jax.block_until_ready(
      smp.jitted(score)(jax.random.PRNGKey(rng), precond=None, offset=offset))
  assert int(nfe) == score.calls, (int(nfe), score.calls)
  return np.asarray(x), int(nfe), jax.tree_util.tree_map(np.asarray, info)


def prior(sde, batch, rng=0, offset=0):
  """x_T of sample b: prior_std * N(0, I) from fold_in(fold_in(rng, offset + b), 0)."""
  std = sde.sigma_max if isinstance(sde, sde_lib.VESDE) else 1.
  key = jax.random.PRNGKey(rng)
  return np.stack([std * np.asarray(jax.random.normal(
      jax.random.fold_in(jax.random.fold_in(key, offset + b), 0), (H, H, C)))
                   for b in range(batch)])


def exact_flow(field, sde, x_T, eps):
  """The probability-flow map x_T -> x_eps of the oracle, float64 (B,H,W,C)."""
  def coeffs(t):
    a, std = sde.marginal_prob(jnp.ones((1, 1, 1, 1)), jnp.full((1,), t))
    a, std = float(np.ravel(a)[0]), float(np.ravel(std)[0])
    return a, a ** 2 * np.asarray(field.spectrum, np.float64) + std ** 2
  (a_T, lam_T), (a_e, lam_e) = coeffs(sde.T), coeffs(eps)
  mu = np.asarray(field.mean, np.float64)
  y = np.fft.fft2(np.asarray(x_T, np.float64) - a_T * mu, axes=(1, 2)) * np.sqrt(lam_e / lam_T)
  return np.real(np.fft.ifft2(y, axes=(1, 2))) + a_e * mu


def adaptive_sampler(sde_name, method, control, **kw):
  """(sde, eps, field, sampler, counted oracle score) of an adaptive solve at B samples."""
  make, eps = SDES[sde_name]
  sde, field = make(), _field()
  score = Counted(lambda x, t: field.score(sde, x, t))
  smp = sampling.get_ode_sampler(sde, (B, H, H, C), method=method, eps=eps,
                                 step_control=control, **kw)
  return sde, eps, field, smp, score


# Fresh interpreter with argv[2] CPU devices: the same solve, batch sharded over them.
_DEVICES_SCRIPT = r'''
import os, sys
import jax
import numpy as np
sys.path.insert(0, os.path.join(os.getcwd(), 'tests'))
import test_ode_sampler as t
assert jax.device_count() == int(sys.argv[2]), jax.devices()
_, _, _, smp, score = t.adaptive_sampler('ve', 'dopri5', 'sample')
x, nfe, info = jax.block_until_ready(
    smp.jitted(score)(jax.random.PRNGKey(0), precond=None, offset=0))  # callbacks done
assert len(x.sharding.device_set) == jax.device_count()
assert score.calls == int(nfe) * jax.device_count()  # each device scores its shard once
np.savez(sys.argv[1], x=np.asarray(x), nfe=int(nfe), per=np.asarray(info['nfe_per_sample']))
'''


@pytest.mark.parametrize('sde_name,method,control', [
    ('ve', 'dopri5', 'sample'), ('vp', 'tsit5', 'sample'), ('subvp', 'RK45', 'batch')])
def test_adaptive_solve_matches_exact_flow(sde_name, method, control, tmp_path):
  two_devices = sde_name == 've' and control == 'sample'
  if two_devices:  # runs concurrently with the checks below
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
               XLA_FLAGS='--xla_force_host_platform_device_count=2')
    proc = subprocess.Popen([sys.executable, '-c', _DEVICES_SCRIPT, str(tmp_path / 'x2.npz'),
                             '2'], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  sde, eps, field, smp, score = adaptive_sampler(sde_name, method, control)
  x, nfe, info = _run(smp, score)
  err = np.abs(x - exact_flow(field, sde, prior(sde, B), eps)).max()
  # rtol = atol = 1e-5 per step; data of scale 0.5 +- 0.25 (measured errors 1e-5 .. 6e-5)
  assert err < 2e-4, err
  assert int(info['first_nonfinite_step']) == -1
  per = info['nfe_per_sample']
  # FSAL 5th-order pairs: 6 evaluations per attempted step + the first stage once
  assert (nfe - 1) % 6 == 0 and int(info['steps']) == (nfe - 1) // 6
  assert nfe == per.max() and np.all((per - 1) % 6 == 0)
  if control == 'batch':
    assert np.all(per == nfe)
  if two_devices:
    # the batch sharded over 2 devices (score evaluated per device via shard_map inside
    # the custom_vmap of the vmapped solve): the same samples and NFE as on 1 device
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    two = np.load(tmp_path / 'x2.npz')
    assert int(two['nfe']) == nfe
    np.testing.assert_array_equal(two['per'], per)
    np.testing.assert_allclose(two['x'], x, rtol=0, atol=1e-6)


@pytest.mark.parametrize('method,order,steps', [('euler', 1, (64, 256)),
                                                ('heun', 2, (32, 128))])
def test_fixed_steps_converge_at_their_order(method, order, steps):
  """Uniform steps in t: max error vs the exact flow ~ steps^-order; NFE = steps * stages."""
  make, eps = SDES['ve']
  sde, field = make(), _field()
  score = Counted(lambda x, t: field.score(sde, x, t))
  ref = exact_flow(field, sde, prior(sde, B), eps)
  errs = []
  for n in steps:
    smp = sampling.get_ode_sampler(sde, (B, H, H, C), method=method, eps=eps, steps=n)
    x, nfe, info = _run(smp, score)
    assert nfe == n * order and int(info['steps']) == n   # Euler 1, Heun 2 stages
    assert np.all(info['nfe_per_sample'] == nfe)
    errs.append(np.abs(x - ref).max())
  slope = np.log(errs[1] / errs[0]) / np.log(steps[1] / steps[0])
  assert abs(slope + order) < 0.15 * order, (slope, errs)


def test_config_path_and_denoising_step():
  """get_sampler_from_config passes ode_method / ode_steps / noise_removal: three Euler
  steps, then one reverse-diffusion step at eps (score_sde's denoising, +1 NFE):
  x + G^2 s(x, eps), G the VE discretisation's at index 0."""
  make, eps = SDES['ve']
  sde, field = make(), _field()
  config = ml_collections.ConfigDict({'sampling': {
      'method': 'ode', 'ode_method': 'euler', 'ode_steps': 3, 'ode_rtol': 1e-5,
      'ode_atol': 1e-5, 'noise_removal': True}})
  smp = sampling.get_sampler_from_config(config, sde, (B, H, H, C), eps)
  score = Counted(lambda x, t: field.score(sde, x, t))
  x, nfe, _ = _run(smp, score)
  # three Euler steps of the exact per-mode drift, in float64
  ts = np.linspace(sde.T, eps, 4)
  y = prior(sde, B)
  log_ratio = np.log(sde.sigma_max / sde.sigma_min)
  for t0, t1 in zip(ts[:-1], ts[1:]):
    sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t0
    s = np.asarray(field.score(sde, jnp.asarray(y, jnp.float32), jnp.full((B,), t0)), np.float64)
    y = y + (t1 - t0) * (-0.5 * sigma ** 2 * 2 * log_ratio * s)   # f = 0, g^2 = 2 sigma^2 log r
  # VE discretisation at index 0: G^2 = sigma_0^2 - sigma_{-1}^2 = sigma_min^2
  s = np.asarray(field.score(sde, jnp.asarray(y, jnp.float32), jnp.full((B,), eps)))
  y = y + sde.sigma_min ** 2 * s
  assert nfe == 3 + 1
  np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_bad_values_name_the_key():
  sde = sde_lib.VESDE(0.01, 50., 10)
  shape = (2, 4, 4, 1)

  def build(**kw):
    base = {'method': 'ode', 'ode_method': 'dopri5', 'ode_steps': 0, 'ode_rtol': 1e-5,
            'ode_atol': 1e-5, 'noise_removal': False}
    base.update(kw)
    cfg = ml_collections.ConfigDict({'sampling': base})
    return sampling.get_sampler_from_config(cfg, sde, shape, 1e-5)

  with pytest.raises(ValueError, match=r"config.sampling.ode_method='dopri' is not known.*"
                                       r"'dopri5'.*'euler'.*'heun'.*'tsit5'.*Did you mean"):
    build(ode_method='dopri')
  for bad in (-1, 2.5, True, '3'):
    with pytest.raises(ValueError, match=r'config.sampling.ode_steps must be an integer >= 0'):
      build(ode_steps=bad)
  with pytest.raises(ValueError, match=r"ode_method='euler' has no error estimate.*"
                                       r"config.sampling.ode_steps > 0"):
    build(ode_method='euler')
  for kw in ({'ode_rtol': 0.}, {'ode_atol': -1e-5}, {'ode_atol': float('nan')}):
    with pytest.raises(ValueError, match=r'config.sampling.ode_rtol and '
                                         r'config.sampling.ode_atol must be finite and > 0'):
      build(**kw)
  with pytest.raises(ValueError, match=r"step_control='shared'.*\['sample', 'batch'\]"):
    sampling.get_ode_sampler(sde, shape, step_control='shared')
  # names are case-insensitive, RK45 is dopri5, Euler is fine with fixed steps
  assert isinstance(build(ode_method='RK45'), sampling.Sampler)
  assert isinstance(build(ode_method='Euler', ode_steps=4), sampling.Sampler)


def test_nonfinite_solve_is_reported():
  """NaN scores make every error estimate NaN: steps are rejected until max_steps, and
  info['first_nonfinite_step'] reports the step count instead of -1."""
  sde = sde_lib.VESDE(0.01, 50., 10)
  score = Counted(lambda x, t: jnp.where(t[:, None, None, None] < 0.5, jnp.nan, -x / 2500.))
  smp = sampling.get_ode_sampler(sde, (2, 4, 4, 1), eps=1e-5, max_steps=30)
  _, nfe, info = _run(smp, score)
  assert int(info['first_nonfinite_step']) == int(info['steps']) == 30 and nfe == 1 + 6 * 30
