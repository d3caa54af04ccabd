"""NCSNv2 (Song & Ermon, 2020) as a score_sde model: `ncsnv2_64`, `ncsnv2_128`, `ncsnv2_256`.

A RefineNet: a ResNet encoder (dilated convolutions replace the deepest
down-samplings) followed by RefineBlocks that fuse the encoder features from the
deepest level up. The network is not conditioned on the noise level; the output is
divided by the noise level of each sample (`config.model.scale_by_sigma`).

The parameter tree is the one of the official score_sde checkpoints: module class
names and call order are those of score_sde, so flax auto-naming (`ClassName_k`, one
counter per class per parent scope) yields e.g.
`RefineBlock_3/RCUBlock_2/Conv_5/kernel` or `ResidualBlock_2/ConvMeanPool_1/Conv_0/bias`.
The 3x3/1x1 convolution helpers are plain functions, so their convolutions are named
`Conv_k` inside whichever module calls them. Normalisation parameters are created
with explicit shape (1, 1, 1, C) (as stored in the official checkpoints; this is not
the flax GroupNorm shape issue: these are plain `self.param` arrays on every flax).

Everything NCSNv2 needs lives in this file (blocks, normalisations, conv helpers).

Shapes: images are NHWC, (B, H, W, C); labels are (B,) integer indices into the
DESCENDING noise levels `utils.get_sigmas(config)`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde_pds.models import conv_grad
from score_sde_pds.models import utils as mutils

# ----------------------------------------------------------------------------------
# Activations and initialisers
# ----------------------------------------------------------------------------------

_ACTIVATIONS = {
    'elu': nn.elu,
    'relu': nn.relu,
    'lrelu': lambda x: nn.leaky_relu(x, negative_slope=0.2),
    'swish': nn.swish,
}


def get_act(config) -> Callable:
  """Activation named by `config.model.nonlinearity` (elu | relu | lrelu | swish)."""
  name = str(config.model.nonlinearity).lower()
  if name not in _ACTIVATIONS:
    raise ValueError(f'config.model.nonlinearity={config.model.nonlinearity!r} is not '
                     f'supported; valid values: {sorted(_ACTIVATIONS)}.')
  return _ACTIVATIONS[name]


def _torch_kernel_init(scale: float = 1.):
  """PyTorch's default conv init: U(-b, b), b = sqrt(scale / fan_in), fan_in = kh*kw*C_in."""
  scale = 1e-10 if scale == 0 else scale
  return jax.nn.initializers.variance_scaling(scale / 3., 'fan_in', 'uniform')


def _torch_bias_init(fan_in: int, scale: float = 1.):
  """PyTorch's default conv bias init: U(-b, b) with the kernel's bound b."""
  scale = 1e-10 if scale == 0 else scale
  bound = float(np.sqrt(scale / fan_in))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


def _ncsn_conv(x, features: int, kernel: int, bias: bool = True, dilation: int = 1,
               init_scale: float = 1., dtype: Any = jnp.float32):
  """kernel x kernel 'SAME' convolution, stride 1, PyTorch-style init.

  Creates an `nn.Conv` in the calling module's scope (so it is named `Conv_k` there).

  Args:
    x: (B, H, W, C_in).
  Returns:
    (B, H, W, features) in `dtype`.
  """
  fan_in = kernel * kernel * x.shape[-1]
  return nn.Conv(features, kernel_size=(kernel, kernel), strides=(1, 1), padding='SAME',
                 kernel_dilation=(dilation, dilation), use_bias=bias,
                 kernel_init=_torch_kernel_init(init_scale),
                 bias_init=_torch_bias_init(fan_in, init_scale),
                 dtype=dtype, param_dtype=jnp.float32,
                 conv_general_dilated=conv_grad.conv_general_dilated)(x)


def ncsn_conv3x3(x, features: int, bias: bool = True, dilation: int = 1,
                 init_scale: float = 1., dtype: Any = jnp.float32):
  """3x3 convolution of NCSNv1/v2: (B, H, W, C_in) -> (B, H, W, features)."""
  return _ncsn_conv(x, features, 3, bias=bias, dilation=dilation, init_scale=init_scale,
                    dtype=dtype)


