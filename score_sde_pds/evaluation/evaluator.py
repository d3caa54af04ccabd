"""Scoring sample folders and image arrays with the metric of the config's dataset.

- MNIST / DIGITS (`config.data.dataset`): the project's digit classifier
  (`digit_classifier`, weights `config.eval.classifier_path`, default the shipped
  `assets/classifiers/<dataset>_classifier.npz`): MNIST-FD of its penultimate features to
  `config.eval.ref_stats` (default `assets/reference_stats/<dataset>_train.npz`), the share of
  confident samples and the class histogram. Main metric: `mnist_fd`.
- any other image dataset: the FID Inception-v3 (`inception`, weights
  `config.eval.inception_path`, nothing downloaded): FID to `config.eval.ref_stats`, KID when
  the reference file carries features, Inception Score. Main metric: `fid` (or
  `inception_score` without reference statistics).

Images are fed as the uint8 samples of `samples_{r}.npz` divided by 255 (the quantisation
score_sde applies before its FID), so reference statistics are computed on uint8-quantised
data too (scripts/compute_reference_stats.py).

`evaluate_folder` computes features round by round and caches each round's features in
`<folder>/features/<extractor>_<weights hash>_<r>.npz` (with the sha1 of the round's samples),
so an interrupted evaluation resumes and a finished round is never recomputed; it writes
`<folder>/eval.json`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Callable, Optional

import numpy as np

from score_sde_pds import utils

DIGIT_DATASETS = ('MNIST', 'DIGITS')


@dataclasses.dataclass
class Extractor:
  """A feature network. fn: images (N, H, W, C) float [0, 1] -> dict of (N, ...) arrays."""
  name: str
  fn: Callable[[np.ndarray], dict]
  feature_key: str
  weights_path: str
  weights_hash: str
  image_size: Optional[int] = None


def file_sha256(path, chunk=1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(chunk), b''):
      h.update(block)
  return h.hexdigest()


def is_digit_config(config) -> bool:
  return str(config.data.dataset).upper() in DIGIT_DATASETS


def _digit_default(config, kind):
  name = str(config.data.dataset).lower()
  if kind == 'classifier':
    return os.path.join('assets', 'classifiers', f'{name}_classifier.npz')
  return os.path.join('assets', 'reference_stats', f'{name}_train.npz')


def get_extractor(config, workdir=None) -> Extractor:
  """The feature network of the config's dataset (see the module docstring)."""
  ev = config.eval
  if is_digit_config(config):
    from score_sde_pds.evaluation import digit_classifier as dc
    path = utils.resolve_path(ev.get('classifier_path', '') or _digit_default(config, 'classifier'),
                              workdir, 'config.eval.classifier_path')
    params, meta = dc.load_classifier(path)
    size = int(meta.get('image_size', 28))
    base = dc.get_classifier_fn(params, batch_size=int(ev.get('batch_size', 500)) or 500)

    def fn(images):
      x = np.asarray(images, np.float32)
      if x.shape[-1] != 1:                  # colour samples of a digit config: grey
        x = x.mean(axis=-1, keepdims=True)
      if x.shape[1:3] != (size, size):
        import jax
        x = np.asarray(jax.image.resize(x, (x.shape[0], size, size, 1), 'bilinear'))
      return base(x)

    return Extractor('digit_classifier', fn, 'features', path, file_sha256(path), size)
  from score_sde_pds.evaluation import inception
  path = ev.get('inception_path', '') or ''
  if not path:
    raise FileNotFoundError(
        'config.eval.inception_path is not set: FID/KID/IS need the FID Inception weights '
        'pt_inception-2015-12-05-6726825d.pth (pytorch-fid), which nothing here downloads. '
        'Download it on a machine with internet from https://github.com/mseitzer/pytorch-fid/'
        'releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth, copy it here and '
        'pass --config.eval.inception_path=PATH (or convert it once with '
        'scripts/convert_inception.py).')
  path = utils.resolve_path(path, workdir, 'config.eval.inception_path')
  params = inception.load_inception_params(path)
  fn = inception.get_feature_fn(params, dtype=str(ev.get('inception_dtype', 'float32')),
                                batch_size=int(ev.get('batch_size', 50)) or 50)
  return Extractor('inception', fn, 'pool3', path, inception.weights_hash(path))


def load_reference(config, workdir=None, extractor: Optional[Extractor] = None):
  """The reference statistics of config.eval.ref_stats (digit configs: the shipped default),
  or None when none is configured. Checks the feature network it was made with."""
  from score_sde_pds.evaluation import metrics
  path = config.eval.get('ref_stats', '') or ''
  if not path and is_digit_config(config):
    path = _digit_default(config, 'ref')
  if not path:
    return None, ''
  path = utils.resolve_path(path, workdir, 'config.eval.ref_stats')
  ref = metrics.load_reference_stats(path)
  made_with = ref['meta'].get('weights_hash')
  if extractor is not None and made_with and made_with != extractor.weights_hash:
    raise ValueError(
        f'config.eval.ref_stats={path!r} was computed with feature weights {made_with[:12]}... '
        f'but the evaluation uses {extractor.weights_path} ({extractor.weights_hash[:12]}...): '
        'recompute it with scripts/compute_reference_stats.py.')
  return ref, path


