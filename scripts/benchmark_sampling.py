"""Speed of the PC sampler: vanilla vs PDS on the same model, batch and number of steps.

  python scripts/benchmark_sampling.py --config configs/ve/cifar10_ncsnpp_continuous.py \
      --batch 8 --steps 10 --repeats 3 [--dtype float32|bfloat16] [--json bench.json] \
      [--config.model.nf=64 ...]

Everything runs in ONE process on random weights from `models.utils.init_model` (no
checkpoint needed, so FFHQ 1024 timings work anywhere), or on the analytic oracle when
the config names it. Two samplers are built from the config's predictor / corrector /
n_steps_each / snr with the same SDE of --steps steps and the same network:

  vanilla  the identity preconditioner (`Preconditioner.identity()`, no FFT at all)
  pds      frequency + space filters from random positive statistics of shape
           (H, W, C) and --alpha (5): M z = Re F^-1[r F[d z]], M M^T g as in PDS.

Measured, per sampler:
  compile_s       lower + XLA compile of the whole jitted sampling function (a load from
                  the persistent compilation cache when --compilation_cache holds it)
  s_per_step      steady state: the median over --repeats of a full jitted run (after
                  --warmup untimed runs), divided by the number of steps. Vanilla and
                  PDS runs are interleaved (V P, P V, V P, ...) so drift in machine load
                  hits both.
  cpu_s_per_step  the same with process CPU time (all XLA threads): on a machine shared
                  with other jobs far less sensitive to their load than wall time
  ratio           s_per_step(pds) / s_per_step(vanilla) (and cpu_ratio from CPU time)
  images_per_s    batch / run time of the N-step run
  fwd_per_step    s_per_step / (time of one bare network forward on the same batch);
                  score_sde's PC loop with the Langevin corrector costs ~2.
  memory          the compiled executable's memory_analysis() (temp / argument / output
                  bytes) where the backend reports it; device memory_stats() peak bytes
                  where available (GPU/TPU), else the process max RSS (getrusage).
Also the cost of the PDS operators alone (one M M^T g plus one M z on the batch) times
the number of preconditioned calls per step, i.e. the overhead PDS should add.

Prints a table and writes everything to --json.
"""
from __future__ import annotations

import json
import os
import platform
import resource
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
flags.DEFINE_integer('steps', 20, 'Number of sampler steps N (sde.N).')
flags.DEFINE_integer('repeats', 3, 'Timed runs per sampler (median reported).')
flags.DEFINE_integer('warmup', 1, 'Untimed runs per sampler after compilation.')
flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                  'Network compute dtype (config.model.dtype); default: the config.')
flags.DEFINE_float('alpha', 5.0, 'PDS filter strength (> 1).')
flags.DEFINE_integer('seed', 0, 'Seed of the weights, the statistics and the sampler.')
flags.DEFINE_string('json', '', 'Write the results to this JSON file.')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable), as main.py.")
flags.mark_flags_as_required(['config'])


# ----------------------------------------------------------------------------- helpers


def _block(tree):
  import jax
  return jax.block_until_ready(tree)


def _max_rss_bytes():
  """Peak resident set size of this process (bytes; ru_maxrss is KiB on Linux)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss) * (1 if sys.platform == 'darwin' else 1024)


def _device_peak_bytes():
  """Sum over local devices of memory_stats()['peak_bytes_in_use'], or None (CPU)."""
  import jax
  total, seen = 0, False
  for d in jax.local_devices():
    try:
      stats = d.memory_stats()
    except Exception:  # backends without the API
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      total += int(stats['peak_bytes_in_use'])
      seen = True
  return total if seen else None


def _memory_analysis(compiled):
  """Byte sizes of a compiled executable's buffers (dict), or None if not reported."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    return None
  if m is None:
    return None
  out = {}
  for key in ('temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
              'alias_size_in_bytes', 'generated_code_size_in_bytes'):
    val = getattr(m, key, None)
    if val is not None:
      out[key] = int(val)
  return out or None


def _compile(fn, *args):
  """AOT-compiles jitted `fn` for args -> (compiled, lower_s, compile_s)."""
  t0 = time.perf_counter()
  lowered = fn.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return compiled, t1 - t0, t2 - t1


