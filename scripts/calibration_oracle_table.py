"""The issue-10 oracle table of calibrated PDS, measured on the analytic Gaussian field.

  python scripts/calibration_oracle_table.py --config configs/analytic/gaussian_field.py \
      --out assets/calibration [--ns 10,20,30,50,100,200,500,1000] \
      [--samplers reverse_diffusion:none,reverse_diffusion:langevin,euler_maruyama:none] \
      [--etas 0.5,1,2] [--confirm reverse_diffusion:none:20,...] [--confirm_samples 1024]

For every sampler and N (config.model.num_scales = N, speed_up 1) it builds the PDS
operators exactly as `main.py --mode sample` does (`run_lib.build_preconditioner` with
pds.alpha = 'auto' and pds.filter = 'calibrated', from the oracle's data statistics
R = log(1 + E|F x|^2), A = E[x^2], i.e. on the Gaussian PROXY of the statistics, whose DC
variance/mean split is estimated) and scores them, together with vanilla, the fixed
alpha = 5 and a fine alpha sweep (`--sweep_points` log-spaced alpha - 1 in [1e-3, 1e5],
plus 5, the auto alpha and inf), by the exact per-mode recursion on the TRUE oracle
(`calibration.exact_moments`, `calibration.alpha_sweep` with the oracle as proxy): the
exact Frechet distance of each sampler's output law to the target, in model space.
With the langevin corrector the recursion's step size uses the expected norms (the
large-batch limit of corrector_norm='batch').

Checks of issue 10 (per reference-mode row): auto_le_vanilla (fd_auto <= fd_vanilla),
auto_within_10pct (fd_auto <= 1.1 fd_best, best over the sweep, inf included) and, for
20 <= N <= 100, calibrated_10x (fd_vanilla >= 10 fd_calibrated). The same is done for
pds.mode = 'marginal' at each --etas value (fd_identity: M = I in that mode).

--confirm cells ('predictor:corrector:N', reference mode) are sampled for real
(`sampling.get_pc_sampler` with the oracle's exact score, --confirm_samples samples, the
four operators vmapped in one program): fd_sampled is the Frechet distance of the
sampled law estimated per Fourier mode (stationary output: (F1) of calibration.py with
the measured spectrum and pixel mean), next to the estimator floor (the same estimator on
as many exact oracle samples) and the per-mode log ratio of measured to predicted
variances.

Writes into --out: oracle_table.csv (one row per sampler, mode, eta, N), confirm.csv,
oracle_table.md (tables, checks, the command) and oracle_table.png (FD vs N).
"""
import copy
import io
import math
import os
import sys
import time

from absl import app, flags
from ml_collections.config_flags import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def _define_flags():
  """The command-line flags (defined when run as a script, so that importing this module,
  e.g. from tests, leaves absl's global flag registry alone)."""
  config_flags.DEFINE_config_file('config', None, 'Analytic-oracle config (get_config()).',
                                  lock_config=True)
  flags.DEFINE_string('out', None, 'Output folder.')
  flags.DEFINE_list('ns', ['10', '20', '30', '50', '100', '200', '500', '1000'],
                    'Numbers of steps N.')
  flags.DEFINE_list('samplers', ['reverse_diffusion:none', 'reverse_diffusion:langevin',
                                 'euler_maruyama:none'], 'predictor:corrector pairs.')
  flags.DEFINE_list('etas', ['0.5', '1', '2'],
                    "pds.mode='marginal' eta values ('' to skip).")
  flags.DEFINE_integer('sweep_points', 401, 'Points of the fine alpha sweep.')
  flags.DEFINE_list('confirm', ['reverse_diffusion:none:20', 'reverse_diffusion:none:500',
                                'reverse_diffusion:langevin:30', 'euler_maruyama:none:100'],
                    "Cells confirmed by sampling, 'predictor:corrector:N' ('' to skip).")
  flags.DEFINE_integer('confirm_samples', 1024, 'Samples per confirmed cell and operator.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed of the confirmations.')
  flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                      "Persistent JAX compilation cache folder ('' to disable).")
  flags.mark_flags_as_required(['config', 'out'])


