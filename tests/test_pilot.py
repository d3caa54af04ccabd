"""The pilot check of alpha='auto' (score_sde_pds/pilot.py, calibration.spectral_fd /
pilot_candidates / pilot_choice): the score against hand computations, the decision rule's
false-switch rate and power on constructed samples, and the wiring into run_lib.sample on
the bundled MNIST network (the candidates' scores reproduced by sampling them directly)."""
import copy
import json
import math
import os

import jax
import numpy as np
import pytest

from configs.ve import mnist_ncsnpp_small
from score_sde_pds import calibration, datasets, preconditioning, run_lib, sampling, sde_lib
from score_sde_pds import pilot, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, seed, size=8):
  """Smooth random images in [0, 1] (a blurred field + a fixed blob), (n, size, size, 1)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, size, size, 1))
  k = np.fft.fftfreq(size)
  filt = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) * 40.)[..., None]
  z = np.fft.ifft2(np.fft.fft2(z, axes=(1, 2)) * filt, axes=(1, 2)).real
  yy, xx = np.mgrid[:size, :size]
  blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 6.)[..., None]
  return np.clip(0.35 * blob + 0.12 * z / z.std() + 0.2, 0., 1.)


def test_candidates_ladder():
  assert calibration.pilot_candidates(math.inf) == [math.inf]
  for a in (1.05, 1.43, 3.35, 9.9, 25., 400.):
    c = calibration.pilot_candidates(a)
    assert c[-1] == math.inf and a in c
    finite = c[:-1]
    assert all(x >= calibration.PILOT_MIN_ALPHA or x == a for x in finite)
    assert np.allclose(np.diff(np.log(finite)), np.log(calibration.PILOT_RATIO))
    assert finite[-1] >= calibration.PILOT_TOP      # the ladder reaches weak filters,
    assert all(x / calibration.PILOT_RATIO < calibration.PILOT_TOP for x in finite if x > a)
    assert (finite[0] < a) == (a / calibration.PILOT_RATIO >= calibration.PILOT_MIN_ALPHA)
  with pytest.raises(ValueError, match='alpha must be > 1'):
    calibration.pilot_candidates(1.0)


def test_spectral_fd_by_hand():
  data = _images(200, 0)
  R = preconditioning.compute_statistics(data)['freq'].astype(np.float64)
  # the data themselves: their power spectrum is the statistic (float32 rounding of R)
  assert calibration.spectral_fd(data, R) < 1e-6 * np.expm1(R).sum() / 64
  # samples c x have power c^2 P: FD = (1 - c)^2 sum P / HW, by hand
  for c in (0.5, 0.9):
    want = (1 - c) ** 2 * np.expm1(R).sum() / 64
    assert calibration.spectral_fd(c * data, R) == pytest.approx(want, rel=2e-5)
  # clipping is what an image file would hold
  assert calibration.spectral_fd(data + 2., R, clip=True) == pytest.approx(
      calibration.spectral_fd(np.ones_like(data), R))
  assert calibration.spectral_fd(np.full_like(data, np.nan), R) == math.inf
  with pytest.raises(ValueError, match="statistic's shape"):
    calibration.spectral_fd(data[:, :4], R)


def test_power_maps_are_the_same_in_memory_bounded_chunks(monkeypatch):
  """The chunked FFT (bounded memory for big images) gives the one-shot result exactly,
  with a remainder chunk too (200 samples in chunks of 1 and of 3)."""
  data = _images(200, 1)
  R = preconditioning.compute_statistics(data)['freq'].astype(np.float64)
  whole = calibration._power_maps(data, R.shape)
  direct = (np.abs(np.fft.fft2(np.clip(data.astype(np.float64), 0, 1), axes=(1, 2))) ** 2
            / (R.shape[0] * R.shape[1])).reshape(len(data), -1).astype(np.float32)
  np.testing.assert_array_equal(whole, direct)
  for per_chunk in (1, 3):
    monkeypatch.setattr(calibration, 'POWER_CHUNK_ELEMENTS', per_chunk * R.size)
    np.testing.assert_array_equal(calibration._power_maps(data, R.shape), whole)


def test_choice_keeps_a_proxy_choice_that_noise_alone_beats():
  """K candidates drawn from the data distribution itself (only the draws differ): the
  proxy's choice may move in about (1 - confidence) of pilots, not more."""
  R = preconditioning.compute_statistics(_images(4000, 1))['freq']
  alphas = [2., 4., 8., 16., math.inf]
  moved = 0
  trials = 40
  for t in range(trials):
    sets = [_images(32, 100 + 7 * t + j) for j in range(len(alphas))]
    a, info = calibration.pilot_choice(alphas, sets, R, 4., confidence=0.9, seed=t)
    assert (a == 4.) == (info['chosen_by'] == 'proxy')
    moved += info['chosen_by'] == 'pilot'
  assert moved <= 0.2 * trials, moved


