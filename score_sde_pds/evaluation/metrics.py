"""Sample-quality metrics on feature vectors: Frechet distance (FID), KID, Inception Score.

All computations run on the host in float64 (numpy/scipy): they are cheap next to feature
extraction, and the matrix square root of FID needs float64 to be trustworthy.

- `frechet_distance(mu1, sigma1, mu2, sigma2)`: the Frechet (2-Wasserstein) distance of two
  Gaussians, |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, Eq. 6;
  Dowson & Landau 1982). The square root is `scipy.linalg.sqrtm`; a singular product
  (fewer samples than dimensions) is regularised by adding `eps` I to both covariances,
  and a numerically complex root whose diagonal has an imaginary part above `imag_tol` is an
  error (the same numerical care as pytorch-fid / TF-GAN).
- `kid(f1, f2)`: Kernel Inception Distance (Binkowski et al. 2018, Eq. 4), the unbiased
  MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
  `num_subsets` random subsets of `subset_size` rows of each set: (mean, std).
- `inception_score(logits)`: exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) on the
  softmax of the logits, over `splits` equal consecutive splits: (mean, std).
- `feature_statistics(f)`: (mu (D,), sigma (D, D)) with the unbiased covariance (ddof 1).
- `load_reference_stats(path)`: reads the reference layouts in use: this project's and
  pytorch-fid's `.npz` (`mu`, `sigma`), and score_sde's `*_stats.npz` (raw `pool_3`
  features, from which mu/sigma are computed and which also allow KID).
"""
from __future__ import annotations

import os
import warnings
import numpy as np


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """features (N, D) -> (mu (D,), sigma (D, D)) in float64; N >= 2."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'feature_statistics needs (N >= 2, D) features, got shape {f.shape}.')
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6,
                     imag_tol: float = 1e-3) -> float:
  """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances.
    eps: diagonal offset added to both covariances when their product's square root is
      not finite (singular covariances).
    imag_tol: largest |imaginary part| tolerated on the diagonal of the square root.
  Returns:
    the distance (float, >= 0 up to rounding).
  """
  from scipy import linalg
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f'frechet_distance: shapes do not match: mu {mu1.shape} vs {mu2.shape}, '
                     f'sigma {s1.shape} vs {s2.shape}.')
  diff = mu1 - mu2
  def sqrtm(m):
    with warnings.catch_warnings():   # singular products are handled below
      warnings.simplefilter('ignore')
      return linalg.sqrtm(m)

  covmean = sqrtm(s1 @ s2)
  if not np.all(np.isfinite(covmean)):
    offset = np.eye(s1.shape[0]) * eps
    covmean = sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if imag > imag_tol:
      raise ValueError(f'frechet_distance: the matrix square root has an imaginary component '
                       f'{imag:.3g} > {imag_tol} (ill-conditioned covariances; use more samples).')
    covmean = covmean.real
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2. * np.trace(covmean))


def _poly_mmd2_unbiased(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3; x (m, d), y (m, d)."""
  d = x.shape[1]
  m = x.shape[0]
  kxx = (x @ x.T / d + 1.) ** 3
  kyy = (y @ y.T / d + 1.) ** 3
  kxy = (x @ y.T / d + 1.) ** 3
  sum_xx = kxx.sum() - np.trace(kxx)
  sum_yy = kyy.sum() - np.trace(kyy)
  return sum_xx / (m * (m - 1)) + sum_yy / (m * (m - 1)) - 2. * kxy.mean()


