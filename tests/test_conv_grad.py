"""The CPU conv with hand-written gradients equals XLA's conv and its gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_pds.models import conv_grad

_DN = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('k,stride,padding', [(3, 1, 'SAME'), (1, 1, 'SAME'), (3, 2, 'SAME'),
                                              (3, 2, ((1, 1), (1, 1))), (4, 1, 'VALID'),
                                              (3, 1, ((2, 0), (0, 1)))])
def test_values_and_gradients_match_xla(k, stride, padding):
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (3, 9, 8, 5))
  w = jax.random.normal(kw, (k, k, 5, 7))
  strides = (stride, stride)

  def ref(x, w):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)

  def mine(x, w):
    return conv_grad.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)

  y_ref, y = ref(x, w), jax.jit(mine)(x, w)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  g = jax.random.normal(kg, y.shape)
  dref = jax.vjp(ref, x, w)[1](g)
  dmine = jax.jit(lambda x, w, g: jax.vjp(mine, x, w)[1](g))(x, w, g)
  for a, b in zip(dmine, dref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


def test_dilated_conv_takes_xla_path():
  """Dilated convs take XLA's path (same values)."""
  x = jnp.ones((1, 8, 8, 2))
  w = jnp.ones((3, 3, 2, 2))
  y = conv_grad.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2),
                                     dimension_numbers=_DN)
  y_ref = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2),
                                       dimension_numbers=_DN)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
