"""Linear (block) SDE descriptions and the augmented Gaussian oracle.

Checks numbers against independent computations: the moment ODEs integrated by
scipy.integrate.solve_ivp, dense covariance algebra, and the papers' facts.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from configs import default_configs
from score_sde_pds import sde_lib
from score_sde_pds.models import analytic

SDES = {
    'vp': sde_lib.VPSDE(),
    'subvp': sde_lib.subVPSDE(),
    've': sde_lib.VESDE(),
    'cld': sde_lib.CLDSDE(),
    'psld': sde_lib.PSLDSDE(),
    # not CIFAR-10's: a linear schedule and a large Gamma, so every block entry matters
    'psld_sched': sde_lib.PSLDSDE(beta_min=0.5, beta_max=10., gamma=0.3, nu=2.),
}


def _moment_odes(sde, ts):
  """Psi(t, 0) and Sigma_t from d Psi/dt = F Psi, d Sigma/dt = F S + S F^T + G G^T."""
  k = sde.block_dim

  def rhs(t, y):
    F = sde.drift_block(np.float64(t))
    GG = sde.diffusion_block(np.float64(t))
    psi, sig = y[:k * k].reshape(k, k), y[k * k:].reshape(k, k)
    return np.concatenate([(F @ psi).ravel(), (F @ sig + sig @ F.T + GG).ravel()])

  y0 = np.concatenate([np.eye(k).ravel(), np.asarray(sde.init_cov_block(), float).ravel()])
  sol = solve_ivp(rhs, (0., float(ts[-1])), y0, t_eval=ts, method='DOP853', rtol=1e-11,
                  atol=1e-14)
  return sol.y[:k * k].T.reshape(-1, k, k), sol.y[k * k:].T.reshape(-1, k, k)


@pytest.mark.parametrize('name', sorted(SDES))
def test_transition_and_covariance_match_moment_odes(name):
  sde = SDES[name]
  ts = np.array([1e-3, 0.05, 0.3, 0.7, 1.0])
  psi_ref, sig_ref = _moment_odes(sde, ts)
  psi, sig = sde.transition_block(ts), sde.cov_block(ts)
  scale = np.abs(sig_ref).max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(psi, psi_ref, rtol=0, atol=1e-10)
  np.testing.assert_allclose(sig / scale, sig_ref / scale, rtol=0, atol=1e-9)
  # Psi(t, s) composes: Psi(t, s) Psi(s, 0) = Psi(t, 0)
  np.testing.assert_allclose(sde.transition_block(ts[3], ts[1]) @ psi[1], psi[3], atol=1e-12)
  # the traced (float32) path agrees with the float64 host path
  sig32 = np.asarray(sde.cov_block(jnp.asarray(ts, jnp.float32)))
  np.testing.assert_allclose(sig32 / scale, sig / scale, atol=3e-6)


@pytest.mark.parametrize('name', ['vp', 'subvp', 've'])
def test_scalar_blocks_match_marginal_prob(name):
  sde = SDES[name]
  t = jnp.asarray([1e-3, 0.2, 0.9])
  x = jnp.ones((3, 2, 2, 1))
  mean, std = sde.marginal_prob(x, t)
  np.testing.assert_allclose(sde.transition_block(t)[:, 0, 0], mean[:, 0, 0, 0], rtol=1e-6)
  # rtol: marginal_prob's float32 1 - exp(.) loses ~3 digits at t = 1e-3 (cov_block uses expm1)
  np.testing.assert_allclose(sde.cov_block(t)[:, 0, 0], std ** 2, rtol=5e-4)
  f, g = sde.sde(x, t)
  np.testing.assert_allclose(sde.drift_block(t)[:, 0, 0], f[:, 0, 0, 0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(sde.diffusion_block(t)[:, 0, 0], g ** 2, rtol=5e-4)


@pytest.mark.parametrize('name', sorted(SDES))
def test_score_eps_conversions_invert_each_other(name):
  sde = SDES[name]
  k = sde.block_dim
  rng = np.random.default_rng(0)
  t = jnp.asarray([2e-3, 0.1, 0.6, 1.0], jnp.float32)
  score = jnp.asarray(rng.normal(size=(4, 3, 3, 2 * k)), jnp.float32)
  eps = sde.score_to_eps(score, t)
  np.testing.assert_allclose(sde.eps_to_score(eps, t), score, rtol=2e-4, atol=2e-4)
  # eps = -L^T s with L L^T = Sigma: E[eps eps^T] = L^T Sigma^-1 L = I for s = -Sigma^-1 (z - mu)
  L = np.asarray(sde.chol_block(np.asarray(t, np.float64)))
  sig = sde.cov_block(np.asarray(t, np.float64))
  np.testing.assert_allclose(L @ L.swapaxes(1, 2), sig, rtol=1e-10, atol=1e-14)
  assert np.all(np.triu(L, 1) == 0)
  # against a dense per-pixel application of -L^T
  C = score.shape[-1] // k
  s5 = np.asarray(score, np.float64).reshape(4, 3, 3, k, C)
  dense = -np.einsum('bji,bhwjc->bhwic', L, s5).reshape(score.shape)
  np.testing.assert_allclose(eps, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', ['cld', 'psld', 'psld_sched'])
def test_phase_space_facts(name):
  sde = SDES[name]
  K = sde.drift_block(np.array(1.0)) / sde._beta(1.0)
  D = sde.diffusion_block(np.array(1.0)) / sde._beta(1.0)
  P = sde.prior_cov_block()
  np.testing.assert_allclose(K @ P + P @ K.T + D, 0., atol=1e-12)   # prior is stationary
  ev = np.linalg.eigvals(K)
  np.testing.assert_allclose(ev[0], ev[1], atol=1e-6)                # critical damping
  if name.startswith('psld'):
    np.testing.assert_allclose(1. / sde.mass, (sde.gamma - sde.nu) ** 2 / 4)
  long_run = sde_lib.PSLDSDE(beta_min=80., beta_max=80.) if name == 'psld' else None
  if long_run is not None:
    np.testing.assert_allclose(long_run.cov_block(np.array(1.0)), long_run.prior_cov_block(),
                               atol=1e-12)


def test_cld_is_psld_with_zero_gamma():
  cld = sde_lib.CLDSDE(beta=4., m_inv=4., kappa=0.04)
  psld = sde_lib.PSLDSDE(beta_min=8., beta_max=8., gamma=0., nu=cld.friction * cld.m_inv,
                         kappa=0.04)
  ts = np.linspace(1e-3, 1., 7)
  np.testing.assert_allclose(cld.cov_block(ts), psld.cov_block(ts), atol=1e-12)
  np.testing.assert_allclose(cld.transition_block(ts), psld.transition_block(ts), atol=1e-12)


def test_augmented_oracle_score_matches_dense_covariance():
  H = W = 4
  C = 2
  s = analytic.power_law_spectrum((H, W, C), 3., 1., np.array([0.3, 0.5]) ** 2)
  field = analytic.GaussianField(spectrum=jnp.asarray(s, jnp.float32),
                                 mean=jnp.asarray([0.2, -0.1], jnp.float32))
  n = H * W * C
  Sx = field.dense_covariance()
  rng = np.random.default_rng(1)
  z = rng.normal(size=(2, H, W, 2 * C))
  t = np.array([0.03, 0.5])
  for sde in (sde_lib.PSLDSDE(), sde_lib.CLDSDE()):
    out = np.asarray(field.score(sde, jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32)))
    for b in range(2):
      psi, sig = sde.transition_block(t[b]), sde.cov_block(t[b])
      cov0 = np.zeros((2 * n, 2 * n))
      cov0[:n, :n] = Sx
      Psi = np.kron(psi, np.eye(n))
      cov = Psi @ cov0 @ Psi.T + np.kron(sig, np.eye(n))
      mean = Psi @ np.concatenate([np.tile(np.asarray(field.mean), H * W), np.zeros(n)])
      zz = np.concatenate([z[b, ..., :C].ravel(), z[b, ..., C:].ravel()])
      ref = -np.linalg.solve(cov, zz - mean)
      ref = np.concatenate([ref[:n].reshape(H, W, C), ref[n:].reshape(H, W, C)], -1)
      np.testing.assert_allclose(out[b], ref, atol=2e-6 * np.abs(ref).max())


def test_augmented_sde_in_pc_machinery():
  sde = sde_lib.PSLDSDE()
  B, C = 4, 3
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, 2, 2, 2 * C)), jnp.float32)
  t = jnp.full((B,), 0.4)
  drift, g = sde.sde(x, t)
  F = sde.drift_block(0.4)
  np.testing.assert_allclose(drift[..., :C], F[0, 0] * x[..., :C] + F[0, 1] * x[..., C:],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g[0, 0, 0], np.sqrt([8 * 0.02] * C + [8 * sde.mass * 4.02] * C),
                             rtol=1e-6)
  score = -x
  rdrift, _ = sde.reverse(lambda z, t: score).sde(x, t)
  np.testing.assert_allclose(rdrift, drift - g ** 2 * score, rtol=1e-6)
  z = sde.prior_sampling(jax.random.PRNGKey(0), (4096, 2, 2, 2 * C))
  var = np.asarray(z).reshape(-1, 2 * C).var(0)
  np.testing.assert_allclose(var, [1.] * C + [sde.mass] * C, rtol=0.05)
  with pytest.raises(NotImplementedError, match='marginal_moments'):
    sde.marginal_prob(x, t)


def _config(name, **model):
  config = default_configs.get_default_configs()
  config.training.sde = name
  for k, v in model.items():
    setattr(config.model, k, v)
  return config


def test_get_sde_builds_phase_space_sdes_from_config():
  sde, eps = sde_lib.get_sde(_config('psld'))
  assert isinstance(sde, sde_lib.PSLDSDE) and eps == 1e-3
  assert (sde.gamma, sde.nu, sde.beta_min, sde.kappa) == (0.02, 4.02, 8., 0.04)
  sde, eps = sde_lib.get_sde(_config('cld', cld_beta=2.))
  assert isinstance(sde, sde_lib.CLDSDE) and sde.beta == 2. and sde.friction == 1.


@pytest.mark.parametrize('name,key,value,match', [
    ('psld', 'psld_gamma', -1., 'psld_gamma'),
    ('psld', 'psld_nu', 0.02, 'psld_gamma and psld_nu'),
    ('psld', 'psld_beta_max', 1., 'psld_beta_min and psld_beta_max'),
    ('psld', 'psld_kappa', -0.1, 'psld_kappa'),
    ('cld', 'cld_m_inv', 0., 'cld_m_inv'),
    ('cld', 'cld_beta', -4., 'cld_beta'),
])
def test_get_sde_rejects_bad_phase_space_values(name, key, value, match):
  with pytest.raises(ValueError, match=match):
    sde_lib.get_sde(_config(name, **{key: value}))
