"""The original DDPM U-Net (Ho et al. 2020) with score_sde's parameter layout (`ddpm`).

Call: `DDPM(config).apply({'params': p}, x, labels, train=False)` with
  x: (B, H, W, C) float32 images, in [0, 1] when `config.data.centered` is False (mapped
     to [-1, 1] inside) or in [-1, 1] otherwise;
  labels: (B,) timesteps (integers for discrete DDPM, 999 t for continuous VP).
Returns (B, H, W, C) float32, divided by sigmas[labels] when `model.scale_by_sigma`.
`config.model.dtype` ('float32' | 'bfloat16') sets the compute dtype.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from score_sde_pds.models import layers
from score_sde_pds.models import utils as mutils


@mutils.register_model(name='ddpm')
class DDPM(nn.Module):
  """DDPM score network (see the module docstring for the call contract)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x, labels, train=True):
    config = self.config
    m = config.model
    act = layers.get_act(config)
    dtype = layers.get_dtype(config)
    normalize = layers.get_normalization(config, dtype)

    nf = m.nf
    ch_mult = tuple(m.ch_mult)
    num_res_blocks = m.num_res_blocks
    attn_resolutions = tuple(m.attn_resolutions)
    num_resolutions = len(ch_mult)

    attn_block = functools.partial(layers.AttnBlock, normalize=normalize, dtype=dtype)
    resnet_block = functools.partial(layers.ResnetBlockDDPM, act=act, normalize=normalize,
                                     dropout=m.dropout, dtype=dtype)

    if m.conditional:
      dense = functools.partial(nn.Dense, nf * 4, kernel_init=layers.default_init(),
                                dtype=dtype, param_dtype=jnp.float32)
      temb = layers.get_timestep_embedding(labels, nf)
      temb = dense()(temb)
      temb = dense()(act(temb))
    else:
      temb = None

    h = x if config.data.centered else 2 * x - 1.
    h = h.astype(dtype)

    # Downsampling path.
    hs = [layers.ddpm_conv3x3(h, nf, dtype=dtype)]
    for i_level in range(num_resolutions):
      for _ in range(num_res_blocks):
        h = resnet_block(out_ch=nf * ch_mult[i_level])(hs[-1], temb, train)
        if h.shape[1] in attn_resolutions:
          h = attn_block()(h)
        hs.append(h)
      if i_level != num_resolutions - 1:
        hs.append(layers.Downsample(with_conv=m.resamp_with_conv, dtype=dtype)(hs[-1]))

    # Middle.
    h = hs[-1]
    h = resnet_block()(h, temb, train)
    h = attn_block()(h)
    h = resnet_block()(h, temb, train)

    # Upsampling path.
    for i_level in reversed(range(num_resolutions)):
      for _ in range(num_res_blocks + 1):
        skip = hs.pop()
        h = resnet_block(out_ch=nf * ch_mult[i_level])(
            jnp.concatenate([h, skip.astype(h.dtype)], axis=-1), temb, train)
      if h.shape[1] in attn_resolutions:
        h = attn_block()(h)
      if i_level != 0:
        h = layers.Upsample(with_conv=m.resamp_with_conv, dtype=dtype)(h)

    if hs:
      raise RuntimeError('DDPM: unused skip connections (internal error).')

    h = act(normalize()(h))
    h = layers.ddpm_conv3x3(h, mutils.output_channels(config, x.shape[-1]), init_scale=0.,
                            dtype=dtype)
    h = h.astype(jnp.float32)

    if m.scale_by_sigma:
      sigmas = jnp.asarray(mutils.get_sigmas(config), jnp.float32)
      used_sigmas = sigmas[labels.astype(jnp.int32)]
      h = h / used_sigmas.reshape((-1,) + (1,) * (h.ndim - 1))
    return h
