"""FID / KID / IS against independent NumPy/SciPy/scikit-learn computations and known cases."""
import numpy as np
import pytest
from scipy import special, stats

from score_sde_pds.evaluation import metrics


def _random_cov(rng, d, scale=1.):
  a = rng.standard_normal((d, d))
  return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _fd_eig(mu1, s1, mu2, s2):
  """Independent route: tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
  w, v = np.linalg.eigh(s1)
  r1 = (v * np.sqrt(w)) @ v.T
  ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(ev, 0, None))))


def test_frechet_distance_matches_eigen_route():
  rng = np.random.default_rng(0)
  d = 16
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d, 3.)
  got = metrics.frechet_distance(mu1, s1, mu2, s2)
  assert got == pytest.approx(_fd_eig(mu1, s1, mu2, s2), rel=1e-9)
  assert got > 1.


def test_shifted_gaussians_closed_form_and_identity():
  d = 10
  mu1 = np.linspace(0, 1, d)
  v1, v2 = np.linspace(0.5, 2., d), np.linspace(3., 1., d)
  shift = np.full(d, 0.3)
  # commuting (diagonal) covariances: FD = |dmu|^2 + sum (sqrt v1 - sqrt v2)^2
  closed = float(np.sum(shift ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
  got = metrics.frechet_distance(mu1, np.diag(v1), mu1 + shift, np.diag(v2))
  assert got == pytest.approx(closed, rel=1e-9)
  # a shared covariance: FD = |dmu|^2 exactly
  s = _random_cov(np.random.default_rng(1), d)
  assert metrics.frechet_distance(mu1, s, mu1 + shift, s) == pytest.approx(
      float(np.sum(shift ** 2)), abs=1e-8)
  assert abs(metrics.frechet_distance(mu1, s, mu1, s)) < 1e-8


def test_fid_of_two_samples_of_one_gaussian_is_estimator_noise():
  rng = np.random.default_rng(2)
  d, n = 8, 20000
  cov = _random_cov(rng, d)
  chol = np.linalg.cholesky(cov)
  a = rng.standard_normal((n, d)) @ chol.T
  b = rng.standard_normal((n, d)) @ chol.T + 0.5
  same = metrics.frechet_distance(*metrics.feature_statistics(a),
                                  *metrics.feature_statistics(rng.standard_normal((n, d)) @ chol.T))
  shifted = metrics.frechet_distance(*metrics.feature_statistics(a), *metrics.feature_statistics(b))
  assert same < 0.01                              # ~ d^2 / n-order bias
  assert shifted == pytest.approx(d * 0.25, rel=0.05)


def test_singular_covariances_are_regularised_and_complex_roots_rejected():
  rng = np.random.default_rng(3)
  f = rng.standard_normal((5, 20))                # 5 samples, 20 dims: singular covariance
  mu, s = metrics.feature_statistics(f)
  assert np.isfinite(metrics.frechet_distance(mu, s, mu + 1, s))
  bad = np.array([[1., 2.], [2., 1.]])            # not a covariance (indefinite)
  with pytest.raises(ValueError, match='imaginary'):
    metrics.frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match='shapes'):
    metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _kid_sklearn(f1, f2, num_subsets, subset_size, seed):
  from sklearn.metrics.pairwise import polynomial_kernel
  rng = np.random.default_rng(seed)
  m = min(subset_size, len(f1), len(f2))
  d = f1.shape[1]
  vals = []
  for _ in range(num_subsets):
    a = f1[rng.choice(len(f1), m, replace=False)]
    b = f2[rng.choice(len(f2), m, replace=False)]
    k = lambda x, y: polynomial_kernel(x, y, degree=3, gamma=1. / d, coef0=1)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    np.fill_diagonal(kaa, 0)
    np.fill_diagonal(kbb, 0)
    vals.append(kaa.sum() / (m * (m - 1)) + kbb.sum() / (m * (m - 1)) - 2 * kab.mean())
  return np.mean(vals), np.std(vals)


def test_kid_matches_sklearn_kernels_and_detects_shift():
  rng = np.random.default_rng(4)
  f1 = rng.standard_normal((600, 12))
  f2 = rng.standard_normal((500, 12))
  f3 = rng.standard_normal((500, 12)) + 0.5
  mean, std = metrics.kid(f1, f2, num_subsets=20, subset_size=200, seed=7)
  ref = _kid_sklearn(f1, f2, 20, 200, 7)
  assert mean == pytest.approx(ref[0], rel=1e-9, abs=1e-12)
  assert std == pytest.approx(ref[1], rel=1e-9)
  assert abs(mean) < 3 * std / np.sqrt(20) + 1e-3       # unbiased: ~0 for equal laws
  shifted, _ = metrics.kid(f1, f3, num_subsets=20, subset_size=200, seed=7)
  assert shifted > 20 * abs(mean) and shifted > 1e-2


def test_inception_score_matches_scipy_and_known_cases():
  rng = np.random.default_rng(5)
  logits = rng.standard_normal((1000, 7)) * 3
  p = special.softmax(logits, axis=1)
  ref = [np.exp(np.mean([stats.entropy(q, part.mean(0)) for q in part]))
         for part in np.array_split(p, 10)]
  mean, std = metrics.inception_score(logits, splits=10)
  assert mean == pytest.approx(np.mean(ref), rel=1e-9)
  assert std == pytest.approx(np.std(ref), rel=1e-7)
  # uniform predictions -> 1; confident and balanced over K classes -> K
  assert metrics.inception_score(np.zeros((100, 5)))[0] == pytest.approx(1.)
  onehot = np.tile(np.eye(5) * 50., (40, 1))
  assert metrics.inception_score(onehot, splits=10)[0] == pytest.approx(5., rel=1e-6)


def test_reference_layouts(tmp_path):
  rng = np.random.default_rng(6)
  feats = rng.standard_normal((50, 4))
  mu, sigma = metrics.feature_statistics(feats)
  np.savez(tmp_path / 'pytorch_fid.npz', mu=mu, sigma=sigma)
  np.savez(tmp_path / 'score_sde.npz', pool_3=feats, logits=rng.standard_normal((50, 3)))
  metrics.save_reference_stats(str(tmp_path / 'ours.npz'), feats, keep_features=10,
                               extractor='test', num_images=50)
  for name in ('pytorch_fid.npz', 'score_sde.npz', 'ours.npz'):
    ref = metrics.load_reference_stats(str(tmp_path / name))
    np.testing.assert_allclose(ref['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(ref['sigma'], sigma, rtol=1e-12)
  ours = metrics.load_reference_stats(str(tmp_path / 'ours.npz'))
  assert ours['features'].shape == (10, 4) and ours['meta']['extractor'] == 'test'
  np.savez(tmp_path / 'bad.npz', foo=feats)
  with pytest.raises(ValueError, match="'mu' and 'sigma'"):
    metrics.load_reference_stats(str(tmp_path / 'bad.npz'))
  with pytest.raises(FileNotFoundError, match='config.eval.ref_stats'):
    metrics.load_reference_stats(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='dimension'):
    metrics.frechet_distance_to_reference(rng.standard_normal((20, 5)), ours)
