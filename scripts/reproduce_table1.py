"""Table 1 of the PDS paper on any config with a checkpoint: metric vs number of steps T,
vanilla vs PDS, the same seeds and samples in every cell.

  python scripts/reproduce_table1.py --config configs/ve/mnist_ncsnpp_small.py --workdir W \
      [--steps 20,50,100,200,500,1000] [--num_samples 1000] [--batch_size 500] [--bootstrap 20]
  # the paper's setting (CIFAR-10 deep NCSN++, FID; a GPU):
  python scripts/reproduce_table1.py --config configs/ve/cifar10_ncsnpp_deep.py --workdir W \
      --steps 100,200 --num_samples 50000 \
      --config.eval.inception_path=pt_inception-2015-12-05-6726825d.pth \
      --config.eval.ref_stats=cifar10_train.npz

Samplers: the config's (config.sampling.method 'pc', or a stochastic 'splitting' scheme,
config.sampling.integrator, whose Langevin (O) steps PDS preconditions).
Every T is reached with PDS's own convention, config.sampling.speed_up = num_scales / T
(so N = T and eps = base eps * speed_up, as fudan-zvg/PDS runs fewer steps), for both
columns. PDS uses the config's `sampling.pds` filter settings (whatever `pds.enabled`
says); vanilla is the identity preconditioner. The metric is the dataset's
(score_sde_pds.evaluation.evaluator: MNIST-FD for MNIST/DIGITS, FID otherwise), with its
bootstrap std (--bootstrap resamples) as the estimator noise and the real held-out images'
value as the floor. One compiled program per (T, column) (score_sde_pds.sweep).

Writes into --workdir: table1.csv, table1.md, table1.png (metric vs T, log x), atomically.
"""
import math
import os
import sys
import time

from absl import app, flags
from ml_collections.config_flags import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS

COLUMNS = ('T', 'variant', 'metric', 'value', 'value_std', 'confident_share', 'nfe', 'seconds',
           'num_samples', 'alpha', 'radius', 'lam', 'omega', 'eps')


def run(config, workdir, steps, num_samples, batch_size=0, bootstrap=20, log=print):
  """Runs the sweep behind Table 1; returns (rows, sweep result)."""
  from score_sde_pds import sde_lib, sweep
  pds = config.sampling.pds
  filt = str(pds.get('filter', 'statistics'))
  if filt == 'statistics':
    try:
      float(pds.alpha)
    except (TypeError, ValueError):
      raise ValueError(f'config.sampling.pds.alpha={pds.alpha!r}: Table 1 compares vanilla with '
                       'PDS at one fixed alpha (a number > 1); scripts/sweep.py compares '
                       'several') from None
  ns = int(config.model.num_scales)
  pc = str(config.sampling.method).lower() == 'pc'
  steps = sorted({int(t) for t in steps})
  if not steps or steps[0] < 1:
    raise ValueError(f'--steps must be positive integers, got {steps}')
  grid = sweep.Grid(
      filters=[filt], alphas=[float(pds.alpha)] if filt == 'statistics' else [],
      radii=[float(pds.get('radius', 0.))], lams=[float(pds.get('lam', 1.))],
      omegas=[float(pds.get('omega', 0.))], num_scales=[ns],
      speed_ups=[sde_lib.speed_up_for(ns, t) for t in steps],
      # pc: the config's predictor/corrector; splitting: config.sampling.integrator
      samplers=[(str(config.sampling.predictor), str(config.sampling.corrector))] if pc else [],
      snrs=[float(config.sampling.snr)] if pc else [],
      num_samples=int(num_samples),
      batch_size=int(batch_size), bootstrap=int(bootstrap))
  result = sweep.run_sweep(config, workdir, grid, log=log)
  rows = []
  for r in result.rows:
    variant = 'vanilla' if r['filter'] == 'vanilla' else 'PDS'
    cfg = sweep.block_config(config, ns, r['speed_up'], r['predictor'], r['corrector'],
                             r['snr'] or float(config.sampling.snr))
    _, eps = sde_lib.get_sde(cfg)
    value = r['value'] if result.metric_key == 'value' else r['fd']
    rows.append({'T': r['N'], 'variant': variant,
                 'metric': r.get('metric') or result.metric_name, 'value': value,
                 'value_std': r.get('value_std'), 'confident_share': r.get('confident_share'),
                 'nfe': r['nfe'], 'seconds': r['seconds'], 'num_samples': r['num_samples'],
                 'alpha': r['alpha'], 'radius': r['radius'], 'lam': r['lam'],
                 'omega': r['omega'], 'eps': eps})
  rows.sort(key=lambda q: (q['T'], q['variant'] != 'vanilla'))
  return rows, result


