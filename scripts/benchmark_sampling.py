"""Speed of the PC sampler against its physical floor and against the official score_sde.

  python scripts/benchmark_sampling.py --config configs/ve/cifar10_ncsnpp_continuous.py \
      --batch 8 --steps 10 --rounds 3 [--preset tiny] [--checkpoint PATH] \
      [--official_score_sde /path/to/patched/score_sde] [--score_sde_pytorch PATH] \
      [--pds_pytorch PATH] [--dtype float32|bfloat16] \
      [--json bench.json] [--config.model.nf=64 ...]

Everything runs in ONE process, on one set of weights: random ones from
`models.utils.init_model` (no checkpoint needed), or --checkpoint (any file
`checkpoints.restore_official` reads). --preset tiny turns the config into the tiny
FFHQ-style NCSN++ of tests/fixtures (nf 16, ch_mult (1, 2), one res block, attention at
16, FIR, output_skip / input_skip pyramids, VE sigma 0.01..50).

Timed items, all built from config.sampling's predictor / corrector / n_steps_each /
snr with one SDE of --steps steps:
  vanilla           the project's PC sampler, identity preconditioner, progress off
  pds               the same with frequency + space PDS filters (random positive
                    statistics of shape (H, W, C), --alpha)
  vanilla_progress  vanilla with the default progress report (progress_every = -1: a
                    tqdm bar fed by an in-loop host callback every ~5 % of the steps)
  fwd2              the floor of a PC step: a jitted lax.fori_loop of --steps
                    iterations, each two dependent score-function evaluations (network
                    forward + score scaling) on the batch, as a corrector + predictor
                    step makes them, and nothing else
  official          (--official_score_sde PATH) the official score_sde PC sampler
                    (its pmapped sampler, its sde_lib and NCSN++), imported from PATH at
                    run time only, on the same weights and settings
  fwd2_official     the two-forward loop with the official network
  pytorch           (--score_sde_pytorch PATH) score_sde_pytorch's PC sampler on CPU
  pds_pytorch_off,  (--pds_pytorch PATH) fudan-zvg/PDS's PC sampler, PDS off (its
  pds_pytorch       defaults) and on (masks from the same random statistics as `pds`)
  fwd2_pytorch      the two-forward loop with the PyTorch network (a Python loop under
                    torch.no_grad, as the PyTorch samplers run it)
The PyTorch peers are imported from their checkouts at run time (peer_checkouts.py);
with a score_sde_pytorch .pth --checkpoint they sample with its EMA weights, the same
weights as every other item, else with their own random init.
Each item is compiled and run --warmup times untimed, then --rounds rounds time every
item once, in an order that is reversed every other round, so that drift in machine
load hits all of them; ratios are formed per round (the same round's times), and
reported as median with min-max over the rounds. Wall time (what a user waits for) and
process CPU time (all XLA threads; less sensitive to other jobs) are both recorded.

Reported: seconds per step of every item; ratios step / fwd2 (how close the sampler
is to two bare forwards), project / official, pds / vanilla, vanilla_progress /
vanilla (the progress report's cost) and fwd2 / fwd2_official (the networks alone);
compile times, the compiled executable's memory_analysis(), the PDS operators' cost
alone (one M M^T g + one M z per preconditioned call) and the process max RSS.

Prints tables and writes everything to --json.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                lock_config=False)
flags.DEFINE_integer('batch', 0, 'Global batch size; 0 -> config.sampling.batch_size.')
flags.DEFINE_integer('steps', 20, 'Number of sampler steps N (sde.N).')
flags.DEFINE_integer('rounds', 3, 'Timed rounds (every item once per round).')
flags.DEFINE_integer('repeats', 0, 'Deprecated alias of --rounds (used when > 0).')
flags.DEFINE_integer('warmup', 1, 'Untimed runs per item after compilation.')
flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                  'Network compute dtype (config.model.dtype); default: the config.')
flags.DEFINE_enum('preset', '', ['', 'tiny'], "'tiny': the tiny FFHQ-style NCSN++ of "
                  'tests/fixtures (the model of the side-by-side peer benchmark).')
flags.DEFINE_string('checkpoint', '', 'Weights to time with (checkpoints.restore_official); '
                    "'' -> random weights of init_model.")
flags.DEFINE_string('official_score_sde', '', 'Path to a yang-song/score_sde checkout '
                    'patched for current JAX/Flax: also time its PC sampler.')
flags.DEFINE_string('score_sde_pytorch', '', 'Path to a yang-song/score_sde_pytorch '
                    'checkout: also time its PC sampler (needs torch).')
flags.DEFINE_string('pds_pytorch', '', 'Path to a fudan-zvg/PDS checkout: also time its '
                    'PC sampler with PDS on and off (needs torch).')
flags.DEFINE_bool('pds', True, 'Time the PDS sampler.')
flags.DEFINE_bool('progress', True, 'Time the sampler with the default progress report.')
flags.DEFINE_float('alpha', 5.0, 'PDS filter strength (> 1).')
flags.DEFINE_integer('seed', 0, 'Seed of the weights, the statistics and the sampler.')
flags.DEFINE_string('json', '', 'Write the results to this JSON file.')
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable), as main.py.")
flags.mark_flags_as_required(['config'])

from benchmark_presets import apply_preset, random_statistics  # noqa: E402
import peer_checkouts  # noqa: E402  (imports neither JAX nor torch)


# ----------------------------------------------------------------------------- helpers


def _block(tree):
  import jax
  return jax.block_until_ready(tree)


def _max_rss_bytes():
  """Peak resident set size of this process (bytes; ru_maxrss is KiB on Linux)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss) * (1 if sys.platform == 'darwin' else 1024)