def _timed(fn, *args):
  """(wall s, process CPU s, output) of fn(*args) up to block_until_ready.

  Process CPU time sums all threads of this process (XLA's thread pool included), so
  on a machine shared with other jobs it is much less sensitive to their load than
  wall time (which is what a user waits for on an idle machine).
  """
  c0, t0 = time.process_time(), time.perf_counter()
  out = _block(fn(*args))
  return time.perf_counter() - t0, time.process_time() - c0, out


def init_network(config, seed):
  """(model, states, params) of `init_model`; a network's init runs jitted (much faster
  than op-by-op for NCSN++), the analytic oracle's as it is."""
  import jax
  from score_sde_pds.models import utils as mutils
  rng = jax.random.PRNGKey(seed)
  if hasattr(mutils.get_model(config.model.name), 'init_from_config'):
    return mutils.init_model(rng, config)
  holder = {}

  def init(r):
    model, states, params = mutils.init_model(r, config)
    holder['model'] = model   # a flax Module: configuration only, no arrays
    return states, params

  states, params = jax.jit(init)(rng)
  return holder['model'], states, params


def random_pds(shape, alpha, seed):
  """A frequency + space preconditioner from random positive statistics of (H, W, C)."""
  import numpy as np
  from score_sde_pds import preconditioning
  g = np.random.default_rng(seed)
  freq = g.uniform(1., 10., shape).astype(np.float32)     # like log(1 + E|F x|^2)
  space = g.uniform(0.05, 1., shape).astype(np.float32)   # like E[x^2] in [0, 1]
  return preconditioning.Preconditioner.from_statistics(
      freq_stats=freq, space_stats=space, alpha=alpha, shape=shape)


def preconditioned_calls_per_step(config):
  """(drift, noise) pairs the PDS sampler applies per step for config.sampling."""
  s = config.sampling
  pred = str(s.predictor).lower() in ('reverse_diffusion', 'euler_maruyama')
  corr = str(s.corrector).lower() in ('langevin', 'ald')
  return int(pred) + int(corr) * int(s.n_steps_each)


# ----------------------------------------------------------------------------- benchmark


