"""Error vs NFE curves of every integrator and the PC/ODE baselines on the analytic oracle.

`run_curves(config, nfes, samplers)` samples the Gaussian-field oracle of `config`
(configs/analytic/*; its SDE: VP, subVP, VE, CLD or PSLD) with each sampler at each NFE
budget and scores it by the Frechet distance to the exact field:
  * 'exact': samplers that are affine and stationary on the oracle (all conjugate and
    splitting integrators, PC without a corrector) get the exact FD from their impulse
    responses (oracle.output_moments): no sampling error at all;
  * 'mc': the others (PC with the Langevin corrector, whose step size depends on the
    state; the diffrax ODE solvers: fixed-step Heun, adaptive RK45) get the FD of `mc_samples` samples
    (analytic.frechet_distance) minus the same estimator on as many exact field samples
    (the finite-sample floor), so both kinds estimate the same population quantity.
The step count of a sampler is the largest giving at most the NFE budget (NFE = per-step
evaluations x steps + fixed extra evaluations); the row records the NFE actually spent.
`write_outputs` writes curves.csv, curves.md and curves.png (atomically).

This module is pure (file I/O only in write_outputs).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds import preconditioning, sampling, sde_lib, sweep, utils
from score_sde_pds.integrators import conjugate, oracle, splitting
from score_sde_pds.models import analytic

# fd: the Frechet distance to the oracle, or a network config's dataset metric (CurveResult.
# metric); fd_kind: exact | mc | error on the oracle, ok | diverged | error on networks;
# spec_err: the oracle's mean |log spectrum ratio|; fd_std, confident_share: network rows.
CSV_COLUMNS = ('sde', 'sampler', 'family', 'nfe_budget', 'nfe', 'num_steps', 'fd', 'fd_kind',
               'spec_err', 'fd_std', 'confident_share', 'seconds')


@dataclasses.dataclass(frozen=True)
class Spec:
  """A sampler of the sweep: build(sde, shape, num_steps, noise_source) -> Sampler.

  exact: affine and stationary on the oracle (exact FD). tags: noise tags per step.
  """
  name: str
  family: str
  build: Callable
  exact: bool = True
  tags: tuple = ()
  nfe_per_step: int = 0      # 0: read from the sampler's `nfe` (integrators)


def _pds_preconditioner(field, shape):
  """The PDS operator from the oracle's exact statistics (alpha 5, frequency filter)."""
  return preconditioning.Preconditioner.from_statistics(
      freq_stats=np.log1p(np.asarray(field.second_moment_spectrum())), alpha=5.,
      shape=tuple(shape[1:]))


