"""NCSN++ and DDPM++ (score_sde's `ncsnpp` model; DDPM++ is this model with DDPM++ flags).

A U-Net of residual blocks (BigGAN or DDPM style) with self-attention at
`attn_resolutions`, optional FIR resampling, progressive input/output pyramids and a
Fourier (continuous sigma) or sinusoidal (timestep) conditioning. The parameter tree
equals score_sde's, so its checkpoints load after reshaping GroupNorm scale/bias.

Call: `NCSNpp(config).apply({'params': p}, x, time_cond, train=False)` with
  x: (B, H, W, C) float32 images, in [0, 1] when `config.data.centered` is False (the
     network maps them to [-1, 1] itself) or in [-1, 1] otherwise;
  time_cond: (B,) noise levels sigma (embedding_type 'fourier', VE continuous) or
     timesteps (embedding_type 'positional', e.g. 999 t for VP).
Returns (B, H, W, C) float32; divided by sigma when `model.scale_by_sigma` (sigma is
time_cond for 'fourier', the discrete sigmas[int(time_cond)] for 'positional').
`config.model.dtype` ('float32' | 'bfloat16') sets the compute dtype.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from score_sde_pds.models import layers
from score_sde_pds.models import layerspp
from score_sde_pds.models import utils as mutils

_SQRT2 = math.sqrt(2.)


@mutils.register_model(name='ncsnpp')
class NCSNpp(nn.Module):
  """NCSN++ / DDPM++ score network (see the module docstring for the call contract)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x, time_cond, train=True):
    config = self.config
    m = config.model
    act = layers.get_act(config)
    dtype = layers.get_dtype(config)

    nf = m.nf
    ch_mult = tuple(m.ch_mult)
    num_res_blocks = m.num_res_blocks
    attn_resolutions = tuple(m.attn_resolutions)
    dropout = m.dropout
    resamp_with_conv = m.resamp_with_conv
    num_resolutions = len(ch_mult)
    conditional = m.conditional
    fir = m.fir
    fir_kernel = tuple(m.fir_kernel)
    skip_rescale = m.skip_rescale
    resblock_type = m.resblock_type.lower()
    progressive = m.progressive.lower()
    progressive_input = m.progressive_input.lower()
    embedding_type = m.embedding_type.lower()
    init_scale = m.init_scale
    combine_method = m.progressive_combine.lower()
    if progressive not in ('none', 'output_skip', 'residual'):
      raise ValueError(f'model.progressive={progressive!r} (none | output_skip | residual).')
    if progressive_input not in ('none', 'input_skip', 'residual'):
      raise ValueError(f'model.progressive_input={progressive_input!r} '
                       '(none | input_skip | residual).')
    if resblock_type not in ('ddpm', 'biggan'):
      raise ValueError(f'model.resblock_type={resblock_type!r} (ddpm | biggan).')

    # Noise-level / time embedding.
    if embedding_type == 'fourier':
      if not config.training.continuous:
        raise ValueError('Fourier embeddings are only used for continuous training.')
      used_sigmas = time_cond
      temb = layerspp.GaussianFourierProjection(
          embedding_size=nf, scale=m.fourier_scale)(jnp.log(time_cond.astype(jnp.float32)))
    elif embedding_type == 'positional':
      used_sigmas = None
      if m.scale_by_sigma:
        sigmas = jnp.asarray(mutils.get_sigmas(config), jnp.float32)
        used_sigmas = sigmas[time_cond.astype(jnp.int32)]
      temb = layers.get_timestep_embedding(time_cond, nf)
    else:
      raise ValueError(f'model.embedding_type={embedding_type!r} (fourier | positional).')

    if conditional:
      dense = functools.partial(nn.Dense, nf * 4, kernel_init=layers.default_init(),
                                dtype=dtype, param_dtype=jnp.float32)
      temb = dense()(temb)
      temb = dense()(act(temb))
    else:
      temb = None

    attn_block = functools.partial(layerspp.AttnBlockpp, init_scale=init_scale,
                                   skip_rescale=skip_rescale, dtype=dtype)
    upsample = functools.partial(layerspp.Upsample, with_conv=resamp_with_conv, fir=fir,
                                 fir_kernel=fir_kernel, dtype=dtype)
    downsample = functools.partial(layerspp.Downsample, with_conv=resamp_with_conv, fir=fir,
                                   fir_kernel=fir_kernel, dtype=dtype)
    # Pyramid resamplers carry a conv only in 'residual' mode.
    pyramid_upsample = functools.partial(layerspp.Upsample, fir=fir, fir_kernel=fir_kernel,
                                         with_conv=(progressive == 'residual'), dtype=dtype)
    pyramid_downsample = functools.partial(layerspp.Downsample, fir=fir, fir_kernel=fir_kernel,
                                           with_conv=(progressive_input == 'residual'),
                                           dtype=dtype)
    combiner = functools.partial(layerspp.Combine, method=combine_method, dtype=dtype)
    if resblock_type == 'ddpm':
      resnet_block = functools.partial(layerspp.ResnetBlockDDPMpp, act=act, dropout=dropout,
                                       init_scale=init_scale, skip_rescale=skip_rescale,
                                       dtype=dtype)
    else:
      resnet_block = functools.partial(layerspp.ResnetBlockBigGANpp, act=act, dropout=dropout,
                                       fir=fir, fir_kernel=fir_kernel, init_scale=init_scale,
                                       skip_rescale=skip_rescale, dtype=dtype)

    def out_conv(h, channels):
      """GroupNorm -> act -> 3x3 conv with `channels` outputs (a pyramid / final head)."""
      h = act(layers.group_norm(h.shape[-1], dtype)(h))
      return layerspp.conv3x3(h, channels, bias=True, init_scale=init_scale, dtype=dtype)

    out_channels = mutils.output_channels(config, x.shape[-1])  # 2C -> C: momentum eps (CLD)
    if not config.data.centered:
      x = 2 * x - 1.  # [0, 1] -> [-1, 1]
    x = x.astype(dtype)

    # Downsampling path.
    input_pyramid = x if progressive_input != 'none' else None
    hs = [layerspp.conv3x3(x, nf, dtype=dtype)]
    for i_level in range(num_resolutions):
      for _ in range(num_res_blocks):
        h = resnet_block(out_ch=nf * ch_mult[i_level])(hs[-1], temb, train)
        if h.shape[1] in attn_resolutions:
          h = attn_block()(h)
        hs.append(h)

      if i_level != num_resolutions - 1:
        if resblock_type == 'ddpm':
          h = downsample()(hs[-1])
        else:
          h = resnet_block(down=True)(hs[-1], temb, train)

        if progressive_input == 'input_skip':
          input_pyramid = pyramid_downsample()(input_pyramid)
          h = combiner()(input_pyramid, h)
        elif progressive_input == 'residual':
          input_pyramid = pyramid_downsample(out_ch=h.shape[-1])(input_pyramid)
          input_pyramid = (input_pyramid + h) / _SQRT2 if skip_rescale else input_pyramid + h
          h = input_pyramid
        hs.append(h)

    # Middle.
    h = hs[-1]
    h = resnet_block()(h, temb, train)
    h = attn_block()(h)
    h = resnet_block()(h, temb, train)

    # Upsampling path.
    pyramid = None
    for i_level in reversed(range(num_resolutions)):
      for _ in range(num_res_blocks + 1):
        skip = hs.pop()
        h = resnet_block(out_ch=nf * ch_mult[i_level])(
            jnp.concatenate([h, skip.astype(h.dtype)], axis=-1), temb, train)

      if h.shape[1] in attn_resolutions:
        h = attn_block()(h)

      if progressive != 'none':
        if i_level == num_resolutions - 1:
          if progressive == 'output_skip':
            pyramid = out_conv(h, out_channels)
          else:  # residual
            h_act = act(layers.group_norm(h.shape[-1], dtype)(h))
            pyramid = layerspp.conv3x3(h_act, h.shape[-1], bias=True, dtype=dtype)
        else:
          if progressive == 'output_skip':
            pyramid = pyramid_upsample()(pyramid)
            pyramid = pyramid + out_conv(h, out_channels)
          else:  # residual
            pyramid = pyramid_upsample(out_ch=h.shape[-1])(pyramid)
            pyramid = (pyramid + h) / _SQRT2 if skip_rescale else pyramid + h
            h = pyramid

      if i_level != 0:
        if resblock_type == 'ddpm':
          h = upsample()(h)
        else:
          h = resnet_block(up=True)(h, temb, train)

    if hs:
      raise RuntimeError('NCSNpp: unused skip connections (internal error).')

    if progressive == 'output_skip':
      h = pyramid
    else:
      h = out_conv(h, out_channels)

    h = h.astype(jnp.float32)
    if m.scale_by_sigma:
      h = h / used_sigmas.astype(jnp.float32).reshape((-1,) + (1,) * (h.ndim - 1))
    return h
