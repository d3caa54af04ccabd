"""Table 2 of the PDS paper on any config: wall-clock of one batch at the full number of
steps and at the PDS number of steps, and the speed-up.

  python scripts/reproduce_table2.py --config configs/ve/ffhq_ncsnpp.py --workdir W \
      [--batch_size 8] [--timed_steps 2] [--pds_steps 0]
  # a GPU with the real checkpoint, timing every step of both runs:
  python scripts/reproduce_table2.py --config configs/ve/ffhq_ncsnpp.py --workdir W \
      --timed_steps 0 --weights checkpoint

T_full = config.model.num_scales; T_pds = int(num_scales / speed_up) with the config's
`sampling.speed_up` (or --pds_steps). Each column is the config's own sampler (PC with
its predictor/corrector, denoising step included) run with its own operator: vanilla is
the identity preconditioner, PDS the config's `sampling.pds` filter.

Timing: --timed_steps k > 0 compiles the same sampler at N = k steps (the per-step work
does not depend on N), runs each column once to warm up, then --repeats times interleaved
(vanilla, PDS, vanilla, ...: a loaded machine slows both alike), and reports the median
seconds per step times T, labelled 'extrapolated' (the final denoising forward,
1 of the 2k+1 network evaluations of a PC run, is spread over the k steps, so this
slightly over-estimates). --timed_steps 0 runs and times the whole T_full and T_pds
samplers (a GPU; on a CPU only for small models). Compilation is never timed.

Weights: --weights random (default; the timing does not depend on their values) or
checkpoint (config.model.checkpoint / <workdir>/checkpoints, as --mode sample). PDS
statistics: the config's files when they exist, otherwise random positive statistics of
the right shape ('synthetic', timing only; the PDS operator does the same FFTs whatever
the values).

Writes into --workdir: table2_<config name>.csv/.md/.png, atomically; the markdown also shows
the paper's numbers (one RTX 3090, batch 8) where the config is one of the paper's.
"""
import os
import sys
import time

from absl import app, flags
from ml_collections.config_flags import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS

# Paper Table 2 (Ma et al. 2022, one RTX 3090, batch 8): config file stem -> (T_full,
# seconds, T_pds, seconds).
PAPER = {'ffhq_ncsnpp': (2000, 2030., 66, 71.), 'ffhq_ncsnpp_continuous': (2000, 2030., 66, 71.),
         'bedroom_ncsnpp': (2000, 1173., 166, 90.), 'church_ncsnpp': (2000, 1173., 166, 90.),
         'bedroom_ncsnpp_continuous': (2000, 1173., 166, 90.),
         'church_ncsnpp_continuous': (2000, 1173., 166, 90.)}

COLUMNS = ('config', 'variant', 'T', 'seconds', 'seconds_per_step', 'extrapolated',
           'timed_steps', 'batch_size', 'nfe_timed', 'compile_seconds', 'weights', 'statistics',
           'backend', 'device_count')


def _pds_statistics(config, workdir):
  """({'freq', 'space'} arrays (H, W, C) or None, 'files' | 'synthetic' | 'none')."""
  import numpy as np
  from score_sde_pds import preconditioning, utils
  pds = config.sampling.pds
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape = (size, size, ch)
  out, kinds = {}, set()
  for key in ('freq', 'space'):
    name = pds.get(f'{key}_stats', '') or ''
    if not name:
      out[key] = None
      continue
    try:
      path = utils.resolve_path(name, workdir, f'config.sampling.pds.{key}_stats')
      out[key] = preconditioning.load_statistics(path, shape=shape, kind=key)
      kinds.add('files')
    except FileNotFoundError:
      rng = np.random.default_rng(0 if key == 'freq' else 1)
      out[key] = (1. + rng.random(shape)).astype(np.float32)
      kinds.add('synthetic')
  if (out['freq'] is None and out['space'] is None
      and str(pds.get('filter', 'statistics')) != 'parametric'):   # nothing set: synthetic
    out['freq'] = (1. + np.random.default_rng(0).random(shape)).astype(np.float32)
    kinds.add('synthetic')
  return out, ('synthetic' if 'synthetic' in kinds else 'files' if kinds else 'none')