def default_specs(sde, field, eps) -> list[Spec]:
  """Every integrator that applies to `sde`, plus the PC/ODE baselines."""
  specs = []
  aug = getattr(sde, 'is_augmented', False)
  conj = lambda **kw: (lambda sde, shape, n, src: conjugate.get_conjugate_sampler(
      sde, shape, num_steps=n, eps=eps, noise_source=src, **kw))
  frames = ('cholesky', 'natural') if aug else ('cholesky',)
  for frame in frames:
    tag = '' if frame == 'cholesky' else ' natural'
    specs += [Spec(f'conj euler B=0{tag}', 'conjugate', conj(eps_frame=frame)),
              Spec(f'conj euler lam=1{tag}', 'conjugate', conj(lam=1., eps_frame=frame)),
              Spec(f'conj heun{tag}', 'conjugate', conj(rule='heun', eps_frame=frame)),
              Spec(f'conj ab2{tag}', 'conjugate', conj(rule='ab2', eps_frame=frame))]
  if aug:
    specs.append(Spec('conj euler B=0.5*ones', 'conjugate', conj(lam=0.5, b_matrix='ones')))
  gain = _pds_preconditioner(field, (1,) + tuple(field.shape)).freq_gain
  gain = np.broadcast_to(np.asarray(gain, np.float64), field.shape) ** 2
  specs.append(Spec('conj spectral lam=1 (PDS)' + (' natural' if aug else ''), 'conjugate',
                    conj(lam=1., b_matrix='spectral', spectral_gain=gain,
                         eps_frame='natural' if aug else 'cholesky')))
  if aug:
    def split(scheme, **kw):
      return lambda sde, shape, n, src: splitting.get_splitting_sampler(
          sde, shape, integrator=scheme, num_steps=n, eps=eps, noise_source=src, **kw)
    for scheme in ('nse', 'nvv', 'rse', 'rvv', 'cvv'):
      specs.append(Spec(scheme, 'splitting', split(scheme)))
    specs.append(Spec('cvv natural', 'splitting', split('cvv', eps_frame='natural')))
    for scheme in ('oba', 'baoab', 'roba', 'sscs'):
      probe = splitting.get_splitting_sampler(sde, (1,) + tuple(field.shape[:2]) + (1,),
                                              integrator=scheme, num_steps=1, eps=eps)
      specs.append(Spec(scheme, 'splitting', split(scheme), tags=tuple(probe.noise_tags)))
    pds = _pds_preconditioner(field, (1,) + tuple(field.shape))
    specs.append(Spec('oba + PDS(O)', 'splitting', split('oba', preconditioner=pds), tags=(0,)))
    specs.append(Spec('roba + PDS(O)', 'splitting', split('roba', preconditioner=pds), tags=(0,)))

  # PC baselines (no corrector: affine; on CLD/PSLD on the stacked state, x returned)
  def pc(predictor, corrector='none', probability_flow=False):
    def build(sde, shape, n, src):
      sde_n = sde.replace(N=n)
      sshape = tuple(shape[:-1]) + (shape[-1] * sde.block_dim,)
      inner = sampling.get_pc_sampler(sde_n, sshape, predictor, corrector, snr=0.16,
                                      probability_flow=probability_flow, denoise=False,
                                      eps=eps, noise_source=src, corrector_norm='sample')
      if not aug:
        return inner

      def run(rng, score_fn, precond=None, offset=0):
        z, nfe, info = inner.run(rng, score_fn, precond, offset)
        return sde_lib.data_part(z, 2), nfe, info
      return sampling.Sampler(run)
    return build
  specs += [Spec('pc euler-maruyama (SDE)', 'pc', pc('euler_maruyama'), tags=(0,),
                 nfe_per_step=1),
            Spec('pc euler (PF ODE)', 'pc', pc('euler_maruyama', probability_flow=True),
                 nfe_per_step=1),
            Spec('pc reverse-diffusion + langevin', 'pc', pc('reverse_diffusion', 'langevin'),
                 exact=False, nfe_per_step=2)]
  if not aug:
    specs.append(Spec('pc reverse-diffusion', 'pc', pc('reverse_diffusion'), tags=(0,),
                      nfe_per_step=1))
    # fixed-step Heun on the PF ODE (diffrax; 2 evaluations per step; fixed-step Euler is
    # 'pc euler (PF ODE)'); no noise_source hook, so a Monte Carlo row
    specs.append(Spec('ode heun (fixed steps)', 'ode', lambda sde, shape, n, src:
                      sampling.get_ode_sampler(sde, shape, method='heun', steps=n, eps=eps,
                                               denoise=False),
                      exact=False, nfe_per_step=2))
  return specs


