"""The FID Inception-v3 of pytorch-fid in Flax: pool3 features (FID) and logits (IS).

Network
-------
The exact network of the `pytorch-fid` package: the TF Inception graph of 2015-12-05
ported to PyTorch, weight file ``pt_inception-2015-12-05-6726825d.pth``
(:data:`WEIGHTS_FILE_NAME`), with its FID-specific blocks. Every conv is a
``BasicConv2d`` = conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU.

  stem      Conv2d_1a_3x3 (3x3 s2) -> 2a (3x3) -> 2b (3x3 pad 1) -> max pool 3 s2
            -> Conv2d_3b_1x1 -> Conv2d_4a_3x3 -> max pool 3 s2           (N,35,35,192)
  Mixed_5b..5d  FID InceptionA: [1x1, 5x5, 3x3dbl, pool]                 (N,35,35,288)
  Mixed_6a      InceptionB: [3x3 s2, 3x3dbl s2, max pool 3 s2]           (N,17,17,768)
  Mixed_6b..6e  FID InceptionC: [1x1, 7x7, 7x7dbl, pool]                 (N,17,17,768)
  Mixed_7a      InceptionD: [3x3 s2, 7x7x3 s2, max pool 3 s2]            (N,8,8,1280)
  Mixed_7b      FID InceptionE_1: [1x1, 3x3 (2a, 2b), 3x3dbl (3a, 3b), pool] (N,8,8,2048)
  Mixed_7c      FID InceptionE_2: the same with a MAX pool in the pool branch
  pool3         mean over H, W                                           (N,2048)
  logits        pool3 @ fc.weight.T + fc.bias                            (N,1008)

The pool branches of the FID blocks A, C and E_1 average 3x3 windows (stride 1,
padding 1) over the in-image pixels only (torch ``count_include_pad=False``); E_2
(Mixed_7c) takes a 3x3 max (stride 1, padding 1). The 1008 logits are those of the
TF graph's ``fc`` (with its unused extra classes), as Inception-Score code uses them.

Preprocessing (pytorch-fid's ``resize_input=True, normalize_input=True``)
------------------------------------------------------------------------
Images (N, H, W, 3) RGB float in [0, 1] (uint8 is read as x / 255) are resized to
299x299 bilinearly with half-pixel centres and NO antialiasing, for up- and
downsampling alike (torch ``F.interpolate(x, (299, 299), mode='bilinear',
align_corners=False)`` = ``jax.image.resize(..., 'bilinear', antialias=False)``; a
299x299 input is passed through), then mapped to [-1, 1] by 2x - 1. Grayscale
(N, H, W, 1) images are repeated to 3 channels first (as converting a grayscale PIL
image to RGB does).

Obtaining the weights
---------------------
Nothing is downloaded. On a machine with internet, download

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

(the file pytorch-fid itself fetches, 95,628,359 bytes), copy it to this machine and
point ``config.eval.inception_path`` at it. The ``.pth`` is read without torch by
``checkpoints.load_torch_checkpoint``, which reads both ``torch.save`` layouts (the
release predates torch 1.6, so it is most likely the legacy, non-zip one) and refuses
every pickle global that is not a tensor. Optionally convert it once to ``.npz``
(faster to load, no pickle):

  python scripts/convert_inception.py --input pt_inception-2015-12-05-6726825d.pth \\
      --output inception_fid.npz

Public API
----------
``load_inception_params(path)`` -> variables, ``params_from_state_dict(state)``,
``get_feature_fn(variables, dtype='float32', batch_size=50)`` -> ``fn(images)`` ->
``{'pool3': (N, 2048), 'logits': (N, 1008)}`` float32 numpy, ``weights_hash(path)``.
The variables are ``{'params': ..., 'batch_stats': ...}`` of :class:`InceptionV3`.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from score_sde_pds import checkpoints, sampling

__all__ = [
    'InceptionV3',
    'InceptionWeightsError',
    'WEIGHTS_FILE_NAME',
    'WEIGHTS_SHA256',
    'WEIGHTS_URL',
    'expected_state_dict_shapes',
    'get_feature_fn',
    'load_inception_params',
    'params_from_state_dict',
    'preprocess',
    'read_state_dict',
    'weights_hash',
]

WEIGHTS_FILE_NAME = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
               + WEIGHTS_FILE_NAME)
# sha256 of the released file (95,628,359 bytes) as several third-party projects pin it;
# torch.hub checks its first 8 hex digits, the ones in the file name.
WEIGHTS_SHA256 = '6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2'
NPZ_META_KEY = '__meta__'  # json metadata in files written by scripts/convert_inception.py

INPUT_SIZE = 299
BN_EPSILON = 1e-3
NUM_FEATURES = 2048
NUM_LOGITS = 1008
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

_WHERE = (f'It is pytorch-fid\'s FID Inception weight file {WEIGHTS_FILE_NAME!r} '
          f'(95,628,359 bytes): download it on a machine with internet from {WEIGHTS_URL} , '
          'copy it here and set config.eval.inception_path to its path (or to an .npz '
          'written once by scripts/convert_inception.py). Nothing is downloaded '
          'automatically.')


class InceptionWeightsError(checkpoints.CheckpointError):
  """A weight dict does not fit the FID Inception (a ValueError).

  Attributes: ``missing`` / ``unexpected`` tensor names, ``mismatched``
  ``(name, shape, expected_shape)`` triples, ``source`` (file or '<state_dict>').
  """

  def __init__(self, source, missing=(), unexpected=(), mismatched=()):
    self.source = source
    self.missing, self.unexpected = list(missing), list(unexpected)
    self.mismatched = list(mismatched)
    lines = [f'{source}: not the FID Inception weights ({WEIGHTS_FILE_NAME} layout): '
             f'{len(self.missing)} missing, {len(self.unexpected)} unexpected, '
             f'{len(self.mismatched)} wrongly shaped tensors.']
    if self.mismatched:
      lines.append('  wrongly shaped (name: shape vs expected):')
      lines += [f'    {k}: {tuple(s)} vs {tuple(e)}' for k, s, e in self.mismatched]
    if self.missing:
      lines.append('  missing: ' + ', '.join(self.missing))
    if self.unexpected:
      lines.append('  unexpected: ' + ', '.join(self.unexpected))
    super().__init__('\n'.join(lines))


# ----------------------------------------------------------------------------- network


def _precision(dtype):
  # float32 at full precision: TF32/bf16 convolutions move pool3 by ~1e-2 (fixture README)
  return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU; NHWC."""
  features: int
  kernel_size: tuple = (1, 1)
  strides: tuple = (1, 1)
  padding: tuple = (0, 0)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel_size, self.strides,
                padding=tuple((p, p) for p in self.padding), use_bias=False,
                dtype=self.dtype, precision=_precision(self.dtype), name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, dtype=self.dtype,
                     name='bn')(x)
    return nn.relu(x)


