"""Conjugate and splitting integrators on the exact Gaussian-field oracle.

Numbers are checked against independent computations: a DDIM written here, the exact
probability-flow ODE solved per Fourier mode by scipy (oracle.pf_ode_reference), exact
output moments (oracle.output_moments) checked against Monte Carlo, and fitted
convergence slopes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.analytic import gaussian_field_psld, gaussian_field_vp
from score_sde_pds import preconditioning, run_lib, sampling, sde_lib
from score_sde_pds.integrators import common, conjugate, oracle, splitting
from score_sde_pds.integrators import config as iconfig
from score_sde_pds.models import analytic

H = W = 4
C = 1


def _field(std=0.5, mean=0.1, zero=False):
  s = analytic.power_law_spectrum((H, W, C), 3., 1., std ** 2) * (0. if zero else 1.)
  return analytic.GaussianField(spectrum=jnp.asarray(s, jnp.float32),
                                mean=jnp.asarray([mean], jnp.float32))


FIELD = _field()


def _prior(sde, B, seed=0):
  """(standard normal draw (B,H,W,kC), the prior state it maps to)."""
  k = sde.block_dim
  z0 = np.random.default_rng(seed).normal(size=(B, H, W, k * C))
  chol = sde_lib.block_chol(np.asarray(sde_lib.host_sde(sde).prior_cov_block(), float))
  return z0, np.asarray(sde_lib.apply_block(chol, z0))


_REFS = {}


def _strong_errors(sde, make, Ns, field=FIELD, eps=1e-3, B=2):
  """RMS distance of the sampler's x to the exact probability-flow solution, per N."""
  z0, zT = _prior(sde, B)
  key = (type(sde).__name__, id(field), eps, B)
  if key not in _REFS:   # the scipy reference is the slow part: once per SDE and field
    _REFS[key] = oracle.pf_ode_reference(sde, field, zT, eps)[..., :C]
  ref = _REFS[key]
  score_fn = lambda z, t: field.score(sde, z, t)
  src = lambda k, tag: jnp.asarray(z0, jnp.float32)
  errs = []
  for N in Ns:
    smp = make(N, src)
    x, _, _ = jax.jit(lambda r: smp.run(r, score_fn))(jax.random.PRNGKey(0))
    errs.append(float(np.sqrt(np.mean((np.asarray(x, np.float64) - ref) ** 2))))
  return np.asarray(errs)


def _slope(Ns, errs):
  return float(np.polyfit(np.log(Ns), np.log(errs), 1)[0])


# ----------------------------------------------------------------------------- conjugate


@pytest.mark.parametrize('name', ['vp', 've'])
def test_conjugate_b0_is_ddim(name):
  """B = 0 is DDIM exactly: x' = a' (x - s e) / a + s' e (VP), x' = x + (s' - s) e (VE)."""
  N, B = 10, 3
  with jax.enable_x64(True):
    sde = sde_lib.VPSDE() if name == 'vp' else sde_lib.VESDE()
    eps = 1e-3 if name == 'vp' else 1e-5
    field = analytic.GaussianField(spectrum=jnp.asarray(FIELD.spectrum, jnp.float64),
                                   mean=jnp.asarray(FIELD.mean, jnp.float64))
    z0, zT = _prior(sde, B)
    score_fn = lambda z, t: field.score(sde, z, t)
    smp = conjugate.get_conjugate_sampler(sde, (B, H, W, C), num_steps=N, eps=eps,
                                          noise_source=lambda k, tag: jnp.asarray(z0))
    x, nfe, info = smp.run(jax.random.PRNGKey(0), score_fn)

    def alpha_sigma(t):
      if name == 've':
        return 1., 0.01 * (50. / 0.01) ** t
      lmc = -0.25 * t ** 2 * (20. - 0.1) - 0.5 * t * 0.1
      return np.exp(lmc), np.sqrt(1. - np.exp(2. * lmc))

    ts = 1. - np.arange(N + 1) * (1. - eps) / N
    y = jnp.asarray(zT)
    for i in range(N):
      a, s = alpha_sigma(ts[i])
      a1, s1 = alpha_sigma(ts[i + 1])
      e = -s * score_fn(y, jnp.full((B,), ts[i]))
      y = a1 * (y - s * e) / a + s1 * e
    assert int(nfe) == N and int(info['first_nonfinite_step']) == -1
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize('rule,lam,order', [('euler', 0., 1), ('euler', 1., 1), ('heun', 0., 2),
                                            ('ab2', 0., 2)])
