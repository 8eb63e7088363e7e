"""PyTorch's side of crates/imix-kernels/examples/gemm_speed.rs: the same products, same shapes."""
import time, torch
torch.manual_seed(0)
def med(f):
    for _ in range(5): f()
    v = []
    for _ in range(25):
        t = time.perf_counter(); f(); v.append(time.perf_counter() - t)
    return sorted(v)[len(v) // 2]
m, total = 272, 0.0
with torch.no_grad():
    for k, n in [(384, 1152), (384, 384), (384, 1536), (1536, 384)]:
        x, w, dy = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
        flop = 2.0 * m * k * n
        fwd = med(lambda: x @ w.t()); dx = med(lambda: dy @ w); dw = med(lambda: dy.t() @ x)
        total += fwd + dx + dw
        print(f"m={m} k={k} n={n}: fwd {fwd*1e6:.1f} us ({flop/fwd/1e9:.0f} GFLOP/s), dx {dx*1e6:.1f} us ({flop/dx/1e9:.0f}), dw {dw*1e6:.1f} us ({flop/dw/1e9:.0f})")
print(f"sum {total*1e6:.1f} us")
