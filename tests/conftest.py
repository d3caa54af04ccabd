"""Shared test setup: repo root on sys.path, a persistent JAX compilation cache.

The cache lives outside the clone (default ~/.cache/score_sde_pds_jax/tests; override
with SCORE_SDE_PDS_TEST_CACHE, '' to disable) so that a fresh clone on a machine that ran
the tests before starts warm; JAX keys its entries by program, jaxlib version and flags,
so a stale entry is never used. Exported through JAX_COMPILATION_CACHE_DIR so the
subprocesses the tests start (main.py, scripts, device-count runs) share it.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

CACHE_DIR = os.path.expanduser(os.environ.get(
    'SCORE_SDE_PDS_TEST_CACHE', os.path.join('~', '.cache', 'score_sde_pds_jax', 'tests')))
if CACHE_DIR:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = CACHE_DIR
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

import jax  # noqa: E402

if CACHE_DIR:
  jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
