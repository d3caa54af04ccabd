"""main.py --mode sample end to end on the analytic config, with resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, 'configs', 'analytic', 'gaussian_field.py')
SMALL = ['--config.data.image_size=8', '--config.model.num_scales=20',
         '--config.sampling.batch_size=4', '--config.sampling.num_samples=10']


def _main(workdir, *extra, check=True):
  cmd = [sys.executable, os.path.join(ROOT, 'main.py'), f'--config={CFG}', f'--workdir={workdir}',
         '--mode=sample', f'--compilation_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}',
         *SMALL, *extra]
  res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  if check:
    assert res.returncode == 0, res.stderr[-3000:]
  return res


def _load(folder, r):
  with np.load(os.path.join(folder, f'samples_{r}.npz')) as f:
    return {k: f[k] for k in f.files}


def test_main_sample_writes_rounds_and_resumes(tmp_path):
  w = tmp_path / 'w'
  _main(w)
  folder = w / 'samples'
  names = sorted(os.listdir(folder))
  assert names == ['meta.json'] + [f'samples_{r}.{e}' for r in range(3) for e in ('npz', 'png')]
  rounds = [_load(folder, r) for r in range(3)]
  assert [d['samples'].shape for d in rounds] == [(4, 8, 8, 3), (4, 8, 8, 3), (2, 8, 8, 3)]
  for d in rounds:
    assert d['samples'].dtype == np.uint8 and d['samples_float'].dtype == np.float32
    np.testing.assert_array_equal(d['samples'],
                                  np.clip(d['samples_float'] * 255, 0, 255).astype(np.uint8))
  meta = json.loads((folder / 'meta.json').read_text())
  assert meta['num_rounds'] == 3 and set(meta['rounds']) == {'0', '1', '2'}
  assert meta['rounds']['0']['nfe'] == 40 and meta['device_count'] >= 1
  assert meta['config']['model']['num_scales'] == 20
  assert json.loads((w / 'config.json').read_text())['data']['image_size'] == 8

  # simulate an interrupted run: round 1 and the last round missing, a stale temp file
  png1 = (folder / 'samples_1.png').read_bytes()
  mtime0 = os.path.getmtime(folder / 'samples_0.npz')
  os.remove(folder / 'samples_1.npz')
  os.remove(folder / 'samples_1.png')
  os.remove(folder / 'samples_2.npz')
  (folder / '.samples_2.npz.x.tmp').write_bytes(b'partial')
  _main(w)
  assert os.path.getmtime(folder / 'samples_0.npz') == mtime0   # not rewritten
  for r in range(3):
    again = _load(folder, r)
    for k in ('samples', 'samples_float'):
      np.testing.assert_array_equal(again[k], rounds[r][k])
  assert (folder / 'samples_1.png').read_bytes() == png1


def test_main_bad_input_is_one_clear_line(tmp_path):
  res = _main(tmp_path / 'w', '--config.sampling.predictor=reverse_difusion', check=False)
  assert res.returncode != 0
  assert "predictor='reverse_difusion'" in res.stderr and 'reverse_diffusion' in res.stderr
  assert 'Traceback' not in res.stderr


def test_killed_run_restarted_finishes_with_the_same_files(tmp_path):
  """SIGKILL mid-run, rerun the same command: the same samples as an uninterrupted run."""
  import signal
  import time
  args = ['--config.model.num_scales=200', '--config.sampling.num_samples=64']
  ref = tmp_path / 'ref'
  _main(ref, *args)
  w = tmp_path / 'w'
  cmd = [sys.executable, os.path.join(ROOT, 'main.py'), f'--config={CFG}', f'--workdir={w}',
         '--mode=sample', f'--compilation_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}',
         *SMALL, *args]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and not (w / 'samples' / 'samples_1.npz').exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = sorted(f for f in os.listdir(w / 'samples') if f.endswith('.npz'))
  assert 0 < len(done_before) < 16, done_before     # really interrupted
  _main(w, *args)
  for r in range(16):
    a, b = _load(w / 'samples', r), _load(ref / 'samples', r)
    for k in ('samples', 'samples_float'):
      np.testing.assert_array_equal(a[k], b[k])
  assert not [f for f in os.listdir(w / 'samples') if f.endswith('.tmp')]
