//! Gradient guard: every op on the training path has a gradient, and it equals finite differences.
//! candle's fused kernels have no backward and cut the gradient silently (FINDINGS.md).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use inversed_mixup::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::llm::Llm;
use inversed_mixup::ops;
use inversed_mixup::prompt::Prompt;

const DEV: Device = Device::Cpu;

fn rand(dims: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    Tensor::from_vec((0..n).map(|_| r.random_range(-1.0f64..1.0)).collect::<Vec<_>>(), dims, &DEV).unwrap()
}

/// Checks d(sum(f(x) * w))/dx against central differences, in f64, for every element of x.
fn check(name: &str, x0: &Tensor, f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) {
    let x = Var::from_tensor(x0).unwrap();
    let w = rand(f(x0).unwrap().dims(), 99);
    let loss = |t: &Tensor| (f(t).unwrap() * &w).unwrap().sum_all().unwrap();
    let g = loss(x.as_tensor()).backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient reached the input")).flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert!(g.iter().any(|v| v.abs() > 1e-9), "{name}: gradient is all zero");
    let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-5;
    for i in 0..base.len() {
        let mut p = base.clone();
        p[i] += eps;
        let lp = loss(&Tensor::from_vec(p.clone(), x0.dims(), &DEV).unwrap()).to_scalar::<f64>().unwrap();
        p[i] -= 2.0 * eps;
        let lm = loss(&Tensor::from_vec(p, x0.dims(), &DEV).unwrap()).to_scalar::<f64>().unwrap();
        let fd = (lp - lm) / (2.0 * eps);
        assert!((fd - g[i]).abs() <= 1e-6 + 1e-5 * fd.abs(), "{name}: element {i}: autograd {} vs finite difference {fd}", g[i]);
    }
}

#[test]
fn frozen_linear_gradient_matches_finite_differences() {
    let w = rand(&[5, 4], 1);
    let lin = ops::FrozenLinear::new(w.clone());
    check("frozen_linear", &rand(&[2, 3, 4], 2), &|x| lin.forward(x));
    // Same values as the plain (weight-gradient-computing) matmul.
    let x = rand(&[2, 3, 4], 3);
    let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    let got = lin.forward(&x).unwrap();
    assert_eq!(got.to_vec3::<f64>().unwrap(), want.to_vec3::<f64>().unwrap());
}

#[test]
fn frozen_linear_gives_no_weight_gradient() {
    let w = Var::from_tensor(&rand(&[5, 4], 1)).unwrap();
    let x = Var::from_tensor(&rand(&[3, 4], 2)).unwrap();
    let lin = ops::FrozenLinear::new(w.as_tensor().clone());
    let g = lin.forward(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some());
    assert!(g.get(w.as_tensor()).is_none(), "the frozen weight must not receive a gradient");
}

#[test]
fn training_path_ops_match_finite_differences() {
    let alpha = rand(&[6], 5);
    let beta = rand(&[6], 6);
    check("rms_norm", &rand(&[2, 3, 6], 7), &|x| ops::rms_norm(x, &alpha, 1e-5, true));
    check("layer_norm", &rand(&[2, 3, 6], 8), &|x| ops::layer_norm(x, &alpha, &beta, 1e-5, true));
    check("softmax", &rand(&[2, 3, 6], 9), &|x| ops::softmax(x, true));
    let cos = rand(&[4, 3], 10);
    let sin = rand(&[4, 3], 11);
    check("rope", &rand(&[1, 2, 4, 6], 12), &|x| ops::rope(x, &cos, &sin, true));
    check("silu", &rand(&[3, 5], 13), &|x| x.silu());
    check("gelu_erf", &rand(&[3, 5], 14), &|x| x.gelu_erf());
    check("log_softmax", &rand(&[3, 5], 15), &|x| inversed_mixup::llm::log_softmax(x));
    let idx = Tensor::new(&[2u32, 0, 2], &DEV).unwrap();
    check("index_select", &rand(&[3, 4], 16), &|x| x.index_select(&idx, 0));
    let lab = Tensor::new(&[[1u32], [3], [0]], &DEV).unwrap();
    check("gather", &rand(&[3, 4], 17), &|x| x.gather(&lab, 1));
    check("cat+narrow", &rand(&[2, 3, 4], 18), &|x| Tensor::cat(&[x, &x.narrow(1, 1, 2).unwrap()], 1));
}

