"""A small digit classifier for the offline datasets (MNIST, sklearn DIGITS), and its metrics.

Inception features mean little on 28x28 grey digits, so the MNIST/DIGITS configs are scored
with a classifier the project trains itself (`scripts/train_digit_classifier.py`) and ships
in `assets/classifiers/<dataset>_classifier.npz`:

  DigitClassifier: 3 x [3x3 conv (32, 64, 64) + ReLU + 2x2 max pool ('SAME')] -> flatten
                   -> Dense(128) + ReLU  = the "penultimate features" (N, 128)
                   -> Dense(10)          = logits (N, 10)

Metrics from it (`digit_metrics`):
  - `mnist_fd`: Frechet distance between Gaussians fitted to the penultimate features of the
    samples and of the reference images (the usual "FID for MNIST");
  - `confident_share`: share of samples whose top softmax probability exceeds 0.9;
  - `class_histogram`: share of samples per predicted class (10 entries), and
    `class_tv`: its total-variation distance to uniform (0 = perfectly balanced).

Images are (N, H, W, 1) float in [0, 1] (data space, as the samplers write them); the
classifier is trained on the quantised training images (uint8 / 255).
"""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds.models import conv_grad

NUM_CLASSES = 10
FEATURE_DIM = 128
CONFIDENCE = 0.9


class DigitClassifier(nn.Module):
  """(N, H, W, 1) in [0, 1] -> {'features': (N, 128), 'logits': (N, 10)}."""
  widths: tuple = (32, 64, 64)
  feature_dim: int = FEATURE_DIM
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x * 2. - 1.
    for w in self.widths:
      h = nn.Conv(w, (3, 3), padding='SAME',
                  conv_general_dilated=conv_grad.conv_general_dilated)(h)
      h = nn.relu(h)
      h = nn.max_pool(h, (2, 2), strides=(2, 2), padding='SAME')
    h = h.reshape(h.shape[0], -1)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    feats = nn.relu(nn.Dense(self.feature_dim)(h))
    logits = nn.Dense(NUM_CLASSES)(nn.Dropout(self.dropout, deterministic=not train)(feats))
    return {'features': feats, 'logits': logits}


# ----------------------------------------------------------------------------- weights files


def save_classifier(path, params, **meta) -> None:
  """params (flax tree) + scalar metadata -> .npz with keys 'params/<a>/<b>' (atomic)."""
  from flax import traverse_util
  from score_sde_pds import utils
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  arrays = {f'params/{k}': np.asarray(v, np.float32) for k, v in flat.items()}
  arrays.update({f'meta/{k}': np.asarray(v) for k, v in meta.items()})
  utils.atomic_save_npz(path, **arrays)


def load_classifier(path) -> tuple[dict, dict]:
  """-> (params, meta). Raises FileNotFoundError / ValueError naming the file."""
  from flax import traverse_util
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'digit classifier weights {path!r} (config.eval.classifier_path) not found; the '
        'repository ships assets/classifiers/mnist_classifier.npz and digits_classifier.npz, '
        'or train one with `python scripts/train_digit_classifier.py --dataset MNIST`.')
  with np.load(path) as f:
    flat = {k[len('params/'):]: np.asarray(f[k]) for k in f.files if k.startswith('params/')}
    meta = {k[len('meta/'):]: f[k].item() for k in f.files if k.startswith('meta/')}
  if not flat:
    raise ValueError(f'{path!r} holds no classifier parameters (no params/* entries).')
  params = traverse_util.unflatten_dict(flat, sep='/')
  expected = jax.eval_shape(
      lambda: DigitClassifier().init(jax.random.PRNGKey(0), jnp.zeros(
          (1, int(meta.get('image_size', 28)), int(meta.get('image_size', 28)), 1)))['params'])
  exp_flat = traverse_util.flatten_dict(expected, sep='/')
  bad = sorted(set(exp_flat) ^ set(flat)) + sorted(
      k for k in set(exp_flat) & set(flat) if tuple(exp_flat[k].shape) != flat[k].shape)
  if bad:
    raise ValueError(f'{path!r} does not fit DigitClassifier at image size '
                     f'{meta.get("image_size", 28)}: missing, unexpected or misshaped {bad}.')
  return params, meta