def run_benchmark(config, batch, steps, repeats, warmup=1, alpha=5.0, seed=0, log=print):
  """Measures vanilla and PDS sampling of `config` on random weights.

  Args:
    config: a full config (config.sampling drives predictor/corrector/snr/n_steps_each).
    batch: global batch B; steps: number of sampler steps N.
    repeats: timed runs per sampler; warmup: untimed runs after compilation.
    alpha: PDS filter strength; seed: weights / statistics / sampler seed.
    log: progress printer.
  Returns:
    dict of results (see the module docstring); times in seconds, sizes in bytes.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from score_sde_pds import datasets, preconditioning, sampling, sde_lib
  from score_sde_pds.models import utils as mutils

  if str(config.sampling.method).lower() != 'pc':
    raise ValueError('the benchmark times the PC sampler: config.sampling.method must be '
                     f"'pc', got {config.sampling.method!r}.")
  size, ch = int(config.data.image_size), int(config.data.num_channels)
  shape = (batch, size, size, ch)
  config.sampling.batch_size = batch
  sde, eps = sde_lib.get_sde(config, N=steps)
  res = {'config_model': config.model.name, 'shape': list(shape), 'steps': steps,
         'repeats': repeats, 'warmup': warmup, 'alpha': alpha, 'seed': seed,
         'dtype': str(config.model.get('dtype', 'float32')),
         'predictor': str(config.sampling.predictor),
         'corrector': str(config.sampling.corrector),
         'n_steps_each': int(config.sampling.n_steps_each),
         'corrector_norm': str(config.sampling.get('corrector_norm', 'batch')),
         'backend': jax.default_backend(), 'device_count': jax.device_count(),
         'device_kind': jax.devices()[0].device_kind, 'cpu_count': os.cpu_count(),
         'jax_version': jax.__version__, 'python': platform.python_version()}

  t0 = time.perf_counter()
  model, states, params = init_network(config, seed)
  params = _block(params)
  res['init_s'] = time.perf_counter() - t0
  res['num_params'] = (0 if getattr(model, 'is_analytic', False) else
                       int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params))))
  log(f'model {config.model.name}: {res["num_params"]:,} params, init {res["init_s"]:.1f} s')

  precs = {'vanilla': preconditioning.Preconditioner.identity(),
           'pds': random_pds((size, size, ch), alpha, seed)}
  sampling_fn = sampling.get_sampling_fn(config, sde, model, shape, eps,
                                         inverse_scaler=datasets.get_data_inverse_scaler(config))
  rng = jax.random.PRNGKey(seed)
  res['nfe'] = None
  runs, out = {}, {}
  for name, p in precs.items():
    args = (rng, params, states, p, 0)
    compiled, lower_s, compile_s = _compile(sampling_fn.jitted, *args)
    runs[name] = (compiled, args)
    out[name] = {'lower_s': lower_s, 'compile_s': compile_s,
                 'memory_analysis': _memory_analysis(compiled)}
    log(f'{name}: lowered in {lower_s:.1f} s, compiled in {compile_s:.1f} s')
    for _ in range(max(0, warmup)):
      dt, _, (x, nfe, info) = _timed(compiled, *args)
      log(f'{name}: warm-up run {dt:.2f} s')
    if warmup <= 0:
      x, nfe, info = _block(compiled(*args))
    out[name]['finite'] = bool(np.all(np.isfinite(np.asarray(x))))
    out[name]['first_nonfinite_step'] = int(info['first_nonfinite_step'])
    res['nfe'] = int(nfe)
    out[name]['output_devices'] = len(x.sharding.device_set)

  times = {name: [] for name in runs}
  cpu_times = {name: [] for name in runs}
  res['loadavg_before'] = list(os.getloadavg())
  for r in range(repeats):
    order = list(runs) if r % 2 == 0 else list(runs)[::-1]
    for name in order:
      compiled, args = runs[name]
      dt, ct, _ = _timed(compiled, *args)
      times[name].append(dt)
      cpu_times[name].append(ct)
      log(f'repeat {r}: {name} {dt:.3f} s ({dt / steps:.4f} s/step, CPU {ct / steps:.4f} s/step)')
  res['loadavg_after'] = list(os.getloadavg())

  # one bare network forward (the score function) on the same batch
  score_t = 0.5 * (sde.T + eps)
  x = jax.random.normal(jax.random.PRNGKey(seed + 1), shape)
  x = x * sde.marginal_prob(jnp.zeros(shape), jnp.full((batch,), score_t))[1][:, None, None, None]
  t = jnp.full((batch,), score_t, jnp.float32)
  if jax.device_count() > 1:  # the batch split over all devices, as in the sampler
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    x, t = jax.device_put(x, spec), jax.device_put(t, spec)
  continuous, num_scales = bool(config.training.continuous), int(config.model.num_scales)

  @jax.jit
  def forward(params, states, x, t):
    return mutils.get_score_fn(sde, model, params, states, train=False,
                               continuous=continuous, num_scales=num_scales)(x, t)

  fwd, lower_s, compile_s = _compile(forward, params, states, x, t)
  _block(fwd(params, states, x, t))
  fwd = [_timed(fwd, params, states, x, t)[:2] for _ in range(max(repeats, 3))]
  res['forward'] = {'compile_s': lower_s + compile_s, 'times_s': [w for w, _ in fwd],
                    'median_s': statistics.median(w for w, _ in fwd),
                    'cpu_median_s': statistics.median(c for _, c in fwd)}
  log(f'forward: median {res["forward"]["median_s"]:.4f} s')

  # the PDS operators alone: one drift (M M^T g) and one noise (M z) on the batch
  @jax.jit
  def pds_ops(p, g, z):
    return p.drift(g), p.noise(z)

  ops, _, _ = _compile(pds_ops, precs['pds'], x, x)
  _block(ops(precs['pds'], x, x))
  n_ops = max(20, repeats)
  op_times = [_timed(ops, precs['pds'], x, x)[0] for _ in range(n_ops)]
  op_cpu = [_timed(ops, precs['pds'], x, x)[1] for _ in range(n_ops)]
  calls = preconditioned_calls_per_step(config)
  res['pds_ops'] = {'drift_plus_noise_median_s': statistics.median(op_times),
                    'calls_per_step': calls,
                    'per_step_s': calls * statistics.median(op_times),
                    'cpu_per_step_s': calls * statistics.median(op_cpu)}

  for name in runs:
    med = statistics.median(times[name])
    o = out[name]
    cmed = statistics.median(cpu_times[name])
    o.update({'run_times_s': times[name], 'run_median_s': med, 's_per_step': med / steps,
              'images_per_s': batch / med, 'image_steps_per_s': batch * steps / med,
              'fwd_per_step': (med / steps) / res['forward']['median_s'],
              'run_cpu_times_s': cpu_times[name], 'cpu_s_per_step': cmed / steps,
              'cpu_fwd_per_step': (cmed / steps) / res['forward']['cpu_median_s']})
  res['samplers'] = out
  res['ratio_pds_over_vanilla'] = out['pds']['s_per_step'] / out['vanilla']['s_per_step']
  # per-repeat ratios (paired by repeat index): their spread shows the timing noise
  res['ratio_per_repeat'] = [p / v for p, v in zip(times['pds'], times['vanilla'])]
  res['cpu_ratio_pds_over_vanilla'] = (out['pds']['cpu_s_per_step']
                                       / out['vanilla']['cpu_s_per_step'])
  res['cpu_ratio_per_repeat'] = [p / v for p, v in zip(cpu_times['pds'], cpu_times['vanilla'])]
  res['expected_ratio_from_ops'] = 1. + (res['pds_ops']['per_step_s']
                                         / out['vanilla']['s_per_step'])
  res['max_rss_bytes'] = _max_rss_bytes()
  res['device_peak_bytes'] = _device_peak_bytes()
  return res


def _mb(v):
  return '-' if v is None else f'{v / 2 ** 20:.1f}'


def format_table(res):
  """Markdown table of a `run_benchmark` result."""
  rows = ['| sampler | compile (s) | wall s / step | PDS / vanilla (wall) | CPU s / step | '
          'PDS / vanilla (CPU) | images / s | network forwards / step | temp MB | '
          'argument MB |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  van = res['samplers']['vanilla']
  for name, o in res['samplers'].items():
    mem = o.get('memory_analysis') or {}
    rows.append(f"| {name} | {o['lower_s'] + o['compile_s']:.1f} | {o['s_per_step']:.4f} | "
                f"{o['s_per_step'] / van['s_per_step']:.3f} | {o['cpu_s_per_step']:.4f} | "
                f"{o['cpu_s_per_step'] / van['cpu_s_per_step']:.3f} | "
                f"{o['images_per_s']:.3f} | {o['fwd_per_step']:.2f} | "
                f"{_mb(mem.get('temp_size_in_bytes'))} | "
                f"{_mb(mem.get('argument_size_in_bytes'))} |")
  f = res['forward']
  ops = res['pds_ops']
  rows += ['',
           f"- bare network forward (batch {res['shape'][0]}): {f['median_s']:.4f} s wall, "
           f"{f['cpu_median_s']:.4f} s CPU (compile {f['compile_s']:.1f} s); NFE per run "
           f"{res['nfe']} over {res['steps']} steps",
           f"- PDS operators alone: {ops['drift_plus_noise_median_s'] * 1e3:.3f} ms per "
           f"(M M^T g + M z), x {ops['calls_per_step']} per step = "
           f"{ops['per_step_s'] * 1e3:.3f} ms/step -> expected ratio "
           f"{res['expected_ratio_from_ops']:.4f}",
           '- per-repeat ratios, wall: ' + ', '.join(f'{r:.3f}' for r in res['ratio_per_repeat'])
           + '; CPU: ' + ', '.join(f'{r:.3f}' for r in res['cpu_ratio_per_repeat']),
           f"- load average (1/5/15 min) before / after the timed runs: "
           f"{'/'.join(f'{v:.1f}' for v in res['loadavg_before'])} / "
           f"{'/'.join(f'{v:.1f}' for v in res['loadavg_after'])} on {res['cpu_count']} CPUs",
           f"- peak memory: process max RSS {_mb(res['max_rss_bytes'])} MB; device peak "
           f"{_mb(res['device_peak_bytes'])} MB"]
  return '\n'.join(rows)


def main(argv):
  del argv
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  config = FLAGS.config
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  batch = FLAGS.batch or int(config.sampling.batch_size)
  res = run_benchmark(config, batch, FLAGS.steps, FLAGS.repeats, warmup=FLAGS.warmup,
                      alpha=FLAGS.alpha, seed=FLAGS.seed,
                      log=lambda m: print(m, flush=True))
  res['command'] = ' '.join(['python'] + sys.argv)
  res['compilation_cache'] = FLAGS.compilation_cache
  print()
  print(format_table(res))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(res, f, indent=1)
    print(f'\nwrote {FLAGS.json}')


if __name__ == '__main__':
  app.run(main)