#[test]
fn differentiable_and_fused_ops_agree() {
    let x = rand(&[2, 3, 8], 20).to_dtype(DType::F32).unwrap();
    let a = rand(&[8], 21).to_dtype(DType::F32).unwrap();
    let b = rand(&[8], 22).to_dtype(DType::F32).unwrap();
    let close = |p: Tensor, q: Tensor, what: &str| {
        let d = (p - q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{what}: fused and differentiable differ by {d}");
    };
    close(ops::rms_norm(&x, &a, 1e-5, true).unwrap(), ops::rms_norm(&x, &a, 1e-5, false).unwrap(), "rms_norm");
    close(ops::layer_norm(&x, &a, &b, 1e-5, true).unwrap(), ops::layer_norm(&x, &a, &b, 1e-5, false).unwrap(), "layer_norm");
    close(ops::softmax(&x, true).unwrap(), ops::softmax(&x, false).unwrap(), "softmax");
    let q = rand(&[1, 2, 3, 8], 23).to_dtype(DType::F32).unwrap();
    let cos = rand(&[3, 4], 24).to_dtype(DType::F32).unwrap();
    let sin = rand(&[3, 4], 25).to_dtype(DType::F32).unwrap();
    close(ops::rope(&q, &cos, &sin, true).unwrap(), ops::rope(&q, &cos, &sin, false).unwrap(), "rope");
}

fn tiny() -> (tempfile::TempDir, Llm, Adaptor) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(d.path(), 1);
    let llm = Llm::load(d.path(), &DEV).unwrap();
    let cfg = AdaptorConfig { encoder: "e".into(), enc_dim: 6, llm: llm.name().into(), llm_dim: 32, k: 2, hidden: 8, template: DEFAULT_TEMPLATE.into() };
    let a = Adaptor::new(cfg, 3, &DEV).unwrap();
    (d, llm, a)
}

/// End to end through prompt and frozen LLM: the adaptor's gradient equals finite differences.
#[test]
fn adaptor_gradient_through_frozen_llm_matches_finite_differences() {
    let (_d, llm, a) = tiny();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let h = rand(&[2, 6], 30).to_dtype(DType::F32).unwrap();
    let targets = vec![Prompt::target_ids(&llm, "a cat").unwrap(), Prompt::target_ids(&llm, "hello there world").unwrap()];
    let loss = |grad: bool| prompt.gen_loss_with(&llm, &a.forward(&h).unwrap(), &targets, grad).unwrap().0;
    let vars = a.sorted_vars();
    let g = loss(true).backward().unwrap();
    // Fused inference ops give the same loss as the differentiable training ops.
    let (lt, lf) = (loss(true).to_scalar::<f32>().unwrap(), loss(false).to_scalar::<f32>().unwrap());
    assert!((lt - lf).abs() < 1e-4, "training-path loss {lt} vs inference-path loss {lf}");
    for (name, var) in &vars {
        let grad = g.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient reached adaptor {name}"));
        let gv = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        common::check_var_grad(&format!("adaptor {name}"), var, &gv, &|| loss(true).to_scalar::<f32>().unwrap() as f64, 4, 0.03);
    }
}

