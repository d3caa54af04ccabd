"""PDS ablation grid: filter parameters x omega x N x sampler options, one table.

`run_sweep(config, workdir, grid)` samples every cell of the grid and scores it;
`write_outputs(result, workdir)` writes `sweep.csv`, `sweep.md` and `sweep.png`
(atomically). `scripts/sweep.py` is the command line around the two.

Grid
----
A cell is (N, sampler options, preconditioner). The N axis is
N = int(num_scales / speed_up) over the lists `num_scales` x `speed_ups`; sampler
options are (predictor, corrector, snr) (snr only varies when there is a corrector).
The preconditioners are the statistics filter (one per alpha) and/or the parametric
filter (one per (radius, lam)), each crossed with every omega, plus the vanilla
baseline (the identity preconditioner), which is always a row of every
(N, sampler options) block.

One compiled program per block
------------------------------
`Sampler.run(rng, score_fn, precond, offset)` takes the preconditioner as an argument,
so for one (N, sampler options) block all preconditioners of the filter/omega grid are
stacked into one pytree (leaves (G, ...), `stack_preconditioners`) and the sampler is
`jax.vmap`-ed over it inside ONE `jax.jit` function: one compilation samples the whole
alpha grid (`GridRunner`). The static flags of the stacked preconditioners
(use_space / use_freq / use_skew) must agree. omega is made a traced leaf of the whole
stack: when any omega of the grid is non-zero, every preconditioner is built with the
solenoidal term on (the default central-difference phase) and its own omega, 0.0
included (exact: (M M^T g) + 0 * S g == M M^T g in floating point). Preconditioners
whose flags still differ (the statistics filter with a space statistic next to the
parametric filter, which has none) are grouped by structure, one program per group.
The vanilla row runs the exact identity (no FFT) in its own small program.

Randomness: every cell uses the same rng = PRNGKey(config.sampling.seed) and the
same offsets (round r: offset r * batch_size), so cells differ only by their settings.

Metrics
-------
For the analytic oracle (config.model.name == 'analytic_gaussian') each cell gets the
exact Frechet distance of its samples to the target field
(`analytic.frechet_distance`) and spec_err = mean_k |log(measured spectrum / target
spectrum)| (`analytic.measured_spectrum` about the field mean), both in model space.
Both are finite-sample estimates; `SweepResult.floor` holds their values on as many
EXACT oracle samples (fd is biased upwards unless num_samples >> H W C). Where the
sampler is linear and stationary on the oracle (every PC sampler on VE / VP / subVP)
fd_exact / spec_err_exact are the exact population values of the per-mode recursion
`calibration.exact_moments`, free of sampling error (the langevin corrector's step size
there uses the expected norms).
Network models get the metric of their dataset (score_sde_pds.evaluation.evaluator:
MNIST-FD and the confident share for MNIST/DIGITS with the shipped classifier; FID when
config.eval.inception_path and config.eval.ref_stats are set) in the columns metric /
value (+ value_std, its bootstrap std with Grid.bootstrap > 0) and the real held-out
images' value as the floor; fd and spec_err stay NaN (oracle only), and without a feature
network value is NaN and the table says so. Every cell also records its NFE and seconds (the
execution time of its program divided by the number of cells it sampled; compilation
is timed separately, `compile_seconds`).

Statistics of the statistics filter: `config.sampling.pds.freq_stats` / `space_stats`
files, or, for the oracle, its exact moments in data space [0, 1]:
R = log(1 + E|F x|^2) and A = E[x^2] (`oracle_statistics`).

This module is pure: no file I/O at import; `write_outputs` and `load_statistics`
touch files only when called.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds import calibration, preconditioning, sampling, sde_lib, utils

ORACLE_MODEL = 'analytic_gaussian'
FILTERS = ('statistics', 'parametric')
STATS_CHOICES = ('auto', 'freq', 'space', 'freq,space')

CSV_COLUMNS = ('filter', 'alpha', 'radius', 'lam', 'omega', 'N', 'num_scales', 'speed_up',
               'predictor', 'corrector', 'snr', 'nfe', 'fd', 'spec_err', 'fd_exact',
               'spec_err_exact', 'metric', 'value', 'value_std', 'confident_share', 'seconds',
               'compile_seconds', 'nonfinite_step', 'num_samples', 'program')

NO_METRIC_NOTE = ('no metric: this dataset is scored with FID, which needs '
                  'config.eval.inception_path (the FID Inception weights) and config.eval.ref_stats; '
                  'value is NaN.')


# ----------------------------------------------------------------------------- grid


@dataclasses.dataclass(frozen=True)
class FilterSetting:
  """One preconditioner of the grid.

  Attributes:
    filter: 'vanilla' (identity), 'statistics' or 'parametric'.
    alpha: statistics-filter strength (> 1), None otherwise.
    radius: parametric radius in frequency pixels (already resolved: 0 -> 0.2 H).
    lam: parametric gain outside the radius.
    omega: solenoidal weight.
  """
  filter: str
  alpha: Optional[float] = None
  radius: Optional[float] = None
  lam: Optional[float] = None
  omega: float = 0.0

  @property
  def label(self) -> str:
    if self.filter == 'vanilla':
      return 'vanilla'
    if self.filter == 'statistics':
      s = f'alpha={self.alpha:g}'
    else:
      s = f'r={self.radius:g},lam={self.lam:g}'
    return s + (f',omega={self.omega:g}' if self.omega else '')


@dataclasses.dataclass(frozen=True)
class SamplerSetting:
  """Sampler options of a block: predictor, corrector and (corrector only) snr."""
  predictor: str
  corrector: str
  snr: float

  @property
  def label(self) -> str:
    s = f'{self.predictor}:{self.corrector}'
    return s + (f' snr={self.snr:g}' if self.corrector != 'none' else '')


@dataclasses.dataclass
class Grid:
  """The axes of a sweep (all lists; empty means "the config's value").

  Attributes:
    filters: subset of FILTERS.
    alphas: statistics-filter alphas (> 1).
    radii: parametric radii (0 -> 0.2 * image_size, as `Preconditioner.from_config`).
    lams: parametric gains (> 0).
    omegas: solenoidal weights.
    num_scales: values of config.model.num_scales.
    speed_ups: values of config.sampling.speed_up.
    samplers: (predictor, corrector) pairs.
    snrs: Langevin snr values (used with a corrector only).
    num_samples: samples per cell.
    batch_size: samples per program call (all cells of a block at once); 0 -> all.
    stats: which statistics the statistics filter uses: 'auto' (the oracle: both; a
      network: the files the config names), 'freq', 'space' or 'freq,space'.
    bootstrap: network metrics: resamples for the metric's bootstrap std (0: none).
  """
  filters: Sequence[str] = ('statistics',)
  alphas: Sequence[float] = (1.5, 2., 3., 5., 8.)
  radii: Sequence[float] = ()
  lams: Sequence[float] = (1.2, 1.6, 2.)
  omegas: Sequence[float] = (0.,)
  num_scales: Sequence[int] = ()
  speed_ups: Sequence[float] = ()
  samplers: Sequence[tuple] = ()
  snrs: Sequence[float] = ()
  num_samples: int = 512
  batch_size: int = 0
  stats: str = 'auto'
  bootstrap: int = 0


def parse_samplers(spec: Sequence[str]) -> list[tuple[str, str]]:
  """['reverse_diffusion:langevin', 'euler_maruyama'] -> [(pred, corr), ...].

  A missing corrector means 'none'. Names are validated against the registries.
  """
  out = []
  for item in spec:
    item = str(item).strip()
    if not item:
      continue
    pred, _, corr = item.partition(':')
    pred, corr = pred.strip().lower() or 'none', corr.strip().lower() or 'none'
    for name, registry, what in ((pred, sampling.PREDICTORS, 'predictor'),
                                 (corr, sampling.CORRECTORS, 'corrector')):
      if name not in registry:
        raise ValueError(f'--samplers {item!r}: unknown {what} {name!r}; valid: '
                         f'{sorted(registry)}')
    out.append((pred, corr))
  return out


def filter_settings(grid: Grid, image_size: int) -> list[FilterSetting]:
  """The non-vanilla preconditioners of the grid, filter x parameters x omega."""
  out = []
  for filt in grid.filters:
    if filt not in FILTERS:
      raise ValueError(f'unknown filter {filt!r}; valid: {list(FILTERS)}')
    for omega in grid.omegas:
      omega = float(omega)
      if not math.isfinite(omega):
        raise ValueError(f'omega must be finite, got {omega}')
      if filt == 'statistics':
        for a in grid.alphas:
          a = float(a)
          if not (math.isfinite(a) and a > 1):
            raise ValueError(f'alpha must be > 1, got {a}')
          out.append(FilterSetting('statistics', alpha=a, omega=omega))
      else:
        radii = list(grid.radii) or [0.]
        for r in radii:
          r = float(r)
          if not (math.isfinite(r) and r >= 0):
            raise ValueError(f'radius must be >= 0, got {r}')
          r = r if r > 0 else 0.2 * image_size
          for lam in grid.lams:
            lam = float(lam)
            if not (math.isfinite(lam) and lam > 0):
              raise ValueError(f'lam must be > 0, got {lam}')
            out.append(FilterSetting('parametric', radius=r, lam=lam, omega=omega))
  if len(set(out)) != len(out):
    raise ValueError('the filter grid has duplicate settings (repeated alphas, radii, lams '
                     'or omegas)')
  return out


# ----------------------------------------------------------------------------- statistics


def is_oracle(config) -> bool:
  return str(config.model.name) == ORACLE_MODEL


def oracle_statistics(config) -> dict:
  """Exact PDS statistics of the analytic oracle in data space [0, 1].

  freq R = log(1 + E|F x|^2) (field.second_moment_spectrum()), space A = E[x^2]
  (field.pixel_second_moment()), both (H, W, C) float32. The oracle lives in model
  space; with config.data.centered the data-space field x01 = (x + 1) / 2 has spectrum
  s / 4 and mean (mu + 1) / 2.
  """
  from score_sde_pds.models import analytic
  field = analytic.GaussianField.from_config(config)
  if config.data.centered:
    field = analytic.GaussianField(spectrum=field.spectrum / 4., mean=(field.mean + 1.) / 2.)
  return preconditioning.statistics_from_moments(
      np.asarray(field.second_moment_spectrum(), np.float64),
      np.asarray(field.pixel_second_moment(), np.float64))


def _find_file(path, workdir):
  cands = [path] if os.path.isabs(path) else (
      ([os.path.join(workdir, path)] if workdir else []) + [path])
  for c in cands:
    if os.path.isfile(c):
      return c
  raise FileNotFoundError(f'PDS statistics file {path!r} not found (tried '
                          f'{", ".join(os.path.abspath(c) for c in cands)})')


def load_statistics(config, workdir=None, which='auto') -> dict:
  """Statistics of the statistics filter: {'freq': (H,W,C) or None, 'space': ... or None}.

  The oracle uses its exact moments (`oracle_statistics`); other models read
  config.sampling.pds.freq_stats / space_stats (relative paths: workdir first, then
  the current directory). `which` selects 'freq', 'space' or 'freq,space'; 'auto'
  takes both for the oracle and whatever files the config names otherwise.
  """
  if which not in STATS_CHOICES:
    raise ValueError(f'--stats={which!r}; valid: {list(STATS_CHOICES)}')
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape = (size, size, ch)
  want = {'freq', 'space'} if which == 'auto' else set(which.split(','))
  out = {'freq': None, 'space': None}
  if is_oracle(config):
    stats = oracle_statistics(config)
    for k in want:
      out[k] = stats[k]
    return out
  pds = config.sampling.pds
  for k in ('freq', 'space'):
    path = str(pds.get(f'{k}_stats', '') or '')
    if k not in want:
      continue
    if not path:
      if which != 'auto':
        raise ValueError(f'--stats asks for the {k} statistic but config.sampling.pds.'
                         f'{k}_stats is empty')
      continue
    out[k] = preconditioning.load_statistics(_find_file(path, workdir), shape=shape, kind=k)
  if out['freq'] is None and out['space'] is None:
    raise ValueError('the statistics filter needs config.sampling.pds.freq_stats and/or '
                     'space_stats (scripts/compute_pds_statistics.py writes them), or use '
                     '--filter=parametric')
  return out


# ----------------------------------------------------------------------------- preconditioners


def build_preconditioner(setting: FilterSetting, shape, stats=None, skew=False):
  """The Preconditioner of one setting.

  Args:
    setting: a FilterSetting ('vanilla' gives the exact identity).
    shape: (H, W, C).
    stats: load_statistics output (statistics filter only).
    skew: build with the solenoidal term on even when omega == 0, so omega is a traced
      leaf shared by a whole stack (the omega = 0 member then adds 0 * S g, exactly 0).
  Returns:
    Preconditioner.
  """
  P = preconditioning.Preconditioner
  if setting.filter == 'vanilla':
    return P.identity()
  omega = float(setting.omega)
  build_omega = omega if (omega != 0 or not skew) else 1.0
  if setting.filter == 'statistics':
    if stats is None:
      raise ValueError('the statistics filter needs statistics')
    p = P.from_statistics(freq_stats=stats.get('freq'), space_stats=stats.get('space'),
                          alpha=setting.alpha, shape=shape, omega=build_omega)
  elif setting.filter == 'parametric':
    p = P.parametric(shape, setting.radius, setting.lam, omega=build_omega)
  else:
    raise ValueError(f'unknown filter {setting.filter!r}')
  if build_omega != omega:
    p = p.replace(omega=jnp.float32(omega))
  return p


def _structure_key(p):
  leaves, treedef = jax.tree.flatten(p)
  return treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves)


def group_by_structure(precs: Sequence[Any]) -> list[list[int]]:
  """Indices of `precs` grouped by pytree structure (static flags) and leaf shapes,
  in first-appearance order; each group can be stacked into one pytree."""
  groups: dict = {}
  for i, p in enumerate(precs):
    groups.setdefault(_structure_key(p), []).append(i)
  return list(groups.values())


def stack_preconditioners(precs: Sequence[Any]):
  """G preconditioners of one structure -> one whose leaves have a leading axis G.

  Raises:
    ValueError: when the static flags or leaf shapes differ (see `group_by_structure`).
  """
  if not precs:
    raise ValueError('nothing to stack')
  keys = {_structure_key(p) for p in precs}
  if len(keys) != 1:
    raise ValueError('preconditioners with different static flags or leaf shapes cannot be '
                     f'stacked: {sorted(str(k[0]) for k in keys)}')
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *precs)


def unstack(tree, i):
  """The i-th member of a stacked pytree."""
  return jax.tree.map(lambda x: x[i], tree)


# ----------------------------------------------------------------------------- programs


class GridRunner:
  """One jitted program: the sampler vmapped over a stacked preconditioner.

  `runner(rng, params, states, stacked, offset)` -> (samples (G, B, H, W, C) in model
  space, first_nonfinite_step (G,) int32); with batched=False the preconditioner is a
  single one and the outputs have no G axis. `nfe` is the sampler's NFE (known after
  the first trace); `cache_size()` the number of compiled versions of the program.
  """

  def __init__(self, sampler, sde, model, continuous: bool, num_scales: int, batched=True):
    from score_sde_pds.models import utils as mutils
    self.nfe = None
    self.batched = batched

    def body(rng, params, states, precond, offset):
      score_fn = mutils.get_score_fn(sde, model, params, states, train=False,
                                     continuous=continuous, num_scales=num_scales)

      def one(p):
        x, nfe, info = sampler.run(rng, score_fn, precond=p, offset=offset)
        self.nfe = int(nfe)
        return x, info['first_nonfinite_step']

      return jax.vmap(one)(precond) if batched else one(precond)

    self.jitted = jax.jit(body)
    self.compile_seconds = 0.

  def compile(self, *args):
    """Ahead-of-time compilation (so execution can be timed apart from it)."""
    t0 = time.perf_counter()
    self.jitted.lower(*args).compile()
    self.compile_seconds += time.perf_counter() - t0

  def __call__(self, *args):
    return self.jitted(*args)

  def cache_size(self) -> int:
    return int(self.jitted._cache_size())


def block_config(config, num_scales, speed_up, predictor, corrector, snr):
  """A copy of `config` with one block's N and sampler options (progress off)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.model.num_scales = int(num_scales)
    cfg.sampling.speed_up = float(speed_up)
    if str(cfg.sampling.method).lower() == 'pc':   # splitting: the scheme is sampling.integrator
      cfg.sampling.predictor = predictor
      cfg.sampling.corrector = corrector
    cfg.sampling.snr = float(snr)
    cfg.sampling.progress_every = 0
    # the sweep passes every cell's operator per call; the sampler is built without one
    cfg.sampling.pds.enabled = False
  return cfg


