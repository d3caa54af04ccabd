"""Calibration values of the digit metrics (MNIST-FD, confident share, class balance).

  python scripts/digit_metric_calibration.py [--dataset MNIST] [--n 500]

Scores, with the shipped classifier and reference statistics of the dataset (the ones
--mode eval uses): the held-out test images, random subsets of the training images (the
reference's own images), real images with Gaussian pixel noise, and uniform noise images;
each with n images, as a markdown table. Samples of a good model should score near the
held-out value at the same n (the Frechet distance's estimator bias grows as n shrinks).
"""
import os
import sys

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'MNIST', ['MNIST', 'DIGITS'], 'Offline digit dataset.')
flags.DEFINE_integer('n', 500, 'Images per row (the test split has 500 MNIST / 180 DIGITS).')


def main(_):
  from configs.ve import mnist_ncsnpp_small
  from score_sde_pds import datasets
  from score_sde_pds.evaluation import evaluator
  config = mnist_ncsnpp_small.get_config()
  config.data.dataset = FLAGS.dataset
  x_tr, _ = datasets.labeled_digits(FLAGS.dataset, 'train')
  x_te, _ = datasets.labeled_digits(FLAGS.dataset, 'test')
  config.data.image_size = x_tr.shape[1]
  ext = evaluator.get_extractor(config)
  ref, ref_path = evaluator.load_reference(config, None, ext)
  gen = np.random.default_rng(0)
  n = FLAGS.n
  sets = {
      f'held-out test images ({min(n, len(x_te))})': x_te[:n],
      'training images, random subset A': x_tr[gen.choice(len(x_tr), n, replace=False)],
      'training images, random subset B': x_tr[gen.choice(len(x_tr), n, replace=False)],
      'test images + N(0, 0.1^2) pixel noise': np.clip(
          x_te[:n] + 0.1 * gen.standard_normal(x_te[:n].shape), 0, 1),
      'test images + N(0, 0.3^2) pixel noise': np.clip(
          x_te[:n] + 0.3 * gen.standard_normal(x_te[:n].shape), 0, 1),
      'uniform noise images': gen.uniform(size=(n,) + x_tr.shape[1:]),
  }
  print(f'{FLAGS.dataset}: reference {ref_path}, classifier {ext.weights_path}\n')
  print('| images | MNIST-FD | confident share | class TV to uniform |')
  print('|---|---:|---:|---:|')
  for name, x in sets.items():
    res = evaluator.score_outputs(evaluator.extract(ext, x), ext, ref, config, bootstrap=20)
    print(f'| {name} | {res["mnist_fd"]:.3f} ± {res["value_std"]:.3f} | '
          f'{res["confident_share"]:.3f} | {res["class_tv"]:.3f} |')


if __name__ == '__main__':
  app.run(main)