def kid(features1, features2, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: (mean, std) of the unbiased polynomial-kernel MMD^2 over
  `num_subsets` subsets of min(subset_size, N1, N2) rows drawn without replacement from each
  set (numpy Generator seeded by `seed`). features1 (N1, D), features2 (N2, D).
  """
  f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f'kid: features must be (N, D) with equal D, got {f1.shape} and {f2.shape}.')
  m = min(int(subset_size), f1.shape[0], f2.shape[0])
  if m < 2:
    raise ValueError(f'kid needs at least 2 rows in each set, got {f1.shape[0]} and {f2.shape[0]}.')
  rng = np.random.default_rng(seed)
  vals = np.empty(int(num_subsets))
  for i in range(int(num_subsets)):
    a = f1[rng.choice(f1.shape[0], m, replace=False)]
    b = f2[rng.choice(f2.shape[0], m, replace=False)]
    vals[i] = _poly_mmd2_unbiased(a, b)
  return float(vals.mean()), float(vals.std())


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """Inception Score of (N, K) logits over `splits` consecutive splits: (mean, std)."""
  z = np.asarray(logits, np.float64)
  if z.ndim != 2 or z.shape[0] < splits:
    raise ValueError(f'inception_score needs (N >= splits={splits}, K) logits, got {z.shape}.')
  z = z - z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  p = np.exp(logp)
  scores = []
  for part_logp, part_p in zip(np.array_split(logp, splits), np.array_split(p, splits)):
    log_py = np.log(part_p.mean(axis=0))
    kl = np.sum(part_p * (part_logp - log_py[None]), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------- reference files


def save_reference_stats(path, features=None, *, mu=None, sigma=None, keep_features: int = 0,
                         **metadata) -> None:
  """Writes `mu`, `sigma` (+ `features`, the first `keep_features` rows, for KID, and
  metadata strings/numbers) to an .npz, atomically."""
  from score_sde_pds import utils
  if features is not None:
    mu, sigma = feature_statistics(features)
  if mu is None or sigma is None:
    raise ValueError('save_reference_stats needs features or both mu and sigma.')
  arrays = {'mu': np.asarray(mu, np.float64), 'sigma': np.asarray(sigma, np.float64)}
  if features is not None and keep_features:
    arrays['features'] = np.asarray(features, np.float32)[:int(keep_features)]
  for k, v in metadata.items():
    arrays[k] = np.asarray(v)
  utils.atomic_save_npz(path, **arrays)


def load_reference_stats(path) -> dict:
  """Reads a reference statistics file.

  Layouts: {'mu', 'sigma'} (this project, pytorch-fid `--save-stats`), optionally with
  'features' (for KID) and metadata; or score_sde's {'pool_3', ...} raw features.
  Returns {'mu', 'sigma', 'features' or None, 'meta': {other scalar entries}}.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'reference statistics file {path!r} (config.eval.ref_stats) does not exist; compute it '
        'with `python scripts/compute_reference_stats.py --config <config> --output <file>.npz`, '
        'or use a pytorch-fid stats file (mu, sigma) or score_sde\'s <dataset>_stats.npz.')
  with np.load(path, allow_pickle=False) as f:
    files = set(f.files)
    out = {'features': None, 'meta': {}}
    if {'mu', 'sigma'} <= files:
      out['mu'], out['sigma'] = np.asarray(f['mu'], np.float64), np.asarray(f['sigma'], np.float64)
      if 'features' in files:
        out['features'] = np.asarray(f['features'], np.float64)
    elif 'pool_3' in files:
      feats = np.asarray(f['pool_3'], np.float64).reshape(f['pool_3'].shape[0], -1)
      out['mu'], out['sigma'] = feature_statistics(feats)
      out['features'] = feats
    else:
      raise ValueError(f'reference statistics file {path!r} has entries {sorted(files)}; '
                       "expected 'mu' and 'sigma' (pytorch-fid / this project) or 'pool_3' "
                       '(score_sde).')
    for k in files - {'mu', 'sigma', 'features', 'pool_3'}:
      v = f[k]
      if v.ndim == 0:
        out['meta'][k] = v.item()
  if out['mu'].ndim != 1 or out['sigma'].shape != (out['mu'].shape[0],) * 2:
    raise ValueError(f'reference statistics file {path!r}: mu {out["mu"].shape} and sigma '
                     f'{out["sigma"].shape} do not fit together.')
  return out


def frechet_distance_to_reference(features, ref: dict) -> float:
  """Frechet distance of (N, D) features to a `load_reference_stats` result."""
  mu, sigma = feature_statistics(features)
  if mu.shape != ref['mu'].shape:
    raise ValueError(f'features have dimension {mu.shape[0]} but the reference statistics '
                     f'{ref["mu"].shape[0]}: the reference was made with another feature network.')
  return frechet_distance(mu, sigma, ref['mu'], ref['sigma'])

