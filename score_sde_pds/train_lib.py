"""Training loop of score_sde on current JAX: jit + jax.sharding data parallelism, resumable.

`train(config, workdir)` writes into `workdir`:
  config.json                      the resolved config
  train_log.jsonl                  one JSON row per log: step, loss (mean since the last
                                   row), lr, seconds_per_step; eval rows carry eval_loss
  checkpoints/checkpoint_<k>       k = step // snapshot_freq, every snapshot_freq steps and
                                   at the last step (score_sde's naming)
  checkpoints-meta/checkpoint      the preemption checkpoint, every
                                   snapshot_freq_for_preemption steps and at the last step
  samples/iter_<step>/sample.{png,npz}   with config.training.snapshot_sampling

Checkpoint files are `flax.serialization.to_bytes` of the `losses.State` dict
{step, params, opt_state, params_ema, model_state, ema_rate, rng}: `params_ema` is the
official (score_sde) parameter tree, so `checkpoints.restore_official` and
`--mode sample` read them. Every file is written atomically (temporary file +
os.replace).

Determinism and resumption: the batch of update k is a function of (config.seed, k)
only (an epoch permutation seeded by (seed, epoch), flips / dequantisation noise seeded
by (seed, k)), and update k draws its loss noise from fold_in(fold_in(state.rng, 0), k)
(evaluation and snapshot sampling use streams 1 and 2, so they never shift it). A rerun of
the same command restores checkpoints-meta/checkpoint and continues at its step, so a
killed run ends with the same parameters as an uninterrupted one, bit for bit on the
same machine (the grouping of updates into n_jitted_steps chunks is a function of the
step, n_iters and the frequencies only; a rerun with a different n_iters and
n_jitted_steps > 1 may group differently and then agrees up to float rounding).

Parallelism: the global batch config.training.batch_size is split over all devices along
a 1-D Mesh axis 'data'; the State is replicated. Updates are `jax.jit` with
in/out shardings (no pmap); XLA averages the gradient over the global batch.
config.training.n_jitted_steps > 1 runs that many updates in one jitted lax.scan.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from score_sde_pds import datasets, losses, sde_lib, utils

log = logging.getLogger(__name__)

LOG_FILE = 'train_log.jsonl'
_TRAIN_STREAM, _EVAL_STREAM, _SAMPLE_STREAM = 0, 1, 2


# ----------------------------------------------------------------------------- validation


def check_batch_size(config, n_devices: int | None = None, n_processes: int | None = None):
  """Raises ValueError unless config.training.batch_size splits over devices and processes.

  Returns the per-process batch size.
  """
  n_devices = jax.device_count() if n_devices is None else int(n_devices)
  n_processes = jax.process_count() if n_processes is None else int(n_processes)
  b = config.training.batch_size
  if not isinstance(b, (int, np.integer)) or b < 1:
    raise ValueError(f'config.training.batch_size must be a positive integer, got {b!r}.')
  if b % n_devices:
    raise ValueError(f'config.training.batch_size={b} must be divisible by the number of '
                     f'devices ({n_devices}): the global batch is split evenly over them.')
  if b % n_processes:
    raise ValueError(f'config.training.batch_size={b} must be divisible by the number of '
                     f'processes ({n_processes}).')
  return b // n_processes


def validate_train_config(config):
  """Checks the training.* / optim.* values the loop uses, naming the key on error."""
  tr = config.training
  for key in ('n_iters', 'log_freq', 'snapshot_freq', 'snapshot_freq_for_preemption',
              'n_jitted_steps'):
    v = tr[key]
    low = 0 if key == 'n_iters' else 1
    if not isinstance(v, (int, np.integer)) or v < low:
      raise ValueError(f'config.training.{key} must be an integer >= {low}, got {v!r}.')
  if not isinstance(tr.eval_freq, (int, np.integer)):
    raise ValueError(f'config.training.eval_freq must be an integer (<= 0 disables the '
                     f'evaluation loss), got {tr.eval_freq!r}.')
  if not 0. <= float(config.model.ema_rate) < 1.:
    raise ValueError(f'config.model.ema_rate must lie in [0, 1), got {config.model.ema_rate!r}.')
  if not float(config.optim.lr) > 0:
    raise ValueError(f'config.optim.lr must be > 0, got {config.optim.lr!r}.')
  if str(tr.get('init_weights', 'ema')) not in ('ema', 'model'):
    raise ValueError("config.training.init_weights must be 'ema' or 'model', got "
                     f'{tr.init_weights!r}.')
  check_batch_size(config)


def warm_start(state: losses.State, config, optimizer) -> losses.State:
  """A step-0 state whose params and EMA both start from config.training.init_checkpoint.

  The weights (config.training.init_weights: 'ema' or 'model', checked by
  `validate_train_config`) are read by
  `checkpoints.restore_official` (any format it reads: a params file of
  scripts/convert_checkpoint.py, a score_sde checkpoint, a .pth) and checked against the
  config's model; the optimizer state is fresh (Adam moments at zero, so the warmup
  applies again). Fine-tuning, not resuming: a run with a checkpoint in its workdir
  resumes from that and never reads init_checkpoint.
  """
  from score_sde_pds import checkpoints
  tr = config.training
  which = str(tr.get('init_weights', 'ema'))
  path = str(tr.init_checkpoint)
  params = checkpoints.restore_official(path, config, which=which)
  params = jax.tree.map(lambda a, ref: jnp.asarray(a, ref.dtype), params, state.params)
  log.info('Warm start: params and EMA from the %s weights of %s (step 0).', which, path)
  return state.replace(params=params, params_ema=jax.tree.map(jnp.array, params),
                       opt_state=optimizer.init(params))


# ----------------------------------------------------------------------------- data


class StepBatches:
  """Deterministic random access to training batches: `batch(k)` is the batch of update k.

  Update k lies in epoch e = k // (n // B) (drop-remainder epochs); its images are
  perm_e[j B : (j + 1) B] with perm_e = default_rng([seed, e]).permutation(n). Flips
  (p = 1/2) and uniform dequantisation x -> (255 x + u) / 256 use default_rng([seed, k, 1]),
  as the source's flags say. The global batch is the same for any number of processes;
  this process loads rows [r0, r1).

  Args:
    source: `datasets.ImageSource` (images (H, W, C) in [0, 1]).
    batch_size: global batch B.
    seed: data seed.
    rows: (r0, r1) rows of the global batch this process loads.
  """

  def __init__(self, source, batch_size: int, seed: int, rows=None):
    self.source, self.batch_size, self.seed = source, int(batch_size), int(seed)
    self.rows = (0, self.batch_size) if rows is None else tuple(rows)
    n = len(source)
    if n < self.batch_size:
      raise ValueError(f'dataset {source.name!r} has {n} images, fewer than the batch size '
                       f'{self.batch_size} (config.training.batch_size).')
    self.per_epoch = n // self.batch_size
    self._perm_epoch, self._perm = None, None

  def indices(self, k: int) -> np.ndarray:
    """(B,) global image indices of update k."""
    e, j = divmod(int(k), self.per_epoch)
    if self._perm_epoch != e:
      self._perm = np.random.default_rng([self.seed, e]).permutation(len(self.source))
      self._perm_epoch = e
    return self._perm[j * self.batch_size:(j + 1) * self.batch_size]

  def batch(self, k: int) -> np.ndarray:
    """(r1 - r0, H, W, C) float32 in [0, 1]: this process's rows of update k's batch."""
    r0, r1 = self.rows
    idx = self.indices(k)
    x = np.asarray(self.source.get_batch(idx[r0:r1]), np.float32)
    flip_deq = self.source.random_flip or self.source.uniform_dequantization
    if flip_deq:
      g = np.random.default_rng([self.seed, int(k), 1])
      flips = g.random(self.batch_size) < 0.5
      if self.source.random_flip:
        m = flips[r0:r1]
        x[m] = x[m, :, ::-1]
      if self.source.uniform_dequantization:
        u = g.random((self.batch_size,) + x.shape[1:], dtype=np.float32)[r0:r1]
        x = ((u + x * 255.) / 256.).astype(np.float32)
    return x

  def chunk(self, k: int, size: int) -> np.ndarray:
    """Batches of updates k .. k + size - 1 stacked: (size, B_local, H, W, C)."""
    return np.stack([self.batch(k + i) for i in range(size)])


# ----------------------------------------------------------------------------- checkpoints


def state_to_bytes(state: losses.State) -> bytes:
  """msgpack of the State dict (score_sde's `to_bytes(State)`, current field names)."""
  return flax.serialization.to_bytes(jax.device_get(state))


def save_state(path: str, state: losses.State) -> None:
  """Writes the State atomically to `path`."""
  utils.atomic_write_bytes(path, state_to_bytes(state))


def restore_state(path: str, template: losses.State) -> losses.State:
  """Reads a State written by `save_state` into the structure of `template`."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    state = flax.serialization.from_bytes(template, data)
  except Exception as e:
    raise ValueError(
        f'{path}: cannot restore the training state ({type(e).__name__}: {e}). It was '
        'written for a different model/optimizer config, or is corrupt; use the same '
        'config or a fresh workdir.') from e
  # Leaves keep the template's dtypes (msgpack stores them exactly; scalars may widen).
  return jax.tree.map(lambda t, v: np.asarray(v, dtype=t.dtype), template, state)


# ----------------------------------------------------------------------------- logging


def _read_log(path):
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line:
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError:  # a torn last line of a killed run
            pass
  return rows


def _truncate_log(path, step):
  """Drops log rows after `step` (written by a run killed after its last checkpoint)."""
  rows = _read_log(path)
  keep = [r for r in rows if int(r.get('step', 0)) <= step]
  if len(keep) != len(rows):
    utils.atomic_write_bytes(path, ''.join(json.dumps(r) + '\n' for r in keep).encode())


def _append_log(path, row):
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')


# ----------------------------------------------------------------------------- training


def _plan(step, n_iters, k, freqs):
  """Updates to run in one call from `step`: k if step % k == 0 and no log / checkpoint
  boundary (multiple of a frequency) lies strictly inside (step, step + k], else 1."""
  if k <= 1 or step % k:
    return 1
  nxt = min([n_iters] + [(step // f + 1) * f for f in freqs])
  return k if step + k <= nxt else 1


def init_model_fast(rng, config):
  """`models.utils.init_model` run as one jitted function compiled at a low XLA
  optimisation level on CPU (it runs once): a few seconds instead of the ~20 s of eager
  initialisation of an NCSN++ on CPU. Same (model, model_state, params) contract; the
  values equal the eager ones up to float rounding.
  """
  from score_sde_pds.models import utils as mutils
  box = {}

  def init(r):
    model, model_state, params = mutils.init_model(r, config)
    box['model'] = model
    return model_state, params

  lowered = jax.jit(init).lower(rng)
  options = None
  if jax.default_backend() == 'cpu':
    options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  model_state, params = lowered.compile(compiler_options=options)(rng)
  return box['model'], model_state, params


def _data_mesh():
  return Mesh(np.asarray(jax.devices()), ('data',))


def _global_array(local, sharding, global_shape):
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def _write_snapshot_samples(workdir, step, x):
  folder = os.path.join(workdir, 'samples', f'iter_{step}')
  u8 = utils.to_uint8(x)
  utils.atomic_save_npz(os.path.join(folder, 'sample.npz'), samples=u8,
                        samples_float=np.asarray(x, np.float32))
  utils.atomic_write_bytes(os.path.join(folder, 'sample.png'),
                           utils.png_bytes(utils.image_grid(u8)))


def train(config, workdir):
  """Trains config.model on config.data for config.training.n_iters updates (resumable).

  Args:
    config: ml_collections config (training.*, optim.*, model.*, data.* as score_sde).
    workdir: output folder (see the module docstring for its layout).
  Returns:
    The final `losses.State` (replicated over the devices).
  """
  from score_sde_pds.models import utils as mutils
  validate_train_config(config)
  if getattr(mutils.get_model(config.model.name), 'init_from_config', None) is not None:
    raise ValueError(f'config.model.name={config.model.name!r} is an analytic model with '
                     'nothing to train.')
  tr = config.training
  n_iters, K = int(tr.n_iters), int(tr.n_jitted_steps)
  is_writer = jax.process_index() == 0
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  meta_dir = os.path.join(workdir, 'checkpoints-meta')
  meta_path = os.path.join(meta_dir, 'checkpoint')
  log_path = os.path.join(workdir, LOG_FILE)
  if is_writer:
    for d in (workdir, ckpt_dir, meta_dir):
      os.makedirs(d, exist_ok=True)
    utils.atomic_write_json(os.path.join(workdir, 'config.json'), utils.config_to_dict(config))

  # SDE with the training N (not the sampling N = num_scales / speed_up).
  sde, _ = sde_lib.get_sde(config, N=int(config.model.num_scales))

  # Data: the batch of update k depends on (seed, k) only.
  local_batch = check_batch_size(config)
  p = jax.process_index()
  train_src = datasets.get_dataset(config, 'train')
  train_data = StepBatches(train_src, tr.batch_size, int(config.seed),
                           rows=(p * local_batch, (p + 1) * local_batch))
  scaler = datasets.get_data_scaler(config)
  eval_freq = int(tr.eval_freq)
  eval_data = None
  if eval_freq > 0:
    eval_data = StepBatches(datasets.get_dataset(config, 'test'), tr.batch_size,
                            int(config.seed) + 1, rows=(p * local_batch, (p + 1) * local_batch))

  # Model, optimizer, state.
  rng = jax.random.PRNGKey(int(config.seed))
  rng, init_rng = jax.random.split(rng)
  model, model_state, params = init_model_fast(init_rng, config)
  optimizer = losses.get_optimizer(config)
  lr_schedule = losses.get_lr_schedule(config)
  state = losses.init_state(params, model_state, optimizer, float(config.model.ema_rate), rng)
  if os.path.exists(meta_path):
    state = restore_state(meta_path, state)
    log.info('Resuming from %s at step %d.', meta_path, int(state.step))
  elif str(tr.get('init_checkpoint', '') or ''):
    state = warm_start(state, config, optimizer)
  initial_step = int(state.step)
  if is_writer:
    _truncate_log(log_path, initial_step)

  # Sharded, jitted steps.
  mesh = _data_mesh()
  rep = NamedSharding(mesh, P())
  data_sh = NamedSharding(mesh, P('data'))
  chunk_sh = NamedSharding(mesh, P(None, 'data'))
  image_shape = (config.data.image_size, config.data.image_size, config.data.num_channels)
  step_fn = losses.get_step_fn_from_config(config, sde, model, train=True, optimizer=optimizer)
  eval_fn = losses.get_step_fn_from_config(config, sde, model, train=False)

  def one_step(st, batch):
    key = jax.random.fold_in(jax.random.fold_in(st.rng, _TRAIN_STREAM), st.step)
    return step_fn(st, scaler(batch), key)

  def many_steps(st, batches):
    return jax.lax.scan(one_step, st, batches)

  def eval_step(st, batch):
    key = jax.random.fold_in(jax.random.fold_in(st.rng, _EVAL_STREAM), st.step)
    return eval_fn(st, scaler(batch), key)[1]

  train_one = jax.jit(one_step, in_shardings=(rep, data_sh), out_shardings=(rep, rep),
                      donate_argnums=0)
  train_many = jax.jit(many_steps, in_shardings=(rep, chunk_sh), out_shardings=(rep, rep),
                       donate_argnums=0)
  eval_jit = jax.jit(eval_step, in_shardings=(rep, data_sh), out_shardings=rep)
  state = jax.device_put(state, rep)

  sampling_fn = None
  freqs = [int(tr.log_freq), int(tr.snapshot_freq), int(tr.snapshot_freq_for_preemption)]
  if eval_freq > 0:
    freqs.append(eval_freq)

  def load(step, size):
    if size == 1:
      return train_data.batch(step)
    return train_data.chunk(step, size)

  if initial_step >= n_iters:
    log.info('Nothing to do: the checkpoint is at step %d >= config.training.n_iters=%d.',
             initial_step, n_iters)
    return state

  if K > 1 and jax.default_backend() == 'cpu':
    # measured (README, '--mode train'): the small NCSNv2 on MNIST runs 1.80 s per update
    # with K = 5 against 1.07 s with K = 1 on a 2-core CPU
    log.warning('config.training.n_jitted_steps=%d: on XLA:CPU one lax.scan of several '
                'updates ran 1.7x slower per update than n_jitted_steps=1 in our '
                'measurement; set --config.training.n_jitted_steps=1 on a CPU.', K)
  log.info('Training %s on %s from step %d to %d (%d device(s), global batch %d).',
           config.model.name, config.data.dataset, initial_step, n_iters, jax.device_count(),
           tr.batch_size)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  try:
    step = initial_step
    size = _plan(step, n_iters, K, freqs)
    future = pool.submit(load, step, size)
    pending, t_log, steps_since = [], time.time(), 0
    while step < n_iters:
      local = future.result()
      nxt = step + size
      if nxt < n_iters:  # prefetch the next batch(es) while this update runs
        nsize = _plan(nxt, n_iters, K, freqs)
        future = pool.submit(load, nxt, nsize)
      if size == 1:
        batch = _global_array(local, data_sh, (tr.batch_size,) + image_shape)
        state, loss = train_one(state, batch)
        pending.append(loss[None])
      else:
        batch = _global_array(local, chunk_sh, (size, tr.batch_size) + image_shape)
        state, loss = train_many(state, batch)
        pending.append(loss)
      step, steps_since = nxt, steps_since + size
      if nxt < n_iters:
        size = nsize

      last = step == n_iters
      do_log = step % tr.log_freq == 0 or last
      do_meta = step % tr.snapshot_freq_for_preemption == 0 or last
      do_snap = step % tr.snapshot_freq == 0 or last
      do_eval = eval_freq > 0 and step % eval_freq == 0
      if do_log or do_meta or do_snap:
        values = np.concatenate([np.asarray(v) for v in pending])
        if not np.all(np.isfinite(values)):
          bad = step - len(values) + int(np.argmin(np.isfinite(values))) + 1
          raise FloatingPointError(
              f'training diverged: non-finite loss at update {bad}; no checkpoint was '
              f'written after it. Lower config.optim.lr or check the data scaling.')
      if do_log:
        dt = time.time() - t_log
        row = {'step': step, 'loss': float(np.mean(values)),
               'lr': float(lr_schedule(step - 1)),
               'seconds_per_step': round(dt / max(steps_since, 1), 5)}
        log.info('step: %d, training_loss: %.5e, lr: %.3e', step, row['loss'], row['lr'])
        if is_writer:
          _append_log(log_path, row)
        pending, t_log, steps_since = [], time.time(), 0
      if do_eval:
        eb = _global_array(eval_data.batch(step), data_sh, (tr.batch_size,) + image_shape)
        eval_loss = float(eval_jit(state, eb))
        log.info('step: %d, eval_loss: %.5e', step, eval_loss)
        if is_writer:
          _append_log(log_path, {'step': step, 'eval_loss': eval_loss})
      if do_meta and is_writer:
        save_state(meta_path, state)
      if do_snap:
        if is_writer:
          k = step // tr.snapshot_freq
          save_state(os.path.join(ckpt_dir, f'checkpoint_{k}'), state)
          log.info('Saved checkpoint_%d (step %d).', k, step)
        if tr.snapshot_sampling:
          if sampling_fn is None:
            sampling_fn = _build_sampling_fn(config, model)
          key = jax.random.fold_in(jax.random.fold_in(state.rng, _SAMPLE_STREAM), step)
          x, _ = sampling_fn(key, state.params_ema, state.model_state)
          if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
          if is_writer:
            _write_snapshot_samples(workdir, step, np.asarray(x))
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
  return state


def _build_sampling_fn(config, model):
  """score_sde's snapshot sampler: config.sampling.* with the EMA params, a global batch
  of config.sampling.batch_size images mapped back to data space [0, 1]."""
  from score_sde_pds import sampling
  sde, eps = sde_lib.get_sde(config)
  b = int(config.sampling.batch_size)
  if b % jax.device_count():
    raise ValueError(f'config.sampling.batch_size={b} must be divisible by the number of '
                     f'devices ({jax.device_count()}) for snapshot sampling.')
  shape = (b, config.data.image_size, config.data.image_size, config.data.num_channels)
  return sampling.get_sampling_fn(config, sde, model, shape, eps,
                                  inverse_scaler=datasets.get_data_inverse_scaler(config))
