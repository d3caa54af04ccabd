"""Entry points behind main.py: `train`, `evaluate`, `sample` (config, workdir).

`sample` draws config.sampling.num_samples images in rounds of
config.sampling.batch_size and writes into `<workdir>/<sample_folder>/`:
  samples_{r}.npz   'samples' uint8 NHWC, 'samples_float' float32 NHWC (data space)
  samples_{r}.png   an image grid of the round
  meta.json         resolved config, NFE, seconds per round, devices, versions
Round r holds global samples k = r B ... r B + B - 1, and sample k draws all its noise
from fold_in(PRNGKey(config.sampling.seed), k). Every file is written atomically; a
rerun of the same command skips the rounds already on disk, so an interrupted run loses
nothing it had written and finishes with the files an uninterrupted run writes.
"""
from __future__ import annotations

import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds import sampling, sde_lib, utils

log = logging.getLogger(__name__)


class SamplingDivergedError(RuntimeError):
  """A round produced NaN or Inf; it was not saved."""


# ----------------------------------------------------------------------------- validation


def validate_config(config, workdir=None, mode='sample'):
  """Checks every config value used by `mode` before any compute.

  Raises ValueError / FileNotFoundError naming the key, the value and what is allowed.
  Returns (sde, eps, preconditioner); the preconditioner (statistics files read once) is
  None unless mode is 'sample' or 'eval'.
  """
  from score_sde_pds.models import utils as mutils
  from score_sde_pds import datasets
  mutils.check_model_config(config)            # unknown model names, image sizes it cannot take
  if str(config.data.dataset).upper() != 'GAUSSIAN_FIELD':
    datasets.check_dataset_name(config)
  size, ch = config.data.image_size, config.data.num_channels
  if not (isinstance(size, int) and size >= 1):
    raise ValueError(f'config.data.image_size must be a positive integer, got {size!r}.')
  if not (isinstance(ch, int) and ch >= 1):
    raise ValueError(f'config.data.num_channels must be a positive integer, got {ch!r}.')
  if int(config.model.num_scales) < 1:
    raise ValueError(f'config.model.num_scales must be >= 1, got {config.model.num_scales!r}.')
  sde, eps = sde_lib.get_sde(config)
  precond = None
  s = config.sampling
  if mode in ('sample', 'eval'):
    if int(s.batch_size) < 1:
      raise ValueError(f'config.sampling.batch_size must be >= 1, got {s.batch_size!r}.')
    if int(s.num_samples) < 1:
      raise ValueError(f'config.sampling.num_samples must be >= 1, got {s.num_samples!r}.')
    if int(s.batch_size) % jax.device_count():
      raise ValueError(f'config.sampling.batch_size={s.batch_size} must be divisible by the '
                       f'number of devices ({jax.device_count()}).')
    shape = (int(s.batch_size), size, size, ch)
    # builds (and so validates) predictor/corrector names, snr, n_steps, method, pds mode
    sampling.get_sampler_from_config(config, sde, shape, eps)
    precond = build_preconditioner(config, workdir)
  return sde, eps, precond


def build_preconditioner(config, workdir=None):
  """The PDS operator of config.sampling.pds (identity when disabled).

  For the analytic oracle with no statistics files, the oracle's exact statistics are
  used (data space [0, 1], `sweep.oracle_statistics`): R = log(1 + E|F x|^2), A = E[x^2].
  The operator carries `pds_info`, the record of what was chosen (the alpha, 'inf' for
  vanilla, and the Gaussian proxy's predicted Frechet distances; see
  `Preconditioner.from_config`'s `info`) for meta.json: a plain attribute, not part of
  the pytree (tree maps drop it).
  """
  from score_sde_pds import preconditioning
  pds = config.sampling.pds
  stats = None
  if (pds.enabled and config.model.name == 'analytic_gaussian' and pds.filter != 'parametric'
      and not pds.freq_stats and not pds.space_stats):
    from score_sde_pds import sweep
    stats = sweep.oracle_statistics(config)
  info = {}
  precond = preconditioning.Preconditioner.from_config(config, workdir, stats=stats, info=info)
  if info.get('enabled'):
    log.info('PDS: %s', ', '.join(f'{k}={v}' for k, v in info.items()))
  object.__setattr__(precond, 'pds_info', info)
  return precond


# ----------------------------------------------------------------------------- models


def _checkpoint_path(config, workdir):
  """config.model.checkpoint; else <workdir>/checkpoints when it holds a checkpoint; else the
  config's bundled config.model.default_checkpoint (resolved under workdir, the current
  directory, then the repository root); else <workdir>/checkpoints (for the error message)."""
  from score_sde_pds import checkpoints
  explicit = config.model.get('checkpoint', '') or ''
  if explicit:
    return explicit
  own = os.path.join(workdir, 'checkpoints')
  bundled = config.model.get('default_checkpoint', '') or ''
  if bundled:
    try:
      checkpoints.find_checkpoint(own, int(config.model.get('ckpt_id', 0) or 0) or None)
    except FileNotFoundError:
      return utils.resolve_path(bundled, workdir, 'config.model.default_checkpoint')
  return own


