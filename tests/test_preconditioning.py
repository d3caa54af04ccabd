"""PDS operators against the fudan-zvg/PDS reference vectors and their mathematics.

Fixture arrays are NCHW (reference layout); the operators are NHWC.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_configs
from score_sde_pds import preconditioning as pre
from score_sde_pds.preconditioning import Preconditioner

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pds')
FREQ = os.path.join(FIX, 'cifar10_freq.npy')
SPACE = os.path.join(FIX, 'cifar10_space.npy')
SHAPE = (32, 32, 3)
CASES = {
    'both': dict(freq_stats=FREQ, space_stats=SPACE),
    'freq_only': dict(freq_stats=FREQ),
    'space_only': dict(space_stats=SPACE),
}


@pytest.fixture(scope='module')
def vec():
  with np.load(os.path.join(FIX, 'pds_vectors.npz')) as f:
    return {k: f[k] for k in f.files}


def nhwc(a):
  """(B, C, H, W) or (C, H, W) -> channels last."""
  a = np.asarray(a)
  return np.moveaxis(a, -3, -1)


def inner(u, v):
  return float(np.sum(np.asarray(u, np.float64) * np.asarray(v, np.float64)))


@pytest.fixture(scope='module')
def pcs():
  return {case: Preconditioner.from_statistics(**kw, shape=SHAPE)
          for case, kw in CASES.items()}


# ---------------------------------------------------------------- reference vectors


def test_gains_match_reference_masks(vec, pcs):
  freq = pre.load_statistics(FREQ, SHAPE)
  space = pre.load_statistics(SPACE, SHAPE)
  np.testing.assert_array_equal(freq, nhwc(vec['stats_freq_raw']))
  # the gain rule is bit-identical to the reference's float32 computation
  np.testing.assert_array_equal(pre.statistics_to_gain(freq, 5.0),
                                nhwc(vec['freq_mask_both'][0]))
  np.testing.assert_array_equal(pre.statistics_to_gain(space, 5.0),
                                nhwc(vec['space_mask_both'][0]))
  for case, p in pcs.items():
    r_ref = vec[f'freq_mask_{case}']
    d_ref = vec[f'space_mask_{case}']
    if r_ref.ndim == 4:
      assert p.use_freq
      # the stored r is the even part of the reference mask (<= 1 ulp apart)
      np.testing.assert_allclose(p.freq_gain, nhwc(r_ref[0]), rtol=2e-7, atol=0)
    else:
      assert not p.use_freq and float(r_ref) == 1.0
    if d_ref.ndim == 4:
      assert p.use_space
      np.testing.assert_array_equal(p.space_gain, nhwc(d_ref[0]))
    else:
      assert not p.use_space and float(d_ref[0]) == 1.0
  r = np.asarray(pcs['both'].freq_gain)
  assert r.min() >= 1.0 and r.max() <= 5.0 / 4.0 + 1e-6


@pytest.mark.parametrize('case', list(CASES))
def test_noise_and_drift_maps_match_reference(vec, pcs, case):
  p = pcs[case]
  z = jnp.asarray(nhwc(vec['op_z']))
  g = jnp.asarray(nhwc(vec['op_g']))
  n = p.noise(z)
  d = p.drift(g)
  assert n.dtype == jnp.float32 and d.dtype == jnp.float32
  assert n.shape == z.shape and d.shape == g.shape
  np.testing.assert_allclose(n, nhwc(vec[f'op_noise_map_{case}']), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d, nhwc(vec[f'op_drift_map_{case}']), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('step', ['A', 'B'])
def test_maps_on_sampler_intermediates(vec, pcs, step):
  """The one-step vectors: the preconditioned drift / noise the reference computed
  inside its predictor and corrector (both filters, alpha 5)."""
  p = pcs['both']
  pairs = [('pred_rev_f', 'pred_f_precond', p.drift),
           ('pred_z', 'pred_noise_precond', p.noise),
           ('score', 'corr_grad_precond', p.drift),
           ('corr_z', 'corr_noise_precond', p.noise)]
  for src, dst, fn in pairs:
    want = nhwc(vec[f'{step}_{dst}'])
    got = np.asarray(fn(jnp.asarray(nhwc(vec[f'{step}_{src}']))))
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(scale, 1.0),
                               err_msg=f'{step}: {src} -> {dst}')
  # and the predictor's x_mean = x - M M^T rev_f built from our drift
  x_mean = nhwc(vec[f'{step}_x']) - np.asarray(
      p.drift(jnp.asarray(nhwc(vec[f'{step}_pred_rev_f']))))
  want = nhwc(vec[f'{step}_pred_x_mean'])
  np.testing.assert_allclose(x_mean, want, rtol=1e-5,
                             atol=1e-5 * max(np.abs(want).max(), 1.0))


# ---------------------------------------------------------------- mathematics


def _dense(fn, shape):
  """Matrix (n, n) of the linear map fn on images of `shape` (float64 accumulate)."""
  n = int(np.prod(shape))
  basis = jnp.eye(n, dtype=jnp.float32).reshape((n,) + shape)
  cols = np.asarray(fn(basis), np.float64).reshape(n, n)  # row j = fn(e_j)
  return cols.T


def test_dense_matrices_small_image():
  """On a 6x6x2 image: drift == M M^T exactly, SPD; S^T = -S; noise_transpose == M^T."""
  shape = (6, 6, 2)
  rng = np.random.default_rng(0)
  stats_r = rng.uniform(0.1, 3.0, shape).astype(np.float32)
  stats_r = (stats_r + pre._negate_freq(stats_r)) / 2  # a statistic is even in k
  stats_a = rng.uniform(0.1, 1.0, shape).astype(np.float32)
  p = Preconditioner.from_statistics(stats_r, stats_a, alpha=1.5, shape=shape,
                                     omega=0.7)
  m = _dense(p.noise, shape)
  mt = _dense(p.noise_transpose, shape)
  mmt = _dense(p.mmt, shape)
  s = _dense(p.skew, shape)
  drift = _dense(p.drift, shape)
  np.testing.assert_allclose(mt, m.T, atol=1e-6)
  np.testing.assert_allclose(mmt, m @ m.T, atol=1e-5)
  np.testing.assert_allclose(mmt, mmt.T, atol=1e-5)
  assert np.linalg.eigvalsh((mmt + mmt.T) / 2).min() > 0.5  # gains >= 1: eig >= 1
  np.testing.assert_allclose(s, -s.T, atol=1e-6)
  assert np.abs(s).max() > 0.1
  np.testing.assert_allclose(drift, mmt + 0.7 * s, atol=1e-5)


def test_non_even_frequency_gain_is_made_even():
  """A real gain that is not even in k: the noise map only sees its even part, and the
  factories store that even part so that drift is exactly M M^T of the noise map."""
  shape = (8, 8, 1)
  rng = np.random.default_rng(1)
  r = rng.uniform(0.5, 2.0, shape).astype(np.float32)
  d = rng.uniform(0.5, 2.0, shape).astype(np.float32)
  r_even = pre.even_part(r)
  assert np.abs(r - r_even).max() > 0.1
  p = Preconditioner.create(space_gain=d, freq_gain=r, shape=shape)
  np.testing.assert_array_equal(p.freq_gain, r_even)
  # Re F^-1 r F z == F^-1 r_e F z for real z: the raw formula with the non-even r
  z = rng.standard_normal((3,) + shape).astype(np.float32)
  fft = lambda a: np.fft.fft2(a, axes=(-3, -2))
  ifft = lambda a: np.fft.ifft2(a, axes=(-3, -2))
  raw = np.real(ifft(r * fft(d * z)))
  np.testing.assert_allclose(p.noise(jnp.asarray(z)), raw, atol=1e-5)
  m = _dense(p.noise, shape)
  np.testing.assert_allclose(_dense(p.drift, shape), m @ m.T, atol=1e-5)
  # the reference's formula with the raw non-even r: symmetric and positive definite,
  # but M M^T + R_o^T D^2 R_o, not M M^T (module docstring)
  a = _dense(lambda g: np.real(ifft(r * fft(d ** 2 * ifft(r * fft(np.asarray(g)))))),
             shape)
  np.testing.assert_allclose(a, a.T, atol=1e-5)
  assert np.abs(a - m @ m.T).max() > 1e-2
  assert np.linalg.eigvalsh(a - m @ m.T).min() > -1e-5
  # an exactly even gain is stored bit-identically
  np.testing.assert_array_equal(pre.even_part(r_even), r_even)


@pytest.mark.parametrize('case', list(CASES))
def test_drift_self_adjoint_positive_real(pcs, case):
  p = pcs[case]
  rng = np.random.default_rng(2)
  u = jnp.asarray(rng.standard_normal((4,) + SHAPE), jnp.float32)
  v = jnp.asarray(rng.standard_normal((4,) + SHAPE), jnp.float32)
  a = inner(u, p.drift(v))
  b = inner(p.drift(u), v)
  assert abs(a - b) <= 1e-5 * np.sqrt(inner(u, u) * inner(v, v)) * 2
  for k in range(4):
    assert inner(u[k], p.drift(u[k])) > 0.9 * inner(u[k], u[k])  # gains >= 1
  assert not jnp.iscomplexobj(p.drift(u)) and not jnp.iscomplexobj(p.noise(u))


def test_noise_power_spectrum():
  """E|F[M z]|^2 = r^2 * sum_n d_n^2 per channel; with d = 1 that is H W r^2.

  20000 draws: the per-frequency estimate has relative std 0.7% (1% at the real DC /
  Nyquist frequencies), so 5% is > 5 sigma for each of the 128 cells.
  """
  shape = (8, 8, 2)
  n = 20000
  z = jnp.asarray(np.random.default_rng(7).standard_normal((n,) + shape), jnp.float32)
  power_fn = jax.jit(lambda q, a: jnp.mean(
      jnp.abs(jnp.fft.fft2(q.noise(a), axes=(1, 2))) ** 2, axis=0))
  power = lambda q: power_fn(q, z)
  p = Preconditioner.parametric(shape, radius=1.5, lam=1.6)
  assert np.unique(np.asarray(p.freq_gain)).size == 2
  want = 8 * 8 * np.asarray(p.freq_gain, np.float64) ** 2
  assert np.abs(np.asarray(power(p)) / want - 1).max() < 0.05
  # with a space gain too
  rng = np.random.default_rng(3)
  d = rng.uniform(1.0, 1.25, shape).astype(np.float32)
  p2 = Preconditioner.create(space_gain=d, freq_gain=p.freq_gain, shape=shape)
  want2 = np.asarray(p.freq_gain, np.float64) ** 2 * np.sum(
      d.astype(np.float64) ** 2, axis=(0, 1))
  assert np.abs(np.asarray(power(p2)) / want2 - 1).max() < 0.05


def test_skew_operator():
  p = Preconditioner.create(omega=1.0, shape=(8, 8, 3))
  assert p.use_skew and not p.use_freq and not p.use_space
  rng = np.random.default_rng(4)
  u = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  su, sv = p.skew(u), p.skew(v)
  assert not jnp.iscomplexobj(su)
  assert abs(inner(u, su)) <= 1e-5 * inner(u, u)
  assert abs(inner(u, sv) + inner(su, v)) <= 1e-5 * np.sqrt(inner(u, u) * inner(v, v))
  # default phase = periodic central differences over H and W
  cd = 0.5 * (jnp.roll(u, -1, 1) - jnp.roll(u, 1, 1) + jnp.roll(u, -1, 2)
              - jnp.roll(u, 1, 2))
  np.testing.assert_allclose(su, cd, atol=1e-5)
  # drift = M M^T g + omega S g with M = I
  np.testing.assert_allclose(p.drift(u), u + su, atol=1e-6)
  # a phase that is not odd is projected onto its odd part: still skew
  phase = rng.standard_normal((8, 8, 3)).astype(np.float32)
  q = Preconditioner.create(omega=0.3, skew_phase=phase, shape=(8, 8, 3))
  np.testing.assert_array_equal(q.skew_phase, pre.odd_part(phase))
  s = _dense(q.skew, (8, 8, 3))
  np.testing.assert_allclose(s, -s.T, atol=1e-6)


def test_parametric_filter():
  h = 32
  radius = 0.2 * h
  g = pre.parametric_gain((h, h, 1), radius, 1.6)[:, :, 0]
  centred = np.fft.fftshift(g)
  hh, ww = np.meshgrid(np.arange(h), np.arange(h), indexing='ij')
  inside = (hh - h / 2) ** 2 + (ww - h / 2) ** 2 <= 2 * radius ** 2
  np.testing.assert_array_equal(centred, np.where(inside, 1.0, 1.6).astype(np.float32))
  assert g[0, 0] == 1.0 and g[h // 2, h // 2] == 1.6  # DC low, Nyquist corner high
  np.testing.assert_array_equal(g, pre._negate_freq(g))  # even in k
  assert Preconditioner.parametric((h, h, 3), radius, 1.6).freq_gain.shape == (h, h, 3)


# ---------------------------------------------------------------- identity / jit


def test_identity_is_a_no_op():
  p = Preconditioner.identity()
  assert p.is_identity
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 8, 8, 3)), jnp.float32)
  assert p.noise(x) is x and p.drift(x) is x
  y = jax.jit(lambda q, a: (q.noise(a), q.drift(a)))(p, x)
  np.testing.assert_array_equal(y[0], x)
  np.testing.assert_array_equal(y[1], x)
  cfg = default_configs.get_default_configs()
  assert Preconditioner.from_config(cfg).is_identity  # pds.enabled False
  # a unit scalar gain is skipped as well
  assert Preconditioner.create(space_gain=1.0, freq_gain=1.0).is_identity


def test_jit_vmap_matches_eager(pcs):
  p = pcs['both']
  x = jnp.asarray(np.random.default_rng(6).standard_normal((3,) + SHAPE), jnp.float32)
  f = jax.jit(lambda q, a: (q.noise(a), q.drift(a)))
  n_jit, d_jit = f(p, x)
  np.testing.assert_allclose(n_jit, p.noise(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(d_jit, p.drift(x), rtol=1e-6, atol=1e-6)
  # vmap over a batch of preconditioners (an alpha sweep) and over single images
  stack = jax.tree_util.tree_map(lambda *a: jnp.stack(a), p, pcs['freq_only'].replace(
      space_gain=jnp.ones(SHAPE), use_space=True))
  out = jax.vmap(lambda q: q.drift(x))(stack)
  np.testing.assert_allclose(out[0], p.drift(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1], pcs['freq_only'].drift(x), rtol=1e-5, atol=1e-5)
  per_image = jax.vmap(p.noise)(x)
  np.testing.assert_allclose(per_image, p.noise(x), rtol=1e-6, atol=1e-6)


def test_dtypes(pcs):
  p = pcs['both']
  x = jnp.ones((1,) + SHAPE, jnp.bfloat16)
  assert p.noise(x).dtype == jnp.bfloat16 and p.drift(x).dtype == jnp.bfloat16


# ---------------------------------------------------------------- files and config


def _cfg(**pds):
  cfg = default_configs.get_default_configs()
  cfg.sampling.pds.enabled = True
  for k, v in pds.items():
    setattr(cfg.sampling.pds, k, v)
  return cfg


def test_from_config_statistics_and_parametric(tmp_path, pcs, vec):
  cfg = _cfg(freq_stats='cifar10_freq.npy', space_stats='cifar10_space.npy')
  p = Preconditioner.from_config(cfg, workdir=FIX)  # relative to workdir
  x = jnp.asarray(nhwc(vec['op_g']))
  np.testing.assert_array_equal(p.drift(x), pcs['both'].drift(x))
  # the project's .npz, holding both statistics, used for both keys
  npz = str(tmp_path / 'stats.npz')
  pre.save_statistics(npz, freq=pre.load_statistics(FREQ), space=pre.load_statistics(
      SPACE), dataset='CIFAR10', num_images=200)
  q = Preconditioner.from_config(_cfg(freq_stats=npz, space_stats=npz))
  np.testing.assert_array_equal(q.drift(x), pcs['both'].drift(x))
  # parametric: radius 0 -> 0.2 H
  c = _cfg(filter='parametric', lam=1.6)
  c.data.image_size, c.data.num_channels = 28, 1
  r = Preconditioner.from_config(c)
  np.testing.assert_array_equal(r.freq_gain, pre.parametric_gain((28, 28, 1), 5.6, 1.6))
  assert not r.use_space


def test_statistics_files_round_trip(tmp_path):
  stat = pre.load_statistics(FREQ, SHAPE)
  path = str(tmp_path / 'x_freq.npy')
  pre.save_reference_statistics(path, stat)
  np.testing.assert_array_equal(np.load(path), np.load(FREQ))  # (C, H, W) layout
  np.testing.assert_array_equal(pre.load_statistics(path, SHAPE), stat)
  npz = str(tmp_path / 'x.npz')
  pre.save_statistics(npz, freq=stat, seed=3)
  np.testing.assert_array_equal(pre.load_statistics(npz, SHAPE), stat)  # only key
  with np.load(npz) as f:
    assert int(f['seed']) == 3 and str(f['layout']) == 'HWC'
  assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_validation_errors(tmp_path):
  small = str(tmp_path / 'small_freq.npy')
  np.save(small, np.ones((3, 16, 16), np.float32))
  with pytest.raises(ValueError, match=r'small_freq\.npy.*\(3, 16, 16\).*\(32, 32, 3\)'):
    Preconditioner.from_config(_cfg(freq_stats=small))
  hwc = str(tmp_path / 'hwc.npy')
  np.save(hwc, np.ones((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r'looks \(H, W, C\)'):
    pre.load_statistics(hwc, SHAPE)
  with pytest.raises(ValueError, match=r'alpha must be > 1'):
    Preconditioner.from_config(_cfg(freq_stats=FREQ, alpha=1.0))
  with pytest.raises(ValueError, match=r'alpha must be > 1'):
    Preconditioner.from_statistics(freq_stats=FREQ, alpha=0.5)
  nan = str(tmp_path / 'nan_space.npy')
  a = np.ones((3, 32, 32), np.float32)
  a[1, 2, 3] = np.nan
  np.save(nan, a)
  with pytest.raises(ValueError, match=r'nan_space\.npy.*non-finite'):
    Preconditioner.from_config(_cfg(space_stats=nan))
  with pytest.raises(ValueError, match=r'space_gain.*> 0.*invertible'):
    Preconditioner.create(space_gain=-np.ones(SHAPE, np.float32), shape=SHAPE)
  neg = -np.ones(SHAPE, np.float32)
  neg[0, 0, 0] = 3.0  # S / max S = -1/3 elsewhere -> gain alpha / (alpha - 4/3) ...
  with pytest.raises(ValueError, match=r'gains must be > 0'):
    pre.statistics_to_gain(neg, alpha=1.2)  # ... negative for alpha = 1.2
  with pytest.raises(ValueError, match=r'maximum of the statistics'):
    pre.statistics_to_gain(-np.ones(SHAPE), 5.0)
  with pytest.raises(ValueError, match=r'pds\.lam must be > 0'):
    Preconditioner.from_config(_cfg(filter='parametric', lam=0.0))
  with pytest.raises(ValueError, match=r'pds\.radius must be >= 0'):
    Preconditioner.from_config(_cfg(filter='parametric', radius=-1.0, lam=2.0))
  with pytest.raises(ValueError, match=r"filter='fourier'.*statistics, parametric"):
    Preconditioner.from_config(_cfg(filter='fourier'))
  with pytest.raises(ValueError, match=r"mode='exact'.*reference, marginal"):
    Preconditioner.from_config(_cfg(mode='exact', freq_stats=FREQ))
  with pytest.raises(FileNotFoundError, match=r'pds\.freq_stats=.*missing\.npy'):
    Preconditioner.from_config(_cfg(freq_stats='missing.npy'), workdir=str(tmp_path))
  with pytest.raises(ValueError, match=r'neither config\.sampling\.pds\.freq_stats'):
    Preconditioner.from_config(_cfg())
  with pytest.raises(ValueError, match=r'shape \(5, 5, 3\) does not match'):
    Preconditioner.create(freq_gain=np.ones((5, 5, 3)), shape=SHAPE)
