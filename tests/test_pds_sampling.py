"""PDS inside the samplers: the reference's one-step vectors and a full recorded run
(tests/fixtures/pds, from fudan-zvg/PDS), and the identity preconditioner."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_pds import preconditioning, sampling, sde_lib

FIX = os.path.join(os.path.dirname(__file__), 'fixtures', 'pds')
SMIN, SMAX = 0.01, 50.


@pytest.fixture(scope='module')
def vec():
  with np.load(os.path.join(FIX, 'pds_vectors.npz')) as f:
    return {k: f[k] for k in f.files}


def nhwc(a):
  return jnp.asarray(np.moveaxis(np.asarray(a), -3, -1))


def fake_score(x, t):
  sigma = SMIN * (SMAX / SMIN) ** t
  return -(x - 0.5) / (sigma[:, None, None, None] ** 2 + 0.05)


def _precond():
  load = preconditioning.load_statistics
  return preconditioning.Preconditioner.from_statistics(
      freq_stats=load(os.path.join(FIX, 'cifar10_freq.npy')),
      space_stats=load(os.path.join(FIX, 'cifar10_space.npy')), alpha=5.0)


def _ctx(sde, noise_arr, precond, snr=0.16):
  z = nhwc(noise_arr)
  return sampling.StepContext(
      sde=sde, score_fn=fake_score, precond=precond, mode='reference', eta=1.,
      probability_flow=False, snr=snr, n_steps=1, corrector_norm='batch', N=sde.N,
      noise=lambda keys, tag: z, replicate=lambda v: v)


@pytest.mark.parametrize('case', ['A', 'B'])
def test_one_predictor_and_corrector_step_match_reference(vec, case):
  N = int(vec[f'{case}_N'])
  sde = sde_lib.VESDE(SMIN, SMAX, N)
  x, t = nhwc(vec[f'{case}_x']), jnp.asarray(vec[f'{case}_t'])
  i = jnp.asarray(vec[f'{case}_timestep'][0], jnp.int32)
  assert np.all(vec[f'{case}_timestep'] == vec[f'{case}_timestep'][0]) or case == 'B'
  P = _precond()
  keys = sampling.sample_keys(jax.random.PRNGKey(0), 0, 2)
  if case == 'B':  # two different time indices in the batch: run sample by sample
    outs = []
    for b in range(2):
      ctx = _ctx(sde, vec[f'{case}_pred_z'][b:b + 1], P)
      ib = jnp.asarray(vec['B_timestep'][b], jnp.int32)
      outs.append(sampling.reverse_diffusion(ctx, x[b:b + 1], t[b:b + 1], ib, keys[:1]))
    px = jnp.concatenate([o[0] for o in outs])
    pm = jnp.concatenate([o[1] for o in outs])
  else:
    px, pm = sampling.reverse_diffusion(_ctx(sde, vec['A_pred_z'], P), x, t, i, keys)
  np.testing.assert_allclose(pm, nhwc(vec[f'{case}_pred_x_mean']), rtol=5e-5, atol=1e-5)
  # x = x_mean + G M z: G = sqrt(sigma_i^2 - sigma_{i-1}^2) inherits ~1e-5 relative error
  # from one-ulp differences of the reference's float32 torch sigmas (fixture README)
  want = nhwc(vec[f'{case}_pred_x'])
  np.testing.assert_allclose(px, want, rtol=0, atol=5e-5 * float(np.abs(want).max()))
  # corrector: batch-mean norms over both samples
  cx, cm = sampling.langevin(_ctx(sde, vec[f'{case}_corr_z'], P), x, t, i, keys)
  np.testing.assert_allclose(cm, nhwc(vec[f'{case}_corr_x_mean']), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cx, nhwc(vec[f'{case}_corr_x']), rtol=1e-5, atol=1e-5)


def test_full_pds_sampler_replays_reference_run(vec):
  """N=10 reverse_diffusion + langevin with both filters, the reference's recorded noise."""
  N = int(vec['e2efake_N'])
  eps = 1e-5 * float(vec['e2efake_speed_up'])
  sde = sde_lib.VESDE(SMIN, SMAX, N)
  noises = nhwc(vec['e2efake_noises'])            # [prior, (corr, pred) per step]

  def source(k, tag):
    return noises[jnp.where(k < 0, 0, 1 + 2 * k + jnp.where(tag == 0, 1, 0))]

  smp = sampling.get_pc_sampler(sde, (2, 32, 32, 3), 'reverse_diffusion', 'langevin', snr=0.16,
                                eps=eps, preconditioner=_precond(), noise_source=source)
  x, nfe = smp(jax.random.PRNGKey(0), fake_score)
  assert int(nfe) == 20
  np.testing.assert_allclose(x, nhwc(vec['e2efake_samples']), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('pred,corr', [('reverse_diffusion', 'langevin'),
                                       ('euler_maruyama', 'ald')])
def test_identity_preconditioner_is_bit_identical_to_vanilla(pred, corr):
  sde = sde_lib.VESDE(SMIN, SMAX, 8)
  shape = (4, 8, 8, 3)
  kw = dict(snr=0.16, eps=1e-5)
  van = sampling.get_pc_sampler(sde, shape, pred, corr, **kw)
  ide = sampling.get_pc_sampler(sde, shape, pred, corr, preconditioner=
                                preconditioning.Preconditioner.identity(), **kw)
  a, _ = van(jax.random.PRNGKey(2), fake_score)
  b, _ = ide(jax.random.PRNGKey(2), fake_score)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_preconditioner_is_a_jit_argument():
  """A new alpha does not recompile: the gains are traced leaves."""
  sde = sde_lib.VESDE(SMIN, SMAX, 4)
  P5 = _precond()
  load = preconditioning.load_statistics
  P3 = preconditioning.Preconditioner.from_statistics(
      freq_stats=load(os.path.join(FIX, 'cifar10_freq.npy')),
      space_stats=load(os.path.join(FIX, 'cifar10_space.npy')), alpha=3.0)
  smp = sampling.get_pc_sampler(sde, (2, 32, 32, 3), 'reverse_diffusion', 'langevin', snr=0.16,
                                eps=1e-5)
  fn = smp.jitted(fake_score)
  a = fn(jax.random.PRNGKey(0), precond=P5, offset=0)[0]
  b = fn(jax.random.PRNGKey(0), precond=P3, offset=0)[0]
  assert fn._cache_size() == 1
  assert not np.allclose(np.asarray(a), np.asarray(b))