def test_conjugate_convergence_order_vp(rule, lam, order):
  sde = sde_lib.VPSDE()
  Ns = (12, 48)
  errs = _strong_errors(sde, lambda N, src: conjugate.get_conjugate_sampler(
      sde, (2, H, W, C), num_steps=N, rule=rule, lam=lam, noise_source=src), Ns)
  slope = _slope(Ns, errs)
  if order == 1:
    assert -1.25 < slope < -0.75, (errs, slope)
  else:
    assert slope < -1.5, (errs, slope)


def test_natural_eps_frame_is_exact_for_a_point_mass():
  """Data = a point mass: along the exact ODE path z_t = m_t + S_t eps with S the natural
  frame and eps constant, so frozen-eps steps are exact at any N; the Cholesky frame is not."""
  sde = sde_lib.PSLDSDE()
  point = _field(zero=True)
  errs = {frame: _strong_errors(sde, lambda N, src: conjugate.get_conjugate_sampler(
      sde, (2, H, W, C), num_steps=N, eps_frame=frame, noise_source=src), (4,), field=point)[0]
          for frame in ('natural', 'cholesky')}
  assert errs['natural'] < 1e-4 and errs['cholesky'] > 1e-2, errs


def test_conjugate_non_diagonal_b_and_spectral_reparameterisations():
  sde = sde_lib.PSLDSDE()
  # a constant spectral gain g is lambda-DDIM with lam g, step for step
  z0, _ = _prior(sde, 2)
  src = lambda k, tag: jnp.asarray(z0, jnp.float32)
  score_fn = lambda z, t: FIELD.score(sde, z, t)
  a = conjugate.get_conjugate_sampler(sde, (2, H, W, C), num_steps=6, lam=0.6,
                                      noise_source=src)(jax.random.PRNGKey(0), score_fn)[0]
  b = conjugate.get_conjugate_sampler(sde, (2, H, W, C), num_steps=6, lam=0.3, b_matrix='spectral',
                                      spectral_gain=np.full((H, W, C), 2.), noise_source=src)(
                                          jax.random.PRNGKey(0), score_fn)[0]
  # float32 round-off relative to the largest entry (6 Cholesky-frame steps overshoot)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))
  # a varying (PDS) gain and B = lam 1 1^T are other exact conjugates: same limit
  gain = preconditioning.statistics_to_gain(np.log1p(np.asarray(FIELD.second_moment_spectrum())),
                                            5.) ** 2
  for kw in ({'b_matrix': 'spectral', 'spectral_gain': gain, 'lam': 0.5},
             {'b_matrix': 'ones', 'lam': 0.3}):
    errs = _strong_errors(sde, lambda N, src: conjugate.get_conjugate_sampler(
        sde, (2, H, W, C), num_steps=N, eps_frame='natural', noise_source=src, **kw), (32, 64))
    assert errs[1] < 0.7 * errs[0], (kw, errs)


# ----------------------------------------------------------------------------- splitting


@pytest.mark.parametrize('scheme', ['nse', 'rse', 'nvv', 'rvv', 'cvv'])
def test_deterministic_splitting_converges_at_first_order(scheme):
  sde = sde_lib.PSLDSDE()
  Ns = (32, 64)
  errs = _strong_errors(sde, lambda N, src: splitting.get_splitting_sampler(
      sde, (2, H, W, C), integrator=scheme, num_steps=N, noise_source=src), Ns)
  assert splitting.SPLITTING_SCHEMES[scheme].order == 1
  assert _slope(Ns, errs) < -0.8, errs


def _moments(sde, build, N, tags):
  score_fn = lambda z, t: FIELD.score(sde, z, t)
  return oracle.output_moments(build, score_fn, (H, W, sde.block_dim * C), N, tags)


def _spec_err(sde, scheme, N, precond=None, **kw):
  def build(src, B):
    return splitting.get_splitting_sampler(sde, (B, H, W, C), integrator=scheme, num_steps=N,
                                           noise_source=src, preconditioner=precond, **kw)
  tags = build(None, 1).noise_tags
  mean, cov, _ = _moments(sde, build, N, tags)
  return oracle.output_spectrum_error(cov, FIELD), oracle.exact_frechet_distance(mean, cov, FIELD)


@pytest.mark.parametrize('scheme', ['oba', 'baoab', 'roba', 'sscs'])
def test_stochastic_splitting_weak_convergence(scheme):
  sde = sde_lib.CLDSDE()
  Ns = (32, 64)
  errs = np.asarray([_spec_err(sde, scheme, N)[0] for N in Ns])
  assert _slope(Ns, errs) < -0.7, errs