ORACLE_MODEL = 'analytic_gaussian'
FIXED_ALPHA = 5.0
COLUMNS = ['sampler', 'predictor', 'corrector', 'mode', 'eta', 'N', 'nfe', 'fd_vanilla',
           'fd_identity', 'fd_alpha5', 'auto_alpha', 'fd_auto', 'proxy_fd_auto',
           'best_alpha', 'fd_best', 'auto_over_best', 'fd_calibrated',
           'vanilla_over_calibrated', 'peak_growth_calibrated', 'auto_le_vanilla',
           'auto_within_10pct', 'calibrated_10x', 'calibration', 'seconds_auto', 'seconds_calibrated']
CONFIRM_COLUMNS = ['sampler', 'N', 'operator', 'alpha', 'num_samples', 'fd_recursion',
                   'fd_sampled', 'fd_floor', 'logratio_mean', 'logratio_max_abs']


def _cell_config(config, predictor, corrector, N, mode='reference', eta=1.0, **pds):
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.model.num_scales = int(N)
    cfg.sampling.speed_up = 1.0
    cfg.sampling.method = 'pc'
    cfg.sampling.predictor, cfg.sampling.corrector = predictor, corrector
    p = cfg.sampling.pds
    p.enabled, p.mode, p.eta = True, mode, float(eta)
    p.freq_stats = p.space_stats = p.gain_file = ''
    for k, v in pds.items():
      p[k] = v
  return cfg


def _sampler_kw(cfg):
  s = cfg.sampling
  return dict(snr=float(s.snr), n_steps=int(s.n_steps_each), denoise=bool(s.noise_removal),
              pds_mode=str(s.pds.mode), eta=float(s.pds.eta),
              probability_flow=bool(s.probability_flow))


def _operators(cfg, stats):
  """{'alpha5', 'auto', 'calibrated'}: (Preconditioner, info) built as main.py does."""
  from score_sde_pds import preconditioning, run_lib
  out = {}
  for name, pds in (('auto', dict(filter='statistics', alpha='auto')),
                    ('calibrated', dict(filter='calibrated'))):
    c = copy.deepcopy(cfg)
    with c.unlocked():
      for k, v in pds.items():
        c.sampling.pds[k] = v
    t0 = time.perf_counter()
    p = run_lib.build_preconditioner(c)
    out[name] = (p, dict(p.pds_info, seconds=time.perf_counter() - t0))
  out['alpha5'] = (preconditioning.Preconditioner.from_statistics(
      freq_stats=stats['freq'], space_stats=stats['space'], alpha=FIXED_ALPHA), {})
  return out