#[test]
fn fused_ops_match_finite_differences_and_the_compositions() {
    let w = rand(&[6], 40);
    check("fused rms_norm (input)", &rand(&[2, 3, 6], 41), &|x| inversed_mixup::fused::rms_norm(x, &w, 1e-5));
    let x = rand(&[2, 3, 6], 42);
    check("fused rms_norm (weight)", &w, &|w| inversed_mixup::fused::rms_norm(&x, w, 1e-5));
    check("fused softmax", &rand(&[2, 3, 6], 43), &|x| inversed_mixup::fused::softmax(x));
    // Same values and gradients as the differentiable compositions, in f32 too.
    for dt in [DType::F64, DType::F32] {
        let x = Var::from_tensor(&rand(&[4, 5, 8], 44).to_dtype(dt).unwrap()).unwrap();
        let w = rand(&[8], 45).to_dtype(dt).unwrap();
        let r = rand(&[4, 5, 8], 46).to_dtype(dt).unwrap();
        let tol = if dt == DType::F64 { 1e-10 } else { 1e-5 };
        let pairs: [(&str, Tensor, Tensor); 2] = [
            ("rms_norm", inversed_mixup::fused::rms_norm(x.as_tensor(), &w, 1e-5).unwrap(), candle_nn::ops::rms_norm_slow(x.as_tensor(), &w, 1e-5).unwrap()),
            ("softmax", inversed_mixup::fused::softmax(x.as_tensor()).unwrap(), candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap()),
        ];
        for (name, fused, composed) in pairs {
            let d = (&fused - &composed).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(d < tol, "{name} {dt:?}: values differ by {d}");
            let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap());
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(d < tol * 10.0, "{name} {dt:?}: gradients differ by {d}");
        }
    }
}

#[test]
fn fused_rope_matches_finite_differences_and_the_composition() {
    let cos = rand(&[4, 3], 50);
    let sin = rand(&[4, 3], 51);
    check("fused rope", &rand(&[2, 2, 4, 6], 52), &|x| inversed_mixup::fused::rope(x, &cos, &sin));
    let x = rand(&[2, 2, 4, 6], 53);
    let d = (inversed_mixup::fused::rope(&x, &cos, &sin).unwrap() - candle_nn::rotary_emb::rope_slow(&x, &cos, &sin).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(d < 1e-12, "fused and composed rope differ by {d}");
}

#[test]
fn fused_activations_match_finite_differences_and_the_compositions() {
    use inversed_mixup::activation::{gelu, swiglu};
    // Wider inputs than rand's [-1, 1): the tails of erf and the sigmoid matter too.
    let wide = |dims: &[usize], seed| (rand(dims, seed) * 4.0).unwrap();
    check("fused gelu", &wide(&[3, 7], 60), &|x| gelu(x));
    let up = wide(&[3, 7], 61);
    check("fused swiglu (gate)", &wide(&[3, 7], 62), &|g| swiglu(g, &up));
    let gate = wide(&[3, 7], 63);
    check("fused swiglu (up)", &up, &|u| swiglu(&gate, u));
    // f32 (the vectorised kernels) against candle's compositions, values and gradients.
    let g = Var::from_tensor(&wide(&[5, 301], 64).to_dtype(DType::F32).unwrap()).unwrap();
    let u = Var::from_tensor(&wide(&[5, 301], 65).to_dtype(DType::F32).unwrap()).unwrap();
    let r = rand(&[5, 301], 66).to_dtype(DType::F32).unwrap();
    let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let pairs = [
        ("gelu", gelu(g.as_tensor()).unwrap(), g.as_tensor().gelu_erf().unwrap()),
        ("swiglu", swiglu(g.as_tensor(), u.as_tensor()).unwrap(), (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap()),
    ];
    for (name, fused, composed) in pairs {
        let d = diff(&fused, &composed);
        assert!(d < 2e-6, "{name}: values differ by {d}");
        let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&g, &u] {
            match (gf.get(v.as_tensor()), gc.get(v.as_tensor())) {
                (Some(a), Some(b)) => assert!(diff(a, b) < 2e-6, "{name}: gradients differ by {}", diff(a, b)),
                (None, None) => {}
                _ => panic!("{name}: one side has a gradient the other lacks"),
            }
        }
    }
}

/// The cached prompt prefix is an optimisation only: same loss and same adaptor gradients as
/// running the whole prompt through the LLM.
#[test]
fn prefix_cache_gives_the_same_loss_and_gradients() {
    let (_d, llm, a) = tiny();
    let cached = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let full = cached.clone().without_prefix_cache();
    assert!(cached.cached_prefix() > 0 && full.cached_prefix() == 0);
    let h = rand(&[3, 6], 31).to_dtype(DType::F32).unwrap();
    let targets: Vec<Vec<u32>> = ["a cat", "hello there world", "x"].iter().map(|t| Prompt::target_ids(&llm, t).unwrap()).collect();
    let run = |p: &Prompt| {
        let loss = p.gen_loss(&llm, &a.forward(&h).unwrap(), &targets).unwrap().0;
        let g = loss.backward().unwrap();
        let grads: Vec<Vec<f32>> = a.sorted_vars().iter().map(|(_, v)| g.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
        (loss.to_scalar::<f32>().unwrap(), grads)
    };
    let ((lc, gc), (lf, gf)) = (run(&cached), run(&full));
    assert!((lc - lf).abs() < 1e-5, "cached loss {lc} vs full {lf}");
    for (a, b) in gc.iter().zip(&gf) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * scale, "gradient {x} vs {y}");
        }
    }
}