def build_column(config, workdir, *, steps, timed_steps, batch_size, pds_on, params, states,
                 model, stats):
  """The compiled sampler of one column: (call(offset) -> (x, nfe), n_run, compile s).

  n_run = steps, or timed_steps when that is smaller (the same per-step program, shorter)."""
  import copy

  import jax
  from score_sde_pds import preconditioning, sampling, sde_lib
  cfg = copy.deepcopy(config)
  n_run = int(steps if timed_steps <= 0 else min(timed_steps, steps))
  base_ns = int(config.model.num_scales)
  with cfg.unlocked():
    cfg.model.num_scales = n_run
    cfg.sampling.speed_up = 1.0
    cfg.sampling.progress_every = 0
    cfg.sampling.pds.enabled = bool(pds_on)
    cfg.sampling.num_steps = 0     # conjugate/splitting: N = num_scales, as PC
  sde, _ = sde_lib.get_sde(cfg)
  full = copy.deepcopy(config)
  with full.unlocked():
    full.sampling.speed_up = sde_lib.speed_up_for(base_ns, steps)
  _, eps = sde_lib.get_sde(full)       # the eps of the column's T (PDS: eps * speed_up)
  precond = (preconditioning.Preconditioner.from_config(cfg, workdir, stats=stats) if pds_on
             else preconditioning.Preconditioner.identity())
  size, ch = int(cfg.data.image_size), int(cfg.data.num_channels)
  fn = sampling.get_sampling_fn(cfg, sde, model, (batch_size, size, size, ch), eps,
                                preconditioner=precond)
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = fn.jitted.lower(rng, params, states, fn.preconditioner, 0).compile()
  compile_s = time.perf_counter() - t0

  def call(offset):
    x, nfe, _ = compiled(rng, params, states, fn.preconditioner, offset)
    jax.block_until_ready(x)
    return x, int(nfe)

  return call, n_run, compile_s


def run(config, workdir, *, batch_size=8, timed_steps=2, repeats=1, pds_steps=0,
        weights='random', name='config', warmup=True, log=print):
  """Both columns of Table 2 for `config`; returns the rows (dicts of COLUMNS)."""
  import jax
  from score_sde_pds import run_lib
  from score_sde_pds.models import utils as mutils
  ns = int(config.model.num_scales)
  speed_up = float(config.sampling.get('speed_up', 1.0) or 1.0)
  t_pds = int(pds_steps) if pds_steps else int(ns / speed_up)
  if t_pds < 1 or t_pds > ns:
    raise ValueError(f'PDS steps must be in [1, num_scales={ns}], got {t_pds} (set '
                     '--pds_steps or config.sampling.speed_up)')
  if batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1, got {batch_size}')
  if weights == 'checkpoint':
    model, states, params = run_lib.load_model(config, workdir)
  else:
    model, states, params = mutils.init_model(jax.random.PRNGKey(0), config)
  stats, stats_kind = _pds_statistics(config, workdir)
  if not config.sampling.pds.enabled:
    log('note: config.sampling.pds.enabled=False; the PDS column uses its pds.* settings anyway')
  import numpy as np
  columns = (('vanilla', ns, False), ('PDS', t_pds, True))
  built = [build_column(config, workdir, steps=T, timed_steps=timed_steps, batch_size=batch_size,
                        pds_on=on, params=params, states=states, model=model, stats=stats)
           for _, T, on in columns]
  nfes = [call(0)[1] if warmup else None for call, _, _ in built]      # warm-up runs
  times = [[], []]
  for r in range(max(1, repeats)):                      # interleaved: vanilla, PDS, vanilla, ...
    for j, (call, _, _) in enumerate(built):
      t0 = time.perf_counter()
      nfe = call(r + 1)[1]
      times[j].append(time.perf_counter() - t0)
      nfes[j] = nfe
  rows = []
  for j, (variant, T, _) in enumerate(columns):
    _, n_run, comp = built[j]
    sec = float(np.median(times[j]))
    per_step = sec / n_run
    extrap = n_run < T
    total = per_step * T if extrap else sec
    log(f'  {variant}: T={T}, ran {n_run} steps ({nfes[j]} NFE) in {sec:.3f} s (median of '
        f'{len(times[j])}) -> {per_step:.4f} s/step, {total:.1f} s'
        f'{" (extrapolated)" if extrap else ""}; compile {comp:.1f} s')
    rows.append({'config': name, 'variant': variant, 'T': T, 'seconds': total,
                 'seconds_per_step': per_step, 'extrapolated': extrap,
                 'timed_steps': n_run, 'batch_size': batch_size,
                 'nfe_timed': nfes[j], 'compile_seconds': comp, 'weights': weights,
                 'statistics': stats_kind if variant == 'PDS' else '',
                 'backend': jax.default_backend(), 'device_count': jax.device_count()})
  return rows