class OracleMetrics:
  """Metrics of samples against the analytic oracle, with the field's part cached.

  `frechet_distance(x)` is `analytic.frechet_distance(x, field)` (the same estimator,
  operation for operation) with the field's dense covariance, its square root and its
  trace computed once per sweep instead of once per cell.
  `spectrum_error(x)` = mean_k |log(measured_spectrum(x, field.mean) / field.spectrum)|.
  Samples are (n, H, W, C) in model space.
  """

  def __init__(self, field):
    self.field = field
    H, W, C = field.shape
    self.mu = np.broadcast_to(np.asarray(field.mean, np.float64), (H, W, C)).reshape(-1)
    cov = field.dense_covariance()
    w, v = np.linalg.eigh(cov)
    self.sq = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    self.trace_cov = np.trace(cov)
    self.spectrum = np.asarray(field.spectrum, np.float64)

  def frechet_distance(self, samples) -> float:
    x = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
    mu_s = x.mean(0)
    cov_s = np.cov(x, rowvar=False)
    m = self.sq @ cov_s @ self.sq
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sum(np.sqrt(np.clip(ev, 0, None)))
    return float(np.sum((mu_s - self.mu) ** 2) + np.trace(cov_s) + self.trace_cov
                 - 2 * tr_sqrt)

  def spectrum_error(self, samples) -> float:
    from score_sde_pds.models import analytic
    spec = analytic.measured_spectrum(samples, mean=np.asarray(self.field.mean))
    with np.errstate(divide='ignore'):
      return float(np.mean(np.abs(np.log(spec / self.spectrum))))

  def __call__(self, samples):
    """(fd, spec_err); NaN for samples with non-finite values (or moments that overflow)."""
    x = np.asarray(samples, np.float64)
    if not np.all(np.isfinite(x)):
      return float('nan'), float('nan')
    try:
      with np.errstate(over='ignore', invalid='ignore'):
        return self.frechet_distance(x), self.spectrum_error(x)
    except np.linalg.LinAlgError:
      return float('nan'), float('nan')


