"""A 2-D convolution whose gradients are cheap on XLA:CPU (same forward, same values).

Why hand-written: XLA's CPU backend computes the weight gradient of an NHWC conv as a
"backward-filter" convolution that runs ~20x slower than the forward conv (measured on
a 2-core CPU, batch 64, 28x28x32 -> 32, 3x3: forward 18 ms, XLA weight gradient 369 ms),
which made training the small MNIST models 5x slower than their FLOPs. No library
ships a replacement. Here, on CPU only, the gradient is computed as

  dW[i, j] = sum_{b, h, w} x_pad[b, i + s h, j + s w, :]^T g[b, h, w, :]
           = cols^T g,   cols (B Ho Wo, kh kw C_in) the strided patches of x_pad,

one matmul, and for stride 1 the input gradient is the forward conv of g with the
flipped, transposed kernel (padding k - 1 - pad), which XLA:CPU runs as fast as the
forward. The forward is `lax.conv_general_dilated` itself, so outputs are bit-identical
to a plain conv; gradients agree to float32 rounding (tests/test_conv_grad.py). On GPU
and TPU, and for dilated/grouped convs, the plain XLA conv (and its VJP) is used.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, w, strides, pads):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cheap_grad(x, w, strides, pads):
  """x (B,H,W,Ci), w (kh,kw,Ci,Co), strides (sh, sw), pads ((lo,hi),(lo,hi)) -> (B,Ho,Wo,Co)."""
  return _conv(x, w, strides, pads)


def _fwd(x, w, strides, pads):
  return _conv(x, w, strides, pads), (x, w)


def _bwd(strides, pads, res, g):
  x, w = res
  kh, kw, ci, co = w.shape
  if tuple(strides) == (1, 1):
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    pads_t = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
              (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    dx = _conv(g.astype(x.dtype), w_t, (1, 1), pads_t)
  else:  # strided: XLA's own input gradient (a dilated conv) is fine here
    dx = jax.vjp(lambda v: _conv(v, w, strides, pads), x)[1](g)[0]
  b, ho, wo, _ = g.shape
  sh, sw = strides
  x_pad = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  taps = [lax.slice(x_pad, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, ci),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
  dw = lax.dot_general(cols.reshape(-1, kh * kw * ci), g.reshape(-1, co).astype(cols.dtype),
                       (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.reshape(kh, kw, ci, co).astype(w.dtype)


_conv_cheap_grad.defvjp(_fwd, _bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (flax's `nn.Conv(conv_general_dilated=...)`).

  Plain NHWC/HWIO, undilated, ungrouped 2-D convs on the CPU backend take the cheap
  gradient above; everything else is passed to `lax.conv_general_dilated` unchanged.
  """
  plain = (jax.default_backend() != 'cpu' or lhs.ndim != 4 or feature_group_count != 1
           or batch_group_count != 1 or precision is not None
           or preferred_element_type is not None
           or any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation))
           or dimension_numbers is None
           or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN))
  if plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _conv_cheap_grad(lhs, rhs, tuple(int(s) for s in window_strides), pads)


def conv_nhwc(x, w, strides=(1, 1), padding='SAME'):
  """NHWC/HWIO conv through `conv_general_dilated` above (for modules holding raw weights)."""
  return conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)
