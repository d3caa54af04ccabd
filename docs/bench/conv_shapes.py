"""Single 3x3 / 1x1 convolutions of the tiny NCSN++, XLA vs im2col + matmul vs PyTorch.

  python docs/bench/conv_shapes.py      # needs torch; prints ms per convolution

Each convolution runs 20 times in a loop (jax: one jitted lax.fori_loop; torch: a Python
loop under no_grad), the output fed back into the input so that nothing is hoisted;
median of 5 timed runs. A diagnostic behind docs/speed.md, not a benchmark of the
samplers.
"""
import time

import jax
import numpy as np
import torch

L = 20
SHAPES = [(64, 32, 16, 16, 3), (64, 32, 16, 32, 3), (64, 16, 32, 32, 3), (64, 32, 3, 16, 3),
          (64, 32, 16, 3, 3), (64, 32, 16, 16, 1), (8, 32, 16, 16, 3), (64, 16, 32, 96, 1)]


def _median_time(run, n=5):
  run()
  out = []
  for _ in range(n):
    time.sleep(0.05)
    t0 = time.perf_counter()
    run()
    out.append(time.perf_counter() - t0)
  return float(np.median(out))


def main():
  for b, h, c, o, k in SHAPES:
    g = np.random.default_rng(0)
    x = jax.numpy.asarray(g.normal(size=(b, h, h, c)).astype(np.float32))
    w = jax.numpy.asarray(0.1 * g.normal(size=(k, k, c, o)).astype(np.float32))

    def conv(x, w):
      return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    def im2col(x, w):
      p = k // 2
      xp = jax.numpy.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      cols = jax.numpy.concatenate(
          [xp[:, i:i + h, j:j + h, :] for i in range(k) for j in range(k)], -1)
      return cols @ w.reshape(k * k * c, o)

    def feed(y, x):   # back to c channels
      return x + 1e-3 * (y if o == c else y[..., :c].sum(-1, keepdims=True))

    def jax_loop(f):
      fn = jax.jit(lambda x, w: jax.lax.fori_loop(0, L, lambda i, x: feed(f(x, w), x), x))
      return lambda: jax.block_until_ready(fn(x, w))

    xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(np.asarray(w)).permute(3, 2, 0, 1).contiguous()

    def torch_loop():
      with torch.no_grad():
        y = xt
        for _ in range(L):
          out = torch.nn.functional.conv2d(y, wt, padding=k // 2)
          y = y + 1e-3 * (out if o == c else out[:, :c].sum(1, keepdim=True))

    t = [_median_time(r) / L * 1e3 for r in (jax_loop(conv), jax_loop(im2col), torch_loop)]
    print(f'batch {b}, {h}x{h}, {c}->{o}, {k}x{k}: XLA conv {t[0]:.2f} ms, im2col+matmul '
          f'{t[1]:.2f} ms, torch {t[2]:.2f} ms', flush=True)
  print(f'jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)')


if __name__ == '__main__':
  main()