def sample_rounds(runner, rng, params, states, precond, num_samples, batch_size,
                  keep=True):
  """Runs `runner` over ceil(num_samples / batch_size) rounds (round r: offset r B).

  Returns:
    (samples (G, num_samples, H, W, C) numpy or None when not `keep`,
     first_nonfinite_step (G,) (-1 when finite; the first bad round's step),
     seconds of execution, compilation excluded).
  """
  rounds = math.ceil(num_samples / batch_size)
  runner.compile(rng, params, states, precond, 0)
  outs, bad, seconds = [], None, 0.
  for r in range(rounds):
    t0 = time.perf_counter()
    x, b = runner(rng, params, states, precond, r * batch_size)
    x = jax.block_until_ready(x)
    seconds += time.perf_counter() - t0
    b = np.asarray(b).reshape(-1)
    bad = b if bad is None else np.where(bad >= 0, bad, b)
    if keep:
      x = np.asarray(x)
      outs.append(x if runner.batched else x[None])
  samples = None
  if keep:
    samples = np.concatenate(outs, axis=1)[:, :num_samples]
  return samples, bad, seconds


# ----------------------------------------------------------------------------- the sweep


@dataclasses.dataclass
class SweepResult:
  """The outcome of `run_sweep`.

  Attributes:
    rows: one dict per cell (keys CSV_COLUMNS).
    programs: one dict per compiled program (block, N, sampler, cells, cache_size,
      compile_seconds, seconds, and the GridRunner `runner` with its (stacked)
      preconditioner argument `precond`).
    note: the table's header note.
    floor: oracle: {'fd', 'spec_err'} of num_samples EXACT oracle samples (same
      estimators), the finite-sample floor of fd / spec_err; networks: {'metric', 'value',
      'value_std', 'num_samples', 'reference'} of real held-out images; None otherwise.
    samples: with keep_samples, (block index, FilterSetting) -> (n, H, W, C) samples.
    metric_key: the row key tables and plots rank by ('fd' for the oracle, 'value' for
      networks, whose metric is named in the rows' 'metric' and in metric_name).
  """
  rows: list
  programs: list
  note: str
  floor: Optional[dict] = None
  samples: Optional[dict] = None
  metric_key: str = 'fd'
  metric_name: str = 'Frechet distance (samples)'