def _steps_for_budget(spec, sde, shape, budget):
  """(num_steps, nfe) with the largest nfe <= budget (NFE = per-step x N + extra)."""
  if spec.nfe_per_step:
    per, extra = spec.nfe_per_step, 0
  else:
    n1 = spec.build(sde, shape, 1, None).nfe
    n2 = spec.build(sde, shape, 2, None).nfe
    per, extra = n2 - n1, 2 * n1 - n2
  n = max(1, (budget - extra) // per)
  return int(n), int(per * n + extra)


@dataclasses.dataclass
class CurveResult:
  """rows: CSV_COLUMNS dicts. Oracle curves: metric '' (exact Frechet distance to the field),
  mc_floor the Monte Carlo rows' finite-sample floor. Network curves: metric the dataset's
  (e.g. 'mnist_fd') in the 'fd' column, its bootstrap std in 'fd_std', the cell's status
  in 'fd_kind'; mc_floor the metric of floor_samples real held-out images."""
  rows: list
  sde: str
  field_shape: tuple
  mc_floor: float
  metric: str = ''
  floor_samples: int = 0


def run_curves(config, nfes: Sequence[int] = (10, 20, 50, 100, 200),
               names: Optional[Sequence[str]] = None, mc_samples: int = 2048,
               ode_tols: Sequence[float] = (1e-2, 1e-3, 1e-4), log=print) -> CurveResult:
  """Runs every sampler of `default_specs` (or those named) at each NFE budget, and the
  adaptive RK45 probability-flow ODE at the tolerances `ode_tols` (VP/VE only)."""
  field = analytic.GaussianField.from_config(config)
  sde, eps = sde_lib.get_sde(config)
  score_fn = lambda z, t: field.score(sde, z, t)
  H, W, C = field.shape
  specs = default_specs(sde, field, eps)
  if names:
    known = {s.name for s in specs}
    bad = [n for n in names if n not in known]
    if bad:
      raise ValueError(f'unknown sampler(s) {bad}; valid: {sorted(known)}.')
    specs = [s for s in specs if s.name in names]
  k = sde.block_dim
  floor_fd = None
  rows = []
  for spec in specs:
    for budget in nfes:
      t0 = time.time()
      try:
        n, nfe = _steps_for_budget(spec, sde, (1, H, W, C), budget)
        if spec.exact:
          mean, cov, _ = oracle.output_moments(
              lambda src, B: spec.build(sde, (B, H, W, C), n, src), score_fn, (H, W, k * C), n,
              spec.tags)
          if mean is None:
            fd = spec_err = float('nan')
          else:
            fd = oracle.exact_frechet_distance(mean, cov, field)
            spec_err = oracle.output_spectrum_error(cov, field)
          kind = 'exact'
        else:
          if floor_fd is None:
            floor_fd = analytic.frechet_distance(
                np.asarray(field.sample(jax.random.PRNGKey(1), mc_samples)), field)
          smp = spec.build(sde, (mc_samples, H, W, C), n, None)
          x, _, info = jax.jit(lambda r: smp.run(r, score_fn, smp.preconditioner))(
              jax.random.PRNGKey(0))
          x = np.asarray(x, np.float64)
          if np.all(np.isfinite(x)):
            fd = analytic.frechet_distance(x, field) - floor_fd
            spec_err = float(np.mean(np.abs(np.log(
                analytic.measured_spectrum(x, mean=np.asarray(field.mean)) /
                np.asarray(field.spectrum)))))
          else:
            fd = spec_err = float('nan')
          kind = 'mc'
      except Exception as e:   # a sampler that cannot run at this budget: recorded, not fatal
        log(f'  {spec.name} @ {budget}: {type(e).__name__}: {e}')
        n, nfe, fd, spec_err, kind = 0, 0, float('nan'), float('nan'), 'error'
      row = {'sde': config.training.sde, 'sampler': spec.name, 'family': spec.family,
             'nfe_budget': int(budget), 'nfe': nfe, 'num_steps': n, 'fd': fd, 'fd_kind': kind,
             'spec_err': spec_err, 'seconds': round(time.time() - t0, 2)}
      rows.append(row)
      log(f"{row['sde']:6s} {spec.name:34s} nfe {nfe:4d} (N={n:4d}) fd {fd:.4g} [{kind}] "
          f"spec_err {spec_err:.3g}  {row['seconds']}s")
  if ode_tols and not getattr(sde, 'is_augmented', False):
    for tol in ode_tols:                    # adaptive RK45 on the probability-flow ODE
      t0 = time.time()
      if floor_fd is None:
        floor_fd = analytic.frechet_distance(
            np.asarray(field.sample(jax.random.PRNGKey(1), mc_samples)), field)
      smp = sampling.get_ode_sampler(sde, (mc_samples, H, W, C), rtol=tol, atol=tol, eps=eps,
                                     denoise=False)
      x, nfe, _ = jax.jit(lambda r: smp.run(r, score_fn))(jax.random.PRNGKey(0))
      x = np.asarray(x, np.float64)
      fd = analytic.frechet_distance(x, field) - floor_fd
      spec_err = float(np.mean(np.abs(np.log(
          analytic.measured_spectrum(x, mean=np.asarray(field.mean)) / np.asarray(field.spectrum)))))
      row = {'sde': config.training.sde, 'sampler': f'ode rk45 tol={tol:g}', 'family': 'ode',
             'nfe_budget': int(nfe), 'nfe': int(nfe), 'num_steps': 0, 'fd': fd, 'fd_kind': 'mc',
             'spec_err': spec_err, 'seconds': round(time.time() - t0, 2)}
      rows.append(row)
      log(f"{row['sde']:6s} {row['sampler']:34s} nfe {int(nfe):4d} fd {fd:.4g} [mc]")
  return CurveResult(rows=rows, sde=str(config.training.sde), field_shape=(H, W, C),
                     mc_floor=float('nan') if floor_fd is None else float(floor_fd))


# ----------------------------------------------------------------------------- networks

# Default sampler specs of run_network_curves, by kind of SDE (see parse_sampler_spec).
NETWORK_SAMPLERS = {
    'plain': ('pc:reverse_diffusion:langevin', 'pc:euler_maruyama:none', 'ode:heun',
              'conjugate:euler', 'conjugate:euler:lam=1'),
    'augmented': ('conjugate:euler', 'conjugate:euler:lam=1', 'splitting:cvv',
                  'splitting:rvv', 'splitting:oba', 'splitting:roba'),
}
_SPEC_KEYS = ('lam', 'grid', 'noise_scale', 'b_matrix', 'eps_frame', 'snr', 'n_steps_each', 'pds')


def parse_sampler_spec(spec: str) -> dict:
  """'method:name[:key=value...]' -> config.sampling overrides.

  method 'pc': name 'predictor' or 'predictor:corrector' (corrector default 'none');
  'ode': name = config.sampling.ode_method (fixed steps); 'conjugate' / 'splitting':
  name = config.sampling.integrator. key=value pairs set config.sampling.<key>
  (lam, grid, noise_scale, b_matrix, eps_frame, snr, n_steps_each); pds=1 turns on the
  config's PDS filter (config.sampling.pds.*), which is off otherwise.
  E.g. 'pc:reverse_diffusion:langevin', 'ode:heun', 'conjugate:euler:lam=1',
  'splitting:cvv', 'splitting:oba:noise_scale=0.5'.
  """
  parts = [p.strip() for p in str(spec).split(':') if p.strip()]
  if not parts or parts[0] not in ('pc', 'ode', 'conjugate', 'splitting'):
    raise ValueError(f'sampler spec {spec!r}: must start with pc:, ode:, conjugate: or '
                     "splitting: (e.g. 'pc:reverse_diffusion:langevin', 'splitting:cvv').")
  method, names, extra = parts[0], [], {}
  for p in parts[1:]:
    if '=' in p:
      k, v = (q.strip() for q in p.split('=', 1))
      if k not in _SPEC_KEYS:
        raise ValueError(f'sampler spec {spec!r}: unknown key {k!r}; valid: {list(_SPEC_KEYS)}.')
      try:
        if k == 'pds' and v not in ('0', '1'):
          raise ValueError
        extra[k] = (int(v) if k in ('n_steps_each', 'pds') else
                    v if k in ('grid', 'b_matrix', 'eps_frame') else float(v))
      except ValueError:
        raise ValueError(f'sampler spec {spec!r}: {k}={v!r} is not a valid value '
                         '(pds: 0 or 1; lam, noise_scale, snr: numbers).') from None
    else:
      names.append(p)
  out = {'method': method}
  if method == 'pc':
    if not 1 <= len(names) <= 2:
      raise ValueError(f'sampler spec {spec!r}: pc needs predictor[:corrector].')
    out.update(predictor=names[0], corrector=names[1] if len(names) == 2 else 'none')
  elif len(names) != 1:
    raise ValueError(f'sampler spec {spec!r}: {method} needs exactly one name '
                     f"({'ode_method' if method == 'ode' else 'integrator'}).")
  elif method == 'ode':
    out['ode_method'] = names[0]
  else:
    out['integrator'] = names[0]
  out.update(extra)
  return out


def spec_config(config, overrides: dict, num_steps: int):
  """A copy of `config` whose sampler is `overrides` (parse_sampler_spec) at `num_steps`.

  pc: N = num_steps through config.sampling.speed_up (PDS's convention, as Table 1: the
  sampling eps scales with it); ode: config.sampling.ode_steps; conjugate/splitting:
  config.sampling.num_steps.
  """
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    for k, v in overrides.items():
      if k != 'pds':
        cfg.sampling[k] = v
    cfg.sampling.pds.enabled = bool(overrides.get('pds', 0))
    cfg.sampling.progress_every = 0          # one line per cell instead
    m = overrides['method']
    if m == 'pc':
      cfg.sampling.speed_up = sde_lib.speed_up_for(int(cfg.model.num_scales), int(num_steps))
    elif m == 'ode':
      cfg.sampling.ode_steps = int(num_steps)
    else:
      cfg.sampling.num_steps = int(num_steps)
  return cfg


def _probe_nfe(config, overrides, n, shape, workdir):
  """NFE of the sampler of `overrides` at n steps, from one run on a zero score function
  (batch 1; the network is not called)."""
  from score_sde_pds import run_lib
  cfg = spec_config(config, overrides, n)
  sde, eps, precond = run_lib.validate_config(cfg, workdir, mode='sample')
  smp = sampling.get_sampler_from_config(cfg, sde, (1,) + tuple(shape[1:]), eps, precond)
  _, nfe, _ = jax.jit(lambda r: smp.run(r, lambda x, t: jnp.zeros_like(x),
                                        precond=smp.preconditioner))(jax.random.PRNGKey(0))
  return int(nfe)


def network_nfe_rule(config, overrides, shape, workdir=None):
  """(per, extra): the sampler's NFE is per * num_steps + extra (probed at 1 and 2 steps)."""
  n1 = _probe_nfe(config, overrides, 1, shape, workdir)
  n2 = _probe_nfe(config, overrides, 2, shape, workdir)
  per, extra = n2 - n1, 2 * n1 - n2
  if per <= 0:
    raise ValueError(f'sampler {overrides}: its NFE does not grow with the steps ({n1}, {n2}).')
  return per, extra


def run_network_curves(config, workdir=None, nfes: Sequence[int] = (10, 20, 50, 100),
                       specs: Optional[Sequence[str]] = None, num_samples: int = 256,
                       batch_size: int = 0, bootstrap: int = 20, log=print,
                       on_row: Optional[Callable] = None) -> CurveResult:
  """Metric vs NFE of each sampler spec on a network config with a checkpoint.

  Every cell draws the same `num_samples` samples (seed config.seed, per-sample keys) with
  the sampler of its spec at the largest step count within the NFE budget and scores them
  with the dataset's metric (evaluator: MNIST-FD for MNIST/DIGITS, FID with
  config.eval.inception_path), its bootstrap std (`bootstrap` resamples) as the estimator
  noise and the metric of as many real held-out images as the floor. The network params
  are arguments of each cell's jitted sampler (one compile per cell). `on_row(result)` is
  called with the partial CurveResult after every cell (the script writes its files then).
  """
  from score_sde_pds import datasets, run_lib
  from score_sde_pds.evaluation import evaluator
  if config.model.name == 'analytic_gaussian':
    raise ValueError('run_network_curves needs a network config; the oracle has run_curves.')
  sde, _ = sde_lib.get_sde(config)
  kind = 'augmented' if getattr(sde, 'is_augmented', False) else 'plain'
  specs = list(specs or NETWORK_SAMPLERS[kind])
  parsed = [parse_sampler_spec(s) for s in specs]
  extractor, ref, floor = sweep.network_metric(config, workdir, num_samples, bootstrap, log)
  if extractor is None:
    raise FileNotFoundError('no metric for this config (see the message above): set '
                            'config.eval.inception_path / config.eval.ref_stats.')
  B = int(batch_size or config.sampling.batch_size)
  shape = (B, config.data.image_size, config.data.image_size, config.data.num_channels)
  run_lib.check_inputs(config, workdir)
  model, states, params = run_lib.load_model(config, workdir)
  scaler = datasets.get_data_inverse_scaler(config)
  rng = jax.random.PRNGKey(int(config.seed))
  rows, metric_name = [], None
  result = lambda rs: CurveResult(rows=rs, sde=str(config.training.sde),
                                  field_shape=tuple(shape[1:]), mc_floor=float(floor['value']),
                                  metric=metric_name or floor.get('metric') or 'metric',
                                  floor_samples=int(floor['num_samples']))
  for spec, over in zip(specs, parsed):
    rule = None
    for budget in nfes:
      t0 = time.time()
      n = nfe = 0
      value = std = conf = float('nan')
      try:
        rule = rule or network_nfe_rule(config, over, shape, workdir)
        n = max(1, (int(budget) - rule[1]) // rule[0])
        nfe = rule[0] * n + rule[1]
        cfg = spec_config(config, over, n)
        sde_n, eps, precond = run_lib.validate_config(cfg, workdir, mode='sample')
        fn = sampling.get_sampling_fn(cfg, sde_n, model, shape, eps, inverse_scaler=scaler,
                                      preconditioner=precond)
        outs = []
        for r in range(math.ceil(num_samples / B)):
          x, _, info = fn.with_info(rng, params, states, offset=r * B)
          if int(info['first_nonfinite_step']) >= 0:
            raise FloatingPointError(f'non-finite at step {int(info["first_nonfinite_step"])}')
          outs.append(np.asarray(x, np.float32))
        x = np.concatenate(outs)[:num_samples]
        res = evaluator.score_outputs(evaluator.extract(extractor, x), extractor, ref, config,
                                      bootstrap=bootstrap)
        metric_name = res['metric']
        value, std = float(res['value']), float(res.get('value_std') or float('nan'))
        conf = float(res.get('confident_share', float('nan')))
        status = 'ok'
      except Exception as e:   # recorded, not fatal: a diverging cell is a result
        log(f'  {spec} @ {budget}: {type(e).__name__}: {e}')
        status = 'diverged' if isinstance(e, FloatingPointError) else 'error'
      row = {'sde': str(config.training.sde), 'sampler': spec, 'family': over['method'],
             'nfe_budget': int(budget), 'nfe': nfe, 'num_steps': n, 'fd': value,
             'fd_kind': status, 'fd_std': std, 'confident_share': conf,
             'seconds': round(time.time() - t0, 2)}
      rows.append(row)
      log(f"{row['sde']:6s} {spec:34s} nfe {nfe:4d} (N={n:4d}) {metric_name or 'metric'} "
          f"{value:.4g} ± {std:.2g} confident {conf:.3f}  {row['seconds']}s")
      if on_row is not None:
        on_row(result(list(rows)))
  return result(rows)


# ----------------------------------------------------------------------------- outputs


def markdown(result: CurveResult) -> str:
  """Table: one row per sampler, one column per NFE budget, cells 'FD (nfe)'; best bold."""
  adaptive = [r for r in result.rows if r['family'] == 'ode' and int(r['num_steps']) == 0]
  fixed = [r for r in result.rows if r not in adaptive]
  budgets = sorted({r['nfe_budget'] for r in fixed})
  names = list(dict.fromkeys(r['sampler'] for r in fixed))
  cell = {(r['sampler'], r['nfe_budget']): r for r in fixed}
  best = {}
  for b in budgets:
    vals = [cell[(n, b)]['fd'] for n in names if (n, b) in cell and math.isfinite(cell[(n, b)]['fd'])]
    best[b] = min(vals) if vals else None
  if result.metric:
    head = (f'{result.metric} of the {result.sde} network\'s samples (lower is better; '
            f'{result.floor_samples} real held-out images score {result.mc_floor:.4g}). Cells: '
            'metric ± bootstrap std (NFE actually used).')
  else:
    head = (f'Exact Frechet distance to the {result.field_shape} Gaussian field under '
            f'{result.sde} (lower is better; `mc`: Monte Carlo minus the finite-sample floor '
            f'{result.mc_floor:.4g}). Cells: FD (NFE actually used).')
  lines = [head, '',
           '| sampler | ' + ' | '.join(f'NFE {b}' for b in budgets) + ' |',
           '|---|' + '---|' * len(budgets)]
  for n in names:
    cells = []
    for b in budgets:
      r = cell.get((n, b))
      if r is None or not math.isfinite(r['fd']):
        cells.append('diverged' if r is not None and r['fd_kind'] != 'error' else '-')
        continue
      std = r.get('fd_std')
      pm = f' ± {std:.2g}' if isinstance(std, float) and math.isfinite(std) else ''
      txt = f"{r['fd']:.3g}{pm} ({r['nfe']}{', mc' if r['fd_kind'] == 'mc' else ''})"
      cells.append(f'**{txt}**' if best[b] is not None and r['fd'] == best[b] else txt)
    lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  if adaptive:   # adaptive solvers choose their NFE: one row each
    lines += ['', 'Adaptive probability-flow ODE solver (NFE set by the tolerance):', '',
              '| solver | NFE | FD |', '|---|---|---|']
    lines += [f"| {r['sampler']} | {r['nfe']} | {r['fd']:.3g} ({r['fd_kind']}) |"
              for r in adaptive]
  return '\n'.join(lines) + '\n'


def plot_png(result: CurveResult) -> bytes:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5.5))
  names = list(dict.fromkeys(r['sampler'] for r in result.rows))
  styles = {'conjugate': '-', 'splitting': '--', 'pc': ':', 'ode': '-.'}
  for n in names:
    rs = [r for r in result.rows if r['sampler'] == n and math.isfinite(r['fd']) and r['fd'] > 0]
    if not rs:
      continue
    ax.plot([r['nfe'] for r in rs], [r['fd'] for r in rs], styles.get(rs[0]['family'], '-'),
            marker='o', ms=3, label=n)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('NFE')
  if result.metric:
    if math.isfinite(result.mc_floor):
      ax.axhline(result.mc_floor, color='k', linestyle=':', linewidth=1,
                 label=f'real held-out images ({result.floor_samples})')
    ax.set_ylabel(result.metric)
    ax.set_title(f'{result.sde} network: {result.metric} vs NFE')
  else:
    ax.set_ylabel('Frechet distance to the oracle')
    ax.set_title(f'{result.sde}: error vs NFE (Gaussian field {result.field_shape})')
  ax.legend(fontsize=6, ncol=2)
  ax.grid(True, which='both', alpha=0.3)
  fig.tight_layout()
  return utils.figure_png_bytes(fig, dpi=120)


def write_outputs(result: CurveResult, out_dir, prefix='curves') -> dict:
  return utils.write_result_files(out_dir, prefix, {
      'csv': sweep.csv_bytes(result.rows, CSV_COLUMNS, 6), 'md': markdown(result).encode(),
      'png': plot_png(result)})