def _memory_analysis(compiled):
  """Byte sizes of a compiled executable's buffers (dict), or None if not reported."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # backends without the API
    return None
  if m is None:
    return None
  out = {}
  for key in ('temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
              'generated_code_size_in_bytes'):
    val = getattr(m, key, None)
    if val is not None:
      out[key] = int(val)
  return out or None


def _timed(fn):
  """(wall s, process CPU s) of fn() up to block_until_ready."""
  c0, t0 = time.process_time(), time.perf_counter()
  _block(fn())
  return time.perf_counter() - t0, time.process_time() - c0


def init_network(config, seed, checkpoint=''):
  """(model, states, params): init_model's random weights, or the --checkpoint's."""
  import jax
  from score_sde_pds import checkpoints
  from score_sde_pds.models import utils as mutils
  rng = jax.random.PRNGKey(seed)
  if hasattr(mutils.get_model(config.model.name), 'init_from_config'):
    return mutils.init_model(rng, config)
  holder = {}

  def init(r):
    model, states, params = mutils.init_model(r, config, jit=False)
    holder['model'] = model   # a flax Module: configuration only, no arrays
    return states, params

  if checkpoint:
    states, _ = jax.eval_shape(init, rng)
    params = jax.device_put(checkpoints.restore_official(checkpoint, config))
    return holder['model'], states, params
  states, params = jax.jit(init)(rng)
  return holder['model'], states, params


def random_pds(shape, alpha, seed):
  """A frequency + space preconditioner from random positive statistics of (H, W, C)."""
  from score_sde_pds import preconditioning
  freq, space = random_statistics(shape, seed)
  return preconditioning.Preconditioner.from_statistics(
      freq_stats=freq, space_stats=space, alpha=alpha, shape=shape)


def preconditioned_calls_per_step(config):
  """(drift, noise) pairs the PDS sampler applies per step for config.sampling."""
  s = config.sampling
  pred = str(s.predictor).lower() in ('reverse_diffusion', 'euler_maruyama')
  corr = str(s.corrector).lower() in ('langevin', 'ald')
  return int(pred) + int(corr) * int(s.n_steps_each)


def two_forward_loop(score_fn_of_params, sde, shape, steps, eps):
  """jit(params, x) -> x after `steps` iterations of two dependent score evaluations.

  The floor of one PC step with one corrector step: the network runs twice on the batch,
  the second time on the first result, at the step's time t_k = linspace(T, eps, N)[k].
  """
  import jax
  import jax.numpy as jnp

  @jax.jit
  def loop(params, x):
    score_fn = score_fn_of_params(params)
    ts = jnp.linspace(sde.T, eps, steps)

    def body(k, x):
      t = jnp.full((shape[0],), ts[k], x.dtype)
      x = x + 1e-6 * score_fn(x, t)
      return x + 1e-6 * score_fn(x, t)

    return jax.lax.fori_loop(0, steps, body, x)

  return loop


def sampler_overhead(shape, steps, rounds, log=print):
  """Per-step cost of the sampler's own work besides the network, each in a fori_loop.

  Items (ms per PC step with one corrector step, i.e. two noise draws):
    keys_noise        the project's per-sample randomness: fold_in of the step index
                      into each sample's key, then fold_in of the tag and one normal
                      draw per sample, twice (sampling.sample_keys / _normal_fn)
    batched_noise     the official sampler's: random.split + one batched normal draw,
                      twice (the same number of Gaussian numbers)
    norms_finite      the snr rule's per-sample norms and batch means (2 x 2 norms) and
                      the non-finite tracking (one all-finite reduction)
    report            one progress report: the unordered jax.debug.callback the sampler
                      makes per chunk (host function a no-op), with its scalar argument
  Returns {name: ms per step (median over rounds, wall)} and the CPU-time version.
  """
  import jax
  import jax.numpy as jnp
  from score_sde_pds import sampling

  noise = sampling._normal_fn(shape)
  keys0 = sampling.sample_keys(jax.random.PRNGKey(0), 0, shape[0])

  def keys_noise(k, x):
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys0, k + 1)
    return x + 1e-3 * (noise(step_keys, 1) + noise(step_keys, 0))

  def batched_noise(k, x):
    rng = jax.random.fold_in(jax.random.PRNGKey(0), k)
    r1, r2 = jax.random.split(rng)
    return x + 1e-3 * (jax.random.normal(r1, shape) + jax.random.normal(r2, shape))

  def norms_finite(k, x):
    del k
    a = jnp.mean(sampling._norms(x)) + jnp.mean(sampling._norms(2. * x))
    b = jnp.mean(sampling._norms(x + 1.)) + jnp.mean(sampling._norms(x - 1.))
    ok = sampling._all_finite(x)
    return x * jnp.where(ok, 1., 0.5) + 1e-9 * (a + b)

  def report(k, x):
    jax.debug.callback(lambda s, _: None, k, x[(0,) * x.ndim])
    return x * 1.0001

  fns = {}
  x = jnp.ones(shape)
  for name, body in (('keys_noise', keys_noise), ('batched_noise', batched_noise),
                     ('norms_finite', norms_finite), ('report', report)):
    f = jax.jit(lambda x, body=body: jax.lax.fori_loop(0, steps, body, x)).lower(x).compile()
    _block(f(x))
    fns[name] = lambda f=f: f(x)
  wall = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for r in range(rounds):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      w, c = _timed(fns[name])
      wall[name].append(w / steps * 1e3)
      cpu[name].append(c / steps * 1e3)
  out = {'wall_ms_per_step': {k: statistics.median(v) for k, v in wall.items()},
         'cpu_ms_per_step': {k: statistics.median(v) for k, v in cpu.items()}}
  log('sampler overhead (ms/step, wall): ' + ', '.join(
      f'{k} {v:.3f}' for k, v in out['wall_ms_per_step'].items()))
  return out


# ----------------------------------------------------------------------------- official


class OfficialScoreSde:
  """The official score_sde (JAX) PC sampler, imported from a patched checkout at run time.

  Nothing of it is part of this repository: its modules (`sampling`, `sde_lib`,
  `models.*`) are imported from `path` in isolation (peer_checkouts.import_checkout).
  The network is its NCSN++ class built from our config (same keys) and takes our
  parameter tree as it is.
  """

  def __init__(self, path, config):
    path = os.path.abspath(os.path.expanduser(path))
    try:
      mods = peer_checkouts.import_checkout(
          path, ('sampling', 'sde_lib', 'models.utils', f'models.{config.model.name}'))
    except ValueError as e:
      raise ValueError(f'--official_score_sde: {e}') from e
    except ImportError as e:
      raise ImportError(f'importing score_sde from {path} failed ({e}); apply the '
                        'compatibility patch for current JAX/Flax first.') from e
    self.sampling, self.sde_lib = mods['sampling'], mods['sde_lib']
    self.mutils = mods['models.utils']
    self.path = path
    self.model = self.mutils.get_model(config.model.name)(config=config)

  def sde(self, config, steps):
    return peer_checkouts.peer_sde(self.sde_lib, config, steps)

  def pc_sampler(self, config, shape, steps, eps, params, states, seed):
    """A zero-argument function running the official pmapped PC sampler once."""
    import jax
    from flax import jax_utils
    s = config.sampling
    n_dev = jax.local_device_count()
    fn = self.sampling.get_pc_sampler(
        self.sde(config, steps), self.model, (shape[0] // n_dev,) + tuple(shape[1:]),
        self.sampling.get_predictor(str(s.predictor).lower()),
        self.sampling.get_corrector(str(s.corrector).lower()), lambda x: x, snr=float(s.snr),
        n_steps=int(s.n_steps_each), probability_flow=bool(s.probability_flow),
        continuous=bool(config.training.continuous), denoise=bool(s.noise_removal), eps=eps)
    state = self.mutils.State(step=0, optimizer=None, lr=0., model_state=states,
                              ema_rate=0.999, params_ema=params, rng=None)
    pstate = jax_utils.replicate(state)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_dev)
    return lambda: fn(keys, pstate)[0]

  def score_fn_of_params(self, sde, config, states):
    def make(params):
      return self.mutils.get_score_fn(sde, self.model, params, states, train=False,
                                      continuous=bool(config.training.continuous))
    return make


# ----------------------------------------------------------------------------- benchmark


def _ratio_stats(num, den):
  """Per-round ratios num[r] / den[r] -> {'median', 'min', 'max', 'rounds'}."""
  r = [a / b for a, b in zip(num, den)]
  return {'median': statistics.median(r), 'min': min(r), 'max': max(r), 'rounds': r}


def run_benchmark(config, batch, steps, rounds, warmup=1, alpha=5.0, seed=0, checkpoint='',
                  official_path='', with_pds=True, with_progress=True, pytorch_path='',
                  pds_pytorch_path='', pause=0.2, log=print):
  """Times the items of the module docstring, interleaved; returns a dict of results.

  Args:
    config: a full config (config.sampling drives predictor/corrector/snr/n_steps_each;
      config.sampling.method must be 'pc').
    batch: global batch B; steps: number of sampler steps N; rounds: timed rounds.
    warmup: untimed runs per item after compilation. alpha: PDS filter strength.
    seed: weights / statistics / sampler seed. checkpoint: weights file or ''.
    official_path: patched score_sde checkout or ''.
    pytorch_path, pds_pytorch_path: score_sde_pytorch / fudan-zvg/PDS checkouts or ''
      (PyTorch peers, see scripts/peer_checkouts.py).
    pause: seconds of sleep before each timed run (PyTorch's OpenMP threads spin-wait
      after a parallel region; the pause keeps that off the next item's clock).
    with_pds, with_progress: also time the PDS and the progress-report samplers.
    log: progress printer.
  Returns:
    dict: 'items' {name: times, medians, per step, compile_s, memory}, 'ratios'
    {name: median/min/max/rounds (wall)}, 'cpu_ratios' (process CPU time), and metadata.
  """
  import jax
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
         'rounds': rounds, 'warmup': warmup, 'pause_s': pause, 'alpha': alpha, 'seed': seed,
         'checkpoint': checkpoint, 'official_score_sde': official_path,
         'score_sde_pytorch': pytorch_path, 'pds_pytorch': pds_pytorch_path,
         'dtype': str(config.model.get('dtype', 'float32')),
         'predictor': str(config.sampling.predictor),
         'corrector': str(config.sampling.corrector),
         'n_steps_each': int(config.sampling.n_steps_each),
         'corrector_norm': str(config.sampling.get('corrector_norm', 'batch')),
         'backend': jax.default_backend(), 'device_count': jax.device_count(),
         'device_kind': jax.devices()[0].device_kind, 'cpu_count': os.cpu_count(),
         'jax_version': jax.__version__, 'python': platform.python_version(),
         'xla_flags': os.environ.get('XLA_FLAGS', '')}

  t0 = time.perf_counter()
  model, states, params = init_network(config, seed, checkpoint)
  params = _block(params)
  res['init_s'] = time.perf_counter() - t0
  res['num_params'] = (0 if getattr(model, 'is_analytic', False) else
                       int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params))))
  log(f'model {config.model.name}: {res["num_params"]:,} params, init {res["init_s"]:.1f} s')

  rng = jax.random.PRNGKey(seed)
  inverse_scaler = datasets.get_data_inverse_scaler(config)
  items, info = {}, {}

  def add_sampler(name, precond, progress_every):
    config.sampling.progress_every = progress_every
    fn = sampling.get_sampling_fn(config, sde, model, shape, eps, inverse_scaler=inverse_scaler)
    args = (rng, params, states, precond, 0)
    t0 = time.perf_counter()
    compiled = fn.jitted.lower(*args).compile()
    info[name] = {'compile_s': time.perf_counter() - t0,
                  'memory_analysis': _memory_analysis(compiled)}
    items[name] = lambda: compiled(*args)
    x, nfe, nonfinite = _block(compiled(*args))
    info[name].update(finite=bool(np.all(np.isfinite(np.asarray(x)))),
                      first_nonfinite_step=int(nonfinite['first_nonfinite_step']))
    res['nfe'] = int(nfe)

  ident = preconditioning.Preconditioner.identity()
  add_sampler('vanilla', ident, 0)
  if with_pds:
    add_sampler('pds', random_pds((size, size, ch), alpha, seed), 0)
  if with_progress:
    add_sampler('vanilla_progress', ident, -1)
  config.sampling.progress_every = 0

  continuous, num_scales = bool(config.training.continuous), int(config.model.num_scales)
  x0 = jax.random.normal(jax.random.PRNGKey(seed + 1), shape) * 0.5 + 0.5
  floors = {'fwd2': lambda p: mutils.get_score_fn(sde, model, p, states, train=False,
                                                  continuous=continuous,
                                                  num_scales=num_scales)}
  if official_path:
    official = OfficialScoreSde(official_path, config)
    res['official_sampling_py'] = official.sampling.__file__
    t0 = time.perf_counter()
    items['official'] = official.pc_sampler(config, shape, steps, eps, params, states, seed)
    _block(items['official']())
    info['official'] = {'compile_s': time.perf_counter() - t0}
    floors['fwd2_official'] = official.score_fn_of_params(official.sde(config, steps), config,
                                                          states)
  torch_net = None
  torch_ckpt = checkpoint if checkpoint.endswith('.pth') else ''
  for kind, path in (('score_sde_pytorch', pytorch_path), ('pds_pytorch', pds_pytorch_path)):
    if not path:
      continue
    peer = peer_checkouts.PytorchPeer(path, kind, config, torch_ckpt)
    res.setdefault('pytorch_peers', {})[kind] = dict(
        peer_checkouts.describe(peer), weights=torch_ckpt or 'its own random init')
    runs = peer.samplers(config, shape, steps, eps, alpha=alpha, seed=seed, with_pds=with_pds)
    for name, run in runs.items():
      t0 = time.perf_counter()
      out = run()
      info[name] = {'compile_s': time.perf_counter() - t0,
                    'finite': bool(np.all(np.isfinite(out.numpy())))}
      items[name] = lambda run=run: (run(), None)[1]
    torch_net = torch_net or peer
  if torch_net is not None:
    items['fwd2_pytorch'] = torch_net.two_forward_loop(config, shape, steps, eps, x0)
    t0 = time.perf_counter()
    items['fwd2_pytorch']()
    info['fwd2_pytorch'] = {'compile_s': time.perf_counter() - t0}
  for name, make in floors.items():
    loop = two_forward_loop(make, sde, shape, steps, eps)
    t0 = time.perf_counter()
    compiled = loop.lower(params, x0).compile()
    info[name] = {'compile_s': time.perf_counter() - t0}
    items[name] = lambda compiled=compiled: compiled(params, x0)
    _block(items[name]())
  for name in items:
    log(f"{name}: compiled (+ first run) in {info[name]['compile_s']:.1f} s")
    for _ in range(max(0, warmup)):
      log(f'{name}: warm-up run {_timed(items[name])[0]:.2f} s')

  wall = {k: [] for k in items}
  cpu = {k: [] for k in items}
  res['loadavg_before'] = list(os.getloadavg())
  order = list(items)
  for r in range(rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      time.sleep(pause)   # let the previous item's worker threads go idle (OpenMP spins)
      w, c = _timed(items[name])
      wall[name].append(w)
      cpu[name].append(c)
    log(f'round {r}: ' + ', '.join(f'{k} {v[-1] / steps:.4f}' for k, v in wall.items())
        + ' s/step (wall)')
  res['loadavg_after'] = list(os.getloadavg())

  for name in items:
    info[name].update({'wall_s': wall[name], 'cpu_s': cpu[name],
                       'wall_s_per_step': statistics.median(wall[name]) / steps,
                       'cpu_s_per_step': statistics.median(cpu[name]) / steps,
                       'images_per_s': batch / statistics.median(wall[name])})
  res['items'] = info
  pairs = [('vanilla', 'fwd2'), ('pds', 'fwd2'), ('vanilla_progress', 'vanilla'),
           ('pds', 'vanilla'), ('official', 'fwd2_official'), ('vanilla', 'official'),
           ('pds', 'official'), ('fwd2', 'fwd2_official'), ('vanilla', 'pytorch'),
           ('vanilla', 'pds_pytorch_off'), ('pds', 'pds_pytorch'), ('fwd2', 'fwd2_pytorch'),
           ('official', 'pytorch'), ('pytorch', 'fwd2_pytorch')]
  res['ratios'], res['cpu_ratios'] = {}, {}
  for a, b in pairs:
    if a in items and b in items:
      res['ratios'][f'{a}/{b}'] = _ratio_stats(wall[a], wall[b])
      res['cpu_ratios'][f'{a}/{b}'] = _ratio_stats(cpu[a], cpu[b])

  if with_pds:  # the PDS operators alone: one drift (M M^T g) and one noise (M z)
    p = random_pds((size, size, ch), alpha, seed)
    ops = jax.jit(lambda p, g, z: (p.drift(g), p.noise(z))).lower(p, x0, x0).compile()
    _block(ops(p, x0, x0))
    t_ops = statistics.median(_timed(lambda: ops(p, x0, x0))[0] for _ in range(20))
    calls = preconditioned_calls_per_step(config)
    res['pds_ops'] = {'drift_plus_noise_s': t_ops, 'calls_per_step': calls,
                      'per_step_s': calls * t_ops}
  res['sampler_overhead'] = sampler_overhead(shape, steps, rounds, log)
  res['max_rss_bytes'] = _max_rss_bytes()
  return res


def _mb(v):
  return '-' if v is None else f'{v / 2 ** 20:.1f}'


def format_table(res):
  """Markdown tables of a `run_benchmark` result."""
  rows = ['| item | compile (s) | wall s / step | CPU s / step | images / s | temp MB |',
          '| --- | ---: | ---: | ---: | ---: | ---: |']
  for name, o in res['items'].items():
    mem = o.get('memory_analysis') or {}
    rows.append(f"| {name} | {o['compile_s']:.1f} | {o['wall_s_per_step']:.4f} | "
                f"{o['cpu_s_per_step']:.4f} | {o['images_per_s']:.3f} | "
                f"{_mb(mem.get('temp_size_in_bytes'))} |")
  rows += ['', '| ratio (per round) | wall median | wall min-max | CPU median | CPU min-max |',
           '| --- | ---: | ---: | ---: | ---: |']
  for key, r in res['ratios'].items():
    c = res['cpu_ratios'][key]
    rows.append(f"| {key} | {r['median']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
                f"{c['median']:.3f} | {c['min']:.3f}-{c['max']:.3f} |")
  rows += ['', f"- {res['config_model']} {res['num_params']:,} params, batch {res['shape'][0]}"
           f", {res['steps']} steps, NFE {res['nfe']}, {res['rounds']} rounds; "
           f"{res['backend']} x{res['device_count']}, {res['cpu_count']} CPUs, "
           f"jax {res['jax_version']}"]
  if 'pds_ops' in res:
    ops = res['pds_ops']
    rows.append(f"- PDS operators alone: {ops['drift_plus_noise_s'] * 1e3:.3f} ms per "
                f"(M M^T g + M z), x {ops['calls_per_step']} per step = "
                f"{ops['per_step_s'] * 1e3:.3f} ms/step")
  ov = res.get('sampler_overhead')
  if ov:
    rows.append('- sampler work besides the network, ms per step (wall / CPU): ' + ', '.join(
        f"{k} {v:.3f} / {ov['cpu_ms_per_step'][k]:.3f}" for k, v in ov['wall_ms_per_step'].items())
        + f"; two forwards: {res['items']['fwd2']['wall_s_per_step'] * 1e3:.2f} / "
        f"{res['items']['fwd2']['cpu_s_per_step'] * 1e3:.2f}")
  rows.append(f"- load average (1/5/15 min) before / after the timed rounds: "
              f"{'/'.join(f'{v:.1f}' for v in res['loadavg_before'])} / "
              f"{'/'.join(f'{v:.1f}' for v in res['loadavg_after'])}; process max RSS "
              f"{_mb(res['max_rss_bytes'])} MB")
  return '\n'.join(rows)


def main(argv):
  del argv
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  try:
    peer_checkouts.check_checkouts([
        ('official_score_sde', FLAGS.official_score_sde, False),
        ('score_sde_pytorch', FLAGS.score_sde_pytorch, True),
        ('pds_pytorch', FLAGS.pds_pytorch, True)])
  except (ValueError, ImportError) as e:
    raise app.UsageError(str(e)) from e
  config = apply_preset(FLAGS.config, FLAGS.preset)
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  batch = FLAGS.batch or int(config.sampling.batch_size)
  rounds = FLAGS.repeats if FLAGS.repeats > 0 else FLAGS.rounds
  res = run_benchmark(config, batch, FLAGS.steps, rounds, warmup=FLAGS.warmup,
                      alpha=FLAGS.alpha, seed=FLAGS.seed, checkpoint=FLAGS.checkpoint,
                      official_path=FLAGS.official_score_sde, with_pds=FLAGS.pds,
                      with_progress=FLAGS.progress, pytorch_path=FLAGS.score_sde_pytorch,
                      pds_pytorch_path=FLAGS.pds_pytorch, log=lambda m: print(m, flush=True))
  res['command'] = ' '.join(['python'] + sys.argv)
  print()
  print(format_table(res))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(res, f, indent=1)
    print(f'\nwrote {FLAGS.json}')


if __name__ == '__main__':
  app.run(main)
