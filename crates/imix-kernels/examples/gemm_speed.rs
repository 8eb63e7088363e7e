//! GFLOP/s of the products of a MiniLM fine-tuning step (16 sentences, ~17 tokens each: m = 272),
//! forward and both backward products, through candle's matmul (gemm's own threading) and through
//! `imix_kernels::matmul` (one column block per thread), alternating.
//! `cargo run --release -p imix-kernels --example gemm_speed`; `bench/gemm_speed.py` is PyTorch's side.
use candle_core::{Device, Tensor};
use imix_kernels::matmul::{matmul, matmul_lhs, Lhs, Rhs};

fn time(f: &dyn Fn()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut v: Vec<f64> = (0..25)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let m = 272;
    let (mut total, mut ours) = (0.0, 0.0);
    for (k, n) in [(384, 1152), (384, 384), (384, 1536), (1536, 384)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let dy = Tensor::randn(0f32, 1.0, (m, n), &dev)?;
        let flop = 2.0 * (m * k * n) as f64;
        let fwd = time(&|| drop(x.matmul(&w.t().unwrap()).unwrap()));
        let dx = time(&|| drop(dy.matmul(&w).unwrap()));
        let dw = time(&|| drop(dy.t().unwrap().matmul(&x).unwrap()));
        total += fwd + dx + dw;
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (xv, wv, dyv) = (v(&x), v(&w), v(&dy));
        let o_fwd = time(&|| drop(matmul(&xv, &wv, (m, k, n), Rhs::Transposed)));
        let o_dx = time(&|| drop(matmul(&dyv, &wv, (m, n, k), Rhs::Plain)));
        let o_dw = time(&|| {
            drop(matmul_lhs(
                &dyv,
                Lhs::Transposed,
                &xv,
                (n, m, k),
                Rhs::Plain,
            ))
        });
        ours += o_fwd + o_dx + o_dw;
        println!("m={m} k={k} n={n}: fwd {:.1} us ({:.0} GFLOP/s), dx {:.1} us ({:.0}), dw {:.1} us ({:.0})", fwd * 1e6, flop / fwd / 1e9, dx * 1e6, flop / dx / 1e9, dw * 1e6, flop / dw / 1e9);
        println!(
            "  imix_kernels: fwd {:.0} GFLOP/s, dx {:.0}, dw {:.0}",
            flop / o_fwd / 1e9,
            flop / o_dx / 1e9,
            flop / o_dw / 1e9
        );
    }
    println!(
        "sum {:.1} us (candle), {:.1} us (imix_kernels)",
        total * 1e6,
        ours * 1e6
    );
    Ok(())
}