def score_outputs(outputs: dict, extractor: Extractor, ref, config, bootstrap: int = 0) -> dict:
  """Metrics from feature-network outputs of N samples (see the module docstring).

  With bootstrap > 0, 'value_std' is the std of the main metric over that many resamples
  (with replacement, seeded) of the N rows: its estimator noise at this N.
  """
  from score_sde_pds.evaluation import metrics
  ev = config.eval
  if extractor.name == 'digit_classifier':
    from score_sde_pds.evaluation import digit_classifier as dc
    res = dc.digit_metrics(outputs, ref)
    res['metric'] = 'mnist_fd' if ref is not None else 'confident_share'
  else:
    feats = outputs['pool3']
    res = {'num_samples': int(feats.shape[0])}
    splits = int(ev.get('is_splits', 10))
    if feats.shape[0] >= splits:
      res['inception_score'], res['inception_score_std'] = metrics.inception_score(
          outputs['logits'], splits=splits)
    if ref is not None:
      res['fid'] = metrics.frechet_distance_to_reference(feats, ref)
      if ref.get('features') is not None:
        res['kid'], res['kid_std'] = metrics.kid(
            feats, ref['features'], num_subsets=int(ev.get('kid_subsets', 100)),
            subset_size=int(ev.get('kid_subset_size', 1000)))
    res['metric'] = 'fid' if ref is not None else 'inception_score'
  res['value'] = res.get(res['metric'])
  if bootstrap and res['value'] is not None:
    gen = np.random.default_rng(0)
    n = next(iter(outputs.values())).shape[0]
    vals = []
    for _ in range(int(bootstrap)):
      idx = gen.integers(0, n, n)
      sub = score_outputs({k: v[idx] for k, v in outputs.items()}, extractor, ref, config)
      vals.append(sub['value'])
    res['value_std'] = float(np.std(vals))
  return res


def quantise(images) -> np.ndarray:
  """float [0, 1] -> uint8 -> float [0, 1] (score_sde's quantisation of samples)."""
  return utils.to_uint8(images).astype(np.float32) / 255.


def extract(extractor: Extractor, images) -> dict:
  """Extractor outputs of float [0, 1] or uint8 images (quantised to uint8 first)."""
  x = np.asarray(images)
  x = x.astype(np.float32) / 255. if x.dtype == np.uint8 else quantise(x)
  return extractor.fn(x)


# ----------------------------------------------------------------------------- folders


def _rounds(folder):
  files = [f for f in os.listdir(folder) if re.fullmatch(r'samples_\d+\.npz', f)]
  return sorted(int(f[8:-4]) for f in files)


def _cache_path(folder, extractor, r):
  return os.path.join(folder, 'features', f'{extractor.name}_{extractor.weights_hash[:12]}_{r}.npz')


def evaluate_folder(config, folder, workdir=None) -> dict:
  """Scores every samples_{r}.npz of `folder`; writes eval.json there; returns the result."""
  if not os.path.isdir(folder) or not _rounds(folder):
    raise FileNotFoundError(f'no samples_<r>.npz files in {folder}; run --mode sample first '
                            '(or point --sample_folder / config.eval.sample_folder at them).')
  extractor = get_extractor(config, workdir)
  ref, ref_path = load_reference(config, workdir, extractor)
  rounds = _rounds(folder)
  outs, cached = [], 0
  try:
    from tqdm import tqdm
    it = tqdm(rounds, desc=f'{extractor.name} features', leave=False)
  except ImportError:
    it = rounds
  for r in it:
    with np.load(os.path.join(folder, f'samples_{r}.npz')) as f:
      u8 = np.asarray(f['samples'])
    digest = hashlib.sha1(u8.tobytes() + str(u8.shape).encode()).hexdigest()
    cache = _cache_path(folder, extractor, r)
    out = None
    if os.path.exists(cache):
      try:
        with np.load(cache) as c:
          if str(c['samples_sha1']) == digest:
            out = {k: np.asarray(c[k]) for k in c.files if k != 'samples_sha1'}
            cached += 1
      except Exception:  # an unreadable cache file is recomputed
        out = None
    if out is None:
      out = extract(extractor, u8)
      utils.atomic_save_npz(cache, samples_sha1=np.asarray(digest), **out)
    outs.append(out)
  outputs = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
  res = score_outputs(outputs, extractor, ref, config)
  res.update({'reference': ref_path, 'weights': extractor.weights_path,
              'weights_sha256': extractor.weights_hash, 'extractor': extractor.name,
              'rounds': len(rounds), 'rounds_from_cache': cached, 'folder': folder})
  utils.atomic_write_json(os.path.join(folder, 'eval.json'), res)
  return res


def summary_line(res: dict) -> str:
  parts = [f'{res["metric"]}={res["value"]:.4g}' if res.get('value') is not None else
           f'{res["metric"]}=n/a']
  for k in ('confident_share', 'class_tv', 'inception_score', 'kid'):
    if k in res and k != res['metric']:
      parts.append(f'{k}={res[k]:.4g}')
  where = f' ({res["folder"]}/eval.json)' if res.get('folder') else ''
  return f'eval: {" ".join(parts)} on {res["num_samples"]} samples{where}'

