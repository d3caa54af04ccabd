"""Issue-10 validation on a trained network: metric vs N of vanilla, the statistics filter
at fixed alphas, alpha='auto' and the calibrated filter, the same seeds and samples in
every cell.

  python scripts/calibration_network.py --config configs/ve/mnist_ncsnpp_small.py --workdir W \
      [--steps 20,50] [--alphas 1.5,2,3,5,8,20] [--num_samples 128] [--bootstrap 20]

For each N (reached as PDS does, speed_up = num_scales / N, eps scaled), one sampler is
compiled and every variant is the same program called with a different preconditioner
(preconditioners are arguments of the jitted function; a new operator structure
compiles once more). 'auto (proxy)' is the alpha `calibration.auto_alpha` picks on the Gaussian
proxy of the config's frequency statistics for this SDE, sampler and N ('inf' = vanilla);
'auto' that choice after the pilot check on the network (score_sde_pds/pilot.py), as
main.py samples with alpha='auto';
'calibrated' the per-frequency gains of `calibration.calibrate_gain` (filter='calibrated'
with no gain file). The metric is the dataset's (MNIST-FD for MNIST/DIGITS, FID otherwise;
score_sde_pds.evaluation.evaluator) with its bootstrap std as the estimator noise.

Writes into --workdir: calibration_network.csv, .md and .png (metric vs N), atomically,
after every cell; a rerun into the same --workdir keeps the cells its CSV already holds
(same N, variant and --num_samples) and runs the others.
"""
import copy
import math
import os
import sys
import time

from absl import app, flags
from ml_collections.config_flags import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
COLUMNS = ('N', 'variant', 'alpha', 'metric', 'value', 'value_std', 'confident_share',
           'proxy_fd', 'nfe', 'seconds', 'num_samples', 'alpha_proxy', 'pilot_chosen_by',
           'pilot_seconds')


def _variant_configs(config, alphas):
  """[(variant label, config copy)] for one N: vanilla, fixed alphas, auto, calibrated."""
  out = []
  for label, filt, alpha in ([('vanilla', 'statistics', 'inf')]
                             + [(f'alpha={a:g}', 'statistics', float(a)) for a in alphas]
                             + [('auto (proxy)', 'statistics', 'auto'),
                                ('auto', 'statistics', 'auto'), ('calibrated', 'calibrated', 5.)]):
    c = copy.deepcopy(config)
    with c.unlocked():
      c.sampling.pds.enabled = True
      c.sampling.pds.filter = filt
      c.sampling.pds.alpha = alpha
      c.sampling.pds.gain_file = ''
      if label == 'auto (proxy)':
        c.sampling.pds.pilot_samples = 0
    out.append((label, c))
  return out


def read_rows(path):
  """Rows of an earlier calibration_network.csv (typed), [] if there is none."""
  import csv
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, newline='') as f:
    for rec in csv.DictReader(f):
      row = {}
      for k, v in rec.items():
        if k in ('variant', 'metric', 'pilot_chosen_by') or v == '':
          row[k] = v if v != '' else None
        elif k in ('N', 'nfe', 'num_samples'):
          row[k] = int(v)
        else:
          row[k] = float(v)
      rows.append(row)
  return rows