def _float_list(values, default):
  return list(values) if values else [default]


def run_sweep(config, workdir=None, grid: Optional[Grid] = None, keep_samples=False,
              log: Callable[[str], None] = lambda s: None) -> SweepResult:
  """Samples and scores every cell of `grid` on `config` (see the module docstring).

  Args:
    config: an ml_collections config (sampling.method 'pc').
    workdir: where relative statistics paths and network checkpoints are looked up.
    grid: the axes (default: Grid()).
    keep_samples: also return every cell's samples (model space) in result.samples.
    log: progress callback taking a line of text.
  Returns:
    SweepResult.
  """
  from score_sde_pds import run_lib
  grid = grid or Grid()
  method = str(config.sampling.method).lower()
  if method not in ('pc', 'splitting'):
    raise ValueError(
        f'config.sampling.method={config.sampling.method!r}: the PDS sweep runs the samplers '
        "that take the preconditioner per call, 'pc' and the stochastic 'splitting' schemes "
        "(PDS in their O steps). The conjugate integrators' spectral B is precomputed per "
        "filter (compare it with scripts/integrator_curves.py, spec "
        "'conjugate:<rule>:b_matrix=spectral:pds=1'); the ODE sampler is not preconditioned.")
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape_img = (size, size, ch)
  oracle = is_oracle(config)
  num_samples = int(grid.num_samples)
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}')
  B = int(grid.batch_size) or (num_samples if oracle else
                               min(num_samples, int(config.sampling.batch_size)))
  if B < 1:
    raise ValueError(f'batch_size must be >= 1, got {B}')

  # --- axes, validated before any compute
  settings = filter_settings(grid, size)
  if method == 'splitting':
    from score_sde_pds.integrators import config as iconfig
    from score_sde_pds.integrators.splitting import SPLITTING_SCHEMES
    if list(grid.samplers) or list(grid.snrs):
      raise ValueError('--samplers / --snrs choose PC predictors and correctors; with '
                       'config.sampling.method=splitting the scheme is '
                       'config.sampling.integrator.')
    name = str(config.sampling.get('integrator', '') or
               iconfig.DEFAULT_INTEGRATOR['splitting']).lower()
    if name not in SPLITTING_SCHEMES or not SPLITTING_SCHEMES[name].stochastic:
      stoch = sorted(k for k, v in SPLITTING_SCHEMES.items() if v.stochastic)
      raise ValueError(f'config.sampling.integrator={name!r}: the PDS sweep preconditions the '
                       f'Langevin (O) steps of the stochastic splitting schemes {stoch}.')
    # the scheme is recorded in the rows' predictor column ('splitting:<scheme>')
    sampler_settings = [SamplerSetting(f'splitting:{name}', 'none', float(config.sampling.snr))]
  else:
    samplers = list(grid.samplers) or [(str(config.sampling.predictor),
                                        str(config.sampling.corrector))]
    samplers = parse_samplers([f'{p}:{c}' for p, c in samplers])
    snrs = [float(s) for s in _float_list(grid.snrs, float(config.sampling.snr))]
    sampler_settings = []
    for pred, corr in samplers:
      for snr in (snrs if corr != 'none' else snrs[:1]):
        s = SamplerSetting(pred, corr, snr)
        if s not in sampler_settings:
          sampler_settings.append(s)
  n_axis = []
  for ns in _float_list(grid.num_scales, int(config.model.num_scales)):
    for su in _float_list(grid.speed_ups, float(config.sampling.get('speed_up', 1.))):
      key = (int(ns), float(su))
      if key not in n_axis:
        n_axis.append(key)
  blocks = []
  for ns, su in n_axis:
    for ss in sampler_settings:
      cfg = block_config(config, ns, su, ss.predictor, ss.corrector, ss.snr)
      sde, eps = sde_lib.get_sde(cfg)
      sampler = sampling.get_sampler_from_config(cfg, sde, (B, size, size, ch), eps)
      blocks.append((ns, su, ss, cfg, sde, eps, sampler))

  # --- preconditioners: omega a traced leaf of the whole stack when any omega != 0
  stats = (load_statistics(config, workdir, grid.stats)
           if any(s.filter == 'statistics' for s in settings) else None)
  skew = any(s.omega != 0 for s in settings)
  precs = [build_preconditioner(s, shape_img, stats, skew=skew) for s in settings]
  groups = group_by_structure(precs)
  stacks = [stack_preconditioners([precs[i] for i in g]) for g in groups]
  if len(groups) > 1:
    log(f'{len(groups)} preconditioner structures (static flags differ): one program each')

  model, states, params = run_lib.load_model(config, workdir)
  rng = jax.random.PRNGKey(int(config.sampling.seed))
  metrics = floor = None
  if oracle:
    metrics = OracleMetrics(params)
    exact = np.asarray(params.sample(jax.random.fold_in(rng, 2 ** 31 - 1), num_samples))
    fd0, se0 = metrics(exact)
    floor = {'fd': fd0, 'spec_err': se0}
    log(f'estimator floor: {num_samples} exact oracle samples have fd={fd0:.5g} '
        f'spec_err={se0:.4g}')
  extractor = ref = None
  metric_name = 'Frechet distance (samples)'
  if not oracle:
    extractor, ref, floor = network_metric(config, workdir, num_samples, int(grid.bootstrap), log)
    if extractor is not None:
      metric_name = floor['metric'] if floor else 'value'
  continuous = bool(config.training.continuous)
  identity = preconditioning.Preconditioner.identity()

  rows, programs, kept = [], [], {}
  for b, (ns, su, ss, cfg, sde, eps, sampler) in enumerate(blocks):
    base = {'N': sde.N, 'num_scales': ns, 'speed_up': su, 'predictor': ss.predictor,
            'corrector': ss.corrector, 'snr': ss.snr if ss.corrector != 'none' else None,
            'num_samples': num_samples}
    jobs = [([FilterSetting('vanilla')], [identity], identity, False)]
    jobs += [([settings[i] for i in g], [precs[i] for i in g], st, True)
             for g, st in zip(groups, stacks)]
    for cells, cell_precs, precond, batched in jobs:
      runner = GridRunner(sampler, sde, model, continuous, ns, batched=batched)
      samples, bad, seconds = sample_rounds(runner, rng, params, states, precond,
                                            num_samples, B,
                                            keep=oracle or keep_samples or extractor is not None)
      prog = len(programs)
      programs.append({'program': prog, 'block': b, 'N': sde.N, 'sampler': ss.label,
                       'cells': len(cells), 'cache_size': runner.cache_size(),
                       'compile_seconds': runner.compile_seconds, 'seconds': seconds,
                       'runner': runner, 'precond': precond})
      for j, (s, p) in enumerate(zip(cells, cell_precs)):
        fd = spec_err = fd_exact = spec_exact = float('nan')
        if oracle:
          if bad[j] < 0:
            fd, spec_err = metrics(samples[j])
          if calibration.supports(sde, ss.predictor, ss.corrector):
            ex = calibration.exact_moments(
                params, sde, eps, p, ss.predictor, ss.corrector, snr=ss.snr,
                n_steps=int(cfg.sampling.n_steps_each),
                denoise=bool(cfg.sampling.noise_removal),
                pds_mode=str(cfg.sampling.pds.get('mode', 'reference')),
                eta=float(cfg.sampling.pds.get('eta', 1.)),
                probability_flow=bool(cfg.sampling.probability_flow))
            fd_exact, spec_exact = ex['fd'], ex['spec_err']
        net = {'metric': None, 'value': float('nan'), 'value_std': float('nan'),
               'confident_share': float('nan')}
        if extractor is not None:
          from score_sde_pds.evaluation import evaluator
          net['metric'] = metric_name
          if bad[j] < 0:
            res = evaluator.score_outputs(evaluator.extract(extractor, samples[j]), extractor,
                                          ref, config, bootstrap=int(grid.bootstrap))
            net.update({k: res[k] for k in ('value', 'value_std', 'confident_share')
                        if res.get(k) is not None})
        if keep_samples:
          kept[(b, s)] = samples[j]
        rows.append(dict(base, filter=s.filter, alpha=s.alpha, radius=s.radius, lam=s.lam,
                         omega=s.omega if s.filter != 'vanilla' else None, nfe=runner.nfe,
                         fd=fd, spec_err=spec_err, fd_exact=fd_exact,
                         spec_err_exact=spec_exact, **net, seconds=seconds / len(cells),
                         compile_seconds=runner.compile_seconds,
                         nonfinite_step=int(bad[j]), program=prog))
        log(f'N={sde.N:4d} {ss.label:32s} {s.label:28s} nfe={runner.nfe:5d} '
            + (f'{metric_name}={net["value"]:.5g} ' if extractor is not None else
               f'fd={fd:.5g} fd_exact={fd_exact:.5g} spec_err={spec_err:.4g} ') +
            f'({seconds / len(cells):.2f} s/cell)')
  if oracle:
    note = (f'Analytic oracle, {num_samples} samples per cell, seed '
            f'{int(config.sampling.seed)} (the same noise in every cell). fd: '
            'analytic.frechet_distance of the samples to the target field; spec_err: mean '
            '|log(measured / target spectrum)|. Both are finite-sample estimates: '
            f'{num_samples} EXACT oracle samples score fd={floor["fd"]:.4g}, '
            f'spec_err={floor["spec_err"]:.3g} (the floor; fd is biased upwards when '
            'num_samples is not >> H*W*C). fd_exact / spec_err_exact: the exact population '
            'values of the sampler output (the per-mode recursion '
            '`calibration.exact_moments`; with the langevin corrector its step size uses '
            'the expected norms), else NaN.')
  elif extractor is not None:
    note = (f'{config.data.dataset}, {num_samples} samples per cell, seed '
            f'{int(config.sampling.seed)} (the same noise in every cell). value: {metric_name} '
            f'({extractor.name} features, reference {floor.get("reference", "")})'
            + (f'; value_std: its bootstrap std over {int(grid.bootstrap)} resamples of the '
               'samples' if int(grid.bootstrap) else '')
            + f'. Real held-out images ({floor["num_samples"]}) score {floor["value"]:.4g} '
            '(the floor).')
  else:
    note = NO_METRIC_NOTE
  return SweepResult(rows=rows, programs=programs, note=note, floor=floor,
                     samples=kept if keep_samples else None,
                     metric_key='fd' if oracle else 'value', metric_name=metric_name)


