"""Speed of the probability-flow ODE sampler: per-sample vs batched step control.

  python scripts/benchmark_ode.py --config configs/analytic/gaussian_field.py \
      --batch 16 --repeats 5 [--method dopri5] [--rtol 1e-5 --atol 1e-5] [--json out.json] \
      [--config.model.nf=32 ...]

Builds `sampling.get_ode_sampler` twice on the same SDE, tolerances and model (the
analytic oracle; a network with the weights of --config.model.checkpoint=FILE; else a
network on random weights from `models.utils.init_model`):

  sample  diffeqsolve vmapped over the batch: every sample has its own step size (the
          default; sample k does not depend on the batch)
  batch   one diffeqsolve of the whole batch with one step size, accepted when every
          sample's error norm is <= 1 (the same per-sample tolerance)

and reports per variant the batched NFE, the compile time, the median wall and process
CPU time of a jitted run over --repeats (runs interleaved: S B, B S, ...), and the time
per batched score evaluation. One bare score evaluation on the batch is timed as well.
With random weights the ODE is not that of a trained model: compare the variants on the
same model rather than reading the NFE as a sampling cost.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                lock_config=True)
flags.DEFINE_integer('batch', 0, 'Global batch size; 0 -> config.sampling.batch_size.')
flags.DEFINE_integer('repeats', 5, 'Timed runs per variant (median reported).')
flags.DEFINE_string('method', '', 'ODE solver; default config.sampling.ode_method.')
flags.DEFINE_float('rtol', 0., 'Relative tolerance; 0 -> config.sampling.ode_rtol.')
flags.DEFINE_float('atol', 0., 'Absolute tolerance; 0 -> config.sampling.ode_atol.')
flags.DEFINE_integer('seed', 0, 'Seed of the weights and the sampler.')
flags.DEFINE_string('json', '', 'Write the results to this JSON file.')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable), as main.py.")
flags.mark_flags_as_required(['config'])

VARIANTS = ('sample', 'batch')


def _timed(fn, *args):
  """(wall s, process CPU s, output) of fn(*args) up to block_until_ready."""
  import jax
  c0, t0 = time.process_time(), time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0, time.process_time() - c0, out


def run_benchmark(config, batch, repeats, method, rtol, atol, seed=0, log=print):
  """Times both step controls of the ODE sampler; returns a dict (times in seconds)."""
  import jax
  import numpy as np
  from score_sde_pds import sampling, sde_lib
  from score_sde_pds.models import utils as mutils

  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape = (batch, size, size, ch)
  sde, eps = sde_lib.get_sde(config)
  rng = jax.random.PRNGKey(seed)
  if hasattr(mutils.get_model(config.model.name), 'init_from_config'):
    model, states, params = mutils.init_model(rng, config)
  elif config.model.get('checkpoint', ''):  # trained weights: a realistic ODE
    from score_sde_pds import run_lib
    model, states, params = run_lib.load_model(config, workdir='')
  else:  # a network: initialise jitted (op-by-op NCSN++ init is slow)
    holder = {}

    def init(r):
      holder['model'], states, params = mutils.init_model(r, config)
      return states, params

    states, params = jax.jit(init)(rng)
    model = holder['model']
  continuous, num_scales = bool(config.training.continuous), int(config.model.num_scales)

  def score_fn_of(params, states):
    return mutils.get_score_fn(sde, model, params, states, train=False,
                               continuous=continuous, num_scales=num_scales)

  res = {'model': config.model.name, 'shape': list(shape), 'method': method, 'rtol': rtol,
         'atol': atol, 'eps': eps, 'repeats': repeats, 'device_count': jax.device_count(),
         'cpu_count': os.cpu_count(), 'jax_version': jax.__version__, 'variants': {}}
  runs = {}
  for variant in VARIANTS:
    smp = sampling.get_ode_sampler(sde, shape, rtol=rtol, atol=atol, method=method, eps=eps,
                                   step_control=variant)

    @jax.jit
    def run(rng, params, states, smp=smp):
      return smp.run(rng, score_fn_of(params, states))

    t0 = time.perf_counter()
    compiled = run.lower(rng, params, states).compile()
    compile_s = time.perf_counter() - t0
    _, nfe, info = jax.block_until_ready(compiled(rng, params, states))  # warm-up
    runs[variant] = compiled
    res['variants'][variant] = {
        'compile_s': compile_s, 'nfe': int(nfe), 'steps': int(info['steps']),
        'nfe_per_sample_mean': float(np.mean(info['nfe_per_sample'])),
        'ok': int(info['first_nonfinite_step']) == -1, 'wall_s': [], 'cpu_s': []}
    log(f'{variant}: compiled in {compile_s:.1f} s, NFE {int(nfe)}')

  res['loadavg_before'] = list(os.getloadavg())
  for r in range(repeats):
    for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
      wall, cpu, _ = _timed(runs[variant], rng, params, states)
      res['variants'][variant]['wall_s'].append(wall)
      res['variants'][variant]['cpu_s'].append(cpu)
      log(f'repeat {r}: {variant} {wall:.3f} s (CPU {cpu:.3f} s)')
  res['loadavg_after'] = list(os.getloadavg())

  x = jax.random.normal(jax.random.PRNGKey(seed + 1), shape)
  t = np.full((batch,), 0.5 * (sde.T + eps), np.float32)
  fwd = jax.jit(lambda p, s, x, t: score_fn_of(p, s)(x, t))
  jax.block_until_ready(fwd(params, states, x, t))
  res['score_eval_s'] = statistics.median(
      _timed(fwd, params, states, x, t)[0] for _ in range(max(5, repeats)))
  for v in res['variants'].values():
    v['wall_median_s'] = statistics.median(v['wall_s'])
    v['cpu_median_s'] = statistics.median(v['cpu_s'])
    v['wall_per_nfe_s'] = v['wall_median_s'] / v['nfe']
    v['overhead_per_nfe_s'] = v['wall_per_nfe_s'] - res['score_eval_s']
  return res


def format_table(res):
  rows = [f"{res['model']} {tuple(res['shape'])}, {res['method']}, rtol={res['rtol']:g}, "
          f"atol={res['atol']:g}, {res['device_count']} device(s); one score evaluation "
          f"{res['score_eval_s'] * 1e3:.2f} ms",
          '| step control | NFE (batched) | mean NFE per sample | compile s | wall s | CPU s '
          '| wall ms / NFE |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for name, v in res['variants'].items():
    rows.append(f"| {name} | {v['nfe']} | {v['nfe_per_sample_mean']:.1f} | "
                f"{v['compile_s']:.1f} | {v['wall_median_s']:.3f} | {v['cpu_median_s']:.3f} | "
                f"{v['wall_per_nfe_s'] * 1e3:.2f} |")
  rows.append('load average before / after: '
              f"{'/'.join(f'{a:.1f}' for a in res['loadavg_before'])} / "
              f"{'/'.join(f'{a:.1f}' for a in res['loadavg_after'])} on {res['cpu_count']} CPUs")
  return '\n'.join(rows)


def main(argv):
  del argv
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  config = FLAGS.config
  s = config.sampling
  res = run_benchmark(config, FLAGS.batch or int(s.batch_size), FLAGS.repeats,
                      FLAGS.method or str(s.ode_method), FLAGS.rtol or float(s.ode_rtol),
                      FLAGS.atol or float(s.ode_atol), FLAGS.seed,
                      log=lambda m: print(m, flush=True))
  res['command'] = ' '.join(['python'] + sys.argv)
  print()
  print(format_table(res))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(res, f, indent=1)
    print(f'\nwrote {FLAGS.json}')


if __name__ == '__main__':
  app.run(main)
