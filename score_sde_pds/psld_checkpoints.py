"""Official PSLD (mandt-lab/PSLD, PyTorch Lightning) checkpoints onto the Flax NCSN++.

File format
-----------
PSLD trains a `SDEWrapper` LightningModule holding two copies of its NCSN++ (the song_sde
port of score_sde_pytorch's network): `score_fn` (the optimised weights) and `ema_score_fn`
(their exponential moving average, updated after every batch with decay 0.9999; sampling
uses it: `evaluation.sample_from='target'`). A checkpoint `<name>-epoch=..-loss=...ckpt` is
`torch.save` (zip archive) of Lightning 1.9's dict
  {'epoch', 'global_step', 'pytorch-lightning_version', 'state_dict', 'loops',
   'callbacks', 'optimizer_states', 'lr_schedulers'}
whose 'state_dict' holds `score_fn.all_modules.<N>.<...>` and
`ema_score_fn.all_modules.<N>.<...>` (no `module.` prefix, no `sigmas` buffer: PSLD's
network does not register it).

Key mapping (EMA weights; which='model' reads the `score_fn.` copy instead)
-------------------------------------------------------------------------
  ema_score_fn.<torch name>  ->  <torch name>  ->  Flax path by checkpoints.torch_state_to_flax:
  all_modules.0.W (GaussianFourierProjection, fourier only) -> GaussianFourierProjection_0/W
  all_modules.k.{weight,bias} (nn.Linear, the two time-embedding layers) -> Dense_0, Dense_1
    (kernel = weight^T)
  all_modules.k.{weight,bias} (3x3 convs: input conv, output conv) -> Conv_j (kernel = OIHW ->
    HWIO); the output conv has 2C channels (C for a momentum-only network)
  all_modules.k.{GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2 | NIN_0}.* (res blocks)
    -> ResnetBlockBigGANpp_j / ResnetBlockDDPMpp_j (GroupNorm weight -> scale; FIR
    Conv2d_0 keeps `weight`, transposed like a conv)
  all_modules.k.{GroupNorm_0, NIN_0..NIN_3}.* -> AttnBlockpp_j (NIN W / b copied)
  all_modules.k.Conv2d_0.{weight,bias} / Conv_0.* (pyramid resamplers) -> Downsample_j / Upsample_j
  all_modules.k.{weight,bias} (nn.GroupNorm) -> GroupNorm_j (weight -> scale)
with j counting each Flax class in call order (`all_modules` is in call order too). The
matching is not a table: each torch module is given the next unused Flax module whose
parameter names and ranks fit (see checkpoints.py), and every shape is checked.

What the network computes (and the config must say): input the stacked state [x; m]
(B,H,W,2C, data centered, no 2x - 1 inside: `data.centered=True`), conditioned on t itself
(`embedding_type='fourier'`: log t; 'positional': t), output epsilon of the kernel with the
lower Cholesky factor, no division by sigma (`model.scale_by_sigma=False`); see
models.utils.get_eps_fn.

Reading the pickle
------------------
Only the tensors of 'state_dict' are used. Lightning's other entries may reference globals
outside checkpoints.py's allow list (e.g. `torch.float32`, `torch.device` in the logged
metrics' state); these become inert placeholders here (no code of the file is run), so a
trusted-or-not .ckpt is read without torch.
"""
from __future__ import annotations

import collections
import zipfile
from typing import Mapping

import numpy as np

from score_sde_pds import checkpoints as ckpts

PREFIXES = {'ema': 'ema_score_fn.', 'model': 'score_fn.'}


class _Opaque:
  """Stands in for any global outside the allow list; keeps its arguments, runs nothing."""
  _qualname = '?'

  def __new__(cls, *args, **kwargs):
    obj = object.__new__(cls)
    obj.args = args
    return obj

  def __init__(self, *args, **kwargs):
    pass

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f'<opaque {self._qualname}>'


class _LenientUnpickler(ckpts._RestrictedUnpickler):  # pylint: disable=protected-access
  """The restricted torch unpickler, with unknown globals turned into `_Opaque` classes."""

  def find_class(self, module, name):
    try:
      return super().find_class(module, name)
    except ckpts.CheckpointError:
      return type(f'Opaque_{name}', (_Opaque,), {'_qualname': f'{module}.{name}'})


class _LightningReader(ckpts._TorchZipReader):  # pylint: disable=protected-access

  def load(self):
    try:
      with self.zf.open(self.pkl_name) as f:
        return _LenientUnpickler(f, self).load()
    except ckpts.CheckpointError:
      raise
    except Exception as e:  # truncated / corrupt pickle
      raise ckpts.CheckpointError(f'{self.file}: cannot read {self.pkl_name} of the torch '
                                  f'archive (corrupt or truncated?): {type(e).__name__}: {e}'
                                  ) from e


def is_psld_checkpoint(obj) -> bool:
  """True for a PSLD Lightning checkpoint dict (a 'state_dict' with `score_fn.` /
  `ema_score_fn.` entries)."""
  if not isinstance(obj, Mapping) or not isinstance(obj.get('state_dict'), Mapping):
    return False
  return any(k.startswith(tuple(PREFIXES.values())) for k in obj['state_dict'])


