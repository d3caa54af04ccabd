"""SDEs against closed forms and against their own moment ODEs."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import integrate, stats

from score_sde_pds import sde_lib

SDES = {
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=50., N=100),
    'vp': sde_lib.VPSDE(beta_min=0.1, beta_max=20., N=100),
    'subvp': sde_lib.subVPSDE(beta_min=0.1, beta_max=20., N=100),
}


@pytest.mark.parametrize('name', list(SDES))
def test_marginal_matches_moment_ode(name):
  """Integrate dm/dt = f(m), dv/dt = 2 (f'/x) v + g^2 with the SDE's own sde(); the
  marginal_prob mean coefficient and variance must be its solution."""
  sde = SDES[name]
  t0 = 1e-4
  _, std0 = sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t0]))

  def rhs(t, y):
    m, v = y
    drift, g = sde.sde(jnp.array([[m]], jnp.float32), jnp.array([t], jnp.float32))
    lin = float(drift[0, 0]) / m   # linear drift coefficient
    return [lin * m, 2 * lin * v + float(g[0]) ** 2]

  sol = integrate.solve_ivp(rhs, (t0, 1.), [1., float(std0[0]) ** 2], rtol=1e-8, atol=1e-10,
                            dense_output=True)
  for t in (0.1, 0.5, 1.0):
    mean, std = sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t]))
    m, v = sol.sol(t)
    np.testing.assert_allclose(float(mean[0, 0]), m, rtol=1e-4)
    np.testing.assert_allclose(float(std[0]) ** 2, v, rtol=2e-3)


def test_ve_closed_forms():
  sde = SDES['ve']
  t = jnp.array([0., 0.3, 1.])
  _, std = sde.marginal_prob(jnp.zeros((3, 2)), t)
  np.testing.assert_allclose(std, 0.01 * 5000. ** np.array([0., .3, 1.]), rtol=1e-5)
  _, g = sde.sde(jnp.zeros((3, 2)), t)
  np.testing.assert_allclose(g, std * np.sqrt(2 * np.log(5000.)), rtol=1e-5)
  sig = np.exp(np.linspace(np.log(0.01), np.log(50.), 100))
  np.testing.assert_allclose(sde.discrete_sigmas, sig, rtol=1e-5)
  x = jnp.ones((2, 3))
  for i in (0, 1, 57, 99):
    f, G = sde.discretize(x, jnp.full((2,), 0.5), i)
    prev = 0. if i == 0 else sig[i - 1]
    np.testing.assert_allclose(G, np.sqrt(sig[i] ** 2 - prev ** 2), rtol=5e-5)
    assert np.all(f == 0)


def test_vp_closed_forms():
  sde = SDES['vp']
  t = jnp.array([0.2, 0.9])
  mean, std = sde.marginal_prob(jnp.ones((2, 1)), t)
  integral = 0.1 * np.array([.2, .9]) + 0.5 * 19.9 * np.array([.2, .9]) ** 2
  np.testing.assert_allclose(mean[:, 0], np.exp(-0.5 * integral), rtol=1e-5)
  np.testing.assert_allclose(std, np.sqrt(1 - np.exp(-integral)), rtol=1e-5)
  betas = np.linspace(0.1 / 100, 20. / 100, 100)
  x = jnp.full((2, 3), 2.)
  f, G = sde.discretize(x, t, 42)
  np.testing.assert_allclose(f, (np.sqrt(1 - betas[42]) - 1) * 2., rtol=1e-5)
  np.testing.assert_allclose(G, np.sqrt(betas[42]), rtol=1e-6)
  _, std_s = SDES['subvp'].marginal_prob(jnp.ones((2, 1)), t)
  np.testing.assert_allclose(std_s, 1 - np.exp(-integral), rtol=1e-5)


@pytest.mark.parametrize('name', list(SDES))
def test_prior(name):
  sde = SDES[name]
  import jax
  z = sde.prior_sampling(jax.random.PRNGKey(0), (4000, 3))
  std = 50. if name == 've' else 1.
  np.testing.assert_allclose(np.std(np.asarray(z)), std, rtol=0.03)
  logp = sde.prior_logp(z[:5])
  np.testing.assert_allclose(logp, stats.norm(0, std).logpdf(np.asarray(z[:5])).sum(-1),
                             rtol=1e-5)


def test_reverse_drifts():
  sde = SDES['vp']
  score = lambda x, t: -x * 3.
  x = jnp.full((2, 4), 0.5)
  t = jnp.array([0.3, 0.7])
  f, g = sde.sde(x, t)
  rd, rg = sde.reverse(score).sde(x, t)
  np.testing.assert_allclose(rd, f - g[:, None] ** 2 * score(x, t), rtol=1e-6)
  np.testing.assert_allclose(rg, g)
  pd, pg = sde.reverse(score, probability_flow=True).sde(x, t)
  np.testing.assert_allclose(pd, f - 0.5 * g[:, None] ** 2 * score(x, t), rtol=1e-6)
  assert np.all(pg == 0)


def _cfg(sde='vesde', N=10, speed_up=1.0):
  return ml_collections.ConfigDict({
      'training': {'sde': sde},
      'model': {'sigma_min': 0.01, 'sigma_max': 50., 'beta_min': 0.1, 'beta_max': 20.,
                'num_scales': N},
      'sampling': {'speed_up': speed_up, 'eps': 0.}})


def test_get_sde_speed_up_and_errors():
  sde, eps = sde_lib.get_sde(_cfg(N=2000, speed_up=30))
  assert sde.N == 66 and eps == pytest.approx(3e-4)
  sde, eps = sde_lib.get_sde(_cfg('vpsde', N=1000, speed_up=10))
  assert sde.N == 100 and eps == pytest.approx(1e-2)
  with pytest.raises(ValueError, match="config.training.sde='foo'.*vesde"):
    sde_lib.get_sde(_cfg('foo'))
  with pytest.raises(ValueError, match='N=0'):
    sde_lib.get_sde(_cfg(N=5, speed_up=10))
  with pytest.raises(ValueError, match='N'):
    sde_lib.VESDE(N=0)
