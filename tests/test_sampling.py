"""PC and ODE samplers on the exact Gaussian-field oracle.

The oracle's score is exact and FFT-diagonal, so each predictor is a linear map per
Fourier mode: var' = a^2 var + b^2. `_mode_recursion` is an independent numpy
implementation of those maps (score_sde's update rules); the samplers must match it
(statistically) and it must converge to the data spectrum as N grows.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde_pds import sampling, sde_lib
from score_sde_pds.models import analytic

SMIN, SMAX = 0.01, 50.
H, C = 8, 1
NS = 4000   # samples for statistics: per-mode relative std ~ 1/sqrt(NS) = 1.6%


def _field(beta=3.0, size=H, ch=C, mean=0.5, std=0.25):
  cfg = ml_collections.ConfigDict({
      'model': {'field_beta': beta, 'field_k0': 1., 'field_mean': mean, 'field_std': std},
      'data': {'image_size': size, 'num_channels': ch}})
  return analytic.GaussianField.from_config(cfg)


def _score(field, sde):
  return lambda x, t: field.score(sde, x, t)


def _mode_recursion(kind, s, N, eps):
  """Exact per-mode variance of x_mean after the last step (VE, vanilla)."""
  s = np.asarray(s, np.float64)
  t = np.linspace(1., eps, N)
  sig_t = SMIN * (SMAX / SMIN) ** t
  sig_d = np.exp(np.linspace(np.log(SMIN), np.log(SMAX), N))
  var = np.full_like(s, SMAX ** 2)
  for k in range(N):
    i = N - 1 - k
    lam = s + sig_t[k] ** 2
    prev2 = sig_d[i - 1] ** 2 if i > 0 else 0.
    if kind == 'reverse_diffusion':
      g2 = sig_d[i] ** 2 - prev2
      var_mean = (1 - g2 / lam) ** 2 * var
      var = var_mean + g2
    elif kind == 'euler_maruyama':
      g2 = sig_t[k] ** 2 * 2 * np.log(SMAX / SMIN)
      var_mean = (1 - g2 / lam / N) ** 2 * var
      var = var_mean + g2 / N
    elif kind == 'ancestral_sampling':
      d2 = sig_d[i] ** 2 - prev2
      var_mean = (1 - d2 / lam) ** 2 * var
      var = var_mean + prev2 * d2 / sig_d[i] ** 2
  return var_mean


def _log_ratio(x, field, expected):
  spec = analytic.measured_spectrum(np.asarray(x), mean=np.asarray(field.mean))
  return np.log(spec / expected)


@pytest.mark.parametrize('kind', ['reverse_diffusion', 'euler_maruyama', 'ancestral_sampling'])
def test_predictors_match_mode_recursion_and_converge(kind):
  field = _field()
  s = np.asarray(field.spectrum)
  eps = 1e-5
  errs = []
  for N in (20, 200):
    sde = sde_lib.VESDE(SMIN, SMAX, N)
    smp = sampling.get_pc_sampler(sde, (NS, H, H, C), kind, 'none', snr=0.16, eps=eps)
    x, nfe = smp(jax.random.PRNGKey(N), _score(field, sde))
    assert int(nfe) == N
    expected = _mode_recursion(kind, s, N, eps)
    lr = _log_ratio(x, field, expected)
    # sampler == its per-mode recursion up to sampling noise
    assert abs(lr.mean()) < 0.02, (kind, N, lr.mean())
    assert np.abs(lr).max() < 0.12, (kind, N, np.abs(lr).max())
    errs.append(np.abs(np.log(expected / s)).max())
    # the mean is right
    np.testing.assert_allclose(np.asarray(x).mean(), 0.5, atol=0.01)
  # the recursion's error to the data spectrum shrinks with N and is small at N=200
  assert errs[1] < errs[0] / 3, errs
  assert errs[1] < 0.08, errs


@pytest.mark.parametrize('sde_name', ['vp', 'subvp'])
def test_vp_samplers_recover_spectrum(sde_name):
  field = _field(mean=0.2, std=0.5)
  cls = sde_lib.VPSDE if sde_name == 'vp' else sde_lib.subVPSDE
  sde = cls(0.1, 20., 500)
  smp = sampling.get_pc_sampler(sde, (NS, H, H, C), 'reverse_diffusion', 'langevin', snr=0.01,
                                eps=1e-3)
  x, nfe = smp(jax.random.PRNGKey(0), _score(field, sde))
  assert int(nfe) == 1000
  lr = _log_ratio(x, field, np.asarray(field.spectrum))
  assert abs(lr.mean()) < 0.03 and np.abs(lr).max() < 0.15, (lr.mean(), np.abs(lr).max())
  np.testing.assert_allclose(np.asarray(x).mean(), 0.2, atol=0.01)


def test_pc_langevin_recovers_spectrum_and_corrector_helps():
  """reverse_diffusion + langevin (score_sde's default VE sampler) at moderate N."""
  field = _field()
  s = np.asarray(field.spectrum)
  sde = sde_lib.VESDE(SMIN, SMAX, 200)
  out = {}
  for corr in ('none', 'langevin'):
    smp = sampling.get_pc_sampler(sde, (NS, H, H, C), 'reverse_diffusion', corr, snr=0.16,
                                  eps=1e-5)
    x, nfe = smp(jax.random.PRNGKey(3), _score(field, sde))
    out[corr] = _log_ratio(x, field, s)
  assert int(nfe) == 400
  assert abs(out['langevin'].mean()) < 0.03 and np.abs(out['langevin']).max() < 0.15


def test_ode_sampler_recovers_spectrum_and_reports_nfe():
  field = _field()
  sde = sde_lib.VESDE(SMIN, SMAX, 1000)
  smp = sampling.get_ode_sampler(sde, (NS, H, H, C), rtol=1e-5, atol=1e-5, eps=1e-5)
  x, nfe, info = jax.jit(smp.run, static_argnames='score_fn')(
      jax.random.PRNGKey(0), score_fn=_score(field, sde))
  lr = _log_ratio(x, field, np.asarray(field.spectrum))
  assert abs(lr.mean()) < 0.03 and np.abs(lr).max() < 0.15
  per = np.asarray(info['nfe_per_sample'])
  assert 20 < int(nfe) < 2000 and per.max() <= int(nfe) and per.min() >= 8
  assert int(info['first_nonfinite_step']) == -1
  # looser tolerances cost fewer evaluations
  smp2 = sampling.get_ode_sampler(sde, (8, H, H, C), rtol=1e-2, atol=1e-2, eps=1e-5)
  _, nfe2 = smp2(jax.random.PRNGKey(0), _score(field, sde))
  assert int(nfe2) < int(nfe)


def test_ode_single_sample_is_batch_independent():
  field = _field()
  sde = sde_lib.VESDE(SMIN, SMAX, 1000)
  a, _ = sampling.get_ode_sampler(sde, (6, H, H, C), eps=1e-5)(jax.random.PRNGKey(5),
                                                               _score(field, sde))
  b, _ = sampling.get_ode_sampler(sde, (2, H, H, C), eps=1e-5)(jax.random.PRNGKey(5),
                                                               _score(field, sde), offset=2)
  np.testing.assert_allclose(np.asarray(a[2:4]), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_jit_and_eager_agree():
  field = _field()
  sde = sde_lib.VESDE(SMIN, SMAX, 12)
  smp = sampling.get_pc_sampler(sde, (4, H, H, C), 'reverse_diffusion', 'langevin', snr=0.16,
                                eps=1e-5, n_steps=2)
  score = _score(field, sde)
  x_jit, _ = smp(jax.random.PRNGKey(0), score)
  with jax.disable_jit():
    x_eager, nfe, _ = smp.run(jax.random.PRNGKey(0), score)
  assert nfe == 36
  np.testing.assert_allclose(np.asarray(x_jit), np.asarray(x_eager), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('pred,corr', [('reverse_diffusion', 'langevin'),
                                       ('euler_maruyama', 'none'),
                                       ('ancestral_sampling', 'ald')])
def test_sample_k_independent_of_batch_size(pred, corr):
  field = _field()
  sde = sde_lib.VESDE(SMIN, SMAX, 10)
  score = _score(field, sde)
  mk = lambda b: sampling.get_pc_sampler(sde, (b, H, H, C), pred, corr, snr=0.16, eps=1e-5,
                                         corrector_norm='sample')
  x8, _ = mk(8)(jax.random.PRNGKey(7), score)
  x4a, _ = mk(4)(jax.random.PRNGKey(7), score, offset=0)
  x4b, _ = mk(4)(jax.random.PRNGKey(7), score, offset=4)
  np.testing.assert_allclose(np.asarray(x8), np.concatenate([x4a, x4b]), rtol=1e-6, atol=1e-6)
  # different seeds or offsets give different samples
  assert not np.allclose(np.asarray(x4a), np.asarray(x4b))


def test_batch_norm_rule_couples_samples():
  """score_sde's batch-mean snr rule: the step size depends on the whole batch."""
  field = _field()
  sde = sde_lib.VESDE(SMIN, SMAX, 10)
  score = _score(field, sde)
  mk = lambda b: sampling.get_pc_sampler(sde, (b, H, H, C), 'reverse_diffusion', 'langevin',
                                         snr=0.16, eps=1e-5, corrector_norm='batch')
  x8, _ = mk(8)(jax.random.PRNGKey(7), score)
  x4, _ = mk(4)(jax.random.PRNGKey(7), score)
  assert not np.allclose(np.asarray(x8[:4]), np.asarray(x4), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(x8[:4]), np.asarray(x4), rtol=0.2, atol=0.2)


def test_langevin_step_uses_batch_mean_norms():
  """One corrector step, checked against the formula with numpy."""
  sde = sde_lib.VESDE(SMIN, SMAX, 5)
  score = lambda x, t: -2. * x + 1.
  shape = (3, 4, 4, 1)
  smp = sampling.get_pc_sampler(sde, shape, 'none', 'langevin', snr=0.3, eps=1e-5,
                                denoise=False)
  noise = sampling._normal_fn(shape)
  keys = sampling.sample_keys(jax.random.PRNGKey(1), 0, 3)
  x0 = np.asarray(noise(keys, 0)) * SMAX
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1)
  z = np.asarray(noise(step_keys, 1))
  g = -2. * x0 + 1.
  n_norm = np.mean(np.linalg.norm(z.reshape(3, -1), axis=1))
  g_norm = np.mean(np.linalg.norm(g.reshape(3, -1), axis=1))
  e = 2 * (0.3 * n_norm / g_norm) ** 2
  expected = x0 + e * g + np.sqrt(2 * e) * z
  sde1 = sde_lib.VESDE(SMIN, SMAX, 1)
  smp = sampling.get_pc_sampler(sde1, shape, 'none', 'langevin', snr=0.3, eps=1e-5,
                                denoise=False)
  x, nfe = smp(jax.random.PRNGKey(1), score)
  assert int(nfe) == 1
  np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-5)


def test_unknown_names_list_valid_ones():
  sde = sde_lib.VESDE(SMIN, SMAX, 5)
  with pytest.raises(ValueError, match=r"predictor='reverse_difusion'.*valid names.*"
                                       r"reverse_diffusion.*Did you mean"):
    sampling.get_pc_sampler(sde, (2, 4, 4, 1), 'reverse_difusion', 'none', snr=0.1)
  with pytest.raises(ValueError, match=r"corrector='foo'.*\['ald', 'langevin', 'none'\]"):
    sampling.get_pc_sampler(sde, (2, 4, 4, 1), 'none', 'foo', snr=0.1)
  with pytest.raises(ValueError, match='snr must be > 0'):
    sampling.get_pc_sampler(sde, (2, 4, 4, 1), 'none', 'langevin', snr=0.)
  with pytest.raises(ValueError, match='n_steps_each'):
    sampling.get_pc_sampler(sde, (2, 4, 4, 1), 'none', 'langevin', snr=0.1, n_steps=0)


def test_nonfinite_step_is_reported():
  sde = sde_lib.VESDE(SMIN, SMAX, 10)
  score = lambda x, t: jnp.where(t[:, None, None, None] < 0.5, jnp.nan, -x / 2500.)
  smp = sampling.get_pc_sampler(sde, (2, 4, 4, 1), 'reverse_diffusion', 'none', snr=0.1,
                                eps=1e-5)
  _, _, info = jax.jit(smp.run, static_argnames='score_fn')(jax.random.PRNGKey(0),
                                                            score_fn=score)
  t = np.linspace(1, 1e-5, 10)
  assert int(info['first_nonfinite_step']) == int(np.argmax(t < 0.5))
