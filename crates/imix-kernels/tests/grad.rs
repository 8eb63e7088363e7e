//! Gradient guard for the kernels: every training-path kernel has a backward, and it equals
//! finite differences (f64) and the candle composition it replaces (f64 and f32). candle's own
//! fused kernels have no backward and cut the gradient silently.

use candle_core::{DType, Device, Tensor, Var};
use imix_kernels::FrozenLinear;

const DEV: Device = Device::Cpu;

fn rand(dims: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    Tensor::from_vec(
        (0..n)
            .map(|_| r.random_range(-1.0f64..1.0))
            .collect::<Vec<_>>(),
        dims,
        &DEV,
    )
    .unwrap()
}

/// Checks d(sum(f(x) * w))/dx against central differences, in f64, for every element of x.
fn check(name: &str, x0: &Tensor, f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) {
    let x = Var::from_tensor(x0).unwrap();
    let w = rand(f(x0).unwrap().dims(), 99);
    let loss = |t: &Tensor| (f(t).unwrap() * &w).unwrap().sum_all().unwrap();
    let g = loss(x.as_tensor()).backward().unwrap();
    let g = g
        .get(x.as_tensor())
        .unwrap_or_else(|| panic!("{name}: no gradient reached the input"))
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(
        g.iter().any(|v| v.abs() > 1e-9),
        "{name}: gradient is all zero"
    );
    let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-5;
    for i in 0..base.len() {
        let mut p = base.clone();
        p[i] += eps;
        let lp = loss(&Tensor::from_vec(p.clone(), x0.dims(), &DEV).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        p[i] -= 2.0 * eps;
        let lm = loss(&Tensor::from_vec(p, x0.dims(), &DEV).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        let fd = (lp - lm) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() <= 1e-6 + 1e-5 * fd.abs(),
            "{name}: element {i}: autograd {} vs finite difference {fd}",
            g[i]
        );
    }
}

#[test]
fn frozen_linear_gradient_matches_finite_differences() {
    let w = rand(&[5, 4], 1);
    let lin = FrozenLinear::new(w.clone());
    check("frozen_linear", &rand(&[2, 3, 4], 2), &|x| lin.forward(x));
    // Same values as the plain (weight-gradient-computing) matmul.
    let x = rand(&[2, 3, 4], 3);
    let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    let got = lin.forward(&x).unwrap();
    assert_eq!(
        got.to_vec3::<f64>().unwrap(),
        want.to_vec3::<f64>().unwrap()
    );
}

#[test]
fn frozen_linear_gives_no_weight_gradient() {
    let w = Var::from_tensor(&rand(&[5, 4], 1)).unwrap();
    let x = Var::from_tensor(&rand(&[3, 4], 2)).unwrap();
    let lin = FrozenLinear::new(w.as_tensor().clone());
    let g = lin
        .forward(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(x.as_tensor()).is_some());
    assert!(
        g.get(w.as_tensor()).is_none(),
        "the frozen weight must not receive a gradient"
    );
}

#[test]
fn fused_ops_match_finite_differences_and_the_compositions() {
    let w = rand(&[6], 40);
    check("fused rms_norm (input)", &rand(&[2, 3, 6], 41), &|x| {
        imix_kernels::fused::rms_norm(x, &w, 1e-5)
    });
    let x = rand(&[2, 3, 6], 42);
    check("fused rms_norm (weight)", &w, &|w| {
        imix_kernels::fused::rms_norm(&x, w, 1e-5)
    });
    check("fused softmax", &rand(&[2, 3, 6], 43), &|x| {
        imix_kernels::fused::softmax(x)
    });
    let (lw, lb, lx) = (rand(&[6], 47), rand(&[6], 48), rand(&[2, 3, 6], 49));
    check("fused layer_norm (input)", &lx, &|x| {
        imix_kernels::fused::layer_norm(x, &lw, &lb, 1e-5)
    });
    check("fused layer_norm (weight)", &lw, &|w| {
        imix_kernels::fused::layer_norm(&lx, w, &lb, 1e-5)
    });
    check("fused layer_norm (bias)", &lb, &|b| {
        imix_kernels::fused::layer_norm(&lx, &lw, b, 1e-5)
    });
    // Same values and gradients as the differentiable compositions, in f32 too.
    for dt in [DType::F64, DType::F32] {
        let x = Var::from_tensor(&rand(&[4, 5, 8], 44).to_dtype(dt).unwrap()).unwrap();
        let w = rand(&[8], 45).to_dtype(dt).unwrap();
        let r = rand(&[4, 5, 8], 46).to_dtype(dt).unwrap();
        let tol = if dt == DType::F64 { 1e-10 } else { 1e-5 };
        let bias = rand(&[8], 47).to_dtype(dt).unwrap();
        let pairs: [(&str, Tensor, Tensor); 3] = [
            (
                "rms_norm",
                imix_kernels::fused::rms_norm(x.as_tensor(), &w, 1e-5).unwrap(),
                candle_nn::ops::rms_norm_slow(x.as_tensor(), &w, 1e-5).unwrap(),
            ),
            (
                "layer_norm",
                imix_kernels::fused::layer_norm(x.as_tensor(), &w, &bias, 1e-5).unwrap(),
                candle_nn::ops::layer_norm_slow(x.as_tensor(), &w, &bias, 1e-5).unwrap(),
            ),
            (
                "softmax",
                imix_kernels::fused::softmax(x.as_tensor()).unwrap(),
                candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap(),
            ),
        ];
        for (name, fused, composed) in pairs {
            let d = (&fused - &composed)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < tol, "{name} {dt:?}: values differ by {d}");
            let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (a, b) = (
                gf.get(x.as_tensor()).unwrap(),
                gc.get(x.as_tensor()).unwrap(),
            );
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < tol * 10.0, "{name} {dt:?}: gradients differ by {d}");
        }
    }
}

