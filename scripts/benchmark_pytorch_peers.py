"""The PyTorch peers alone, in a process with no JAX in it (a control for the in-process runs).

  python scripts/benchmark_pytorch_peers.py --config configs/ve/cifar10_ncsnpp_continuous.py \
      --preset tiny --checkpoint PATH.pth --score_sde_pytorch PATH --pds_pytorch PATH \
      --batch 64 --steps 6 --rounds 4

scripts/benchmark_sampling.py times the PyTorch peers in the same process as the
project's JAX samplers, interleaved. This script times the same PyTorch items (`pytorch`,
`pds_pytorch_off`, `pds_pytorch`, `fwd2_pytorch`; see that script's docstring) with
nothing of JAX imported, so that its seconds per step can be set beside the in-process
ones: if the two agree, sharing the process with XLA's thread pool did not slow PyTorch
down. Same settings, weights and statistics as benchmark_sampling.py.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                lock_config=False)
flags.DEFINE_enum('preset', '', ['', 'tiny'], "'tiny': the tiny FFHQ-style NCSN++.")
flags.DEFINE_string('checkpoint', '', 'score_sde_pytorch .pth weights; "" -> random init.')
flags.DEFINE_string('score_sde_pytorch', '', 'yang-song/score_sde_pytorch checkout.')
flags.DEFINE_string('pds_pytorch', '', 'fudan-zvg/PDS checkout.')
flags.DEFINE_integer('batch', 8, 'Batch size.')
flags.DEFINE_integer('steps', 20, 'Sampler steps N.')
flags.DEFINE_integer('rounds', 4, 'Timed rounds.')
flags.DEFINE_float('alpha', 5.0, 'PDS filter strength.')
flags.DEFINE_float('eps', 1e-5, 'Last time of the reverse SDE (VE: 1e-5, as the project).')
flags.DEFINE_integer('seed', 0, 'Seed of the statistics and the sampler.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  import numpy as np
  from benchmark_presets import apply_preset   # JAX-free
  import peer_checkouts
  assert 'jax' not in sys.modules, 'this control must run without JAX in the process'
  try:
    peer_checkouts.check_checkouts([('score_sde_pytorch', FLAGS.score_sde_pytorch, True),
                                    ('pds_pytorch', FLAGS.pds_pytorch, True)])
  except (ValueError, ImportError) as e:
    raise app.UsageError(str(e)) from e
  import torch
  config = apply_preset(FLAGS.config, FLAGS.preset)
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape, steps = (FLAGS.batch, size, size, ch), FLAGS.steps
  items = {}
  peer = None
  for kind, path in (('score_sde_pytorch', FLAGS.score_sde_pytorch),
                     ('pds_pytorch', FLAGS.pds_pytorch)):
    if not path:
      continue
    peer = peer_checkouts.PytorchPeer(path, kind, config, FLAGS.checkpoint)
    items.update(peer.samplers(config, shape, steps, FLAGS.eps, alpha=FLAGS.alpha,
                               seed=FLAGS.seed))
  if peer is None:
    raise app.UsageError('give --score_sde_pytorch and/or --pds_pytorch.')
  x0 = np.random.default_rng(FLAGS.seed + 1).normal(size=shape).astype(np.float32) * .5 + .5
  items['fwd2_pytorch'] = peer.two_forward_loop(config, shape, steps, FLAGS.eps, x0)
  for f in items.values():
    f()
  wall = {k: [] for k in items}
  order = list(items)
  for r in range(FLAGS.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      time.sleep(0.2)
      t0 = time.perf_counter()
      items[name]()
      wall[name].append((time.perf_counter() - t0) / steps)
    print(f'round {r}: ' + ', '.join(f'{k} {v[-1]:.4f}' for k, v in wall.items()) +
          ' s/step (wall)', flush=True)
  print(f'\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch '
        f'{FLAGS.batch}, {steps} steps, {FLAGS.rounds} rounds; median wall s/step:')
  for k, v in wall.items():
    print(f'| {k} | {statistics.median(v):.4f} |')


if __name__ == '__main__':
  app.run(main)