def run(config, workdir, steps, alphas, num_samples, batch_size=0, bootstrap=20, log=print,
        on_row=None, previous=()):
  """Rows (dicts of COLUMNS) of every (N, variant) cell; on_row(rows) after each cell (the
  script writes its outputs there, so an interrupted run keeps every finished cell).
  Cells found in `previous` rows (same N, variant and num_samples) are kept, not re-run."""
  import jax
  import numpy as np
  from score_sde_pds import datasets, pilot, preconditioning, run_lib, sampling, sde_lib
  from score_sde_pds.evaluation import evaluator
  ns = int(config.model.num_scales)
  B = int(batch_size or config.sampling.batch_size)
  if num_samples < 1 or B < 1:
    raise ValueError(f'--num_samples and --batch_size must be >= 1, got {num_samples}, {B}')
  bad = [int(s) for s in steps if not 1 <= int(s) <= ns]
  if bad:
    raise ValueError(f'--steps {bad}: every N must be in [1, config.model.num_scales={ns}] '
                     '(raise it with --config.model.num_scales)')
  model, states, params = run_lib.load_model(config, workdir)
  ext = evaluator.get_extractor(config, workdir)
  ref, _ = evaluator.load_reference(config, workdir, ext)
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  inverse = datasets.get_data_inverse_scaler(config)
  rows = []
  for N in sorted({int(s) for s in steps}):
    if not 1 <= N <= ns:
      raise ValueError(f'--steps: N={N} is not in [1, num_scales={ns}]')
    base = copy.deepcopy(config)
    with base.unlocked():
      base.sampling.speed_up = sde_lib.speed_up_for(ns, N)
      base.sampling.progress_every = 0
    sde, eps = sde_lib.get_sde(base)
    fn = sampling.get_sampling_fn(base, sde, model, (B, size, size, ch), eps,
                                  inverse_scaler=inverse,
                                  preconditioner=preconditioning.Preconditioner.identity())
    for label, cfg in _variant_configs(base, alphas):
      old = next((q for q in previous if q['N'] == N and q['variant'] == label
                  and q.get('num_samples') == num_samples), None)
      if old is not None:
        rows.append(old)
        log(f'N={N} {label:>12}: kept from the earlier {old["metric"]}={old["value"]}')
        continue
      t0 = time.time()
      p = run_lib.build_preconditioner(cfg, workdir)
      p = pilot.check_auto_alpha(cfg, workdir, sde, eps, model, params, states, p,
                                 inverse_scaler=inverse)
      info = p.pds_info
      pilot_seconds = (info.get('pilot') or {}).get('seconds', 0.)
      t0 = time.time()
      xs = []
      nfe = 0
      for r in range(math.ceil(num_samples / B)):
        x, nfe = fn(jax.random.PRNGKey(int(config.sampling.seed)), params, states,
                    offset=r * B, preconditioner=p)
        xs.append(np.asarray(x, np.float32))
      x = np.concatenate(xs)[:num_samples]
      seconds = time.time() - t0
      if not np.all(np.isfinite(x)):
        res = {'metric': 'diverged', 'value': float('nan')}
      else:
        res = evaluator.score_outputs(evaluator.extract(ext, evaluator.quantise(x)), ext, ref,
                                      config, bootstrap=bootstrap)
      alpha = info.get('alpha')
      row = {'N': N, 'variant': label, 'alpha': alpha, 'metric': res.get('metric'),
             'value': res.get('value'), 'value_std': res.get('value_std'),
             'confident_share': res.get('confident_share'), 'proxy_fd': info.get('proxy_fd'),
             'nfe': int(nfe), 'seconds': round(seconds, 2), 'num_samples': len(x),
             'alpha_proxy': info.get('alpha_proxy'),
             'pilot_chosen_by': (info.get('pilot') or {}).get('chosen_by'),
             'pilot_seconds': pilot_seconds}
      rows.append(row)
      if on_row is not None:
        on_row(rows)
      log(f'N={N} {label:>12} alpha={alpha}: {row["metric"]}={row["value"]} '
          f'+- {row["value_std"]} (confident {row["confident_share"]}; proxy FD '
          f'{row["proxy_fd"]}) {seconds:.0f} s')
  return rows