def markdown(rows, result, command=''):
  from score_sde_pds.sweep import _fmt
  metric = rows[0]['metric'] if rows else 'metric'
  Ts = sorted({r['T'] for r in rows})
  get = lambda T, v, k: next((r.get(k) for r in rows if r['T'] == T and r['variant'] == v), None)
  has_std = any(r.get('value_std') not in (None, float('nan')) and
                math.isfinite(r['value_std'] or float('nan')) for r in rows)
  has_conf = any(r.get('confident_share') is not None and
                 math.isfinite(r['confident_share']) for r in rows)
  head = ['T', f'vanilla {metric}', f'PDS {metric}']
  if has_conf:
    head += ['vanilla confident', 'PDS confident']
  head += ['NFE', 's/cell (vanilla, PDS)']
  lines = ['# Table 1: metric vs number of steps T', '', result.note, '']
  if command:
    lines += ['```', command, '```', '']
  pm = lambda T, v: (_fmt(get(T, v, 'value'), 4) + (
      f' ± {_fmt(get(T, v, "value_std"), 2)}' if has_std else ''))
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
  for T in Ts:
    cells = [str(T), pm(T, 'vanilla'), pm(T, 'PDS')]
    if has_conf:
      cells += [_fmt(get(T, 'vanilla', 'confident_share'), 3), _fmt(get(T, 'PDS', 'confident_share'), 3)]
    cells += [_fmt(get(T, 'vanilla', 'nfe')),
              f'{_fmt(get(T, "vanilla", "seconds"), 3)}, {_fmt(get(T, "PDS", "seconds"), 3)}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  pds_row = next((r for r in rows if r['variant'] == 'PDS'), {})
  setting = ', '.join(f'{k}={_fmt(pds_row.get(k), 4)}' for k in ('alpha', 'radius', 'lam', 'omega')
                      if pds_row.get(k) is not None)
  lines += ['', f'PDS filter: {setting}. ± : bootstrap std of the metric (estimator noise).', '']
  return '\n'.join(lines)


def plot_png(rows, result) -> bytes:
  from score_sde_pds import utils
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for variant, style in (('vanilla', 'o--'), ('PDS', 's-')):
    pts = sorted((r['T'], r['value'], r.get('value_std') or 0.) for r in rows
                 if r['variant'] == variant and r['value'] is not None and math.isfinite(r['value']))
    if pts:
      T, v, s = zip(*pts)
      ax.errorbar(T, v, yerr=[x if math.isfinite(x) else 0. for x in s], fmt=style,
                  label=variant, capsize=3)
  floor = result.floor or {}
  if floor.get('value') is not None and math.isfinite(floor['value']):
    ax.axhline(floor['value'], color='k', linestyle=':', linewidth=1,
               label=f'real held-out images ({floor.get("num_samples")})')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('number of steps T')
  ax.set_ylabel(rows[0]['metric'] if rows else 'metric')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title('Table 1: vanilla vs PDS', fontsize=10)
  fig.tight_layout()
  return utils.figure_png_bytes(fig, dpi=100)


def write_outputs(rows, result, workdir, command='') -> dict:
  from score_sde_pds import utils
  from score_sde_pds.sweep import csv_bytes
  return utils.write_result_files(workdir, 'table1', {
      'csv': csv_bytes(rows, COLUMNS, 10), 'md': markdown(rows, result, command).encode(),
      'png': plot_png(rows, result)})


def main(argv):
  del argv
  from score_sde_pds import utils
  utils.enable_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  t0 = time.time()
  try:
    rows, result = run(FLAGS.config, FLAGS.workdir, FLAGS.steps, FLAGS.num_samples,
                       FLAGS.batch_size, FLAGS.bootstrap, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError, NotImplementedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  command = 'python ' + ' '.join(sys.argv)
  paths = write_outputs(rows, result, FLAGS.workdir, command)
  print(markdown(rows, result, command))
  print(f'wrote {", ".join(paths.values())} ({time.time() - t0:.0f} s)')


def define_flags():
  """The command-line flags (defined only when run as a script, so that tests can import
  this module)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config()).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Output folder (checkpoints/statistics are looked up there too).')
  flags.DEFINE_list('steps', ['20', '50', '100', '200', '500', '1000'], 'Numbers of steps T.')
  flags.DEFINE_integer('num_samples', 1000, 'Samples per cell.')
  flags.DEFINE_integer('batch_size', 0, 'Samples per program call; 0 -> config.sampling.batch_size.')
  flags.DEFINE_integer('bootstrap', 20, 'Bootstrap resamples for the metric std (0: none).')
  flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                      "Persistent JAX compilation cache folder ('' to disable).")
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