def markdown(rows, command=''):
  from score_sde_pds.sweep import _fmt
  van = next(r for r in rows if r['variant'] == 'vanilla')
  pds = next(r for r in rows if r['variant'] == 'PDS')
  name = van['config']
  lines = [f'# Table 2: wall-clock of one batch of {van["batch_size"]}, {name}', '']
  if command:
    lines += ['```', command, '```', '']
  lines += ['| system | T vanilla | s vanilla | T PDS | s PDS | speed-up |', '|---|---:|---:|---:|---:|---:|']
  ext = ' (extrapolated)' if van['extrapolated'] or pds['extrapolated'] else ''
  lines.append(f'| this project, {van["backend"]} x{van["device_count"]}{ext} | {van["T"]} | '
               f'{_fmt(van["seconds"], 4)} | {pds["T"]} | {_fmt(pds["seconds"], 4)} | '
               f'{van["seconds"] / pds["seconds"]:.1f}x |')
  if name in PAPER:
    tf, sf, tp, sp = PAPER[name]
    lines.append(f'| paper (one RTX 3090) | {tf} | {sf:.0f} | {tp} | {sp:.0f} | {sf / sp:.1f}x |')
  lines += ['', f'Seconds per step: vanilla {_fmt(van["seconds_per_step"], 4)}, PDS '
            f'{_fmt(pds["seconds_per_step"], 4)} (PDS/vanilla per step '
            f'{pds["seconds_per_step"] / van["seconds_per_step"]:.3f}); weights: {van["weights"]}; '
            f'PDS statistics: {pds["statistics"] or "none"}.']
  if ext:
    lines.append(f'Extrapolated: {van["timed_steps"]} steps timed (after compilation), times T.')
  return '\n'.join(lines) + '\n'


def plot_png(rows) -> bytes:
  """Bars: seconds of one batch, vanilla at T_full vs PDS at T_pds (log scale), with the
  paper's numbers next to them where the config is one of the paper's."""
  from score_sde_pds import utils
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  van = next(r for r in rows if r['variant'] == 'vanilla')
  pds = next(r for r in rows if r['variant'] == 'PDS')
  labels = [f'vanilla T={van["T"]}', f'PDS T={pds["T"]}']
  vals = [van['seconds'], pds['seconds']]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ext = ' (extrapolated)' if van['extrapolated'] or pds['extrapolated'] else ''
  ax.bar([0, 1], vals, color=['tab:blue', 'tab:orange'],
         label=f'this project, {van["backend"]}, batch {van["batch_size"]}{ext}')
  if van['config'] in PAPER:
    tf, sf, tp, sp = PAPER[van['config']]
    ax.plot([0, 1], [sf, sp], 'k_', markersize=30, mew=2, label='paper, one RTX 3090, batch 8')
  ax.set_xticks([0, 1], labels)
  ax.set_yscale('log')
  ax.set_ylabel('seconds per batch')
  ax.set_title(f'Table 2: {van["config"]} ({van["seconds"] / pds["seconds"]:.1f}x)', fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return utils.figure_png_bytes(fig, dpi=100)


def write_outputs(rows, workdir, command=''):
  from score_sde_pds import utils
  from score_sde_pds.sweep import csv_bytes
  return utils.write_result_files(workdir, f"table2_{rows[0]['config']}", {
      'csv': csv_bytes(rows, COLUMNS, 10), 'md': markdown(rows, command).encode(),
      'png': plot_png(rows)})


def main(argv):
  del argv
  from score_sde_pds import utils
  utils.enable_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  cfg_path = config_flags.get_config_filename(FLAGS['config'])
  name = os.path.splitext(os.path.basename(cfg_path))[0]
  try:
    rows = run(FLAGS.config, FLAGS.workdir, batch_size=FLAGS.batch_size,
               timed_steps=FLAGS.timed_steps, repeats=FLAGS.repeats, pds_steps=FLAGS.pds_steps,
               weights=FLAGS.weights, name=name, warmup=FLAGS.warmup,
               log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError, NotImplementedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  command = 'python ' + ' '.join(sys.argv)
  paths = write_outputs(rows, FLAGS.workdir, command)
  print(markdown(rows, command))
  print(f'wrote {", ".join(paths.values())}')


def define_flags():
  """The command-line flags (defined only when run as a script, so that tests can import
  this module)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config()).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Output folder.')
  flags.DEFINE_integer('batch_size', 8, 'Samples per run (the paper: 8).')
  flags.DEFINE_integer('timed_steps', 2, 'Steps actually run per timing (0: the whole T).')
  flags.DEFINE_integer('repeats', 1, 'Timed runs per column (after one warm-up run).')
  flags.DEFINE_bool('warmup', True, 'One untimed run per column first (--nowarmup for huge '
                    'models on a CPU: the first timed run then includes allocation).')
  flags.DEFINE_integer('pds_steps', 0, 'T of the PDS column; 0 -> int(num_scales / speed_up).')
  flags.DEFINE_enum('weights', 'random', ['random', 'checkpoint'], 'Network weights.')
  flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                      "Persistent JAX compilation cache folder ('' to disable).")
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