#[test]
fn fused_cross_entropy_matches_finite_differences_and_the_composition() {
    let labels = [2u32, 0, 4];
    check("fused cross-entropy", &(rand(&[3, 5], 70) * 3.0).unwrap(), &|x| inversed_mixup::loss::cross_entropy(x, &labels));
    // f32 over a vocabulary-sized row, against log_softmax + gather + mean.
    let x = Var::from_tensor(&(rand(&[4, 3001], 71) * 8.0).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
    let labels = [0u32, 3000, 17, 1500];
    let fused = inversed_mixup::loss::cross_entropy(x.as_tensor(), &labels).unwrap();
    let lab = Tensor::new(&labels[..], &DEV).unwrap().unsqueeze(1).unwrap();
    let composed = inversed_mixup::llm::log_softmax(x.as_tensor()).unwrap().gather(&lab, 1).unwrap().neg().unwrap().mean_all().unwrap();
    let (a, b) = (fused.to_scalar::<f32>().unwrap(), composed.to_scalar::<f32>().unwrap());
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
    let (gf, gc) = (fused.backward().unwrap(), composed.backward().unwrap());
    let d = (gf.get(x.as_tensor()).unwrap() - gc.get(x.as_tensor()).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-7, "gradients differ by {d}");
    // A label outside the vocabulary is an error, not a panic.
    assert!(inversed_mixup::loss::cross_entropy(x.as_tensor(), &[0, 1, 2, 3001]).is_err());
}

/// The block op's hand-written backward chains these kernels: each equals candle's autograd of
/// the finite-difference-tested composition it replaces, in f64 (to rounding) and f32.
#[test]
fn block_backward_kernels_match_autograd() {
    use inversed_mixup::activation::{swiglu, swiglu_stacked, swiglu_stacked_grad};
    use inversed_mixup::fused::{rms_norm, rms_norm_input_grad, rms_norm_input_grad_plus};
    for dt in [DType::F64, DType::F32] {
        let tol = if dt == DType::F64 { 1e-12 } else { 1e-5 };
        let x = rand(&[2, 3, 6], 88).to_dtype(dt).unwrap();
        let w = rand(&[6], 81).to_dtype(dt).unwrap();
        let g6 = rand(&[2, 3, 6], 89).to_dtype(dt).unwrap();
        let g3 = rand(&[2, 3, 3], 94).to_dtype(dt).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(d < tol, "{what} ({dt:?}): differs by {d}");
            assert!(b.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() > 1e-3, "{what}: degenerate");
        };
        let autograd = |f: &dyn Fn(&Tensor) -> Tensor, g: &Tensor| {
            let v = Var::from_tensor(&x).unwrap();
            let grads = (f(v.as_tensor()) * g).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(v.as_tensor()).unwrap().clone()
        };
        let rms = |t: &Tensor| rms_norm(t, &w, 1e-5).unwrap();
        close(&rms_norm_input_grad(&x, &w, &g6, 1e-5).unwrap(), &autograd(&rms, &g6), "RMSNorm input gradient");
        let plus = (autograd(&rms, &g6) + &x).unwrap();
        close(&rms_norm_input_grad_plus(&x, &w, &g6, 1e-5, &x).unwrap(), &plus, "RMSNorm input gradient plus a residual gradient");
        let sw = |t: &Tensor| swiglu(&t.narrow(2, 0, 3).unwrap(), &t.narrow(2, 3, 3).unwrap()).unwrap();
        close(&swiglu_stacked(&x).unwrap(), &sw(&x), "stacked SwiGLU");
        close(&swiglu_stacked_grad(&x, &g3).unwrap(), &autograd(&sw, &g3), "stacked SwiGLU gradient");
    }
}

