"""Import the peers' own code (score_sde JAX, score_sde_pytorch, fudan-zvg/PDS) at run time.

Used by scripts/benchmark_sampling.py to time the peers' samplers in the same process as
the project's, interleaved round by round. Nothing of the peers is part of this
repository: each is a checkout the user points to. The three checkouts use the same
top-level module names (`sampling`, `sde_lib`, `models`, `op`, `utils`), so each is
imported in isolation (`import_checkout`): its modules are loaded from its path, then
taken out of `sys.modules` again (the loaded module objects keep their references to
each other), so the next checkout -- or the project's own code -- imports its own.

The PyTorch checkouts need two run-time shims on a CPU-only machine, neither of which
changes what they compute:
  - `torch.utils.cpp_extension.load` is replaced by a stub while their `op` package is
    imported: it JIT-compiles CUDA kernels at import time (upfirdn2d, fused_act), and
    their `upfirdn2d` calls its pure-PyTorch `upfirdn2d_native` for CPU tensors anyway;
  - fudan-zvg/PDS's sampler writes `torch.cuda.FloatTensor` for every noise draw and
    cast; the PDS peer aliases it to the CPU `torch.FloatTensor` (process-wide: this is
    a benchmark process).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

_SHARED_NAMES = ('sampling', 'sde_lib', 'utils', 'models', 'op', 'losses', 'datasets',
                 'likelihood', 'evaluation', 'controllable_generation', 'run_lib')


def _owned(path):
  """Names in sys.modules whose file lies under `path`."""
  out = []
  for name, mod in list(sys.modules.items()):
    f = getattr(mod, '__file__', None)
    if f and os.path.abspath(f).startswith(path + os.sep):
      out.append(name)
  return out


CHECKOUT_ENTRIES = ('sampling.py', 'sde_lib.py', 'models')   # every peer has these


def _missing(path, entries):
  """The entries of `entries` that do not exist under `path`."""
  return [f for f in entries if not os.path.exists(os.path.join(path, f))]


def import_checkout(path, modules, required_files=CHECKOUT_ENTRIES):
  """Imports `modules` (dotted names) from the checkout at `path`, isolated.

  Args:
    path: the checkout's root (its top-level modules are imported from there).
    modules: names to import, e.g. ('sampling', 'models.utils', 'models.ncsnpp').
    required_files: entries that must exist under `path` (checked first, for a clear
      error on a wrong path).
  Returns:
    {name: module object}.
  Raises:
    ValueError: `path` is not such a checkout. ImportError: importing failed.
  """
  path = os.path.abspath(os.path.expanduser(path))
  missing = _missing(path, required_files)
  if missing:
    raise ValueError(f'{path!r} is not the expected checkout: {missing} missing there.')
  stashed = {}
  for name in list(sys.modules):
    if name.split('.')[0] in _SHARED_NAMES:
      stashed[name] = sys.modules.pop(name)
  sys.path.insert(0, path)
  try:
    out = {m: importlib.import_module(m) for m in modules}
  finally:
    sys.path.remove(path)
    for name in _owned(path):
      del sys.modules[name]
    for name in list(sys.modules):
      if name.split('.')[0] in _SHARED_NAMES:
        del sys.modules[name]
    sys.modules.update(stashed)
  for name, mod in out.items():
    if not os.path.abspath(mod.__file__).startswith(path + os.sep):
      raise ImportError(f'imported {mod.__file__} for {name!r}, not the checkout at {path}.')
  return out


def check_checkouts(flags):
  """Fails early, naming the flag, if a peer path is not a checkout or torch is missing.

  Args:
    flags: [(flag name, path, needs_torch)]; entries with an empty path are skipped.
  Raises:
    ValueError (wrong path) or ImportError (torch not installed).
  """
  for flag, path, needs_torch in flags:
    if not path:
      continue
    path = os.path.abspath(os.path.expanduser(path))
    missing = _missing(path, CHECKOUT_ENTRIES)
    if missing:
      raise ValueError(f'--{flag}={path!r} is not a checkout of that peer: {missing} '
                       'missing there.')
    if needs_torch:
      try:
        import torch  # noqa: F401
      except ImportError as e:
        raise ImportError(f'--{flag} runs a PyTorch peer and needs torch '
                          f'(pip install torch==2.13.0): {e}') from e


def peer_sde(sde_lib, config, steps):
  """The SDE of `config.training.sde` with `steps` steps, built from a peer's own sde_lib
  (score_sde and its PyTorch ports share constructor names and arguments)."""
  m, name = config.model, str(config.training.sde).lower()
  if name == 'vesde':
    return sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=steps)
  if name == 'vpsde':
    return sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=steps)
  if name == 'subvpsde':
    return sde_lib.subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=steps)
  raise ValueError(f'config.training.sde={config.training.sde!r}: the peers have vesde, '
                   'vpsde, subvpsde.')


@contextlib.contextmanager
def _no_cuda_extension_build():
  """torch.utils.cpp_extension.load -> a stub returning None, while the block runs."""
  from torch.utils import cpp_extension
  real = cpp_extension.load
  cpp_extension.load = lambda *a, **k: None
  try:
    yield
  finally:
    cpp_extension.load = real


def _to_nchw(torch, x_nhwc):
  """A contiguous float tensor (B, C, H, W) of an NHWC array."""
  import numpy as np
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x_nhwc), (0, 3, 1, 2))))


def pytorch_config(config):
  """Our ml_collections config (same keys as score_sde's) with device='cpu' for PyTorch."""
  import torch
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.device = torch.device('cpu')
  return cfg


class PytorchPeer:
  """A PyTorch peer's NCSN++ and PC sampler (score_sde_pytorch or fudan-zvg/PDS), on CPU.

  Args:
    path: the checkout's root.
    kind: 'score_sde_pytorch' (its get_pc_sampler) or 'pds_pytorch' (fudan-zvg/PDS's,
      which takes space / frequency masks).
    config: our config of the network and sampler (the same keys as score_sde's).
    checkpoint: a score_sde_pytorch checkpoint (.pth: {'model', 'ema', ...}); its EMA
      weights are loaded, as the official samplers do. '' -> the model's own random init.
  """

  def __init__(self, path, kind, config, checkpoint=''):
    import torch
    if kind not in ('score_sde_pytorch', 'pds_pytorch'):
      raise ValueError(f"kind={kind!r}: expected 'score_sde_pytorch' or 'pds_pytorch'.")
    self.kind, self.torch = kind, torch
    name = str(config.model.name)
    with _no_cuda_extension_build():
      try:
        mods = import_checkout(path, ('sampling', 'sde_lib', 'models.utils', 'models.ema',
                                      f'models.{name}'))
      except ImportError as e:
        raise ImportError(f'importing {kind} from {path} failed: {e}') from e
    self.path = os.path.abspath(os.path.expanduser(path))
    self.sampling, self.sde_lib = mods['sampling'], mods['sde_lib']
    self.mutils, ema_mod = mods['models.utils'], mods['models.ema']
    self.config = pytorch_config(config)
    torch.manual_seed(0)
    self.model = self.mutils.create_model(self.config)
    if checkpoint:
      state = torch.load(checkpoint, map_location='cpu', weights_only=False)  # trusted file
      self.model.load_state_dict(state['model'], strict=False)
      ema = ema_mod.ExponentialMovingAverage(self.model.parameters(), decay=0.999)
      ema.load_state_dict(state['ema'])
      ema.copy_to(self.model.parameters())
    self.model.eval()
    if kind == 'pds_pytorch':
      torch.cuda.FloatTensor = torch.FloatTensor   # see the module docstring

  def sde(self, config, steps):
    return peer_sde(self.sde_lib, config, steps)

  def score(self, config, x_nhwc, t):
    """The peer's score function on NHWC numpy input (for checking the weights): NHWC."""
    import numpy as np
    torch = self.torch
    sde = self.sde(config, int(config.model.num_scales))
    fn = self.mutils.get_score_fn(sde, self.model, train=False,
                                  continuous=bool(config.training.continuous))
    with torch.no_grad():
      out = fn(_to_nchw(torch, x_nhwc), torch.from_numpy(np.asarray(t, np.float32)))
    return np.transpose(out.numpy(), (0, 2, 3, 1))

  def pc_sampler(self, config, shape, steps, eps, masks=None, seed=0):
    """A zero-argument function running the peer's PC sampler once (NCHW output).

    shape: our NHWC sample shape. masks: for 'pds_pytorch', (space_mask, freq_mask) as
    torch tensors of shape (1, C, H, W) already in the sampler's form (the inverse
    filters its own get_sampling_fn builds), or None for PDS off (its own defaults:
    space_mask ones(1), freq_mask 1).
    """
    torch = self.torch
    s = config.sampling
    b, h, w, c = shape
    kw = dict(sde=self.sde(config, steps), shape=(b, c, h, w),
              predictor=self.sampling.get_predictor(str(s.predictor).lower()),
              corrector=self.sampling.get_corrector(str(s.corrector).lower()),
              inverse_scaler=lambda x: x, snr=float(s.snr), n_steps=int(s.n_steps_each),
              probability_flow=bool(s.probability_flow),
              continuous=bool(config.training.continuous), denoise=bool(s.noise_removal),
              eps=eps, device='cpu')
    if self.kind == 'pds_pytorch':
      space, freq = masks if masks is not None else (torch.ones(1), 1)
      kw.update(space_mask=space, freq_mask=freq)
    fn = self.sampling.get_pc_sampler(**kw)

    def run():
      torch.manual_seed(seed)
      return fn(self.model)[0]
    return run

  def samplers(self, config, shape, steps, eps, *, alpha, seed=0, with_pds=True):
    """{item name: zero-argument run} of this peer's PC samplers, as the benchmarks name
    them: 'pytorch' (score_sde_pytorch), or 'pds_pytorch_off' and, with_pds,
    'pds_pytorch' (fudan-zvg/PDS with masks from benchmark_presets.random_statistics at
    `alpha`, the statistics of the project's `pds` item)."""
    if self.kind == 'score_sde_pytorch':
      return {'pytorch': self.pc_sampler(config, shape, steps, eps, seed=seed)}
    runs = {'pds_pytorch_off': self.pc_sampler(config, shape, steps, eps, seed=seed)}
    if with_pds:
      from benchmark_presets import random_statistics
      freq, space = random_statistics(tuple(shape[1:]), seed)
      runs['pds_pytorch'] = self.pc_sampler(
          config, shape, steps, eps, seed=seed,
          masks=pds_masks_from_statistics(freq, space, alpha))
    return runs

  def two_forward_loop(self, config, shape, steps, eps, x0):
    """The floor of a PC step with this peer's network (as benchmark_sampling's
    `two_forward_loop`): a zero-argument function making `steps` iterations of two
    dependent score evaluations (torch.no_grad, NCHW) and nothing else.

    shape: NHWC (B, H, W, C); x0: the NHWC start batch (any array)."""
    torch = self.torch
    sde = self.sde(config, steps)
    score_fn = self.mutils.get_score_fn(sde, self.model, train=False,
                                        continuous=bool(config.training.continuous))
    x_init = _to_nchw(torch, x0)
    ts = torch.linspace(sde.T, eps, steps)

    def run():
      with torch.no_grad():
        x = x_init
        for k in range(steps):
          t = torch.full((shape[0],), float(ts[k]))
          x = x + 1e-6 * score_fn(x, t)
          x = x + 1e-6 * score_fn(x, t)
      return None
    return run


def pds_masks_from_statistics(freq_stats, space_stats, alpha):
  """fudan-zvg/PDS's (space_mask, freq_mask) from (H, W, C) statistics, as its sampler
  builds them from its .npy files: each normalised by its max, then (s + alpha - 1) /
  alpha, inverted; laid out (1, C, H, W)."""
  import numpy as np
  import torch

  def form(stats):
    m = np.transpose(np.asarray(stats, np.float32), (2, 0, 1))[None]
    m = m / m.max()
    return torch.from_numpy((m + alpha - 1) / alpha).pow(-1)
  return form(space_stats), form(freq_stats)


def describe(peer):
  """A JSON-able record of a peer: kind, path, torch version and threads."""
  torch = peer.torch
  return {'kind': peer.kind, 'path': peer.path, 'sampling_py': peer.sampling.__file__,
          'torch_version': str(torch.__version__), 'torch_threads': torch.get_num_threads()}