def test_pds_in_the_o_step():
  sde = sde_lib.CLDSDE()
  ident = _spec_err(sde, 'oba', 16, precond=preconditioning.Preconditioner.identity())
  assert ident == _spec_err(sde, 'oba', 16)
  p = preconditioning.Preconditioner.from_statistics(
      freq_stats=np.log1p(np.asarray(FIELD.second_moment_spectrum())), alpha=3.)
  errs = [_spec_err(sde, 'oba', N, precond=p)[0] for N in (16, 32)]
  assert errs[0] != ident[0], (errs, ident)          # the preconditioner is applied
  assert errs[1] < 0.7 * errs[0], errs


def test_exact_moments_match_monte_carlo():
  sde = sde_lib.PSLDSDE()
  N = 8

  def build(src, B):
    return splitting.get_splitting_sampler(sde, (B, H, W, C), integrator='oba', num_steps=N,
                                           noise_source=src)
  mean, cov, _ = _moments(sde, build, N, [0])
  x, _ = build(None, 4000)(jax.random.PRNGKey(3), lambda z, t: FIELD.score(sde, z, t))
  x = np.asarray(x, np.float64)
  var_mc = analytic.measured_spectrum(x)
  var_ex = np.real(cov[..., 0, 0])
  assert np.mean(np.abs(var_mc[..., 0] / var_ex - 1)) < 0.04        # MC std ~ 2.2 % per mode
  np.testing.assert_allclose(x.mean(), mean.mean(), atol=4 * np.sqrt(var_ex[0, 0] / x.size))


@pytest.mark.parametrize('name,scheme,N', [('cld', 'sscs', 200), ('psld', 'nvv', 100)])
def test_phase_space_samplers_recover_target_variances(name, scheme, N):
  sde = sde_lib.CLDSDE() if name == 'cld' else sde_lib.PSLDSDE()
  err, fd = _spec_err(sde, scheme, N)
  assert err < 0.05, (err, fd)


def test_sampler_contract_and_per_sample_keys():
  sde = sde_lib.PSLDSDE()
  score_fn = lambda z, t: FIELD.score(sde, z, t)
  smp4 = splitting.get_splitting_sampler(sde, (4, H, W, C), integrator='roba', num_steps=5)
  smp2 = splitting.get_splitting_sampler(sde, (2, H, W, C), integrator='roba', num_steps=5)
  rng = jax.random.PRNGKey(7)
  x4, nfe, info = smp4.run(rng, score_fn)
  x2, _, _ = smp2.run(rng, score_fn, offset=2)
  assert x4.shape == (4, H, W, C) and int(nfe) == 5 and int(info['first_nonfinite_step']) == -1
  np.testing.assert_allclose(x4[2:], x2, rtol=1e-5, atol=1e-6)
  # network evaluations per step as in the paper (rvv: one shared evaluation per step plus
  # the initial one); run() reports the attribute (checked for roba above)
  nfes = {s: splitting.get_splitting_sampler(sde, (2, H, W, C), integrator=s, num_steps=5).nfe
          for s in ('nse', 'nvv', 'rvv', 'cvv', 'oba', 'baoab', 'sscs')}
  assert nfes == {'nse': 10, 'nvv': 15, 'rvv': 6, 'cvv': 6, 'oba': 15, 'baoab': 25, 'sscs': 5}
  bad = lambda z, t: jnp.where(t[:, None, None, None] < 0.5, jnp.nan, 1.) * score_fn(z, t)
  assert int(smp2.run(rng, bad)[2]['first_nonfinite_step']) >= 0


# ----------------------------------------------------------------------------- grids


def test_time_grids():
  sde = sde_lib.VPSDE()
  np.testing.assert_allclose(common.time_grid(sde, 4, 1e-3), 1. - np.arange(5) * (1 - 1e-3) / 4)
  q = common.time_grid(sde, 4, 1e-3, 'quadratic')
  np.testing.assert_allclose(q, 1e-3 + (1 - 1e-3) * (1 - np.arange(5) / 4) ** 2)
  for s in (sde, sde_lib.VESDE(), sde_lib.PSLDSDE()):
    g = common.time_grid(s, 6, 1e-3, 'logsnr')
    d = np.diff(common.log_snr(sde_lib.host_sde(s), g))
    np.testing.assert_allclose(d, d[0], rtol=1e-9)
    assert g[0] == 1. and g[-1] == 1e-3
  with pytest.raises(ValueError, match='config.sampling.grid'):
    common.time_grid(sde, 4, 1e-3, 'cosine')


# ----------------------------------------------------------------------------- config


def _config(kind='psld', **sampling_kw):
  config = (gaussian_field_psld if kind == 'psld' else gaussian_field_vp).get_config()
  config.data.image_size = H
  config.data.num_channels = C
  config.sampling.batch_size = 2
  config.sampling.num_samples = 2
  config.model.num_scales = 6
  if kind == 'psld' and sampling_kw.get('method') == 'conjugate':
    config.sampling.integrator = ''   # the PSLD oracle config's default is splitting 'cvv'
  for k, v in sampling_kw.items():
    setattr(config.sampling, k, v)
  return config


