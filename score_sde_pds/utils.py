"""Small file and config utilities: atomic writes, image grids, config records."""
from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from typing import Any

import numpy as np


def enable_compilation_cache(path: str, min_compile_seconds: float = 1.0) -> None:
  """Turns on JAX's persistent compilation cache in `path` ('' leaves it off)."""
  if not path:
    return
  import jax
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_seconds)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_path(path, workdir=None, key='path') -> str:
  """Finds a file named in a config: absolute paths as they are; relative ones under
  `workdir`, then the current directory, then the repository root (where the bundled
  `assets/` live). Raises FileNotFoundError naming `key` and every place tried."""
  path = os.fspath(path)
  if os.path.isabs(path):
    candidates = [path]
  else:
    candidates = ([os.path.join(workdir, path)] if workdir else []) + [
        path, os.path.join(REPO_ROOT, path)]
  for cand in candidates:
    if os.path.isfile(cand):
      return cand
  tried = ', '.join(dict.fromkeys(os.path.abspath(c) for c in candidates))
  raise FileNotFoundError(f'{key}={path!r}: file not found (tried {tried})')


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same folder and os.replace.

  A reader (or a resumed run) sees either the old file or the complete new one.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_save_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + '\n').encode())


def to_uint8(images) -> np.ndarray:
  """[0,1] float images -> uint8 by clip(x * 255).astype(uint8) (score_sde's quantisation)."""
  return np.clip(np.asarray(images, np.float32) * 255., 0, 255).astype(np.uint8)


def image_grid(images_uint8: np.ndarray, padding: int = 2) -> np.ndarray:
  """(N,H,W,C) uint8 -> one (rows*(H+p)+p, cols*(W+p)+p, C) grid, nearly square."""
  n, h, w, c = images_uint8.shape
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
  for k in range(n):
    r, q = divmod(k, cols)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y:y + h, x:x + w] = images_uint8[k]
  return grid


def figure_png_bytes(fig, dpi: int, **savefig_kwargs) -> bytes:
  """PNG bytes of a matplotlib figure, which is closed afterwards (the tables' plots)."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi, **savefig_kwargs)
  plt.close(fig)
  return buf.getvalue()


def write_result_files(folder: str, stem: str, contents: dict) -> dict:
  """Writes <folder>/<stem>.<ext> for each ext -> bytes of `contents`, each atomically;
  returns {ext: path} (the CSV/markdown/plot triplets of the sweep and table scripts)."""
  paths = {ext: os.path.join(folder, f'{stem}.{ext}') for ext in contents}
  for ext, data in contents.items():
    atomic_write_bytes(paths[ext], data)
  return paths


def png_bytes(image_uint8: np.ndarray) -> bytes:
  from PIL import Image
  img = image_uint8[..., 0] if image_uint8.shape[-1] == 1 else image_uint8
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='PNG')
  return buf.getvalue()


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def versions() -> dict:
  import flax
  import jax
  import jaxlib
  import score_sde_pds
  return {'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
          'numpy': np.__version__, 'score_sde_pds': score_sde_pds.__version__}