#[test]
fn fused_rope_matches_finite_differences_and_the_composition() {
    let cos = rand(&[4, 3], 50);
    let sin = rand(&[4, 3], 51);
    check("fused rope", &rand(&[2, 2, 4, 6], 52), &|x| {
        imix_kernels::fused::rope(x, &cos, &sin)
    });
    let x = rand(&[2, 2, 4, 6], 53);
    let d = (imix_kernels::fused::rope(&x, &cos, &sin).unwrap()
        - candle_nn::rotary_emb::rope_slow(&x, &cos, &sin).unwrap())
    .unwrap()
    .abs()
    .unwrap()
    .max_all()
    .unwrap()
    .to_scalar::<f64>()
    .unwrap();
    assert!(d < 1e-12, "fused and composed rope differ by {d}");
}

#[test]
fn fused_activations_match_finite_differences_and_the_compositions() {
    use imix_kernels::activation::{gelu, swiglu};
    // Wider inputs than rand's [-1, 1): the tails of erf and the sigmoid matter too.
    let wide = |dims: &[usize], seed| (rand(dims, seed) * 4.0).unwrap();
    check("fused gelu", &wide(&[3, 7], 60), &|x| gelu(x));
    let up = wide(&[3, 7], 61);
    check("fused swiglu (gate)", &wide(&[3, 7], 62), &|g| {
        swiglu(g, &up)
    });
    let gate = wide(&[3, 7], 63);
    check("fused swiglu (up)", &up, &|u| swiglu(&gate, u));
    // f32 (the vectorised kernels) against candle's compositions, values and gradients.
    let g = Var::from_tensor(&wide(&[5, 301], 64).to_dtype(DType::F32).unwrap()).unwrap();
    let u = Var::from_tensor(&wide(&[5, 301], 65).to_dtype(DType::F32).unwrap()).unwrap();
    let r = rand(&[5, 301], 66).to_dtype(DType::F32).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let pairs = [
        (
            "gelu",
            gelu(g.as_tensor()).unwrap(),
            g.as_tensor().gelu_erf().unwrap(),
        ),
        (
            "swiglu",
            swiglu(g.as_tensor(), u.as_tensor()).unwrap(),
            (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap(),
        ),
    ];
    for (name, fused, composed) in pairs {
        let d = diff(&fused, &composed);
        assert!(d < 2e-6, "{name}: values differ by {d}");
        let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&g, &u] {
            match (gf.get(v.as_tensor()), gc.get(v.as_tensor())) {
                (Some(a), Some(b)) => assert!(
                    diff(a, b) < 2e-6,
                    "{name}: gradients differ by {}",
                    diff(a, b)
                ),
                (None, None) => {}
                _ => panic!("{name}: one side has a gradient the other lacks"),
            }
        }
    }
}