def network_metric(config, workdir, num_samples, bootstrap, log):
  """(extractor, reference, floor) of a network config's dataset metric, or Nones when its
  feature network is not available (FID without config.eval.inception_path). floor: the
  metric of up to num_samples real held-out images."""
  from score_sde_pds import datasets
  from score_sde_pds.evaluation import evaluator
  try:
    extractor = evaluator.get_extractor(config, workdir)
    ref, ref_path = evaluator.load_reference(config, workdir, extractor)
  except FileNotFoundError as e:
    log(f'no metric: {e}')
    return None, None, None
  test = datasets.get_dataset(config, 'test')
  n = min(num_samples, len(test))
  # a seeded random subset: splits may be ordered (the offline MNIST test split is sorted
  # by class, so its first n images would miss most classes)
  idx = np.sort(np.random.default_rng(0).permutation(len(test))[:n])
  res = evaluator.score_outputs(evaluator.extract(extractor, test.get_batch(idx)),
                                extractor, ref, config, bootstrap=bootstrap)
  floor = {'metric': res['metric'], 'value': res['value'], 'value_std': res.get('value_std'),
           'num_samples': n, 'reference': ref_path}
  log(f'metric {res["metric"]}: {n} real held-out images score {res["value"]:.5g} (floor)')
  return extractor, ref, floor


