"""Samples do not depend on the device count (1, 2, 4 CPU devices) or on the batch size.

The analytic oracle (configs/analytic/gaussian_field.py at 8x8, N=10) is sampled through
`sampling.get_sampling_fn` (its jitted function, compiled ahead of time so the compiled
HLO can be inspected) for a fixed global batch of 8 and seed, with PDS off and on, and
corrector_norm 'batch' and 'sample'. Each device count runs in its own subprocess with
JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=n, because the
sampler shards the batch over all of `jax.devices()` (sampling._sharders): a process
with n devices is exactly what a user with n devices runs, so no device-restriction
hook is needed. The three subprocesses run concurrently.

What is bit-identical, and why:
  * corrector_norm='sample', >= 2 samples per device: bit-identical for 1, 2, 4 devices
    and for batch 4 vs 8 (every sample draws its noise from its own key and all its
    work is per sample).
  * corrector_norm='batch': the sharded programs (2 and 4 devices) agree bit for bit;
    the 1-device program differs from them by a few float32 ulps (max |diff| ~3e-6 on
    samples of size ~1 after 10 steps): the batch-mean of the per-sample norms is
    compiled differently without the all-gather, and a 1-ulp change of the snr step
    size propagates. Tolerance: atol 2e-5.
  * one sample per device (batch 4 on 4 devices) with PDS: XLA CPU compiles the
    per-device FFT program for shape (1, H, W, C), which rounds differently from
    batch >= 2 at the ulp level (batch 1 vs 8 on ONE device differs the same way).
    Tolerance: atol 2e-5.

Known XLA limitation (KNOWN_FFT_REPLICATION): XLA's SPMD partitioners (Shardy and GSPMD)
do not split an FFT over the batch: they all-gather its operand and run the FFT of the
whole batch on every device. The sampler's only intended cross-device traffic is the
(B,) norm vectors of the snr rule. With one sample per device this also hits an XLA CPU
RET_CHECK (fft_thunk.cc, IsMonotonicWithDim0Major) for the PDS sampler. The fix is to
run batch-local work (the score function and the PDS operators) under `jax.shard_map`
in sampling.py; until it lands, the affected checks xfail. Set KNOWN_FFT_REPLICATION =
False after the fix so they become hard assertions.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_COUNTS = (1, 2, 4)
KNOWN_FFT_REPLICATION = False
ATOL = 2e-5

# Run in a fresh interpreter; argv[1] = output prefix (writes <prefix>.npz, <prefix>.json).
_SCRIPT = r'''
import json, os, re, sys
import jax
import numpy as np
from configs.analytic import gaussian_field
from score_sde_pds import preconditioning, sampling, sde_lib
from score_sde_pds.models import utils as mutils

prefix = sys.argv[1]
config = gaussian_field.get_config()
config.data.image_size = 8
config.model.num_scales = 10
shape3 = (8, 8, config.data.num_channels)
sde, eps = sde_lib.get_sde(config)
model, states, params = mutils.init_model(jax.random.PRNGKey(0), config)
g = np.random.default_rng(0)
precs = {
    'vanilla': preconditioning.Preconditioner.from_config(config),   # identity
    'pds': preconditioning.Preconditioner.from_statistics(
        freq_stats=g.uniform(1., 10., shape3), space_stats=g.uniform(0.05, 1., shape3),
        alpha=5., shape=shape3),
}
gather_re = re.compile(r'= \(?(\w+)\[([\d,]*)\][^=]*? all-gather(?:-start)?\(')
rng = jax.random.PRNGKey(7)
arrays, info = {}, {'device_count': jax.device_count()}
for norm in ('batch', 'sample'):
  config.sampling.corrector_norm = norm
  for batch, offsets in ((8, (0,)), (4, (0, 4))):
    if batch == 4 and norm == 'batch':
      continue  # the batch-mean rule couples the samples of a batch
    config.sampling.batch_size = batch
    fn = sampling.get_sampling_fn(config, sde, model, (batch,) + shape3, eps)
    for name, p in precs.items():
      case = f'{name}_{norm}_b{batch}'
      try:
        compiled = fn.jitted.lower(rng, params, states, p, 0).compile()
        gathers = [f'{m[0]}[{m[1]}]' for m in gather_re.findall(compiled.as_text())]
        for off in offsets:
          x, nfe, _ = compiled(rng, params, states, p, off)
          key = f'{case}_o{off}'
          arrays[key] = np.asarray(x)
          info[key] = {'devices': len(x.sharding.device_set),
                       'shard_batch': int(x.sharding.shard_shape(x.shape)[0]),
                       'replicated': bool(x.sharding.is_fully_replicated),
                       'nfe': int(nfe), 'all_gathers': gathers}
      except Exception as e:  # recorded, judged by the test
        info[case + '_error'] = f'{type(e).__name__}: {str(e)[:300]}'
np.savez(prefix + '.npz', **arrays)
with open(prefix + '.json', 'w') as f:
  json.dump(info, f)
'''


def _env(n):
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={n}'])
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{n: (arrays, info)} from one subprocess per device count n (run concurrently)."""
  tmp = tmp_path_factory.mktemp('devices')
  procs = {}
  for n in DEVICE_COUNTS:
    prefix = str(tmp / f'dev{n}')
    procs[n] = (prefix, subprocess.Popen(
        [sys.executable, '-c', _SCRIPT, prefix], cwd=ROOT, env=_env(n),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  out = {}
  deadline = time.time() + 240
  for n, (prefix, proc) in procs.items():
    try:
      log, _ = proc.communicate(timeout=max(1., deadline - time.time()))
    except subprocess.TimeoutExpired:
      proc.kill()
      log, _ = proc.communicate()
      pytest.fail(f'{n}-device sampling subprocess timed out:\n{log[-3000:]}')
    assert proc.returncode == 0, f'{n}-device subprocess failed:\n{log[-3000:]}'
    with np.load(prefix + '.npz') as f:
      arrays = {k: f[k] for k in f.files}
    with open(prefix + '.json') as f:
      out[n] = (arrays, json.load(f))
  return out


def _get(runs, n, key):
  """Samples of `key` on n devices; xfails on the known one-sample-per-device XLA crash."""
  arrays, info = runs[n]
  case = key.rsplit('_o', 1)[0]
  err = info.get(case + '_error')
  if err is not None:
    if KNOWN_FFT_REPLICATION and 'RET_CHECK' in err and 'fft' in err:
      pytest.xfail(f'{n} devices, {case}: known XLA CPU FFT layout crash of replicated '
                   f'FFTs (fix: shard_map in sampling.py): {err[:160]}')
    pytest.fail(f'{n} devices, {case} failed: {err}')
  return arrays[key]


def test_runs_are_sharded_over_all_devices(runs):
  for n in DEVICE_COUNTS:
    arrays, info = runs[n]
    assert info['device_count'] == n
    for key, arr in arrays.items():
      assert arr.shape[1:] == (8, 8, 3) and np.all(np.isfinite(arr)), key
      # the output is really split over all n devices, batch / n samples each
      assert info[key]['devices'] == n, (n, key, info[key])
      assert info[key]['shard_batch'] == arr.shape[0] // n, (n, key, info[key])
      assert info[key]['replicated'] == (n == 1), (n, key, info[key])
      assert info[key]['nfe'] == 20
    assert 'pds_sample_b8_o0' in arrays and 'vanilla_batch_b8_o0' in arrays


@pytest.mark.parametrize('pds', ['vanilla', 'pds'])
def test_sample_norm_bit_identical_across_device_counts(runs, pds):
  key = f'{pds}_sample_b8_o0'
  ref = _get(runs, 1, key)
  for n in DEVICE_COUNTS[1:]:
    got = _get(runs, n, key)
    assert np.array_equal(got, ref), (
        f'{key}: {n} devices differ from 1 device, max |diff| {np.max(np.abs(got - ref))}')


@pytest.mark.parametrize('pds', ['vanilla', 'pds'])
def test_batch_norm_across_device_counts(runs, pds):
  """Bit-identical among sharded runs; within ATOL of the unsharded one (docstring)."""
  key = f'{pds}_batch_b8_o0'
  ref = _get(runs, 1, key)
  assert np.array_equal(_get(runs, 2, key), _get(runs, 4, key))
  for n in DEVICE_COUNTS[1:]:
    np.testing.assert_allclose(_get(runs, n, key), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize('pds', ['vanilla', 'pds'])
def test_sample_k_independent_of_batch_size(runs, pds):
  """corrector_norm='sample': sample k of a batch of 4 (offset 0 or 4) is sample k of 8."""
  for n in DEVICE_COUNTS:
    full = _get(runs, n, f'{pds}_sample_b8_o0')
    for off in (0, 4):
      part = _get(runs, n, f'{pds}_sample_b4_o{off}')
      if n < 4:
        assert np.array_equal(part, full[off:off + 4]), (n, off)
      else:  # one sample per device: ulp-level codegen differences (docstring)
        np.testing.assert_allclose(part, full[off:off + 4], rtol=0, atol=ATOL)


def test_only_norm_vectors_cross_devices(runs):
  """Compiled multi-device samplers all-gather nothing but (B,) vectors (the snr norms)."""
  bad = {}
  for n in DEVICE_COUNTS[1:]:
    arrays, info = runs[n]
    for key in arrays:
      big = [s for s in info[key]['all_gathers'] if s.count(',') >= 1]
      if big:
        bad[f'{n}dev/{key}'] = big
  if bad and KNOWN_FFT_REPLICATION:
    pytest.xfail('known: XLA all-gathers FFT operands (replicated FFTs), e.g. '
                 f'{sorted(bad.items())[:2]}; fix: shard_map in sampling.py')
  assert not bad, bad


def test_pds_and_batch_rule_change_samples(runs):
  """Guards that the comparisons above can fail: PDS and the batch rule change samples."""
  arrays = runs[1][0]
  for norm in ('batch', 'sample'):
    van, pds = arrays[f'vanilla_{norm}_b8_o0'], arrays[f'pds_{norm}_b8_o0']
    assert np.max(np.abs(van - pds)) > 1e-2, norm
  for name in ('vanilla', 'pds'):
    assert not np.array_equal(arrays[f'{name}_batch_b8_o0'], arrays[f'{name}_sample_b8_o0'])