def check_inputs(config, workdir):
  """Fails fast, with ONE message, when the checkpoint or PDS statistics files are missing.

  Says where each file must go and how to get it.
  """
  from score_sde_pds import checkpoints, preconditioning
  missing = []
  if config.model.name != 'analytic_gaussian':
    try:
      checkpoints.find_checkpoint(_checkpoint_path(config, workdir),
                                  int(config.model.get('ckpt_id', 0) or 0) or None)
    except FileNotFoundError as e:
      missing.append(f'- model checkpoint: {e} Or set --config.model.checkpoint=PATH.')
  pds = config.sampling.pds
  if pds.enabled and pds.filter == 'statistics':
    for key in ('freq_stats', 'space_stats'):
      path = pds.get(key, '')
      if not path:
        continue
      try:
        preconditioning._resolve_path(path, workdir, f'config.sampling.pds.{key}')
      except FileNotFoundError as e:
        missing.append(
            f'- PDS statistics: {e}. Put the file at {os.path.join(workdir, path)}: compute it '
            f'with `python scripts/compute_pds_statistics.py --config <this config> '
            f'--output_dir {os.path.join(workdir, os.path.dirname(path) or ".")}` from the '
            'training data, or use the statistics files distributed with fudan-zvg/PDS '
            '(same (C,H,W) .npy layout); or disable PDS with '
            '--config.sampling.pds.enabled=False.')
  if missing:
    raise FileNotFoundError('missing inputs for sampling:\n' + '\n'.join(missing))


def load_model(config, workdir):
  """Returns (model, states, params): the analytic oracle, or the network with the EMA
  parameters of the official checkpoint at config.model.checkpoint or <workdir>/checkpoints.

  Networks are not initialised (no forward pass at full size): the checkpoint is checked
  against jax.eval_shape of the model's init.
  """
  from score_sde_pds.models import utils as mutils
  model_cls = mutils.get_model(config.model.name)
  if hasattr(model_cls, 'init_from_config'):
    return mutils.init_model(jax.random.PRNGKey(config.seed), config)
  from score_sde_pds import checkpoints
  model = model_cls(config=config)
  shapes = jax.eval_shape(lambda r: mutils.init_model(r, config, jit=False)[1],
                          jax.random.PRNGKey(0))
  if jax.tree_util.tree_leaves(shapes):
    raise NotImplementedError(f'model {config.model.name!r} has non-parameter state '
                              f'{list(shapes)}; restoring it is not implemented.')
  ckpt_id = int(config.model.get('ckpt_id', 0) or 0) or None
  which = str(config.model.get('weights', 'ema'))
  if which not in ('ema', 'model'):
    raise ValueError(f"config.model.weights must be 'ema' (the EMA weights) or 'model' (the "
                     f'raw weights), got {which!r}.')
  params = checkpoints.restore_official(_checkpoint_path(config, workdir), config,
                                        ckpt_id=ckpt_id, which=which)
  params = jax.tree.map(jnp.asarray, params)
  return model, {}, params


# ----------------------------------------------------------------------------- sampling


def _round_path(folder, r, ext):
  return os.path.join(folder, f'samples_{r}.{ext}')


def _round_done(folder, r):
  path = _round_path(folder, r, 'npz')
  if not os.path.exists(path):
    return False
  try:
    with np.load(path) as f:
      return 'samples' in f.files and 'samples_float' in f.files
  except Exception:  # a file from a foreign writer that is unreadable: redo the round
    return False