def _build(config, precond=None):
  sde, eps = sde_lib.get_sde(config)
  return sampling.get_sampler_from_config(config, sde, (2, H, W, C), eps, precond)


@pytest.mark.parametrize('kind,kw', [
    ('psld', {'method': 'conjugate'}), ('psld', {'method': 'conjugate', 'integrator': 'heun'}),
    ('psld', {'method': 'splitting', 'integrator': 'baoab', 'noise_scale': 0.5}),
    ('psld', {'method': 'splitting', 'grid': 'logsnr', 'eps_frame': 'natural'}),
    ('vp', {'method': 'conjugate', 'integrator': 'ab2', 'grid': 'quadratic', 'num_steps': 3}),
    ('vp', {'method': 'conjugate', 'b_matrix': 'spectral', 'pds': None}),
])
def test_config_builds_integrators(kind, kw):
  config = _config(kind, **{k: v for k, v in kw.items() if k != 'pds'})
  precond = None
  if 'pds' in kw:
    config.sampling.pds.enabled = True
    precond = run_lib.build_preconditioner(config)
  smp = _build(config, precond)
  assert isinstance(smp, sampling.Sampler)
  assert len(smp.grid) == int(kw.get('num_steps', 6)) + 1


@pytest.mark.parametrize('kind,kw,match', [
    ('psld', {'method': 'pc'}, "method='conjugate' or 'splitting'"),
    ('psld', {'method': 'ode'}, "method='conjugate' or 'splitting'"),
    ('psld', {'method': 'conjugate', 'integrator': 'rk4'}, 'config.sampling.integrator'),
    ('psld', {'method': 'splitting', 'integrator': 'euler'}, 'config.sampling.integrator'),
    ('psld', {'method': 'splitting', 'grid': 'cosine'}, 'config.sampling.grid'),
    ('psld', {'method': 'conjugate', 'b_matrix': 'diag'}, 'config.sampling.b_matrix'),
    ('psld', {'method': 'conjugate', 'eps_frame': 'qr'}, 'config.sampling.eps_frame'),
    ('psld', {'method': 'conjugate', 'lam': float('nan')}, 'config.sampling.lam'),
    ('psld', {'method': 'splitting', 'noise_scale': -1.}, 'config.sampling.noise_scale'),
    ('psld', {'method': 'splitting', 'num_steps': -3}, 'config.sampling.num_steps'),
    ('vp', {'method': 'splitting'}, "config.training.sde must be 'cld' or 'psld'"),
    ('vp', {'method': 'conjugate', 'b_matrix': 'spectral'}, 'pds.enabled=True'),
    ('vp', {'method': 'conjugate', 'integrator': 'heun', 'b_matrix': 'spectral',
            'pds': True}, "integrator='euler' only"),
    ('vp', {'method': 'conjugate', 'pds': True}, "unless config.sampling.b_matrix='spectral'"),
    ('psld', {'method': 'splitting', 'integrator': 'cvv', 'pds': True}, r'\(O\) steps'),
    ('vp', {'method': 'rk'}, 'config.sampling.method'),
])
def test_config_rejects_bad_values(kind, kw, match):
  config = _config(kind, **{k: v for k, v in kw.items() if k != 'pds'})
  config.sampling.pds.enabled = bool(kw.get('pds', False))
  with pytest.raises(ValueError, match=match):
    _build(config)


def test_main_sample_mode_runs_the_hybrid_on_the_oracle(tmp_path):
  config = _config('psld', num_steps=4, num_samples=3)
  config.data.num_channels = 1
  folder = run_lib.sample(config, str(tmp_path))
  x = run_lib.load_samples(folder)
  assert x.shape == (3, H, W, C) and np.all(np.isfinite(x))
  assert iconfig.DEFAULT_INTEGRATOR['splitting'] == config.sampling.integrator == 'cvv'


def test_closed_form_2x2_exponential_matches_scipy():
  import scipy.linalg
  r = np.random.default_rng(0)
  A = r.normal(size=(50, 2, 2)) * r.uniform(0, 5, size=(50, 1, 1))
  A[0] = [[0., 1.], [0., 0.]]                              # nilpotent (critical damping)
  A[1] = [[-1., 2.], [-3., -1.]]                           # complex eigenvalues
  ref = np.stack([scipy.linalg.expm(a) for a in A])
  np.testing.assert_allclose(splitting.expm2(A), ref, rtol=1e-10, atol=1e-12)