def psld_state_dict(ckpt, which: str = 'ema', *, source='<ckpt>') -> collections.OrderedDict:
  """The network state dict (torch names without prefix, tensors lazy) of one copy.

  Args:
    ckpt: the unpickled checkpoint dict (or its 'state_dict').
    which: 'ema' (`ema_score_fn.`, the sampling weights) or 'model' (`score_fn.`).
  """
  if which not in PREFIXES:
    raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
  state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else None
  if not isinstance(state, Mapping):
    raise ckpts.CheckpointError(f"{source}: no 'state_dict' in it; expected a PSLD "
                                'PyTorch Lightning checkpoint (.ckpt).')
  prefix = PREFIXES[which]
  out = collections.OrderedDict(
      (k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
  if not out:
    found = sorted({k.split('.', 1)[0] for k in state})
    raise ckpts.CheckpointError(
        f"{source}: no '{prefix}*' entries in its state_dict (found prefixes {found[:10]}); "
        f"which={which!r} needs the PSLD wrapper's {prefix[:-1]!r} network.")
  return out


def load_psld_checkpoint(path):
  """Unpickles a PSLD .ckpt without torch; tensors stay lazy (read when converted)."""
  kind = ckpts._sniff(path)  # pylint: disable=protected-access
  if kind != 'torch_zip':
    raise ckpts.CheckpointError(f'{path}: not a torch zip archive (a PSLD .ckpt is written by '
                                'torch.save through PyTorch Lightning).')
  reader = _LightningReader(path)
  try:
    obj = reader.load()
  except BaseException:
    reader.close()
    raise
  return reader, obj


def restore_psld(path, config, *, which: str = 'ema', expected=None) -> dict:
  """Official PSLD weights as a Flax parameter tree of config's model.

  Args:
    path: the .ckpt file.
    config: a PSLD config (training.sde='psld', the network's architecture keys).
    which: 'ema' (default) or 'model'.
    expected: optional parameter shapes (default: checkpoints.model_param_shapes(config)).
  Returns:
    Nested dict of float32 numpy arrays.
  Raises:
    CheckpointError / CheckpointMismatchError as checkpoints.restore_official.
  """
  if expected is None:
    expected = ckpts.model_param_shapes(config)
  model_name = config.model.name if config is not None else '?'
  reader, obj = load_psld_checkpoint(path)
  with reader:
    return params_from_psld(obj, path, which, expected, model_name)


def params_from_psld(obj, source, which, expected, model_name='?') -> dict:
  """`psld_state_dict` + checkpoints.torch_state_to_flax (no EMA list: PSLD keeps the EMA
  network's full state dict, the frozen Fourier W included)."""
  state = psld_state_dict(obj, which, source=source)
  return ckpts.torch_state_to_flax(state, expected, source=source, model_name=model_name)


def torch_names_to_flax(names_shapes, expected) -> dict:
  """{torch name: (flax path, rule)} for a PSLD state dict given only names and shapes
  (e.g. a manifest of the official model), raising CheckpointMismatchError when the
  mapping is incomplete or a converted shape differs from `expected`."""
  expected = ckpts._as_flat_shapes(expected)  # pylint: disable=protected-access
  names_shapes = [(n, tuple(s)) for n, s in names_shapes]
  mapping, unmatched, notes = ckpts._map_torch_names(  # pylint: disable=protected-access
      names_shapes, expected)
  shapes = dict(names_shapes)
  mismatched = []
  for name, (fpath, rule) in mapping.items():
    s = shapes[name]
    conv = (s[2], s[3], s[1], s[0]) if rule == 'conv' else s[::-1] if rule == 'linear' else s
    want = tuple(expected[fpath])
    ok = conv == want or (ckpts._is_groupnorm_leaf(fpath)  # pylint: disable=protected-access
                          and int(np.prod(conv)) == int(np.prod(want)))
    if not ok:
      mismatched.append((f'{"/".join(fpath)} (torch {name})', conv, want))
  used = {f for f, _ in mapping.values()}
  missing = ['/'.join(p) for p in expected if p not in used]
  if missing or unmatched or mismatched:
    raise ckpts.CheckpointMismatchError('<manifest>', '?', missing,
                                        [f'{n} (torch)' for n in unmatched], mismatched, notes)
  return mapping


def is_psld_file(path) -> bool:
  """Cheap test for a PSLD Lightning .ckpt: a torch zip whose pickle names the
  `ema_score_fn.` network and a Lightning version (the tensors are not read)."""
  try:
    with zipfile.ZipFile(path) as zf:
      pkls = sorted((n for n in zf.namelist() if n.endswith('data.pkl')), key=len)
      if not pkls:
        return False
      data = zf.read(pkls[0])
  except (zipfile.BadZipFile, OSError, EOFError, ValueError):
    return False
  return b'pytorch-lightning_version' in data and b'score_fn.' in data