def _avg_pool_same(x):
  """3x3 / stride 1 / pad 1 mean over in-image pixels only (count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_same(x):
  return nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))


def _max_pool_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  """Mixed_5b..5d (pytorch-fid FIDInceptionA): concat [1x1, 5x5, 3x3dbl, pool]."""
  pool_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    b1 = conv(64, name='branch1x1')(x)
    b5 = conv(48, name='branch5x5_1')(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = conv(64, name='branch3x3dbl_1')(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision InceptionB): concat [3x3 s2, 3x3dbl s2, max pool s2]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    b3 = conv(384, (3, 3), (2, 2), name='branch3x3')(x)
    bd = conv(64, name='branch3x3dbl_1')(x)
    bd = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = conv(96, (3, 3), (2, 2), name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e (pytorch-fid FIDInceptionC): concat [1x1, 7x7, 7x7dbl, pool]."""
  channels_7x7: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    c7 = self.channels_7x7
    b1 = conv(192, name='branch1x1')(x)
    b7 = conv(c7, name='branch7x7_1')(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = conv(c7, name='branch7x7dbl_1')(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = conv(192, name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision InceptionD): concat [3x3 s2, 7x7x3 s2, max pool s2]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    b3 = conv(192, name='branch3x3_1')(x)
    b3 = conv(320, (3, 3), (2, 2), name='branch3x3_2')(b3)
    b7 = conv(192, name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, (3, 3), (2, 2), name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, pool='avg') / Mixed_7c (FIDInceptionE_2, pool='max').

  concat [1x1, 3x3_2a, 3x3_2b, 3x3dbl_3a, 3x3dbl_3b, pool]; 2a/2b (1x3 / 3x1) both
  read branch3x3_1, 3a/3b both read branch3x3dbl_2.
  """
  pool: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    b1 = conv(320, name='branch1x1')(x)
    b3 = conv(384, name='branch3x3_1')(x)
    b3a = conv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3)
    b3b = conv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)
    bd = conv(448, name='branch3x3dbl_1')(x)
    bd = conv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bda = conv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd)
    bdb = conv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)
    # the input is post-ReLU (>= 0): max-pool padding with -inf or 0 is the same
    pooled = _avg_pool_same(x) if self.pool == 'avg' else _max_pool_same(x)
    bp = conv(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception-v3 on preprocessed images.

  __call__(x): x (N, 299, 299, 3) in [-1, 1] (see :func:`preprocess`) ->
  (pool3 (N, 2048), logits (N, 1008)), both float32. ``dtype`` is the compute dtype
  of the convolutions and BatchNorms; pool3 and the fc run in float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    x = conv(32, (3, 3), (2, 2), name='Conv2d_1a_3x3')(x)
    x = conv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = conv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_s2(x)
    x = conv(80, name='Conv2d_3b_1x1')(x)
    x = conv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_s2(x)
    x = InceptionA(32, self.dtype, name='Mixed_5b')(x)
    x = InceptionA(64, self.dtype, name='Mixed_5c')(x)
    x = InceptionA(64, self.dtype, name='Mixed_5d')(x)
    x = InceptionB(self.dtype, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(c7, self.dtype, name=name)(x)
    x = InceptionD(self.dtype, name='Mixed_7a')(x)
    x = InceptionE('avg', self.dtype, name='Mixed_7b')(x)
    x = InceptionE('max', self.dtype, name='Mixed_7c')(x)
    pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # AdaptiveAvgPool2d(1)
    logits = nn.Dense(NUM_LOGITS, precision=jax.lax.Precision.HIGHEST, name='fc')(pool3)
    return pool3, logits


def preprocess(images):
  """(N, H, W, 1 or 3) float in [0, 1] -> (N, 299, 299, 3) in [-1, 1] (pytorch-fid's).

  Grayscale is repeated to RGB; bilinear resize with half-pixel centres and no
  antialiasing (torch F.interpolate(align_corners=False)); then 2x - 1.
  """
  x = jnp.asarray(images, jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):  # pytorch-fid's 299 -> 299 resize is exact
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), 'bilinear',
                         antialias=False, precision=jax.lax.Precision.HIGHEST)
  return 2. * x - 1.


# ----------------------------------------------------------------------------- weights
# Flax leaf (collection, module kind, leaf) -> (torch leaf, layout rule)
_LEAF_RULES = {
    ('params', 'conv', 'kernel'): ('weight', 'conv'),         # OIHW -> HWIO
    ('params', 'bn', 'scale'): ('weight', 'copy'),
    ('params', 'bn', 'bias'): ('bias', 'copy'),
    ('batch_stats', 'bn', 'mean'): ('running_mean', 'copy'),
    ('batch_stats', 'bn', 'var'): ('running_var', 'copy'),
    ('params', 'fc', 'kernel'): ('weight', 'linear'),         # (out, in) -> (in, out)
    ('params', 'fc', 'bias'): ('bias', 'copy'),
}
_TO_FLAX = {'conv': lambda w: w.transpose(2, 3, 1, 0), 'linear': lambda w: w.T,
            'copy': lambda w: w}
_TORCH_SHAPE = {'conv': lambda s: (s[3], s[2], s[0], s[1]), 'linear': lambda s: s[::-1],
                'copy': lambda s: s}
_IGNORED_SUFFIX = '.num_batches_tracked'  # int64 BatchNorm counters, unused in inference


@functools.lru_cache(maxsize=None)
def _layout():
  """torch name -> (collection, flax path, rule, torch shape), from the Flax model itself."""
  shapes = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  layout = collections.OrderedDict()
  for collection in ('params', 'batch_stats'):
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
      path = tuple(p.key for p in path)
      torch_leaf, rule = _LEAF_RULES[(collection, path[-2], path[-1])]
      name = '.'.join(path[:-1] + (torch_leaf,))
      layout[name] = (collection, path, rule, tuple(_TORCH_SHAPE[rule](leaf.shape)))
  return layout


def expected_state_dict_shapes() -> dict:
  """{torch tensor name: shape} of the weight file (everything but num_batches_tracked)."""
  return {name: entry[3] for name, entry in _layout().items()}


def params_from_state_dict(state: Mapping[str, Any], *, source: str = '<state_dict>') -> dict:
  """Weight-file tensors {name: array} -> Flax variables {'params', 'batch_stats'}.

  Names are those of ``pt_inception-2015-12-05-6726825d.pth`` (``<Block>.<branch>.conv
  .weight``, ``.bn.{weight,bias,running_mean,running_var}``, ``fc.weight``,
  ``fc.bias``); ``*.num_batches_tracked`` is ignored. Conv weights go OIHW -> HWIO, fc
  (out, in) -> (in, out), BatchNorm weight -> scale, running_mean/var -> mean/var.

  Raises:
    InceptionWeightsError: listing every missing, unexpected and wrongly shaped tensor.
  """
  layout = _layout()
  missing = [n for n in layout if n not in state]
  unexpected = [k for k in state if k not in layout and not str(k).endswith(_IGNORED_SUFFIX)]
  mismatched = [(k, tuple(np.shape(state[k])), layout[k][3]) for k in layout
                if k in state and tuple(np.shape(state[k])) != layout[k][3]]
  if missing or unexpected or mismatched:
    raise InceptionWeightsError(source, missing, unexpected, mismatched)
  variables = {'params': {}, 'batch_stats': {}}
  for name, (collection, path, rule, _) in layout.items():
    node = variables[collection]
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.ascontiguousarray(_TO_FLAX[rule](np.asarray(state[name], np.float32)))
  return variables


def weights_hash(path) -> str:
  """sha256 hex digest of the weight file (recorded next to FID results).

  For an .npz written by scripts/convert_inception.py it is the sha256 of the .pth it
  was converted from (recorded in the .npz), so a .pth and its conversion -- the same
  weights -- have the same hash (for the official file: :data:`WEIGHTS_SHA256`).
  """
  path = os.fspath(path)
  if _is_npz(path):
    with np.load(path, allow_pickle=False) as z:
      if NPZ_META_KEY in z.files:
        source = json.loads(str(z[NPZ_META_KEY])).get('source_sha256')
        if source:
          return str(source)
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _is_npz(path):
  try:
    with zipfile.ZipFile(path) as z:
      names = z.namelist()
  except (zipfile.BadZipFile, OSError):
    return False
  return bool(names) and all(n.endswith('.npy') for n in names)


def read_state_dict(path) -> dict:
  """{tensor name: numpy array} of a ``.pth`` (torch zip or legacy) or converted ``.npz``."""
  if not path or not os.path.isfile(path):
    what = f'{path!r} does not exist' if path else 'no file given'
    raise FileNotFoundError(f'FID Inception weights: {what}. {_WHERE}')
  path = os.fspath(path)
  if _is_npz(path):
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files if k != NPZ_META_KEY}
  state = checkpoints.load_torch_checkpoint(path)
  if not isinstance(state, Mapping):
    raise checkpoints.CheckpointError(
        f'{path}: holds a {type(state).__name__}, expected a state dict (tensor name -> '
        f'tensor) like {WEIGHTS_FILE_NAME}.')
  return dict(state)


def load_inception_params(path) -> dict:
  """Flax variables of the FID Inception from ``pt_inception-2015-12-05-6726825d.pth``
  (read without torch) or from its ``.npz`` conversion (scripts/convert_inception.py).

  Raises:
    FileNotFoundError: the file is missing (says where to get it and where to put it).
    checkpoints.CheckpointError: unreadable file; InceptionWeightsError (a subclass):
      readable but not these weights (lists every missing / misshaped tensor).
  """
  return params_from_state_dict(read_state_dict(path), source=os.fspath(path))


# ----------------------------------------------------------------------------- features


def _check_images(images):
  x = np.asarray(images)
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape[1:3]) < 1:
    raise ValueError(f'FID Inception input: expected images (N, H, W, 3) or (N, H, W, 1) '
                     f'NHWC, got shape {x.shape}.')
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'FID Inception input: expected float images in [0, 1] or uint8, '
                     f'got dtype {x.dtype}.')
  x = x.astype(np.float32, copy=False)
  if x.size:
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
      raise ValueError(f'FID Inception input: expected pixel values in [0, 1], got range '
                       f'[{lo}, {hi}] (centred [-1, 1] data must go through the inverse '
                       'scaler; clip samples to [0, 1]).')
  return x


def _batch_for(n_img, max_batch, n_dev):
  """max_batch, or for fewer images the smallest n_dev * 2^k >= n_img (bounded compiles)."""
  batch = n_dev
  while batch < min(n_img, max_batch):
    batch *= 2
  return min(batch, max_batch)


def get_feature_fn(params, *, dtype='float32', batch_size: int = 50):
  """Jitted, batched, device-sharded FID Inception features.

  Args:
    params: Flax variables from :func:`load_inception_params` /
      :func:`params_from_state_dict` (placed on the devices once, passed to the jitted
      function as arguments).
    dtype: 'float32' (default; full-precision convs, the reference setting) or
      'bfloat16' (convs and BatchNorms in bfloat16: faster on accelerators, but pool3
      moves by ~0.1, so FIDs are not comparable with published ones).
    batch_size: images per compiled call, rounded up to a multiple of the device count
      (each device gets batch_size / n_devices). A call with fewer images uses the
      smallest n_devices * 2^k >= N instead, so at most log2(batch_size) + 1 programs.

  Returns:
    fn(images): images (N, H, W, 3) or (N, H, W, 1) float in [0, 1] (or uint8, read as
    x / 255), any N, H, W -> {'pool3': (N, 2048), 'logits': (N, 1008)} float32 numpy.
    N is padded internally to whole batches (padding rows are dropped). Each
    (batch, H, W, C) compiles the resize once, each batch size the network once.
  """
  if isinstance(dtype, str) and dtype in _DTYPES:
    compute_dtype = _DTYPES[dtype]
  else:
    names = {np.dtype(v).name: v for v in _DTYPES.values()}
    try:
      compute_dtype = names[np.dtype(dtype).name]
    except (TypeError, KeyError):
      raise ValueError(f'FID Inception dtype={dtype!r}: expected one of {sorted(_DTYPES)}.') \
          from None
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
      or batch_size < 1:
    raise ValueError(f'FID Inception batch_size={batch_size!r}: expected a positive integer.')
  n_dev = jax.device_count()
  max_batch = -(-int(batch_size) // n_dev) * n_dev
  model = InceptionV3(dtype=compute_dtype)
  if n_dev > 1:
    mesh = sampling._data_mesh()
    data_sharding = NamedSharding(mesh, PartitionSpec('data'))
    variables = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
  else:
    data_sharding = None
    variables = jax.device_put(params)

  @functools.lru_cache(maxsize=None)
  def compiled(batch):
    shard, _, local = sampling._sharders(batch)
    prep = jax.jit(lambda x: local(preprocess, in_specs=(PartitionSpec('data'),))(shard(x)))
    net = jax.jit(lambda v, x: local(model.apply)(v, shard(x)))
    return prep, net

  def fetch(pending):
    (pool3, logits), n = pending
    return np.asarray(pool3, np.float32)[:n], np.asarray(logits, np.float32)[:n]

  def fn(images):
    x = _check_images(images)
    n_img = x.shape[0]
    if n_img == 0:
      return {'pool3': np.zeros((0, NUM_FEATURES), np.float32),
              'logits': np.zeros((0, NUM_LOGITS), np.float32)}
    batch = _batch_for(n_img, max_batch, n_dev)
    prep, net = compiled(batch)
    out, pending = [], None
    for start in range(0, n_img, batch):
      chunk = x[start:start + batch]
      n = chunk.shape[0]
      if n < batch:
        chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], chunk.dtype)])
      chunk = chunk.astype(np.float32) / 255. if chunk.dtype == np.uint8 else chunk
      chunk = jax.device_put(chunk, data_sharding)
      result = (net(variables, prep(chunk)), n)
      if pending is not None:  # one batch in flight: bounded memory, host/device overlap
        out.append(fetch(pending))
      pending = result
    out.append(fetch(pending))
    return {'pool3': np.concatenate([o[0] for o in out]),
            'logits': np.concatenate([o[1] for o in out])}

  return fn
