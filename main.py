"""score_sde_pds command line: flags -> run_lib.train / evaluate / sample(config, workdir).

  python main.py --config configs/analytic/gaussian_field.py --workdir W --mode sample \
      --config.sampling.pds.enabled=True --config.model.num_scales=100
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections.config_flags import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config()).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory (checkpoints/, samples, statistics).')
flags.DEFINE_enum('mode', 'sample', ['train', 'eval', 'sample'], 'What to run.')
flags.DEFINE_string('sample_folder', 'samples', 'Sub-folder of workdir for samples.')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable).")
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() first (multi-host '
                  'GPU/TPU: one process per host; coordinator from the cluster environment).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize()
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  from score_sde_pds import run_lib
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  os.makedirs(FLAGS.workdir, exist_ok=True)
  try:
    if FLAGS.mode == 'train':
      run_lib.train(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == 'eval':
      result = run_lib.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.sample_folder)
      if result is not None:
        from score_sde_pds.evaluation import evaluator
        print(evaluator.summary_line(result))
    else:
      folder = run_lib.sample(FLAGS.config, FLAGS.workdir, FLAGS.sample_folder)
      grids = sorted((f for f in os.listdir(folder) if f.endswith('.png')),
                     key=lambda f: (len(f), f))
      print(f'samples written to {folder}' + (
          f'; image grid: {os.path.join(folder, grids[0])}' if grids else ''))
  except (ValueError, FileNotFoundError, NotImplementedError, KeyError,
          run_lib.SamplingDivergedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