def get_classifier_fn(params, batch_size: int = 500):
  """-> fn(images (N, H, W, 1) float [0, 1]) -> {'features': (N, 128), 'logits': (N, 10)} numpy.

  Batches of `batch_size` (the last one padded), one jitted program.
  """
  model = DigitClassifier()
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))

  def fn(images):
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'the digit classifier takes (N, H, W, 1) grey images, got {x.shape}.')
    outs = {'features': [], 'logits': []}
    for i in range(0, x.shape[0], batch_size):
      chunk = x[i:i + batch_size]
      n = chunk.shape[0]
      if n < batch_size and x.shape[0] > batch_size:
        chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
      out = apply(params, chunk)
      for k in outs:
        outs[k].append(np.asarray(out[k])[:n])
    return {k: np.concatenate(v) for k, v in outs.items()}

  return fn


# ----------------------------------------------------------------------------- metrics


def digit_metrics(out: dict, ref: dict | None = None) -> dict:
  """Metrics of classifier outputs `out` ({'features', 'logits'}) against reference
  statistics `ref` (`metrics.load_reference_stats` dict; None skips mnist_fd)."""
  from score_sde_pds.evaluation import metrics
  logits = np.asarray(out['logits'], np.float64)
  z = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  pred = p.argmax(axis=1)
  hist = np.bincount(pred, minlength=NUM_CLASSES) / max(len(pred), 1)
  res: dict[str, Any] = {
      'confident_share': float(np.mean(p.max(axis=1) > CONFIDENCE)),
      'class_histogram': [round(float(h), 4) for h in hist],
      'class_tv': float(0.5 * np.abs(hist - 1. / NUM_CLASSES).sum()),
      'num_samples': int(logits.shape[0])}
  if ref is not None:
    res['mnist_fd'] = metrics.frechet_distance_to_reference(out['features'], ref)
  return res


# ----------------------------------------------------------------------------- training


def train_classifier(train_images, train_labels, *, steps: int = 1500, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0, max_shift: int = 2, dropout: float = 0.3,
                     log=lambda s: None):
  """Trains DigitClassifier with Adam (optax) and random translations of up to `max_shift`
  pixels; deterministic for a seed. images (N, H, W, 1) in [0, 1], labels (N,) int.
  Returns params."""
  import optax
  x_all = np.asarray(train_images, np.float32)
  y_all = np.asarray(train_labels, np.int32)
  model = DigitClassifier(dropout=dropout)
  rng = jax.random.PRNGKey(seed)
  params = model.init(rng, jnp.zeros((1,) + x_all.shape[1:]))['params']
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      logits = model.apply({'params': p}, x, train=True, rngs={'dropout': key})['logits']
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  gen = np.random.default_rng(seed)
  n = x_all.shape[0]
  for k in range(steps):
    idx = gen.choice(n, batch_size, replace=False)
    x = x_all[idx]
    if max_shift:   # per-image random translation, zero fill
      s = max_shift
      padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
      off = gen.integers(0, 2 * s + 1, size=(batch_size, 2))
      h, w = x.shape[1:3]
      x = np.stack([padded[i, a:a + h, b:b + w] for i, (a, b) in enumerate(off)])
    params, opt_state, loss = step(params, opt_state, x, y_all[idx],
                                   jax.random.fold_in(rng, k))
    if k % 100 == 0 or k == steps - 1:
      log(f'step {k}: loss {float(loss):.4f}')
  return params


def accuracy(params, images, labels) -> float:
  out = get_classifier_fn(params)(images)
  return float(np.mean(out['logits'].argmax(axis=1) == np.asarray(labels)))