# ----------------------------------------------------------------------------- outputs


def _fmt(v, digits=6):
  if v is None:
    return ''
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  if isinstance(v, (float, np.floating)):
    return 'nan' if math.isnan(v) else f'{float(v):.{digits}g}'
  return str(v)


def csv_bytes(rows, columns=CSV_COLUMNS, digits=12) -> bytes:
  """A CSV file of dict rows: a header of `columns`, one line per row, floats with `digits`
  significant digits, None as empty (sweep.csv by default; the table scripts reuse it)."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(columns)
  for r in rows:
    w.writerow([_fmt(r.get(c), digits) for c in columns])
  return buf.getvalue().encode()


_INT_COLUMNS = ('N', 'num_scales', 'nfe', 'nonfinite_step', 'num_samples', 'program')
_STR_COLUMNS = ('filter', 'predictor', 'corrector', 'metric')


def rows_from_csv(text: str) -> list:
  """Parses sweep.csv text back into rows (empty -> None, numbers typed)."""
  rows = []
  for rec in csv.DictReader(io.StringIO(text)):
    row = {}
    for k, v in rec.items():
      if k in _STR_COLUMNS:
        row[k] = v
      elif v == '':
        row[k] = None
      elif k in _INT_COLUMNS:
        row[k] = int(v)
      else:
        row[k] = float(v)
    rows.append(row)
  return rows


def _ok(v) -> bool:
  return v is not None and isinstance(v, (int, float, np.floating)) and math.isfinite(v)


def best_per_n(rows, key='fd') -> dict:
  """N -> index of the row with the smallest finite `key` (no entry when none is)."""
  best = {}
  for i, r in enumerate(rows):
    v = r.get(key)
    if not _ok(v):
      continue
    if r['N'] not in best or v < rows[best[r['N']]][key]:
      best[r['N']] = i
  return best


def markdown(result: SweepResult) -> str:
  """sweep.md: a header note and one table, the best cell (smallest fd) per N in bold."""
  rows = result.rows
  key = result.metric_key
  best = set(best_per_n(rows, key).values())
  has_exact = any(_ok(r.get('fd_exact')) for r in rows)
  best_exact = set(best_per_n(rows, 'fd_exact').values())
  cols = [('filter', 'filter'), ('alpha', 'alpha'), ('radius', 'radius'), ('lam', 'lam'),
          ('omega', 'omega'), ('N', 'N'), ('predictor', 'predictor'),
          ('corrector', 'corrector'), ('snr', 'snr'), ('nfe', 'NFE')]
  if key == 'fd':
    cols += [('fd', 'FD'), ('spec_err', 'spec err')]
  else:
    cols += [('value', result.metric_name)]
    for extra, head in (('value_std', 'std'), ('confident_share', 'confident')):
      if any(_ok(r.get(extra)) for r in rows):
        cols.append((extra, head))
  if has_exact:
    cols += [('fd_exact', 'FD exact'), ('spec_err_exact', 'spec err exact')]
  cols += [('seconds', 's/cell')]
  legend = (f'Bold: the best cell (smallest {"FD" if key == "fd" else result.metric_name}) '
            'per N.' +
            (' +: the smallest FD exact per N.' if has_exact else '') +
            " s/cell: execution time of the cell's program divided by its cells "
            '(compilation excluded).')
  lines = ['# PDS sweep', '', result.note, '', legend, '',
           '| ' + ' | '.join(h for _, h in cols) + ' |',
           '|' + '|'.join('---' for _ in cols) + '|']
  for i, r in enumerate(rows):
    cells = []
    for k, _ in cols:
      c = _fmt(r.get(k), 4 if k in ('seconds', 'spec_err', 'spec_err_exact') else 5)
      if k == 'fd_exact' and i in best_exact:
        c += ' +'
      cells.append(c)
    if i in best:
      cells = [f'**{c}**' if c else c for c in cells]
    lines.append('| ' + ' | '.join(cells) + ' |')
  progs = result.programs
  if progs:
    lines += ['', f'{len(progs)} compiled programs (per (N, sampler) block: one for the '
              'vmapped filter grid per preconditioner structure, one for the vanilla row); '
              f'compilation {sum(p["compile_seconds"] for p in progs):.1f} s in total.']
  lines.append('')
  return '\n'.join(lines)


def plot_png(result: SweepResult) -> bytes:
  """sweep.png: FD, FD exact (when available) and spec_err vs alpha (statistics filter)
  or lam (parametric filter), one line per (N, sampler options, omega[, radius]) in the
  colour of its N; vanilla rows as horizontal lines in that colour (one dash pattern per
  sampler); the estimator floor (exact oracle samples) black dotted. The y axis is
  clipped at 30x the largest vanilla value (diverged cells sit on the top edge, red)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from matplotlib import ticker
  rows = result.rows
  filters = [f for f in FILTERS if any(r['filter'] == f for r in rows)] or ['statistics']
  ns = sorted({r['N'] for r in rows})
  colors = {n: plt.cm.viridis(k / max(1, len(ns) - 1) * 0.85) for k, n in enumerate(ns)}
  markers, dashes = 'os^vD<>px*h', ['--', ':', '-.', (0, (5, 1, 1, 1, 1, 1))]
  sampler_keys = []
  for r in rows:
    k = (r['predictor'], r['corrector'], r['snr'])
    if k not in sampler_keys:
      sampler_keys.append(k)
  panels = [(result.metric_key, result.metric_name)]
  if any(_ok(r.get('fd_exact')) for r in rows):
    panels.append(('fd_exact', 'Frechet distance (exact)'))
  if result.metric_key == 'fd':
    panels.append(('spec_err', 'mean |log spectrum ratio|'))
  floor = result.floor or {}

  fig, axes = plt.subplots(len(panels), len(filters),
                           figsize=(6.5 * len(filters), 4.2 * len(panels)), squeeze=False)
  for j, filt in enumerate(filters):
    xkey = 'alpha' if filt == 'statistics' else 'lam'
    for m, (metric, name) in enumerate(panels):
      ax = axes[m, j]
      vanilla = [r[metric] for r in rows if r['filter'] == 'vanilla' and _ok(r.get(metric))]
      finite = [r[metric] for r in rows if _ok(r.get(metric)) and r[metric] > 0]
      top = 30 * max(vanilla) if vanilla else (max(finite) * 1.5 if finite else 1.)
      lines = {}
      for r in rows:
        # NaN: diverged (nonfinite_step >= 0, drawn at the top) or no metric (left out)
        diverged = (r.get('nonfinite_step') or -1) >= 0
        if r['filter'] == filt and (_ok(r.get(metric)) or diverged):
          key = (r['N'], (r['predictor'], r['corrector'], r['snr']), r['omega'], r['radius'])
          lines.setdefault(key, []).append((r[xkey], r.get(metric)))
      for (n, skey, omega, radius), pts in lines.items():
        pts.sort(key=lambda p: p[0])
        mk = markers[(sampler_keys.index(skey) + 3 * int(bool(omega))) % len(markers)]
        lab = f'N={n} {skey[0]}:{skey[1]}' + (f' snr={skey[2]:g}' if skey[2] is not None else '')
        lab += (f' omega={omega:g}' if omega else '') + (
            f' r={radius:g}' if radius is not None else '')
        xs = [p[0] for p in pts]
        ys = [min(p[1], top) if _ok(p[1]) else top for p in pts]
        ax.plot(xs, ys, marker=mk, color=colors[n], label=lab)
        clipped = [(x, top) for (x, y) in pts if not _ok(y) or y > top]
        if clipped:
          ax.plot(*zip(*clipped), linestyle='none', marker=mk, markersize=11,
                  markerfacecolor='none', markeredgecolor='red')
      for r in rows:
        if r['filter'] == 'vanilla' and _ok(r.get(metric)):
          k = sampler_keys.index((r['predictor'], r['corrector'], r['snr']))
          ax.axhline(r[metric], color=colors[r['N']], linestyle=dashes[k % len(dashes)],
                     linewidth=1.2, label=f'vanilla N={r["N"]} {r["predictor"]}:{r["corrector"]}')
      if _ok(floor.get(metric)):
        ax.axhline(floor[metric], color='black', linestyle=':', linewidth=1,
                   label=('exact oracle samples (estimator floor)' if metric != 'value'
                          else 'real held-out images (floor)'))
      if finite:
        ax.set_yscale('log')
        ax.set_ylim(top=top * 1.3)
      else:
        ax.text(0.5, 0.5, 'no metric for this model\n(see sweep.md)', ha='center',
                va='center', transform=ax.transAxes)
      xs_all = sorted({r[xkey] for r in rows if r['filter'] == filt})
      if filt == 'statistics' and xs_all:
        ax.set_xscale('log')
        ax.xaxis.set_major_locator(ticker.FixedLocator(xs_all))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
      ax.set_xlabel(xkey + (' (statistics filter)' if filt == 'statistics'
                            else ' (parametric filter)'))
      ax.set_ylabel(name)
      ax.grid(True, alpha=0.3)
  legend = {}
  for ax in axes.flat:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      legend.setdefault(lab, h)
  fig.suptitle('PDS sweep (horizontal lines: vanilla; red open markers: clipped / diverged)',
               fontsize=10)
  fig.tight_layout()
  if legend:
    fig.legend(list(legend.values()), list(legend), loc='center left',
               bbox_to_anchor=(1.0, 0.5), fontsize=7)
  return utils.figure_png_bytes(fig, dpi=90, bbox_inches='tight')


def write_outputs(result: SweepResult, workdir) -> dict:
  """Writes sweep.csv, sweep.md, sweep.png into workdir atomically; returns the paths."""
  return utils.write_result_files(workdir, 'sweep', {
      'csv': csv_bytes(result.rows), 'md': markdown(result).encode(), 'png': plot_png(result)})