#[test]
fn fused_cross_entropy_matches_finite_differences_and_the_composition() {
    let labels = [2u32, 0, 4];
    check(
        "fused cross-entropy",
        &(rand(&[3, 5], 70) * 3.0).unwrap(),
        &|x| imix_kernels::loss::cross_entropy(x, &labels),
    );
    // f32 over a vocabulary-sized row, against log_softmax + gather + mean.
    let x = Var::from_tensor(
        &(rand(&[4, 3001], 71) * 8.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap(),
    )
    .unwrap();
    let labels = [0u32, 3000, 17, 1500];
    let fused = imix_kernels::loss::cross_entropy(x.as_tensor(), &labels).unwrap();
    let lab = Tensor::new(&labels[..], &DEV)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let composed = candle_nn::ops::log_softmax(x.as_tensor(), candle_core::D::Minus1)
        .unwrap()
        .gather(&lab, 1)
        .unwrap()
        .neg()
        .unwrap()
        .mean_all()
        .unwrap();
    let (a, b) = (
        fused.to_scalar::<f32>().unwrap(),
        composed.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
    let (gf, gc) = (fused.backward().unwrap(), composed.backward().unwrap());
    let d = (gf.get(x.as_tensor()).unwrap() - gc.get(x.as_tensor()).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-7, "gradients differ by {d}");
    // A label outside the vocabulary is an error, not a panic.
    assert!(imix_kernels::loss::cross_entropy(x.as_tensor(), &[0, 1, 2, 3001]).is_err());
}

/// The block op's hand-written backward chains these kernels: each equals candle's autograd of
/// the finite-difference-tested composition it replaces, in f64 (to rounding) and f32.
#[test]
fn block_backward_kernels_match_autograd() {
    use imix_kernels::activation::{swiglu, swiglu_stacked, swiglu_stacked_grad};
    use imix_kernels::fused::{rms_norm, rms_norm_input_grad, rms_norm_input_grad_plus};
    for dt in [DType::F64, DType::F32] {
        let tol = if dt == DType::F64 { 1e-12 } else { 1e-5 };
        let x = rand(&[2, 3, 6], 88).to_dtype(dt).unwrap();
        let w = rand(&[6], 81).to_dtype(dt).unwrap();
        let g6 = rand(&[2, 3, 6], 89).to_dtype(dt).unwrap();
        let g3 = rand(&[2, 3, 3], 94).to_dtype(dt).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < tol, "{what} ({dt:?}): differs by {d}");
            assert!(
                b.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
                    > 1e-3,
                "{what}: degenerate"
            );
        };
        let autograd = |f: &dyn Fn(&Tensor) -> Tensor, g: &Tensor| {
            let v = Var::from_tensor(&x).unwrap();
            let grads = (f(v.as_tensor()) * g)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            grads.get(v.as_tensor()).unwrap().clone()
        };
        let rms = |t: &Tensor| rms_norm(t, &w, 1e-5).unwrap();
        close(
            &rms_norm_input_grad(&x, &w, &g6, 1e-5).unwrap(),
            &autograd(&rms, &g6),
            "RMSNorm input gradient",
        );
        let plus = (autograd(&rms, &g6) + &x).unwrap();
        close(
            &rms_norm_input_grad_plus(&x, &w, &g6, 1e-5, &x).unwrap(),
            &plus,
            "RMSNorm input gradient plus a residual gradient",
        );
        let sw =
            |t: &Tensor| swiglu(&t.narrow(2, 0, 3).unwrap(), &t.narrow(2, 3, 3).unwrap()).unwrap();
        close(&swiglu_stacked(&x).unwrap(), &sw(&x), "stacked SwiGLU");
        close(
            &swiglu_stacked_grad(&x, &g3).unwrap(),
            &autograd(&sw, &g3),
            "stacked SwiGLU gradient",
        );
    }
}

/// The output-layer loss forms its gradient in the forward pass, streaming the vocabulary in
/// chunks with an online softmax: for every chunk size (one row, uneven, whole vocabulary), the
/// same loss and gradient as the logits followed by the fused cross-entropy, and equal to finite
/// differences.
#[test]
fn output_cross_entropy_matches_finite_differences_and_the_composition() {
    use imix_kernels::loss::output_cross_entropy_chunked as chunked;
    // Large logits in some rows, so that the running max changes between chunks.
    let w = FrozenLinear::new((rand(&[7, 4], 90) * 6.0).unwrap());
    let labels = [6u32, 0, 3];
    for chunk in [1, 3, 7, 100] {
        check(
            &format!("output cross-entropy, chunk {chunk}"),
            &rand(&[3, 4], 91),
            &|h| chunked(h, &w, &labels, chunk),
        );
    }
    check("output cross-entropy", &rand(&[3, 4], 91), &|h| {
        imix_kernels::loss::output_cross_entropy(h, &w, &labels)
    });
    for dt in [DType::F64, DType::F32] {
        for chunk in [1, 2, 3, 7] {
            let h = Var::from_tensor(&rand(&[3, 4], 92).to_dtype(dt).unwrap()).unwrap();
            let wt = FrozenLinear::new(w.weight().to_dtype(dt).unwrap());
            let fused = chunked(h.as_tensor(), &wt, &labels, chunk).unwrap();
            let plain =
                imix_kernels::loss::cross_entropy(&wt.forward(h.as_tensor()).unwrap(), &labels)
                    .unwrap();
            let tol = if dt == DType::F64 { 1e-12 } else { 1e-6 };
            let f64s = |t: &Tensor| {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            let (lf, lp) = (f64s(&fused)[0], f64s(&plain)[0]);
            assert!(
                (lf - lp).abs() < tol,
                "{dt:?}, chunk {chunk}: loss {lf} vs {lp}"
            );
            let (gf, gp) = (fused.backward().unwrap(), plain.backward().unwrap());
            for (a, b) in f64s(gf.get(h.as_tensor()).unwrap())
                .iter()
                .zip(f64s(gp.get(h.as_tensor()).unwrap()))
            {
                assert!(
                    (a - b).abs() < tol,
                    "{dt:?}, chunk {chunk}: gradient {a} vs {b}"
                );
            }
        }
    }
    assert!(imix_kernels::loss::output_cross_entropy(&rand(&[3, 4], 93), &w, &[0, 1, 7]).is_err());
}