def test_choice_leaves_a_proxy_choice_the_pilot_sees_losing():
  """The proxy's candidate is off (contrast 0.7x: 0.8x is moved in 18 of these 20 pilots
  of 32), the others are the same draws as they are or with white noise added: the pilot
  leaves it in every pilot, for the nearest candidate the best-scoring one does not beat;
  a diverged candidate is never chosen; vanilla is a candidate like the others."""
  R = preconditioning.compute_statistics(_images(4000, 1))['freq']
  alphas = [1.5, 3., 6., math.inf]
  for t in range(20):
    base = _images(32, 500 + t)      # the same keys for every candidate, as in the pilot
    noisy = np.clip(base + 0.05 * np.random.default_rng(t).normal(size=base.shape), 0, 1)
    sets = [0.7 * base, base, np.full_like(base, np.nan), noisy]
    a, info = calibration.pilot_choice(alphas, sets, R, 1.5, seed=t)
    assert info['chosen_by'] == 'pilot' and a in (3., math.inf)
    assert info['beaten_share'][0] >= info['need'] and info['spectral_fd'][2] == math.inf
    # the nearest candidate to the proxy's that the best does not beat: 3 unless 3 is beaten
    assert (a == 3.) == (info['beaten_share'][1] < info['need'])
  with pytest.raises(ValueError, match='not among'):
    calibration.pilot_choice(alphas, sets, R, 2.)
  with pytest.raises(ValueError, match='confidence'):
    calibration.pilot_choice(alphas, sets, R, 1.5, confidence=1.)


def _bundled_config(pilot_samples):
  cfg = mnist_ncsnpp_small.get_config()
  cfg.model.num_scales = 6           # N = 6 steps (speed_up 1 of a 6-level VE SDE)
  cfg.sampling.speed_up = 1
  cfg.sampling.pds.enabled = True
  cfg.sampling.pds.alpha = 'auto'
  cfg.sampling.pds.pilot_samples = pilot_samples
  cfg.sampling.num_samples = cfg.sampling.batch_size = 2
  cfg.sampling.progress_every = 0
  cfg.eval.after_sampling = False
  return cfg


def test_sample_runs_the_pilot_and_records_it(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  cfg = _bundled_config(pilot_samples=4)
  run_lib.sample(cfg, str(tmp_path))
  with open(tmp_path / 'samples' / 'meta.json') as f:
    meta = json.load(f)['pds']
  p = meta['pilot']
  proxy = calibration.parse_alpha(meta['alpha_proxy'])
  assert p['alphas'] == [calibration.alpha_label(a)
                         for a in calibration.pilot_candidates(proxy)]
  assert p['samples'] == 4 and len(p['spectral_fd']) == len(p['alphas'])
  if p['chosen_by'] == 'proxy':
    assert meta['alpha'] == meta['alpha_proxy']
  else:
    assert meta['alpha'] == p['alphas'][int(np.argmin(p['spectral_fd']))]
  # the recorded scores are those of the candidates sampled on their own, with the pilot's
  # keys: the proxy's alpha, and vanilla as the identity (the pilot runs it as unit gains)
  model, states, params = run_lib.load_model(cfg, str(tmp_path))
  sde, eps = sde_lib.get_sde(cfg)
  R = sweep.load_statistics(cfg, str(tmp_path))
  fn = sampling.get_sampling_fn(cfg, sde, model, (4, 28, 28, 1), eps,
                                inverse_scaler=datasets.get_data_inverse_scaler(cfg))
  key = jax.random.fold_in(jax.random.PRNGKey(int(cfg.sampling.seed)), pilot.PILOT_STREAM)
  for a in (proxy, math.inf):
    c = copy.deepcopy(cfg)
    c.sampling.pds.alpha = a
    pre = preconditioning.Preconditioner.from_config(c, str(tmp_path))
    x, _ = fn(key, params, states, preconditioner=pre)
    got = calibration.spectral_fd(np.asarray(x), R['freq'])
    assert got == pytest.approx(p['spectral_fd'][p['alphas'].index(
        calibration.alpha_label(a))], rel=1e-3)
  # pilot_samples=0: the proxy alone; bad values name the key
  p0 = run_lib.build_preconditioner(_bundled_config(0))
  assert not pilot.needs_check(_bundled_config(0), p0)
  for bad in (-1,):
    with pytest.raises(ValueError, match=r'config\.sampling\.pds\.pilot_samples'):
      run_lib.build_preconditioner(_bundled_config(bad))
  c = _bundled_config(4)
  c.sampling.pds.pilot_confidence = 1.0
  with pytest.raises(ValueError, match=r'config\.sampling\.pds\.pilot_confidence'):
    run_lib.build_preconditioner(c)
