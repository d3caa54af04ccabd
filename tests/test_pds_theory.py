"""PDS on the exact Gaussian-field oracle: Theorem 1 (stationarity) and the full PDS
sampler against an independent per-Fourier-mode recursion."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde_pds import preconditioning, sampling, sde_lib
from score_sde_pds.models import analytic

H, C = 8, 1
NS = 4000
SIGMA = 0.05   # fixed noise level of the Langevin chains
HL = 4         # small images for the dense Theorem-1 checks (16 x 16 matrices)


def _field(beta, size=H):
  cfg = ml_collections.ConfigDict({
      'model': {'field_beta': beta, 'field_k0': 1., 'field_mean': 0.5, 'field_std': 0.25},
      'data': {'image_size': size, 'num_channels': C}})
  return analytic.GaussianField.from_config(cfg)


def _dense(op, size):
  """The (n, n) matrix of a linear map on (size, size, C) images (columns = op(e_j))."""
  n = size * size * C
  basis = jnp.eye(n).reshape(n, size, size, C)
  return np.asarray(op(basis), np.float64).reshape(n, n).T


def _langevin_chain(field, P, eps, steps, rng, size, ns=NS):
  """x <- x + eps (MM^T + omega S) s(x) + sqrt(2 eps) M z at sigma = SIGMA (Theorem 1)."""
  sde = sde_lib.VESDE(0.01, 50., 10)
  t = jnp.full((ns,), jnp.log(SIGMA / 0.01) / jnp.log(50. / 0.01))

  def step(x, key):
    g = P.drift(field.score(sde, x, t))
    return x + eps * g + jnp.sqrt(2 * eps) * P.noise(jax.random.normal(key, x.shape)), None

  @jax.jit
  def run(key):
    x, _ = jax.lax.scan(step, jnp.full((ns, size, size, C), 0.5), jax.random.split(key, steps))
    return x

  return np.asarray(run(rng), np.float64).reshape(ns, -1)


def _precond(kind, size):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  shape = (size, size, C)
  r = preconditioning.even_part(
      np.asarray(jax.random.uniform(k1, shape, minval=0.5, maxval=2.0)))
  d = np.asarray(jax.random.uniform(k2, shape, minval=0.7, maxval=1.4))
  make = preconditioning.Preconditioner.create
  return {'identity': preconditioning.Preconditioner.identity(),
          'freq': make(freq_gain=r, shape=shape),
          'space_freq': make(freq_gain=r, space_gain=d, shape=shape),
          'space_freq_skew': make(freq_gain=r, space_gain=d, omega=0.4, shape=shape)}[kind]


@pytest.mark.parametrize('kind', ['identity', 'freq', 'space_freq', 'space_freq_skew'])
def test_theorem1_stationary_law_is_unchanged(kind):
  """Any invertible M (and omega S, S skew) keeps N(mu, Sigma_t) stationary (Theorem 1).

  Dense check on 4x4 images: the discretised chain x' - mu = T (x - mu) + sqrt(2 eps) M z,
  T = I - eps (MM^T + omega S) Sigma^-1, has the stationary covariance V(eps) solving
  V = T V T^T + 2 eps MM^T. V(eps) -> Sigma as eps -> 0 (the theorem), and the sampled
  chain (the library's operators) has covariance V(eps) (the operators are right)."""
  from scipy import linalg
  field = _field(beta=2.0, size=HL)
  P = _precond(kind, HL)
  n = HL * HL * C
  sigma = field.dense_covariance() + SIGMA ** 2 * np.eye(n)
  Mm = _dense(P.noise, HL)
  D = _dense(P.drift, HL)
  np.testing.assert_allclose(D, Mm @ Mm.T + (D - D.T) / 2, atol=1e-5)   # sym part = MM^T
  prec = np.linalg.inv(sigma)

  def stationary(eps):
    T = np.eye(n) - eps * D @ prec
    return linalg.solve_discrete_lyapunov(T, 2 * eps * Mm @ Mm.T), T

  rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
  rate = np.max(np.abs(np.linalg.eigvals(D @ prec)))
  errs = [rel(stationary(f / rate)[0], sigma) for f in (1e-1, 1e-2, 1e-3)]
  assert errs[2] < 2e-3 and errs[2] < errs[1] < errs[0], errs     # V(eps) -> Sigma, O(eps)
  eps = 0.3 / rate
  V, T = stationary(eps)
  mix = 1. - np.max(np.abs(np.linalg.eigvals(T)))
  steps = int(min(12. / mix, 4000))
  x = _langevin_chain(field, P, eps, steps, jax.random.PRNGKey(1), HL)
  cov = np.cov(x, rowvar=False)
  assert rel(cov, V) < 0.06, rel(cov, V)        # sampling noise ~ sqrt(n / NS)
  np.testing.assert_allclose(x.mean(0), 0.5, atol=4 * np.sqrt(np.diag(V).max() / NS))


def test_matched_preconditioner_mixes_faster_on_ill_conditioned_field():
  field = _field(beta=4.0)
  lam = np.asarray(field.spectrum) + SIGMA ** 2
  r_matched = np.sqrt(lam / lam.max())           # MM^T ~ Sigma: all modes relax alike
  Pm = preconditioning.Preconditioner.create(freq_gain=r_matched, shape=(H, H, C))
  Pi = preconditioning.Preconditioner.identity()
  steps = 100
  errs = {}
  for name, P, eps in (('identity', Pi, 0.1 * lam.min()), ('matched', Pm, 0.1 * lam.max())):
    # the same per-mode step eps r^2 / lam = 0.1 for the stiffest mode of each chain
    x = _langevin_chain(field, P, float(eps), steps, jax.random.PRNGKey(2), H, ns=2000)
    spec = analytic.measured_spectrum(x.reshape(-1, H, H, C), mean=0.5)
    errs[name] = np.abs(np.log(spec / lam)).max()
  # matched: every mode has relaxed (bias of the discrete chain ~ eps r^2 / (2 lam) = 5%)
  assert errs['matched'] < 0.2, errs
  assert errs['identity'] > 1.0, errs


def _pds_mode_recursion(s, r, N, eps, smin=0.01, smax=50.):
  """Per-mode variance of the reference PDS reverse-diffusion sampler (d = 1):
  prior var smax^2 r^2; y' = (1 - G^2 r^2 / lam) y + G r z; returns var of x_mean."""
  t = np.linspace(1., eps, N)
  sig_t = smin * (smax / smin) ** t
  sig_d = np.exp(np.linspace(np.log(smin), np.log(smax), N))
  var = smax ** 2 * r ** 2
  for k in range(N):
    i = N - 1 - k
    lam = s + sig_t[k] ** 2
    g2 = sig_d[i] ** 2 - (sig_d[i - 1] ** 2 if i > 0 else 0.)
    var_mean = (1 - g2 * r ** 2 / lam) ** 2 * var
    var = var_mean + g2 * r ** 2
  return var_mean


@pytest.mark.parametrize('filt', ['statistics', 'parametric'])
def test_pds_sampler_matches_mode_recursion(filt):
  field = _field(beta=3.0)
  s = np.asarray(field.spectrum, np.float64)
  if filt == 'statistics':
    R = np.log1p(np.asarray(field.second_moment_spectrum()))
    P = preconditioning.Preconditioner.from_statistics(freq_stats=R, alpha=3.0, shape=(H, H, C))
  else:
    P = preconditioning.Preconditioner.parametric((H, H, C), radius=0.2 * H, lam=1.6)
  r = np.asarray(jnp.broadcast_to(P.freq_gain, (H, H, C)), np.float64)
  assert r.min() >= 1. and r.max() > 1.2
  N, eps = 30, 1e-5
  sde = sde_lib.VESDE(0.01, 50., N)
  smp = sampling.get_pc_sampler(sde, (NS, H, H, C), 'reverse_diffusion', 'none', snr=0.16,
                                eps=eps, preconditioner=P)
  x, _ = smp(jax.random.PRNGKey(4), lambda x, t: field.score(sde, x, t))
  spec = analytic.measured_spectrum(np.asarray(x), mean=0.5)
  expected = _pds_mode_recursion(s, r, N, eps)
  lr = np.log(spec / expected)
  assert abs(lr.mean()) < 0.02 and np.abs(lr).max() < 0.12, (lr.mean(), np.abs(lr).max())
  # and PDS changes the result (so the test can fail): vanilla recursion differs
  vanilla = _pds_mode_recursion(s, np.ones_like(r), N, eps)
  assert np.abs(np.log(expected / vanilla)).max() > 0.1


def test_marginal_mode_keeps_marginals_at_large_n():
  """mode='marginal' (f - 1/2 g^2 s - 1/2 eta g^2 MM^T s, noise sqrt(eta) g M z) targets the
  data spectrum for any M; the reference mode with a strong filter does not."""
  field = _field(beta=3.0)
  s = np.asarray(field.spectrum)
  P = preconditioning.Preconditioner.parametric((H, H, C), radius=0.2 * H, lam=1.6)
  sde = sde_lib.VESDE(0.01, 50., 400)
  out = {}
  for mode in ('marginal', 'reference'):
    smp = sampling.get_pc_sampler(sde, (NS, H, H, C), 'euler_maruyama', 'none', snr=0.16,
                                  eps=1e-5, preconditioner=P, pds_mode=mode)
    x, _ = smp(jax.random.PRNGKey(5), lambda x, t: field.score(sde, x, t))
    out[mode] = np.log(analytic.measured_spectrum(np.asarray(x), mean=0.5) / s)
  assert abs(out['marginal'].mean()) < 0.03 and np.abs(out['marginal']).max() < 0.15
  assert np.abs(out['reference']).max() > 0.2
