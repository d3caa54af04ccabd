"""Shared test setup: repo root on sys.path, a persistent JAX compilation cache."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update('jax_compilation_cache_dir', os.path.join(ROOT, '.jax_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