/// The output-layer loss forms its gradient in the forward pass, streaming the vocabulary in
/// chunks with an online softmax: for every chunk size (one row, uneven, whole vocabulary), the
/// same loss and gradient as the logits followed by the fused cross-entropy, and equal to finite
/// differences.
#[test]
fn output_cross_entropy_matches_finite_differences_and_the_composition() {
    use inversed_mixup::loss::output_cross_entropy_chunked as chunked;
    // Large logits in some rows, so that the running max changes between chunks.
    let w = ops::FrozenLinear::new((rand(&[7, 4], 90) * 6.0).unwrap());
    let labels = [6u32, 0, 3];
    for chunk in [1, 3, 7, 100] {
        check(&format!("output cross-entropy, chunk {chunk}"), &rand(&[3, 4], 91), &|h| chunked(h, &w, &labels, chunk));
    }
    check("output cross-entropy", &rand(&[3, 4], 91), &|h| inversed_mixup::loss::output_cross_entropy(h, &w, &labels));
    for dt in [DType::F64, DType::F32] {
        for chunk in [1, 2, 3, 7] {
            let h = Var::from_tensor(&rand(&[3, 4], 92).to_dtype(dt).unwrap()).unwrap();
            let wt = ops::FrozenLinear::new(w.weight().to_dtype(dt).unwrap());
            let fused = chunked(h.as_tensor(), &wt, &labels, chunk).unwrap();
            let plain = inversed_mixup::loss::cross_entropy(&wt.forward(h.as_tensor()).unwrap(), &labels).unwrap();
            let tol = if dt == DType::F64 { 1e-12 } else { 1e-6 };
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (lf, lp) = (f64s(&fused)[0], f64s(&plain)[0]);
            assert!((lf - lp).abs() < tol, "{dt:?}, chunk {chunk}: loss {lf} vs {lp}");
            let (gf, gp) = (fused.backward().unwrap(), plain.backward().unwrap());
            for (a, b) in f64s(gf.get(h.as_tensor()).unwrap()).iter().zip(f64s(gp.get(h.as_tensor()).unwrap())) {
                assert!((a - b).abs() < tol, "{dt:?}, chunk {chunk}: gradient {a} vs {b}");
            }
        }
    }
    assert!(inversed_mixup::loss::output_cross_entropy(&rand(&[3, 4], 93), &w, &[0, 1, 7]).is_err());
}

/// The lean training path (blocks as single nodes, loss gradient formed forward) is an optimisation only:
/// same loss and adaptor gradients as the plain composition that keeps every intermediate.
#[test]
fn lean_training_path_gives_the_same_loss_and_gradients() {
    let (_d, mut llm, a) = tiny();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let h = rand(&[3, 6], 32).to_dtype(DType::F32).unwrap();
    common::assert_lean_equals_plain(&mut llm, &prompt, &a, &h, &["a cat", "hello there world", "x"], 1e-5, 1e-4);
}