def sample(config, workdir, sample_folder='samples'):
  """Draws config.sampling.num_samples samples into <workdir>/<sample_folder>/ (resumable)."""
  from score_sde_pds import datasets
  check_inputs(config, workdir)
  sde, eps, precond = validate_config(config, workdir, mode='sample')
  s = config.sampling
  B, size, ch = int(s.batch_size), config.data.image_size, config.data.num_channels
  folder = os.path.join(workdir, sample_folder)
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):   # temporaries of a killed run
      if name.startswith('.') and name.endswith('.tmp'):
        os.remove(os.path.join(folder, name))
    utils.atomic_write_json(os.path.join(workdir, 'config.json'), utils.config_to_dict(config))

  model, states, params = load_model(config, workdir)
  inverse_scaler = datasets.get_data_inverse_scaler(config)
  from score_sde_pds import pilot
  precond = pilot.check_auto_alpha(config, workdir, sde, eps, model, params, states, precond,
                                   inverse_scaler=inverse_scaler)
  sampling_fn = sampling.get_sampling_fn(config, sde, model, (B, size, size, ch), eps,
                                         inverse_scaler=inverse_scaler, preconditioner=precond)
  num_rounds = math.ceil(int(s.num_samples) / B)
  meta_path = os.path.join(folder, 'meta.json')
  meta = {'config': utils.config_to_dict(config), 'num_rounds': num_rounds, 'batch_size': B,
          'num_samples': int(s.num_samples), 'sde_N': sde.N, 'eps': eps,
          'device_count': jax.device_count(), 'process_count': jax.process_count(),
          'backend': jax.default_backend(), 'versions': utils.versions(), 'rounds': {},
          'pds': getattr(precond, 'pds_info', None)}
  if os.path.exists(meta_path):
    try:
      import json
      with open(meta_path) as f:
        meta['rounds'] = json.load(f).get('rounds', {})
    except Exception:  # unreadable meta: start its round record afresh
      pass
  rng = jax.random.PRNGKey(int(s.seed))
  todo = [r for r in range(num_rounds) if not _round_done(folder, r)]
  log.info('%d of %d rounds to sample into %s', len(todo), num_rounds, folder)
  try:
    from tqdm import tqdm
    iterator = tqdm(todo, desc='sampling rounds', disable=not is_writer)
  except ImportError:
    iterator = todo
  for r in iterator:
    t0 = time.time()
    x, nfe, info = sampling_fn.with_info(rng, params, states, offset=r * B)
    x = jax.block_until_ready(x)
    seconds = time.time() - t0
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      x = multihost_utils.process_allgather(x, tiled=True)
    x = np.asarray(x, np.float32)
    bad = int(info['first_nonfinite_step'])
    if bad >= 0 or not np.all(np.isfinite(x)):
      raise SamplingDivergedError(
          f'round {r} (samples {r * B}..{r * B + B - 1}) diverged: non-finite values first '
          f'appeared at sampler step {bad} of {sde.N}; nothing was saved for this round. '
          'Check the checkpoint, config.sampling.snr and the PDS statistics/alpha.')
    keep = min(B, int(s.num_samples) - r * B)
    x = x[:keep]
    if is_writer:
      u8 = utils.to_uint8(x)
      utils.atomic_save_npz(_round_path(folder, r, 'npz'), samples=u8, samples_float=x)
      utils.atomic_write_bytes(_round_path(folder, r, 'png'), utils.png_bytes(utils.image_grid(u8)))
      meta['rounds'][str(r)] = {'nfe': int(nfe), 'seconds': round(seconds, 4), 'samples': keep}
      utils.atomic_write_json(meta_path, meta)
  if is_writer:
    utils.atomic_write_json(meta_path, meta)
  if bool(config.eval.get('after_sampling', False)):
    from score_sde_pds.evaluation import evaluator
    result = evaluate_samples(config, workdir, folder)
    if result is not None:
      print(evaluator.summary_line(result), flush=True)
  return folder


def load_samples(folder):
  """Concatenates samples_{r}.npz of a sample folder in round order -> (N,H,W,C) float32."""
  import re
  files = [f for f in os.listdir(folder) if re.fullmatch(r'samples_\d+\.npz', f)]
  files.sort(key=lambda f: int(f[8:-4]))
  if not files:
    raise FileNotFoundError(f'no samples_<r>.npz files in {folder}; run --mode sample first.')
  return np.concatenate([np.load(os.path.join(folder, f))['samples_float'] for f in files])


# ----------------------------------------------------------------------------- evaluation


def evaluate(config, workdir, sample_folder='samples'):
  """Scores the samples in <workdir>/<sample_folder> (config.eval.sample_folder overrides the
  argument) and writes eval.json there.

  For the analytic oracle: the exact Frechet distance to the target field and the
  per-frequency variance errors. For MNIST/DIGITS: MNIST-FD, confident share and class
  histogram from the project's digit classifier; for other images FID/KID/IS with the FID
  Inception weights of config.eval.inception_path (score_sde_pds.evaluation.evaluator).
  """
  folder = os.path.join(workdir, config.eval.get('sample_folder', '') or sample_folder)
  return evaluate_samples(config, workdir, folder)


def evaluate_samples(config, workdir, folder):
  """`evaluate` on an explicit sample folder path."""
  from score_sde_pds import datasets
  from score_sde_pds.models import analytic
  if config.model.name != 'analytic_gaussian':
    from score_sde_pds.evaluation import evaluator
    if jax.process_index() != 0:
      return None
    return evaluator.evaluate_folder(config, folder, workdir)
  field = analytic.GaussianField.from_config(config)
  x = load_samples(folder)
  x = np.asarray(datasets.get_data_scaler(config)(x))
  spec = analytic.measured_spectrum(x, mean=np.asarray(field.mean))
  rel = spec / np.asarray(field.spectrum) - 1.
  result = {'metric': 'frechet_distance', 'num_samples': int(x.shape[0]),
            'frechet_distance': analytic.frechet_distance(x, field),
            'spectrum_rel_error_mean': float(np.mean(np.abs(rel))),
            'spectrum_rel_error_max': float(np.max(np.abs(rel))),
            'spectrum_log_ratio_mean': float(np.mean(np.log(spec / np.asarray(field.spectrum))))}
  result['value'] = result['frechet_distance']
  if jax.process_index() == 0:
    utils.atomic_write_json(os.path.join(folder, 'eval.json'), result)
  return result


# ----------------------------------------------------------------------------- training


def train(config, workdir):
  """Denoising score matching training (score_sde_pds.train_lib), resumable."""
  from score_sde_pds import train_lib
  return train_lib.train(config, workdir)