def ncsn_conv1x1(x, features: int, bias: bool = True, dilation: int = 1,
                 init_scale: float = 1., dtype: Any = jnp.float32):
  """1x1 convolution of NCSNv1/v2: (B, H, W, C_in) -> (B, H, W, features)."""
  return _ncsn_conv(x, features, 1, bias=bias, dilation=dilation, init_scale=init_scale,
                    dtype=dtype)


# ----------------------------------------------------------------------------------
# Normalisations (statistics in float32; parameters of shape (1, 1, 1, C))
# ----------------------------------------------------------------------------------


def _one_plus_normal(key, shape, dtype=jnp.float32):
  """1 + N(0, 0.02^2) initialiser of the normalisation gains."""
  return 1. + 0.02 * jax.random.normal(key, shape, dtype)


def _spatial_moments(x):
  """Per-sample, per-channel mean and variance over H, W: x (B,H,W,C) -> two (B,1,1,C)."""
  return jnp.mean(x, axis=(1, 2), keepdims=True), jnp.var(x, axis=(1, 2), keepdims=True)


class InstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ of NCSN: instance norm that re-injects the spread of channel means.

  With mu (B,C) the spatial means and s (B,C) the spatial variances,
  mu+ = (mu - mean_C mu) / sqrt(var_C mu + 1e-5) and
  out = gamma * ((x - mu) / sqrt(s + 1e-5) + alpha * mu+) + beta.
  Params alpha, gamma ~ 1 + N(0, 0.02^2), beta = 0, each (1, 1, 1, C).

  x: (B, H, W, C) -> (B, H, W, C) float32.
  """
  bias: bool = True

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    c = x.shape[-1]
    mean, var = _spatial_moments(x)                          # (B,1,1,C)
    mean_of_means = jnp.mean(mean, axis=-1, keepdims=True)   # (B,1,1,1)
    var_of_means = jnp.var(mean, axis=-1, keepdims=True)
    means_plus = (mean - mean_of_means) * jax.lax.rsqrt(var_of_means + 1e-5)
    h = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    alpha = self.param('alpha', _one_plus_normal, (1, 1, 1, c))
    gamma = self.param('gamma', _one_plus_normal, (1, 1, 1, c))
    h = gamma * (h + alpha * means_plus)
    if self.bias:
      h = h + self.param('beta', nn.initializers.zeros, (1, 1, 1, c))
    return h


class InstanceNorm2d(nn.Module):
  """Instance normalisation with (1,1,1,C) `scale` (ones) and `bias` (zeros).

  x: (B, H, W, C) -> (B, H, W, C) float32.
  """
  bias: bool = True

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    c = x.shape[-1]
    mean, var = _spatial_moments(x)
    h = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    h = h * self.param('scale', nn.initializers.ones, (1, 1, 1, c))
    if self.bias:
      h = h + self.param('bias', nn.initializers.zeros, (1, 1, 1, c))
    return h


class VarianceNorm2d(nn.Module):
  """Divides by the spatial standard deviation (no centring); (1,1,1,C) `scale`.

  x: (B, H, W, C) -> (B, H, W, C) float32.
  """
  bias: bool = False

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    c = x.shape[-1]
    _, var = _spatial_moments(x)
    h = x * jax.lax.rsqrt(var + 1e-5)
    h = h * self.param('scale', _one_plus_normal, (1, 1, 1, c))
    if self.bias:
      h = h + self.param('bias', nn.initializers.zeros, (1, 1, 1, c))
    return h


_NORMALIZATIONS = {
    'InstanceNorm': InstanceNorm2d,
    'InstanceNorm++': InstanceNorm2dPlus,
    'VarianceNorm': VarianceNorm2d,
    # flax >= 0.3.6 stores GroupNorm scale/bias as (C,), old checkpoints as (1,1,1,C).
    'GroupNorm': nn.GroupNorm,
}


def get_normalization(config):
  """Normalisation module class named by `config.model.normalization`."""
  name = config.model.normalization
  if name not in _NORMALIZATIONS:
    raise ValueError(f'config.model.normalization={name!r} is not supported by NCSNv2; '
                     f'valid values: {sorted(_NORMALIZATIONS)}.')
  return _NORMALIZATIONS[name]


# ----------------------------------------------------------------------------------
# ResNet encoder blocks
# ----------------------------------------------------------------------------------


def _mean_pool2x2(x):
  """2x2 average pooling, stride 2: (B, H, W, C) -> (B, H/2, W/2, C) (H, W even)."""
  b, h, w, c = x.shape
  return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class ConvMeanPool(nn.Module):
  """Convolution (flax default init) then 2x2 mean pooling.

  inputs: (B, H, W, C_in) -> (B, H/2, W/2, output_dim).
  """
  output_dim: int
  kernel_size: int = 3
  biases: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    h = nn.Conv(self.output_dim, kernel_size=(self.kernel_size, self.kernel_size),
                strides=(1, 1), padding='SAME', use_bias=self.biases,
                dtype=self.dtype, param_dtype=jnp.float32,
                conv_general_dilated=conv_grad.conv_general_dilated)(inputs)
    return _mean_pool2x2(h)


class ResidualBlock(nn.Module):
  """Pre-activation residual block of the NCSNv2 encoder.

  resample=None keeps the resolution; resample='down' halves it with ConvMeanPool when
  dilation == 1 and keeps it (dilated convolutions instead) when dilation > 1.
  Shortcut convolutions are created before the main-path ones (official naming).

  x: (B, H, W, C_in) -> (B, H', W', output_dim).
  """
  output_dim: int
  normalization: Any
  resample: Optional[str] = None
  act: Callable = nn.elu
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv3 = lambda v, f: ncsn_conv3x3(v, f, dilation=self.dilation, dtype=self.dtype)
    h = self.act(self.normalization()(x))
    if self.resample == 'down':
      h = conv3(h, h.shape[-1])
      h = self.act(self.normalization()(h))
      if self.dilation > 1:
        h = conv3(h, self.output_dim)
        shortcut = conv3(x, self.output_dim)
      else:
        h = ConvMeanPool(self.output_dim, dtype=self.dtype)(h)
        shortcut = ConvMeanPool(self.output_dim, kernel_size=1, dtype=self.dtype)(x)
    elif self.resample is None:
      if x.shape[-1] == self.output_dim:
        shortcut = x
      elif self.dilation > 1:
        shortcut = conv3(x, self.output_dim)
      else:
        shortcut = ncsn_conv1x1(x, self.output_dim, dtype=self.dtype)
      h = conv3(h, self.output_dim)
      h = self.act(self.normalization()(h))
      h = conv3(h, self.output_dim)
    else:
      raise ValueError(f'ResidualBlock: unknown resample={self.resample!r} '
                       "(expected None or 'down').")
    return h + shortcut


# ----------------------------------------------------------------------------------
# RefineNet decoder blocks
# ----------------------------------------------------------------------------------


class RCUBlock(nn.Module):
  """Residual conv units: n_blocks x (n_stages x (act, 3x3 conv without bias)) + skip.

  x: (B, H, W, features) -> (B, H, W, features).
  """
  features: int
  n_blocks: int
  n_stages: int
  act: Callable = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for _ in range(self.n_blocks):
      skip = x
      for _ in range(self.n_stages):
        x = ncsn_conv3x3(self.act(x), self.features, bias=False, dtype=self.dtype)
      x = x + skip
    return x


class CRPBlock(nn.Module):
  """Chained residual pooling: act, then n_stages of (5x5 max pool, 3x3 conv) summed in.

  x: (B, H, W, features) -> (B, H, W, features).
  """
  features: int
  n_stages: int
  act: Callable = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = self.act(x)
    path = x
    for _ in range(self.n_stages):
      path = nn.max_pool(path, window_shape=(5, 5), strides=(1, 1), padding='SAME')
      path = ncsn_conv3x3(path, self.features, bias=False, dtype=self.dtype)
      x = x + path
    return x


_RESIZE_METHODS = {'bilinear': 'bilinear', 'nearest_neighbor': 'nearest'}


class MSFBlock(nn.Module):
  """Multi-resolution fusion: 3x3 conv (with bias) per input, resize to `shape`, sum.

  xs: list of (B, H_i, W_i, C_i) -> (B, shape[0], shape[1], features).
  """
  shape: Sequence[int]
  features: int
  interpolation: str = 'bilinear'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs):
    if self.interpolation not in _RESIZE_METHODS:
      raise ValueError(f'config.model.interpolation={self.interpolation!r} is not supported; '
                       f'valid values: {sorted(_RESIZE_METHODS)}.')
    method = _RESIZE_METHODS[self.interpolation]
    total = None
    for x in xs:
      h = ncsn_conv3x3(x, self.features, bias=True, dtype=self.dtype)
      h = jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), method)
      total = h if total is None else total + h
    return total


class RefineBlock(nn.Module):
  """RefineNet block: RCU per input, fusion (unless `start`), CRP, output RCU.

  The output RCU has 3 residual units when `end`, else 1.

  xs: list of (B, H_i, W_i, C_i); all but a `start` block fuse to `output_shape`.
  Returns (B, output_shape[0], output_shape[1], features).
  """
  output_shape: Sequence[int]
  features: int
  act: Callable = nn.relu
  interpolation: str = 'bilinear'
  start: bool = False
  end: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs):
    hs = [RCUBlock(x.shape[-1], n_blocks=2, n_stages=2, act=self.act, dtype=self.dtype)(x)
          for x in xs]
    if self.start:
      h = hs[0]
    else:
      h = MSFBlock(self.output_shape, self.features, interpolation=self.interpolation,
                   dtype=self.dtype)(hs)
    h = CRPBlock(self.features, n_stages=2, act=self.act, dtype=self.dtype)(h)
    return RCUBlock(self.features, n_blocks=3 if self.end else 1, n_stages=2, act=self.act,
                    dtype=self.dtype)(h)


# ----------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------

# Encoder levels as (channel multiplier of nf, dilation, downsample?) and the RefineBlock
# widths (multipliers of nf) from the deepest level up. Each level is two ResidualBlocks.
_ARCHS = {
    'ncsnv2_64': dict(levels=((1, 1, False), (2, 1, True), (2, 2, True), (2, 4, True)),
                      refine=(2, 2, 2, 1)),
    'ncsnv2_128': dict(levels=((1, 1, False), (2, 1, True), (2, 1, True), (4, 2, True),
                               (4, 4, True)),
                       refine=(4, 2, 2, 1, 1)),
    'ncsnv2_256': dict(levels=((1, 1, False), (2, 1, True), (2, 1, True), (2, 1, True),
                               (4, 2, True), (4, 4, True)),
                       refine=(4, 2, 2, 2, 1, 1)),
}


def size_divisor(name: str) -> int:
  """Factor the image size of model `name` must be a multiple of (2 per mean-pool)."""
  levels = _ARCHS[name]['levels']
  return 2 ** sum(1 for _, dilation, down in levels if down and dilation == 1)


def get_network_name(image_size: int) -> str:
  """The NCSNv2 variant score_sde uses for `image_size` (its size brackets)."""
  if 0 < image_size < 96:
    return 'ncsnv2_64'
  if 96 <= image_size <= 128:
    return 'ncsnv2_128'
  if 128 < image_size <= 256:
    return 'ncsnv2_256'
  raise ValueError(f'config.data.image_size={image_size} is not supported by NCSNv2 '
                   '(ncsnv2_64: < 96, ncsnv2_128: 96..128, ncsnv2_256: 129..256).')


def _check_inputs(name: str, config, x, labels):
  """Raises clear errors for image sizes or labels the network cannot handle."""
  size = config.data.image_size
  div = size_divisor(name)
  if not isinstance(size, (int, np.integer)) or size <= 0 or size % div:
    raise ValueError(f'config.data.image_size={size!r} is not supported by {name}: it must be '
                     f'a positive multiple of {div} ({name} mean-pools {div.bit_length() - 1} '
                     f'time(s) by 2). score_sde picks ncsnv2_64 below 96 px, ncsnv2_128 for '
                     '96..128 px and ncsnv2_256 for 129..256 px.')
  if x.ndim != 4 or tuple(x.shape[1:3]) != (size, size):
    raise ValueError(f'{name}: input of shape {tuple(x.shape)} does not match '
                     f'config.data.image_size={size} (expected (B, {size}, {size}, C)).')
  if labels.shape != (x.shape[0],):
    raise ValueError(f'{name}: labels must have shape (B,)=({x.shape[0]},), got '
                     f'{tuple(labels.shape)}.')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f'{name} is a discrete-noise model: labels must be integer indices into '
                    'the descending get_sigmas(config) (training.continuous=False), got '
                    f'dtype {labels.dtype}.')


class _NCSNv2Base(nn.Module):
  """Shared body of the NCSNv2 variants; subclasses set `_arch_name`."""
  config: ml_collections.ConfigDict
  _arch_name = 'ncsnv2_64'

  @nn.compact
  def __call__(self, x, labels, train=True):
    """Score estimate.

    Args:
      x: (B, H, W, C) images, H = W = config.data.image_size; in [0, 1] unless
        config.data.centered (then already in [-1, 1]).
      labels: (B,) integer indices into the descending `get_sigmas(config)`.
      train: unused (no dropout or batch statistics); kept for the model interface.
    Returns:
      (B, H, W, C) float32: the network output divided by sigmas[labels] when
      config.model.scale_by_sigma.
    """
    del train
    config = self.config
    name = self._arch_name
    labels = jnp.asarray(labels)
    _check_inputs(name, config, x, labels)
    arch = _ARCHS[name]
    nf = config.model.nf
    act = get_act(config)
    norm = get_normalization(config)
    interpolation = config.model.interpolation
    dtype = jnp.dtype(config.model.get('dtype', 'float32'))

    h = x if config.data.centered else 2. * x - 1.
    h = ncsn_conv3x3(h, nf, dtype=dtype)

    # ResNet encoder: per level, one (possibly down-sampling) block and one plain block.
    skips = []
    for mult, dilation, down in arch['levels']:
      block = lambda resample: ResidualBlock(mult * nf, normalization=norm, resample=resample,
                                             act=act, dilation=dilation, dtype=dtype)
      h = block('down' if down else None)(h)
      h = block(None)(h)
      skips.append(h)

    # RefineNet decoder, deepest level first.
    ref = None
    n = len(skips)
    for i, (skip, mult) in enumerate(zip(reversed(skips), arch['refine'])):
      inputs = [skip] if ref is None else [skip, ref]
      ref = RefineBlock(skip.shape[1:3], mult * nf, act=act, interpolation=interpolation,
                        start=(i == 0), end=(i == n - 1), dtype=dtype)(inputs)

    h = act(norm()(ref))
    h = ncsn_conv3x3(h, x.shape[-1], dtype=dtype).astype(jnp.float32)

    if config.model.scale_by_sigma:
      sigmas = jnp.asarray(mutils.get_sigmas(config), jnp.float32)
      h = h / sigmas[labels].reshape((-1, 1, 1, 1))
    return h


@mutils.register_model(name='ncsnv2_64')
class NCSNv2(_NCSNv2Base):
  """NCSNv2 for images below 96 px (CIFAR-10, CelebA 64): one mean-pool, two dilated levels."""
  _arch_name = 'ncsnv2_64'


@mutils.register_model(name='ncsnv2_128')
class NCSNv2_128(_NCSNv2Base):  # pylint: disable=invalid-name
  """NCSNv2 for 96..128 px images (LSUN 128): two mean-pools, two dilated levels."""
  _arch_name = 'ncsnv2_128'


@mutils.register_model(name='ncsnv2_256')
class NCSNv2_256(_NCSNv2Base):  # pylint: disable=invalid-name
  """NCSNv2 for 129..256 px images: three mean-pools, two dilated levels."""
  _arch_name = 'ncsnv2_256'