def table_rows(config, ns, samplers, etas, sweep_points, log=print):
  """The rows of oracle_table.csv (module docstring) and the operators of each cell."""
  from score_sde_pds import calibration, preconditioning, sweep
  from score_sde_pds.models import analytic
  if str(config.model.name) != ORACLE_MODEL:
    raise ValueError(f'--config must be an analytic-oracle config (config.model.name='
                     f'{ORACLE_MODEL!r}), got {config.model.name!r}')
  field = analytic.GaussianField.from_config(config)
  oracle = calibration.GaussianProxy.from_field(field)
  stats = sweep.oracle_statistics(config)
  sweep_alphas = 1. + np.exp(np.linspace(math.log(1e-3), math.log(1e5), int(sweep_points)))
  rows, operators = [], {}
  modes = [('reference', 1.0)] + [('marginal', float(e)) for e in etas]
  for pred, corr in samplers:
    for N in ns:
      fd_vanilla = None
      for mode, eta in modes:
        cfg = _cell_config(config, pred, corr, N, mode, eta)
        kw = calibration.config_kwargs(cfg)
        sde, eps = kw['sde'], kw['eps']
        if kw['N'] != N:
          raise ValueError(f'N={N}: the config gives {kw["N"]} steps')
        skw = _sampler_kw(cfg)
        exact = lambda p, key='fd': calibration.exact_moments(field, sde, eps, p, pred, corr,
                                                              **skw)[key]
        if fd_vanilla is None:
          fd_vanilla = exact(None)
        ops = _operators(cfg, stats)
        p_auto, i_auto = ops['auto']
        p_cal, i_cal = ops['calibrated']
        a_auto = math.inf if i_auto['alpha'] == 'inf' else float(i_auto['alpha'])
        fd_auto, fd_cal = exact(p_auto), exact(p_cal)
        fd_a5 = exact(ops['alpha5'][0])
        fd_id = exact(preconditioning.Preconditioner.identity())
        alphas = np.concatenate([sweep_alphas, [FIXED_ALPHA, a_auto, math.inf]])
        fds = calibration.alpha_sweep(
            stats['freq'], alphas=alphas, space_stats=stats['space'], proxy=oracle,
            **{k: v for k, v in kw.items()})
        # the sweep and the per-operator recursion agree (same law, grouped modes); the
        # sweep rejects unstable filters (calibration.MAX_GROWTH) with inf
        for a, p in ((FIXED_ALPHA, ops['alpha5'][0]), (a_auto, p_auto)):
          fa = fds[np.flatnonzero(alphas == a)[0]]
          f, peak = exact(p), exact(p, 'peak_growth')
          ok = (np.isclose(fa, f, rtol=1e-4) or (np.isinf(fa) and np.isinf(f))
                or (np.isinf(fa) and peak > calibration.MAX_GROWTH and math.isfinite(a)))
          if not ok:
            raise AssertionError(f'alpha_sweep {fa} != exact_moments {f} at alpha={a}')
        j = int(np.argmin(fds))
        fd_best, best = float(fds[j]), float(alphas[j])
        ref = mode == 'reference'
        row = {
            'sampler': f'{pred}:{corr}', 'predictor': pred, 'corrector': corr,
            'mode': mode, 'eta': eta, 'N': N,
            'nfe': N * (1 + (int(cfg.sampling.n_steps_each) if corr != 'none' else 0)),
            'fd_vanilla': fd_vanilla, 'fd_identity': fd_id, 'fd_alpha5': fd_a5,
            'auto_alpha': a_auto, 'fd_auto': fd_auto,
            'proxy_fd_auto': float(i_auto['proxy_fd']), 'best_alpha': best,
            'fd_best': fd_best, 'auto_over_best': fd_auto / fd_best,
            'fd_calibrated': fd_cal, 'vanilla_over_calibrated': fd_vanilla / fd_cal,
            'peak_growth_calibrated': exact(p_cal, 'peak_growth'),
            'auto_le_vanilla': bool(fd_auto <= fd_vanilla),
            'auto_within_10pct': bool(fd_auto <= 1.1 * fd_best),
            'calibrated_10x': (bool(fd_vanilla >= 10. * fd_cal) if 20 <= N <= 100 else ''),
            'calibration': i_cal.get('calibration', ''),
            'seconds_auto': i_auto['seconds'], 'seconds_calibrated': i_cal['seconds']}
        rows.append(row)
        operators[(pred, corr, N, mode, eta)] = {
            'vanilla': None, 'alpha5': ops['alpha5'][0], 'auto': p_auto,
            'calibrated': p_cal, 'auto_alpha': a_auto}
        log(f'{pred}:{corr} N={N} {mode}' + ('' if ref else f' eta={eta:g}') +
            f': vanilla {fd_vanilla:.4g} alpha5 {fd_a5:.4g} auto({_alpha_str(a_auto)}) '
            f'{fd_auto:.4g} best({_alpha_str(best)}) {fd_best:.4g} calibrated {fd_cal:.4g}')
  return rows, operators


