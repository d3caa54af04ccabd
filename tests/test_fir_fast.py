"""The fast FIR resampling paths (polyphase slices, sub-pixel transposed conv) against
direct definitions: numpy upfirdn, and the zero-inserted / lhs-dilated formulations.

Kernels are asymmetric so that flips and offsets are caught; pads include crops and
odd sizes; up and down together exercise both 1-D branches.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from score_sde_pds.models import up_or_down_sampling as updown  # noqa: E402

_DN = ('NHWC', 'HWIO', 'NHWC')


def _upfirdn_numpy(x, k, up, down, p0, p1):
  """Zero insertion, pad/crop, true 2-D convolution, subsample (float64)."""
  n, h, w, c = x.shape
  z = np.zeros((n, h * up, w * up, c), np.float64)
  z[:, ::up, ::up, :] = x
  lo, hi = max(p0, 0), max(p1, 0)
  z = np.pad(z, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  z = z[:, max(-p0, 0):z.shape[1] - max(-p1, 0), max(-p0, 0):z.shape[2] - max(-p1, 0)]
  kh, kw = k.shape
  oh, ow = z.shape[1] - kh + 1, z.shape[2] - kw + 1
  kf = k[::-1, ::-1]
  out = np.zeros((n, oh, ow, c))
  for i in range(kh):
    for j in range(kw):
      out += kf[i, j] * z[:, i:i + oh, j:j + ow, :]
  return out[:, ::down, ::down, :]


@pytest.mark.parametrize('up,down,p0,p1', [(1, 2, 1, 1), (2, 1, 2, 1), (1, 3, 0, 2),
                                           (3, 1, 1, 1), (2, 2, -1, 3), (2, 1, -2, 0),
                                           (1, 1, 2, 2)])
def test_separable_upfirdn2d_matches_definition(up, down, p0, p1):
  rng = np.random.RandomState(0)
  x = rng.randn(2, 7, 6, 3).astype(np.float32)
  # rank 1 and asymmetric, non-square (4 x 3) and square (4 x 4, the NCSN++ case)
  for k in (np.outer([1., 2., 5., 3.], [2., 1., 4.]), np.outer([1., 3., 3., 1.], [1., 2., 3., 4.])):
    k = k.astype(np.float32)
    assert updown._separable_factors(k) is not None
    ours = updown.upfirdn2d(jnp.asarray(x), k, up=up, down=down, pad=(p0, p1))
    np.testing.assert_allclose(ours, _upfirdn_numpy(x, k, up, down, p0, p1), rtol=1e-5,
                               atol=1e-5)


def test_non_separable_kernel_detected():
  k = np.random.RandomState(1).rand(3, 4)
  assert updown._separable_factors(k) is None
  assert updown._separable_factors(np.outer([1, 3, 3, 1], [1, 3, 3, 1])) is not None


@pytest.mark.parametrize('kernel', [(1, 3, 3, 1), (1, 1), (1, 2, 1)])
@pytest.mark.parametrize('ksize', [1, 3])
def test_upsample_conv_2d_matches_dilated_conv(kernel, ksize):
  """The sub-pixel form equals the transposed (lhs-dilated) conv followed by the FIR."""
  rng = np.random.RandomState(2)
  x = jnp.asarray(rng.randn(2, 5, 6, 3).astype(np.float32))
  w = jnp.asarray(rng.randn(ksize, ksize, 3, 4).astype(np.float32))
  factor = 2
  kf = updown.setup_kernel(kernel) * factor ** 2
  # 'VALID' transposed conv (TF conv2d_transpose of StyleGAN2): length (H - 1) f + k
  y = jax.lax.conv_general_dilated(x, w, (1, 1), [(ksize - 1, ksize - 1)] * 2,
                                   lhs_dilation=(factor, factor), dimension_numbers=_DN,
                                   precision='highest')
  p = (kf.shape[0] - factor) - (ksize - 1)
  ref = _upfirdn_numpy(np.asarray(y, np.float64), kf, 1, 1, (p + 1) // 2 + factor - 1,
                       p // 2 + 1)
  ours = updown.upsample_conv_2d(x, w, k=kernel, factor=factor)
  assert ours.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel', [(1, 3, 3, 1), (1, 1)])
def test_conv_downsample_2d_matches_definition(kernel):
  rng = np.random.RandomState(3)
  x = rng.randn(2, 8, 6, 3).astype(np.float32)
  w = rng.randn(3, 3, 3, 5).astype(np.float32)
  kf = updown.setup_kernel(kernel)
  p = (kf.shape[0] - 2) + 2
  y = _upfirdn_numpy(x, kf, 1, 1, (p + 1) // 2, p // 2)
  ref = jax.lax.conv_general_dilated(jnp.asarray(y, jnp.float32), jnp.asarray(w), (2, 2),
                                     'VALID', dimension_numbers=_DN, precision='highest')
  ours = updown.conv_downsample_2d(jnp.asarray(x), jnp.asarray(w), k=kernel)
  assert ours.shape == (2, 4, 3, 5)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
