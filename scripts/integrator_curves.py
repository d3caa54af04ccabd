"""Error vs NFE of the efficient integrators and the PC/ODE baselines: on the analytic
oracle (exact Frechet distance) or on a trained network (the dataset's metric).

  python scripts/integrator_curves.py --config configs/analytic/gaussian_field_psld.py \
      --out DIR [--nfes 10,20,50,100,200] [--samplers 'nse,conj euler B=0'] \
      [--mc_samples 2048] [--ode_tols 1e-2,1e-3,1e-4] [--config.xxx=...]
  python scripts/integrator_curves.py --config configs/psld/mnist_ncsnpp_small.py \
      --workdir W --out DIR [--nfes 10,20,50,100] [--num_samples 256] [--bootstrap 20] \
      [--samplers 'conjugate:euler,splitting:cvv,splitting:oba:noise_scale=0.5']

Oracle configs (config.model.name == 'analytic_gaussian'): the SDE (config.training.sde:
vpsde, subvpsde, vesde, cld, psld) selects the samplers, --samplers picks among their names.
Network configs: the checkpoint of config.model.checkpoint / <workdir>/checkpoints /
config.model.default_checkpoint; --samplers are specs 'method:name[:key=value]'
(integrators.curves.parse_sampler_spec: pc:predictor:corrector, ode:heun,
conjugate:<rule>, splitting:<scheme>; keys lam, grid, noise_scale, b_matrix, eps_frame,
snr, n_steps_each); every cell draws the same --num_samples samples.
Writes DIR/curves.csv, curves.md (FD per sampler and NFE budget, best bold) and curves.png
(FD vs NFE, log-log). Deterministic and stochastic integrators and the corrector-free PC
samplers get the exact Frechet distance (impulse responses, no sampling error); the
Langevin-corrected PC sampler and the adaptive ODE solver a Monte Carlo estimate minus its
finite-sample floor. The logic is in score_sde_pds/integrators/curves.py.
"""
import os
import sys

from absl import app, flags
from ml_collections.config_flags import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Analytic-oracle config file.', lock_config=True)
flags.DEFINE_string('out', None, 'Output folder.')
flags.DEFINE_string('workdir', None, 'Networks: where checkpoints/statistics are looked up '
                    '(default: --out).')
flags.DEFINE_integer('num_samples', 256, 'Networks: samples per cell.')
flags.DEFINE_integer('batch_size', 0, 'Networks: samples per call (0: config.sampling.batch_size).')
flags.DEFINE_integer('bootstrap', 20, 'Networks: bootstrap resamples for the metric std.')
flags.DEFINE_list('nfes', ['10', '20', '50', '100', '200'], 'NFE budgets.')
flags.DEFINE_string('samplers', '', "Comma-separated sampler names ('' = all that apply).")
flags.DEFINE_integer('mc_samples', 2048, 'Samples of the Monte Carlo rows.')
flags.DEFINE_list('ode_tols', ['1e-2', '1e-3', '1e-4'], 'RK45 tolerances (VP/VE).')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable).")
flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  del argv
  from score_sde_pds import utils
  utils.enable_compilation_cache(FLAGS.compilation_cache)
  from score_sde_pds.integrators import curves
  config = FLAGS.config
  try:
    nfes = [int(v) for v in FLAGS.nfes if v.strip()]
    tols = [float(v) for v in FLAGS.ode_tols if v.strip()]
  except ValueError:
    raise SystemExit('--nfes must be integers and --ode_tols numbers.') from None
  if not nfes or min(nfes) < 1:
    raise SystemExit('--nfes must be positive integers.')
  names = [v.strip() for v in FLAGS.samplers.split(',') if v.strip()]
  os.makedirs(FLAGS.out, exist_ok=True)
  log = lambda s: print(s, flush=True)
  try:
    if config.model.name == 'analytic_gaussian':
      result = curves.run_curves(config, nfes=nfes, names=names or None,
                                 mc_samples=FLAGS.mc_samples, ode_tols=tols, log=log)
    else:
      result = curves.run_network_curves(config, FLAGS.workdir or FLAGS.out, nfes=nfes, specs=names or None,
                                         num_samples=FLAGS.num_samples,
                                         batch_size=FLAGS.batch_size, bootstrap=FLAGS.bootstrap,
                                         log=log,
                                         on_row=lambda r: curves.write_outputs(r, FLAGS.out))
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  paths = curves.write_outputs(result, FLAGS.out)
  print('\n'.join(f'wrote {p}' for p in paths.values()))


if __name__ == '__main__':
  app.run(main)
