"""Progress reporting of the PC sampler: chunked loop == plain loop, reports, config errors.

With progress on, the N steps run as ceil(N / k) chunks (a scan of fori_loops with a
dynamic trip count), each reporting the steps done before it, and N is reported after
the loop; the samples must be the same as the single scan's (bit for bit: the same step
function), for N divisible by k and not, and the callback must see 0, k, 2k, ..., N
once each.
"""
import io

import jax
import ml_collections
import numpy as np
import pytest

from score_sde_pds import sampling, sde_lib
from score_sde_pds.models import analytic

H = 8


def _score(sde):
  cfg = ml_collections.ConfigDict({
      'model': {'field_beta': 3., 'field_k0': 1., 'field_mean': 0.5, 'field_std': 0.25},
      'data': {'image_size': H, 'num_channels': 1}})
  field = analytic.GaussianField.from_config(cfg)
  return lambda x, t: field.score(sde, x, t)


@pytest.mark.parametrize('n,every,expected', [(12, 4, [0, 4, 8, 12]),
                                              (11, 4, [0, 4, 8, 11]),
                                              (7, -1, list(range(8)))])
def test_chunked_progress_loop_matches_plain_loop(n, every, expected):
  sde = sde_lib.VESDE(0.01, 50., n)
  score = _score(sde)
  mk = lambda **kw: sampling.get_pc_sampler(sde, (3, H, H, 1), 'reverse_diffusion',
                                            'langevin', snr=0.16, eps=1e-5, **kw)
  seen = []
  x_plain, _ = mk()(jax.random.PRNGKey(3), score)
  x_prog, nfe = mk(progress_every=every, progress_fn=seen.append)(jax.random.PRNGKey(3), score)
  jax.effects_barrier()
  assert nfe == 2 * n
  np.testing.assert_array_equal(np.asarray(x_prog), np.asarray(x_plain))
  assert sorted(int(s) for s in seen) == expected


def test_auto_interval_is_about_five_percent():
  assert sampling._progress_interval(-1, 1000) == 50
  assert sampling._progress_interval(-1, 66) == 4       # 17 reports
  assert sampling._progress_interval(0, 1000) == 0
  assert sampling._progress_interval(500, 10) == 10


@pytest.mark.parametrize('bad', [-2, 1.5, True, '5'])
def test_bad_progress_every_names_the_key(bad):
  with pytest.raises(ValueError, match='config.sampling.progress_every'):
    sampling._progress_interval(bad, 10)


def test_progress_bar_one_bar_per_run():
  out = io.StringIO()
  bar = sampling.ProgressBar(10, delay=0., file=out, mininterval=0., leave=True)
  for run in range(2):
    for s in (0, 5, 10):
      bar(np.int32(s))
    assert bar._bar is None           # closed at the last step
  bar(np.int32(0))                    # a new run opens a new bar
  assert bar._bar is not None and bar._bar.n == 0
  bar.close()
  text = out.getvalue()
  assert text.count(' 5/10') == 2 and text.count('10/10') >= 2 and text.count(' 0/10') >= 3