def _alpha_str(a):
  return 'inf' if math.isinf(a) else f'{a:.3g}'


def _freq_only(p, shape):
  """The operator as a frequency gain alone (for stacking): a space gain constant per
  channel (the stationary oracle's A = E[x^2] gives d = 1) commutes with the circulant R
  and folds into it."""
  from score_sde_pds import preconditioning
  r = np.ones(shape, np.float32)
  if p is not None and p.use_freq:
    r = r * np.broadcast_to(np.asarray(p.freq_gain, np.float32), shape)
  if p is not None and p.use_space:
    d = np.broadcast_to(np.asarray(p.space_gain, np.float32), shape)
    if np.ptp(d, axis=(0, 1)).max() > 0:
      raise ValueError('confirmations need a space gain constant per channel')
    r = r * d[0, 0]
  if p is not None and p.use_skew:
    raise ValueError('confirmations do not cover the solenoidal term (pds.omega)')
  return preconditioning.Preconditioner.create(freq_gain=r, shape=shape)


def _spectral_fd(x, field):
  """(F1) of a stationary sample law: per-mode variances and pixel means of x (n,H,W,C)."""
  from score_sde_pds.models import analytic
  x = np.asarray(x, np.float64)
  H, W, _ = x.shape[1:]
  v = analytic.measured_spectrum(x)
  s = np.asarray(field.spectrum, np.float64)
  mu = np.broadcast_to(np.asarray(field.mean, np.float64), (x.shape[-1],))
  return float(np.sum((np.sqrt(v) - np.sqrt(s)) ** 2)
               + H * W * np.sum((x.mean(axis=(0, 1, 2)) - mu) ** 2)), v


def confirm_rows(config, cells, operators, num_samples, seed, log=print):
  """Samples each confirmed cell for real (module docstring); rows of confirm.csv."""
  import jax
  from score_sde_pds import calibration, sampling, sweep
  from score_sde_pds.models import analytic
  field = analytic.GaussianField.from_config(config)
  shape = tuple(field.shape)
  rng = jax.random.PRNGKey(seed)
  floor, _ = _spectral_fd(field.sample(jax.random.fold_in(rng, 2 ** 31 - 1), num_samples),
                          field)
  rows = []
  names = ('vanilla', 'alpha5', 'auto', 'calibrated')
  for pred, corr, N in cells:
    ops = operators.get((pred, corr, N, 'reference', 1.0))
    if ops is None:
      raise ValueError(f'--confirm {pred}:{corr}:{N}: not among --samplers x --ns')
    cfg = _cell_config(config, pred, corr, N)
    kw = calibration.config_kwargs(cfg)
    sde, eps = kw['sde'], kw['eps']
    skw = _sampler_kw(cfg)
    stacked = sweep.stack_preconditioners([_freq_only(ops[n], shape) for n in names])
    smp = sampling.get_pc_sampler(sde, (num_samples,) + shape, pred, corr, snr=skw['snr'],
                                  n_steps=skw['n_steps'], denoise=skw['denoise'], eps=eps)
    score = lambda x, t: field.score(sde, x, t)
    t0 = time.perf_counter()
    run = jax.jit(jax.vmap(lambda p: smp.run(rng, score, precond=p)[0]))
    xs = np.asarray(run(stacked))
    secs = time.perf_counter() - t0
    for name, x in zip(names, xs):
      ex = calibration.exact_moments(field, sde, eps, ops[name], pred, corr, **skw)
      fd_s, v = _spectral_fd(x, field)
      with np.errstate(divide='ignore', invalid='ignore'):
        lr = np.log(v / ex['spectrum'])
      alpha = {'vanilla': math.inf, 'alpha5': FIXED_ALPHA, 'auto': ops['auto_alpha'],
               'calibrated': float('nan')}[name]
      rows.append({'sampler': f'{pred}:{corr}', 'N': N, 'operator': name, 'alpha': alpha,
                   'num_samples': num_samples, 'fd_recursion': ex['fd'], 'fd_sampled': fd_s,
                   'fd_floor': floor, 'logratio_mean': float(np.mean(lr)),
                   'logratio_max_abs': float(np.max(np.abs(lr)))})
      log(f'confirm {pred}:{corr} N={N} {name}: recursion {ex["fd"]:.4g} sampled {fd_s:.4g} '
          f'(floor {floor:.3g}; log ratio mean {np.mean(lr):+.3f}, max |.| '
          f'{np.max(np.abs(lr)):.3f}) [{secs:.1f} s for the cell]')
  return rows


