//! Forward + backward time of the fused ops against the differentiable compositions, at the shapes
//! of a stage-1 training step (batch 8, 34 positions, width 576, 9 heads / 3 KV heads).
//! `cargo run --release --example ops_speed`
use candle_core::{Device, Tensor, Var, D};

fn time(name: &str, f: &dyn Fn() -> candle_core::Result<()>) -> f64 {
    for _ in 0..20 {
        f().unwrap();
    }
    let t = std::time::Instant::now();
    let n = 200;
    for _ in 0..n {
        f().unwrap();
    }
    let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("{name:<28} {us:>9.1} us");
    us
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (8, 34, 576), &dev)?)?;
    let w = Tensor::randn(0f32, 1.0, 576, &dev)?;
    let s = Var::from_tensor(&Tensor::randn(0f32, 1.0, (8, 3, 102, 34), &dev)?)?;
    let fb = |y: Tensor| -> candle_core::Result<()> { y.sum_all()?.backward().map(|_| ()) };
    let a = time("rms_norm composed", &|| {
        fb(candle_nn::ops::rms_norm_slow(x.as_tensor(), &w, 1e-5)?)
    });
    let b = time("rms_norm fused", &|| {
        fb(imix_kernels::fused::rms_norm(x.as_tensor(), &w, 1e-5)?)
    });
    let c = time("softmax composed", &|| {
        fb(candle_nn::ops::softmax(s.as_tensor(), D::Minus1)?)
    });
    let d = time("softmax fused", &|| {
        fb(imix_kernels::fused::softmax(s.as_tensor())?)
    });
    println!("speed-up: rms_norm {:.2}x, softmax {:.2}x", a / b, c / d);
    Ok(())
}
