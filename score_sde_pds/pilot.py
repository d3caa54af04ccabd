"""The pilot check of `config.sampling.pds.alpha = 'auto'`: the network has the last word.

`calibration.auto_alpha` picks alpha on a Gaussian proxy of the data whose score is
exact. A trained network is not that proxy: on the bundled NCSN++ the proxy's choice is
within the estimator noise of the best alpha of a sweep, but on the MNIST NCSNv2 with
annealed Langevin dynamics (README, 'Calibrated PDS') the proxy picks alpha 1.43 at
N = 50, which is worse than vanilla, while every alpha in 2-20 beats vanilla: strong
high-frequency gains amplify what the network gets wrong and the proxy cannot see that.

So before sampling, `check_auto_alpha` samples a small pilot batch
(`config.sampling.pds.pilot_samples`, default 32) with the proxy's alpha a and with a
ladder around it up to vanilla (`calibration.pilot_candidates`: a/2, a, 2a, 4a, ... >= 20,
inf), all candidates with the same per-sample keys, and scores each by the Frechet distance
between the power spectrum of its samples and the data's (`calibration.spectral_fd`, on
the frequency statistic PDS reads anyway: no reference set, no feature network). The
proxy's choice stands unless the best-scoring candidate beats it in a paired bootstrap
over the pilot samples (`pilot_confidence`, Bonferroni over the comparisons); then the
nearest candidate the pilot cannot tell from the best is taken
(`calibration.pilot_choice`). Vanilla is a candidate, so a choice that the pilot sees
losing to vanilla is dropped.

Measured (README, 'Calibrated PDS'; 128 samples per cell): on the MNIST NCSNv2 (ALD,
N = 50) the pilot left the proxy's 1.43 (MNIST-FD 220, vanilla 149) for 2.86 (87 against the
sweep's best 85 at alpha 3); on the bundled NCSN++ it kept the proxy's alpha at
N = 20 / 30 / 50. Offline, on 128 samples per alpha, the spectral FD orders the NCSNv2 cells
as MNIST-FD does (1.43: 3.6, 2: 0.65, 3: 0.38, 5: 0.34, vanilla: 0.74).

Cost: len(candidates) (5-7) pilot runs of `pilot_samples` samples, one compilation (every
candidate, vanilla included as unit gains, has the statistics filter's operator
structure, so they are one jitted program called with different preconditioners). Not
run for the analytic oracle (the proxy is its exact model) or when `pilot_samples` is 0.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import jax
import numpy as np

from score_sde_pds import calibration, preconditioning, sampling, sweep

log = logging.getLogger(__name__)

# the pilot's samples draw from fold_in(PRNGKey(config.sampling.seed), PILOT_STREAM)
# (sample b: fold_in of that key with b), a stream apart from the output samples'
PILOT_STREAM = 0x70696C74


def _candidate(alpha, stats, shape, omega):
  """The statistics filter at alpha; inf as unit gains in the same operator structure."""
  if math.isinf(alpha):
    ones = np.ones(shape, np.float32)
    return preconditioning.Preconditioner.create(
        space_gain=None if stats['space'] is None else ones,
        freq_gain=None if stats['freq'] is None else ones, omega=omega, shape=shape)
  return preconditioning.Preconditioner.from_statistics(
      freq_stats=stats['freq'], space_stats=stats['space'], alpha=alpha, shape=shape,
      omega=omega)


def needs_check(config, precond):
  """True when `precond` is an alpha='auto' choice the pilot should check."""
  info = getattr(precond, 'pds_info', None) or {}
  return (info.get('alpha_setting') == 'auto' and config.model.name != 'analytic_gaussian'
          and int(config.sampling.pds.get('pilot_samples', 0)) > 0)


def check_auto_alpha(config, workdir, sde, eps, model, params, states, precond,
                     inverse_scaler=None):
  """Runs the pilot check on the proxy's choice `precond` (from
  `run_lib.build_preconditioner`); returns the preconditioner to sample with, its
  `pds_info` updated: 'alpha' the final choice, 'alpha_proxy' the proxy's, 'pilot' the
  candidates, their spectral FDs, bootstrap win shares, who chose, seconds.
  Returns `precond` unchanged when `needs_check` is False.
  """
  if not needs_check(config, precond):
    return precond
  info = dict(precond.pds_info)
  proxy_alpha = calibration.parse_alpha(info['alpha'])
  pds = config.sampling.pds
  n = int(pds.pilot_samples)
  dc = jax.device_count()
  batch = -(-n // dc) * dc                  # a multiple of the device count
  stats = sweep.load_statistics(config, workdir)   # the files from_config read
  if stats['freq'] is None:
    raise ValueError("config.sampling.pds.pilot_samples > 0 with alpha='auto' needs "
                     'config.sampling.pds.freq_stats (the pilot scores samples by their '
                     'power spectrum); set pilot_samples=0 to use the proxy alone')
  alphas = calibration.pilot_candidates(proxy_alpha)
  if len(alphas) == 1:
    info['pilot'] = {'alphas': ['inf'], 'chosen_by': 'proxy', 'samples': 0}
    object.__setattr__(precond, 'pds_info', info)
    return precond
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape = (size, size, ch)
  omega = float(pds.get('omega', 0.) or 0.)
  cands = [_candidate(a, stats, shape, omega) for a in alphas]
  t0 = time.time()
  quiet = copy.deepcopy(config)             # no progress bar per candidate: a log line
  with quiet.unlocked():
    quiet.sampling.progress_every = 0
  fn = sampling.get_sampling_fn(quiet, sde, model, (batch,) + shape, eps,
                                inverse_scaler=inverse_scaler, preconditioner=cands[0])
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.sampling.seed)), PILOT_STREAM)
  confidence = float(pds.get('pilot_confidence', 0.9))
  # each candidate is scored as soon as it is sampled, and its samples dropped
  scorer = calibration.PilotScorer(stats['freq'], n)
  for a, p in zip(alphas, cands):
    x, _ = fn(key, params, states, offset=0, preconditioner=p)
    if jax.process_count() > 1:     # every host decides on the same, whole pilot
      from jax.experimental import multihost_utils
      x = multihost_utils.process_allgather(x, tiled=True)
    scorer.add(np.asarray(x, np.float32)[:n])
    del x
    log.info('PDS pilot: alpha=%s sampled (%d samples, %.0f s so far)',
             calibration.alpha_label(a), n, time.time() - t0)
  alpha, pinfo = calibration.pilot_decide(alphas, scorer.full, scorer.boot, proxy_alpha,
                                          confidence=confidence)
  seconds = time.time() - t0
  label = calibration.alpha_label
  info.update(alpha=label(alpha), alpha_proxy=label(proxy_alpha), pilot={
      'samples': n, 'alphas': [label(a) for a in alphas],
      'spectral_fd': [calibration.json_number(v) for v in pinfo['spectral_fd']],
      'beaten_share': [round(v, 3) for v in pinfo['beaten_share']],
      'need': round(pinfo['need'], 4),
      'chosen_by': pinfo['chosen_by'], 'seconds': round(seconds, 2)})
  if pinfo['chosen_by'] == 'pilot':   # the proxy's predicted FD of the pilot's choice
    info['proxy_fd'] = calibration.json_number(calibration.predicted_fd(
        stats['freq'], space_stats=stats['space'], alpha=alpha,
        **calibration.config_kwargs(config))[0])
  log.info('PDS pilot: alpha %s (proxy %s, chosen by the %s; spectral FD %s) in %.1f s',
           label(alpha), label(proxy_alpha), pinfo['chosen_by'],
           dict(zip(info['pilot']['alphas'], info['pilot']['spectral_fd'])), seconds)
  if math.isinf(alpha):
    out = preconditioning.Preconditioner.create(omega=omega, shape=shape)
  else:
    out = preconditioning.Preconditioner.from_statistics(
        freq_stats=stats['freq'], space_stats=stats['space'], alpha=alpha, shape=shape,
        omega=omega)
  object.__setattr__(out, 'pds_info', info)
  return out
