"""PDS ablation grid on any config: filter parameters x omega x N x sampler options.

  python scripts/sweep.py --config configs/analytic/gaussian_field.py --workdir W \
      [--filter statistics|parametric|both] [--alphas 1.5,2,3,5,8] [--radii 0] \
      [--lams 1.2,1.6,2] [--omegas 0,0.1] [--num_scales 50,100] [--speed_ups 1] \
      [--samplers reverse_diffusion:langevin,euler_maruyama:none] [--snrs 0.16] \
      [--num_samples 512] [--batch_size 0] [--stats auto] [--config.xxx=...]

Writes into --workdir: sweep.csv (one row per cell), sweep.md (a table, best cell per N
in bold), sweep.png (metric vs alpha or lam per N, vanilla dashed), all atomically.
For one (N, sampler options) block every preconditioner of the filter/omega grid is
stacked into one pytree and the sampler is vmapped over it in ONE jitted program;
the vanilla baseline (identity) is a row of every block. Metrics: the exact Frechet
distance and spectrum error on the analytic oracle; the dataset's metric for networks
(MNIST-FD for MNIST/DIGITS, FID with config.eval.inception_path/ref_stats set), with
--bootstrap resamples for its estimator noise.
The logic is in score_sde_pds/sweep.py.
"""
import os
import sys

from absl import app, flags
from ml_collections.config_flags import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config()).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Output folder (and where statistics/checkpoints are '
                    'looked up).')
flags.DEFINE_enum('filter', '', ['', 'statistics', 'parametric', 'both'],
                  "Filter(s) of the grid; '' -> config.sampling.pds.filter.")
flags.DEFINE_list('alphas', ['1.5', '2', '3', '5', '8'], 'Statistics-filter alphas (> 1).')
flags.DEFINE_list('radii', [], 'Parametric radii in pixels (0 -> 0.2 H); default: '
                  'config.sampling.pds.radius.')
flags.DEFINE_list('lams', ['1.2', '1.6', '2'], 'Parametric gains outside the radius (> 0).')
flags.DEFINE_list('omegas', ['0'], 'Solenoidal weights.')
flags.DEFINE_list('num_scales', [], 'Values of config.model.num_scales (default: the '
                  "config's). For networks prefer --speed_ups (num_scales is the trained N).")
flags.DEFINE_list('speed_ups', [], 'Values of config.sampling.speed_up (N = int(num_scales '
                  "/ speed_up)); default: the config's.")
flags.DEFINE_list('samplers', [], "predictor:corrector pairs; default: the config's.")
flags.DEFINE_list('snrs', [], "Langevin snr values (corrector only); default: the config's.")
flags.DEFINE_integer('num_samples', 512, 'Samples per cell.')
flags.DEFINE_integer('batch_size', 0, 'Samples per program call; 0 -> num_samples for the '
                     'oracle, config.sampling.batch_size otherwise.')
flags.DEFINE_enum('stats', 'auto', ['auto', 'freq', 'space', 'freq,space'],
                  'Statistics used by the statistics filter.')
flags.DEFINE_integer('bootstrap', 0, 'Network metrics: bootstrap resamples for the std (0: none).')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable).")
flags.mark_flags_as_required(['config', 'workdir'])


def _floats(values, name):
  try:
    return [float(v) for v in values if str(v).strip()]
  except ValueError:
    raise ValueError(f'--{name} must be a comma-separated list of numbers, got '
                     f'{",".join(values)!r}') from None


def main(argv):
  del argv
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  from score_sde_pds import sweep
  config = FLAGS.config
  try:
    filt = FLAGS.filter or str(config.sampling.pds.get('filter', 'statistics'))
    filters = list(sweep.FILTERS) if filt == 'both' else [filt]
    radii = _floats(FLAGS.radii, 'radii') or [float(config.sampling.pds.get('radius', 0.))]
    grid = sweep.Grid(
        filters=filters, alphas=_floats(FLAGS.alphas, 'alphas'), radii=radii,
        lams=_floats(FLAGS.lams, 'lams'), omegas=_floats(FLAGS.omegas, 'omegas'),
        num_scales=[int(v) for v in _floats(FLAGS.num_scales, 'num_scales')],
        speed_ups=_floats(FLAGS.speed_ups, 'speed_ups'),
        samplers=sweep.parse_samplers(FLAGS.samplers),
        snrs=_floats(FLAGS.snrs, 'snrs'), num_samples=FLAGS.num_samples,
        batch_size=FLAGS.batch_size, stats=FLAGS.stats, bootstrap=FLAGS.bootstrap)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    result = sweep.run_sweep(config, FLAGS.workdir, grid, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError, NotImplementedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  paths = sweep.write_outputs(result, FLAGS.workdir)
  print(sweep.markdown(result))
  print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
  app.run(main)
