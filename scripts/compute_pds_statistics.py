"""Computes the PDS statistics of a dataset (or of the analytic oracle).

  python scripts/compute_pds_statistics.py --config=configs/ve/<cfg>.py \
      --output_dir=pds_stats [--num_images=200] [--seed=0] [--alpha=5] [--name=cifar10]

Writes into --output_dir:
  <name>_freq.npy, <name>_space.npy   the reference's layout, float32 (C, H, W):
                                      R = log(1 + mean |F x|^2), A = mean x^2
  <name>_stats.npz                    the project's format: 'freq', 'space' (H, W, C)
                                      plus metadata (load_statistics reads both)
  <name>_stats.png                    centred log-spectrum R, frequency gain r,
                                      space statistic A, space gain d (per channel)

Images come from datasets.get_dataset(config, 'train') (pixels in [0, 1], --num_images
random images drawn without replacement with --seed, no augmentation). With
config.data.dataset == 'GAUSSIAN_FIELD' (or --source=analytic) the exact moments of the
analytic oracle are used instead: R = log(1 + E|F x|^2), A = E[x^2] in [0, 1] pixel
space. Point config.sampling.pds.freq_stats / space_stats at the outputs.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde_pds import datasets  # noqa: E402
from score_sde_pds import preconditioning as pre  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                lock_config=True)
flags.DEFINE_string('output_dir', 'pds_stats', 'Directory for the statistics files.')
flags.DEFINE_integer('num_images', 200, 'Number of random training images.')
flags.DEFINE_integer('seed', 0, 'Seed of the random image subset.')
flags.DEFINE_float('alpha', 5.0, 'Filter strength used for the plotted gains (> 1).')
flags.DEFINE_string('name', '', 'File prefix; default: config.data.dataset lower-cased.')
flags.DEFINE_enum('source', 'auto', ['auto', 'dataset', 'analytic'],
                  'auto: analytic for GAUSSIAN_FIELD, the dataset otherwise.')
flags.DEFINE_integer('batch_size', 50, 'Images per FFT batch.')
flags.mark_flags_as_required(['config'])


def dataset_statistics(config, num_images=200, seed=0, batch_size=50):
  """R and A of `num_images` random training images of config.data.dataset.

  Returns:
    dict: 'freq', 'space' float32 (H, W, C), 'num_images'.
  """
  if num_images <= 0:
    raise ValueError(f'--num_images must be > 0, got {num_images}')
  src = datasets.get_dataset(config, split='train')
  n = min(int(num_images), len(src))
  order = np.random.default_rng(seed).permutation(len(src))[:n]
  chunks = (src.get_batch(order[i:i + batch_size]) for i in range(0, n, batch_size))
  return pre.compute_statistics(chunks, batch_size=batch_size)


def analytic_statistics(config):
  """R and A from the exact moments of the analytic data model, in [0, 1] pixels.

  Uses a model object of score_sde_pds.models.analytic with `from_config(config)`,
  `second_moment_spectrum()` (E|F x|^2, (H, W, C)) and `pixel_second_moment()`
  (E[x^2], (H, W, C)); its `mean` is needed to undo centring when
  config.data.centered (x01 = (x + 1) / 2).
  """
  try:
    from score_sde_pds.models import analytic
  except ImportError as e:
    raise ImportError('the analytic statistics need score_sde_pds.models.analytic') from e
  field = None
  try:
    from score_sde_pds.models import utils as mutils
    cls = mutils.get_model(config.model.name)
    if hasattr(cls, 'from_config') and hasattr(cls, 'second_moment_spectrum'):
      field = cls.from_config(config)
  except Exception:  # unknown model name: fall back to the Gaussian field
    field = None
  if field is None:
    cls = getattr(analytic, 'GaussianField', None)
    if cls is None:
      raise ValueError('score_sde_pds.models.analytic has no GaussianField model')
    field = cls.from_config(config)
  power = np.asarray(field.second_moment_spectrum(), np.float64)
  second = np.asarray(field.pixel_second_moment(), np.float64)
  if config.data.centered:
    # x01 = (x + 1) / 2: F[x01] = (F[x] + H W delta_k0) / 2 per channel.
    h, w, c = power.shape
    mean = np.broadcast_to(np.asarray(field.mean, np.float64), (c,))
    dc = power[0, 0] + 2 * h * w * (h * w * mean) + (h * w) ** 2
    power = power / 4
    power[0, 0] = dc / 4
    second = (second + 2 * mean + 1) / 4
  return pre.statistics_from_moments(power, second)


def plot_statistics(path, freq, space, alpha=5.0, title=''):
  """PNG of the centred R, the gain r, A and the gain d, one row per channel."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  r = pre.statistics_to_gain(freq, alpha, name='freq')
  d = pre.statistics_to_gain(space, alpha, name='space')
  shift = lambda a: np.fft.fftshift(a, axes=(0, 1))
  panels = [('log(1+E|Fx|^2), centred', shift(freq)),
            (f'freq gain r (alpha={alpha:g}), centred', shift(r)),
            ('E[x^2]', space), (f'space gain d (alpha={alpha:g})', d)]
  channels = freq.shape[2]
  fig, axes = plt.subplots(channels, 4, figsize=(14, 3.2 * channels), squeeze=False)
  for c in range(channels):
    for j, (label, arr) in enumerate(panels):
      ax = axes[c, j]
      im = ax.imshow(arr[:, :, c], cmap='viridis', interpolation='nearest')
      ax.set_title(f'{label} [c={c}]', fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
      fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, path)


def run(config, output_dir, num_images=200, seed=0, alpha=5.0, name='',
        source='auto', batch_size=50):
  """Computes and writes the statistics; returns a dict of the written paths."""
  pre.statistics_to_gain(np.ones((1, 1, 1)), alpha)  # validates alpha early
  dataset = str(config.data.dataset)
  if source == 'auto':
    source = 'analytic' if dataset.upper() == 'GAUSSIAN_FIELD' else 'dataset'
  if source == 'analytic':
    stats = analytic_statistics(config)
    num_images = 0
  else:
    stats = dataset_statistics(config, num_images, seed, batch_size)
    num_images = stats['num_images']
  name = name or dataset.lower()
  os.makedirs(output_dir, exist_ok=True)
  paths = {
      'freq_npy': os.path.join(output_dir, f'{name}_freq.npy'),
      'space_npy': os.path.join(output_dir, f'{name}_space.npy'),
      'npz': os.path.join(output_dir, f'{name}_stats.npz'),
      'png': os.path.join(output_dir, f'{name}_stats.png'),
  }
  pre.save_reference_statistics(paths['freq_npy'], stats['freq'])
  pre.save_reference_statistics(paths['space_npy'], stats['space'])
  pre.save_statistics(paths['npz'], freq=stats['freq'], space=stats['space'],
                      dataset=dataset, image_size=int(config.data.image_size),
                      num_channels=int(config.data.num_channels),
                      num_images=int(num_images), seed=int(seed), source=source,
                      centered_data=bool(config.data.centered))
  plot_statistics(paths['png'], stats['freq'], stats['space'], alpha,
                  title=(f'{dataset} (exact moments)' if source == 'analytic' else
                         f'{dataset} ({num_images} images, seed {seed})'))
  return paths


def main(argv):
  del argv
  paths = run(FLAGS.config, FLAGS.output_dir, FLAGS.num_images, FLAGS.seed,
              FLAGS.alpha, FLAGS.name, FLAGS.source, FLAGS.batch_size)
  for key, path in paths.items():
    print(f'{key}: {path}')


if __name__ == '__main__':
  app.run(main)