def markdown(rows, command=''):
  from score_sde_pds.sweep import _fmt
  metric = next((r['metric'] for r in rows if r['metric'] != 'diverged'), 'metric')
  labels = list(dict.fromkeys(r['variant'] for r in rows))
  Ns = sorted({r['N'] for r in rows})
  lines = [f'# Calibrated PDS on a network: {metric} vs N', '']
  if command:
    lines += ['```', command, '```', '']
  lines += ['| variant | ' + ' | '.join(f'N={n}' for n in Ns) + ' |',
            '|---|' + '|'.join('---:' for _ in Ns) + '|']
  for lab in labels:
    cells = []
    for n in Ns:
      r = next((q for q in rows if q['N'] == n and q['variant'] == lab), None)
      if r is None:
        cells.append('')
        continue
      v = _fmt(r['value'], 4) + (f' ± {_fmt(r["value_std"], 2)}' if r.get('value_std') else '')
      if lab in ('auto', 'auto (proxy)'):
        v += f' (alpha {_fmt(r["alpha"], 3) if isinstance(r["alpha"], float) else r["alpha"]})'
      cells.append(v)
    lines.append(f'| {lab} | ' + ' | '.join(cells) + ' |')
  lines += ['', '± : bootstrap std of the metric over the samples (estimator noise). '
            'auto (proxy): the alpha chosen on the Gaussian proxy of the frequency '
            'statistics; auto: that choice checked by the pilot on the network '
            "(config.sampling.pds.pilot_samples, score_sde_pds/pilot.py), as main.py does.", '']
  lines += ['Confident share (classifier max prob > 0.9):', '',
            '| variant | ' + ' | '.join(f'N={n}' for n in Ns) + ' |',
            '|---|' + '|'.join('---:' for _ in Ns) + '|']
  for lab in labels:
    cells = [_fmt(next((q.get('confident_share') for q in rows if q['N'] == n and
                        q['variant'] == lab), None), 3) for n in Ns]
    lines.append(f'| {lab} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_png(rows) -> bytes:
  from score_sde_pds import utils
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for lab in dict.fromkeys(r['variant'] for r in rows):
    pts = sorted((r['N'], r['value'], r.get('value_std') or 0.) for r in rows
                 if r['variant'] == lab and r['value'] is not None and math.isfinite(r['value']))
    if pts:
      n, v, s = zip(*pts)
      style = '-' if lab in ('vanilla', 'auto', 'calibrated') else ':'
      ax.errorbar(n, v, yerr=s, fmt='o' + style, label=lab, capsize=2,
                  linewidth=2 if lab in ('auto', 'calibrated') else 1)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('number of steps N')
  ax.set_ylabel(next((r['metric'] for r in rows if r['metric'] != 'diverged'), 'metric'))
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return utils.figure_png_bytes(fig, dpi=100)


def write_outputs(rows, workdir, command=''):
  from score_sde_pds import utils
  from score_sde_pds.sweep import csv_bytes
  return utils.write_result_files(workdir, 'calibration_network', {
      'csv': csv_bytes(rows, COLUMNS, 10), 'md': markdown(rows, command).encode(),
      'png': plot_png(rows)})


def main(argv):
  del argv
  from score_sde_pds import utils
  utils.enable_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  try:
    alphas = [float(a) for a in FLAGS.alphas]
    if any(not a > 1 for a in alphas):
      raise ValueError(f'--alphas must be numbers > 1, got {FLAGS.alphas}')
    command = 'python ' + ' '.join(sys.argv)
    previous = read_rows(os.path.join(FLAGS.workdir, 'calibration_network.csv'))
    rows = run(FLAGS.config, FLAGS.workdir, FLAGS.steps, alphas, FLAGS.num_samples,
               FLAGS.batch_size, FLAGS.bootstrap, log=lambda s: print(s, flush=True),
               on_row=lambda rows: write_outputs(rows, FLAGS.workdir, command),
               previous=previous)
  except (ValueError, FileNotFoundError, NotImplementedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  paths = write_outputs(rows, FLAGS.workdir, command)
  print(markdown(rows, command))
  print(f'wrote {", ".join(paths.values())}')


def define_flags():
  """The command-line flags (defined only when run as a script)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config()).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Output folder (checkpoints/statistics looked up there).')
  flags.DEFINE_list('steps', ['20', '50'], 'Numbers of steps N.')
  flags.DEFINE_list('alphas', ['1.5', '2', '3', '5', '8', '20'], 'Fixed alphas (> 1).')
  flags.DEFINE_integer('num_samples', 128, 'Samples per cell.')
  flags.DEFINE_integer('batch_size', 0, 'Samples per call; 0 -> config.sampling.batch_size.')
  flags.DEFINE_integer('bootstrap', 20, 'Bootstrap resamples for the metric std (0: none).')
  flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                      "Persistent JAX compilation cache folder ('' to disable).")
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
