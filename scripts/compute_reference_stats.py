"""Reference feature statistics of a dataset, for FID / MNIST-FD in --mode eval.

  python scripts/compute_reference_stats.py --config configs/ve/mnist_ncsnpp_small.py
  python scripts/compute_reference_stats.py --config configs/ve/cifar10_ncsnpp_deep.py \
      --config.eval.inception_path=pt_inception-2015-12-05-6726825d.pth --output cifar10_train.npz

Feeds every image of the split (all training images by default; no dropped last batch),
quantised to uint8 as samples are (clip(x * 255) -> uint8 -> / 255), through the feature
network of the config's dataset (the digit classifier for MNIST/DIGITS, the FID Inception
otherwise: score_sde_pds.evaluation.evaluator) and writes `mu`, `sigma` (float64), the first
--keep_features feature rows (for KID) and metadata (extractor, weights sha256, dataset,
split, number of images) to --output (default: the path config.eval.ref_stats names, or for
MNIST/DIGITS assets/reference_stats/<dataset>_train.npz). `config.eval.ref_stats` reads it.
"""
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).', lock_config=True)
flags.DEFINE_string('output', '', 'Output .npz (default: see the module docstring).')
flags.DEFINE_string('split', 'train', "Dataset split: 'train', 'test' or 'all'.")
flags.DEFINE_integer('num_images', 0, 'Use the first N images of the split (0: all).')
flags.DEFINE_integer('batch_size', 500, 'Images per feature batch.')
flags.DEFINE_integer('keep_features', 10000, 'Feature rows stored for KID (0: none).')
flags.mark_flags_as_required(['config'])


def main(_):
  from score_sde_pds import datasets, utils
  from score_sde_pds.evaluation import evaluator, metrics
  config = FLAGS.config
  out = FLAGS.output or config.eval.get('ref_stats', '') or ''
  if not out:
    if not evaluator.is_digit_config(config):
      raise app.UsageError('--output is required (or set config.eval.ref_stats).')
    out = os.path.join(utils.REPO_ROOT, evaluator._digit_default(config, 'ref'))
  extractor = evaluator.get_extractor(config)
  source = datasets.get_dataset(config, FLAGS.split)
  n = len(source) if not FLAGS.num_images else min(FLAGS.num_images, len(source))
  t0 = time.time()
  feats = []
  for i in range(0, n, FLAGS.batch_size):
    x = source.get_batch(range(i, min(i + FLAGS.batch_size, n)))
    feats.append(evaluator.extract(extractor, x)[extractor.feature_key])
    print(f'{min(i + FLAGS.batch_size, n)}/{n} images', flush=True)
  feats = np.concatenate(feats)
  assert feats.shape[0] == n
  metrics.save_reference_stats(out, feats, keep_features=FLAGS.keep_features,
                               extractor=extractor.name, weights_hash=extractor.weights_hash,
                               dataset=str(config.data.dataset), split=FLAGS.split,
                               num_images=n, image_size=int(config.data.image_size))
  print(f'wrote {out}: {n} images, {feats.shape[1]}-dim {extractor.name} features, '
        f'{time.time() - t0:.0f} s')


if __name__ == '__main__':
  app.run(main)