# ----------------------------------------------------------------------------- outputs


def _fmt(v):
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, (float, np.floating)):
    v = float(v)
    if math.isinf(v):
      return 'inf'
    if math.isnan(v):
      return 'nan'
    return f'{v:.6g}'
  return str(v)


def csv_text(rows, columns):
  import csv
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(columns)
  w.writerows([[_fmt(r.get(c, '')) for c in columns] for r in rows])
  return buf.getvalue()


def _g(v, d=3):
  if isinstance(v, float) and math.isinf(v):
    return 'inf'
  return f'{v:.{d}g}'


def markdown(rows, confirms, command, config):
  from score_sde_pds.models import analytic
  field = analytic.GaussianField.from_config(config)
  H, W, C = field.shape
  ref = [r for r in rows if r['mode'] == 'reference']
  out = ['# Calibrated PDS on the analytic oracle (issue 10)', '',
         f'Oracle: {config.model.name}, {H}x{W}x{C} Gaussian field (beta='
         f'{config.model.field_beta}, k0={config.model.field_k0}, mean '
         f'{config.model.field_mean}, std {config.model.field_std}), '
         f'{config.training.sde} sigma {config.model.sigma_min}..{config.model.sigma_max}, '
         f'snr {config.sampling.snr}. Frechet distance (model space) of the sampler output '
         'to the target by the exact per-mode recursion (`calibration.exact_moments`; the '
         'langevin step size uses the expected norms). auto / calibrated are chosen on the '
         'Gaussian proxy of the oracle\'s data statistics (as `main.py --mode sample` does), '
         'and scored on the true oracle. best: the best of a fine alpha sweep (inf included). '
         'Filters whose per-mode variance grows past calibration.MAX_GROWTH times its prior '
         'value on the way are rejected as unstable in float32 (calibration.py, Stability); '
         'peak: the calibrated filter\'s largest growth on the true oracle.',
         '', f'Command: `{command}`', '',
         '## Reference mode (pds.mode=reference)', '',
         '| sampler | N | vanilla | alpha=5 | auto (alpha) | best (alpha) | auto/best | '
         'calibrated | vanilla/calibrated | peak |',
         '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in ref:
    out.append(f"| {r['sampler']} | {r['N']} | {_g(r['fd_vanilla'])} | {_g(r['fd_alpha5'])} | "
               f"{_g(r['fd_auto'])} ({_alpha_str(r['auto_alpha'])}) | {_g(r['fd_best'])} "
               f"({_alpha_str(r['best_alpha'])}) | {r['auto_over_best']:.3f} | "
               f"{_g(r['fd_calibrated'])} | {_g(r['vanilla_over_calibrated'])} | "
               f"{r['peak_growth_calibrated']:.3g} |")
  out += ['', '## Targets', '']

  def check(key, label, rs):
    rs = [r for r in rs if r[key] != '']
    bad = [f"{r['sampler']} N={r['N']}" for r in rs if not r[key]]
    return (f"- {label}: {len(rs) - len(bad)}/{len(rs)} cells hold"
            + (f" (fails: {', '.join(bad)})" if bad else ''))

  out.append(check('auto_le_vanilla', "alpha='auto' never worse than vanilla", ref))
  out.append(check('auto_within_10pct', "alpha='auto' within 10% of the best alpha", ref))
  out.append(check('calibrated_10x', 'calibrated >= 10x better than vanilla at N=20-100', ref))
  a5 = [r['fd_alpha5'] / r['fd_vanilla'] for r in ref]
  if a5:
    worst = ref[int(np.argmax(a5))]
    out.append(f"- for scale, the fixed alpha=5: FD(alpha=5) / FD(vanilla) up to {max(a5):.3g} "
               f"({worst['sampler']} N={worst['N']})")
  mar = [r for r in rows if r['mode'] == 'marginal']
  if mar:
    out += ['', "## pds.mode='marginal' (fd_identity: M = I in that mode, eta-weighted "
            'Langevin part; = vanilla at eta = 1)', '',
            '| sampler | N | eta | vanilla | M=I | alpha=5 | auto (alpha) | best (alpha) | '
            'calibrated |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in mar:
      out.append(f"| {r['sampler']} | {r['N']} | {r['eta']:g} | {_g(r['fd_vanilla'])} | "
                 f"{_g(r['fd_identity'])} | {_g(r['fd_alpha5'])} | {_g(r['fd_auto'])} "
                 f"({_alpha_str(r['auto_alpha'])}) | {_g(r['fd_best'])} "
                 f"({_alpha_str(r['best_alpha'])}) | {_g(r['fd_calibrated'])} |")
    out += ['', 'Best mode/eta per cell (exact FD; reference mode = eta column "ref"):', '',
            '| sampler | N | best auto: mode, eta (fd) | best calibrated: mode, eta (fd) |',
            '|---|---:|---|---|']
    for r0 in ref:
      cell = [r for r in rows if r['sampler'] == r0['sampler'] and r['N'] == r0['N']]
      lab = lambda r: 'ref' if r['mode'] == 'reference' else f"marginal, eta={r['eta']:g}"
      ba = min(cell, key=lambda r: r['fd_auto'])
      bc = min(cell, key=lambda r: r['fd_calibrated'])
      out.append(f"| {r0['sampler']} | {r0['N']} | {lab(ba)} ({_g(ba['fd_auto'])}) | "
                 f"{lab(bc)} ({_g(bc['fd_calibrated'])}) |")
  if confirms:
    n = confirms[0]['num_samples']
    out += ['', f'## Confirmed by sampling ({n} samples per operator, reference mode)', '',
            'fd_sampled: (F1) with the measured per-mode variances and pixel means; floor: '
            f'the same estimator on {n} exact oracle samples '
            f"({_g(confirms[0]['fd_floor'])}); log ratio: measured / predicted per-mode "
            'variance (sampling noise of one mode ~ sqrt(1 / n) to sqrt(2 / n)).', '',
            '| sampler | N | operator | fd (recursion) | fd (sampled) | log ratio mean | '
            'max abs |', '|---|---:|---|---:|---:|---:|---:|']
    for r in confirms:
      op = r['operator'] + (f" ({_alpha_str(r['alpha'])})" if r['operator'] == 'auto' else '')
      out.append(f"| {r['sampler']} | {r['N']} | {op} | {_g(r['fd_recursion'])} | "
                 f"{_g(r['fd_sampled'])} | {r['logratio_mean']:+.3f} | "
                 f"{r['logratio_max_abs']:.3f} |")
  return '\n'.join(out) + '\n'


def plot_png(rows, confirms):
  from score_sde_pds import utils
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  ref = [r for r in rows if r['mode'] == 'reference']
  samplers = list(dict.fromkeys(r['sampler'] for r in ref))
  fig, axes = plt.subplots(2, len(samplers), figsize=(5.2 * len(samplers), 8), squeeze=False)
  for j, sp in enumerate(samplers):
    rs = [r for r in ref if r['sampler'] == sp]
    ns = [r['N'] for r in rs]
    ax = axes[0, j]
    for key, lab, st in (('fd_vanilla', 'vanilla', 'k-o'), ('fd_alpha5', 'alpha=5', 'C3--s'),
                         ('fd_auto', "alpha='auto'", 'C0-^'),
                         ('fd_best', 'best alpha (sweep)', 'C1:x'),
                         ('fd_calibrated', 'calibrated', 'C2-d')):
      y = np.array([r[key] for r in rs], np.float64)
      y = np.where(np.isfinite(y) & (y < 1e6), y, np.nan)
      ax.loglog(ns, y, st, label=lab, markersize=4)
    cs = [c for c in confirms if c['sampler'] == sp]
    for k, c in enumerate(cs):
      ax.plot(c['N'], c['fd_sampled'], 'm*', markersize=9,
              label='sampled' if k == 0 else None)
    if cs:
      ax.axhline(cs[0]['fd_floor'], color='m', lw=0.6, ls=':', label='sampling floor')
    ax.set_title(sp, fontsize=10)
    ax.set_xlabel('N')
    ax.set_ylabel('exact Frechet distance')
    ax.legend(fontsize=7)
    ax = axes[1, j]
    for key, lab, st in (('auto_alpha', "auto alpha", 'C0-^'), ('best_alpha', 'best alpha',
                                                                  'C1:x')):
      y = np.array([r[key] for r in rs], np.float64)
      ax.semilogx(ns, np.where(np.isinf(y), np.nan, y - 1.), st, label=lab + ' - 1')
      inf = [n for n, v in zip(ns, y) if np.isinf(v)]
      if inf:
        ax.plot(inf, [1.] * len(inf), st[:2] + 'v', label=lab + ' = inf (at 1)', alpha=0.6)
    ax.set_yscale('log')
    ax.set_xlabel('N')
    ax.set_ylabel('alpha - 1')
    ax.legend(fontsize=7)
  fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.95, wspace=0.25, hspace=0.25)
  return utils.figure_png_bytes(fig, dpi=80)


def write_outputs(out, rows, confirms, command, config):
  from score_sde_pds import utils
  os.makedirs(out, exist_ok=True)
  utils.atomic_write_bytes(os.path.join(out, 'oracle_table.csv'),
                           csv_text(rows, COLUMNS).encode())
  utils.atomic_write_bytes(os.path.join(out, 'confirm.csv'),
                           csv_text(confirms, CONFIRM_COLUMNS).encode())
  utils.atomic_write_bytes(os.path.join(out, 'oracle_table.md'),
                           markdown(rows, confirms, command, config).encode())
  utils.atomic_write_bytes(os.path.join(out, 'oracle_table.png'), plot_png(rows, confirms))


def _parse(values, n, flag):
  out = []
  for v in values:
    if not str(v).strip():
      continue
    parts = str(v).split(':')
    if len(parts) != n:
      raise ValueError(f'--{flag}: expected ' + ':'.join(['predictor', 'corrector', 'N'][:n])
                       + f', got {v!r}')
    out.append(tuple(parts[:2]) + tuple(int(p) for p in parts[2:]))
  return out


def main(argv):
  del argv
  from score_sde_pds import utils
  utils.enable_compilation_cache(FLAGS.compilation_cache)
  config = FLAGS.config
  try:
    ns = [int(n) for n in FLAGS.ns]
    etas = [float(e) for e in FLAGS.etas if str(e).strip()]
    samplers = _parse(FLAGS.samplers, 2, 'samplers')
    cells = _parse(FLAGS.confirm, 3, 'confirm')
    rows, ops = table_rows(config, ns, samplers, etas, FLAGS.sweep_points)
    confirms = confirm_rows(config, cells, ops, FLAGS.confirm_samples, FLAGS.seed)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  command = 'python ' + ' '.join(
      [os.path.relpath(sys.argv[0])] + [a for a in sys.argv[1:]
                                        if not a.startswith('--compilation_cache')])
  write_outputs(FLAGS.out, rows, confirms, command, config)
  print(markdown(rows, confirms, command, config))
  print(f'wrote {FLAGS.out}/oracle_table.csv, confirm.csv, oracle_table.md, oracle_table.png')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
