//! Gradient guard: every op on the training path has a gradient, and it equals finite differences.
//! candle's fused kernels have no backward and cut the gradient silently (docs/design.md).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::nets::ops;

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
fn training_path_ops_match_finite_differences() {
    let alpha = rand(&[6], 5);
    let beta = rand(&[6], 6);
    check("rms_norm", &rand(&[2, 3, 6], 7), &|x| {
        ops::rms_norm(x, &alpha, 1e-5, true)
    });
    check("layer_norm", &rand(&[2, 3, 6], 8), &|x| {
        ops::layer_norm(x, &alpha, &beta, 1e-5, true)
    });
    check("softmax", &rand(&[2, 3, 6], 9), &|x| ops::softmax(x, true));
    let cos = rand(&[4, 3], 10);
    let sin = rand(&[4, 3], 11);
    check("rope", &rand(&[1, 2, 4, 6], 12), &|x| {
        ops::rope(x, &cos, &sin, true)
    });
    check("silu", &rand(&[3, 5], 13), &|x| x.silu());
    check("gelu_erf", &rand(&[3, 5], 14), &|x| x.gelu_erf());
    check("log_softmax", &rand(&[3, 5], 15), &|x| {
        inversed_mixup::nets::llm::log_softmax(x)
    });
    let idx = Tensor::new(&[2u32, 0, 2], &DEV).unwrap();
    check("index_select", &rand(&[3, 4], 16), &|x| {
        x.index_select(&idx, 0)
    });
    let lab = Tensor::new(&[[1u32], [3], [0]], &DEV).unwrap();
    check("gather", &rand(&[3, 4], 17), &|x| x.gather(&lab, 1));
    check("cat+narrow", &rand(&[2, 3, 4], 18), &|x| {
        Tensor::cat(&[x, &x.narrow(1, 1, 2).unwrap()], 1)
    });
}

#[test]
fn differentiable_and_fused_ops_agree() {
    let x = rand(&[2, 3, 8], 20).to_dtype(DType::F32).unwrap();
    let a = rand(&[8], 21).to_dtype(DType::F32).unwrap();
    let b = rand(&[8], 22).to_dtype(DType::F32).unwrap();
    let close = |p: Tensor, q: Tensor, what: &str| {
        let d = (p - q)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{what}: fused and differentiable differ by {d}");
    };
    close(
        ops::rms_norm(&x, &a, 1e-5, true).unwrap(),
        ops::rms_norm(&x, &a, 1e-5, false).unwrap(),
        "rms_norm",
    );
    close(
        ops::layer_norm(&x, &a, &b, 1e-5, true).unwrap(),
        ops::layer_norm(&x, &a, &b, 1e-5, false).unwrap(),
        "layer_norm",
    );
    close(
        ops::softmax(&x, true).unwrap(),
        ops::softmax(&x, false).unwrap(),
        "softmax",
    );
    let q = rand(&[1, 2, 3, 8], 23).to_dtype(DType::F32).unwrap();
    let cos = rand(&[3, 4], 24).to_dtype(DType::F32).unwrap();
    let sin = rand(&[3, 4], 25).to_dtype(DType::F32).unwrap();
    close(
        ops::rope(&q, &cos, &sin, true).unwrap(),
        ops::rope(&q, &cos, &sin, false).unwrap(),
        "rope",
    );
}

fn tiny() -> (tempfile::TempDir, Llm, Adaptor) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(d.path(), 1);
    let llm = Llm::load(d.path(), &DEV).unwrap();
    let cfg = AdaptorConfig {
        encoder: "e".into(),
        enc_dim: 6,
        llm: llm.name().into(),
        llm_dim: 32,
        k: 2,
        hidden: 8,
        template: DEFAULT_TEMPLATE.into(),
        lora: None,
        deep: None,
    };
    let a = Adaptor::new(cfg, 3, &DEV).unwrap();
    (d, llm, a)
}

/// End to end through prompt and frozen LLM: the adaptor's gradient equals finite differences.
#[test]
fn adaptor_gradient_through_frozen_llm_matches_finite_differences() {
    let (_d, llm, a) = tiny();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let h = rand(&[2, 6], 30).to_dtype(DType::F32).unwrap();
    let targets = vec![
        Prompt::target_ids(&llm, "a cat").unwrap(),
        Prompt::target_ids(&llm, "hello there world").unwrap(),
    ];
    let loss = |grad: bool| {
        prompt
            .gen_loss_with(&llm, &a.forward(&h).unwrap(), &targets, grad)
            .unwrap()
            .0
    };
    let vars = a.sorted_vars();
    let g = loss(true).backward().unwrap();
    // Fused inference ops give the same loss as the differentiable training ops.
    let (lt, lf) = (
        loss(true).to_scalar::<f32>().unwrap(),
        loss(false).to_scalar::<f32>().unwrap(),
    );
    assert!(
        (lt - lf).abs() < 1e-4,
        "training-path loss {lt} vs inference-path loss {lf}"
    );
    for (name, var) in &vars {
        let grad = g
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached adaptor {name}"));
        let gv = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        common::check_var_grad(
            &format!("adaptor {name}"),
            var,
            &gv,
            &|| loss(true).to_scalar::<f32>().unwrap() as f64,
            0.02,
        );
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
    let targets: Vec<Vec<u32>> = ["a cat", "hello there world", "x"]
        .iter()
        .map(|t| Prompt::target_ids(&llm, t).unwrap())
        .collect();
    let run = |p: &Prompt| {
        let loss = p
            .gen_loss(&llm, &a.forward(&h).unwrap(), &targets)
            .unwrap()
            .0;
        let g = loss.backward().unwrap();
        let grads: Vec<Vec<f32>> = a
            .sorted_vars()
            .iter()
            .map(|(_, v)| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
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

/// The lean training path (blocks as single nodes, loss gradient formed forward) is an optimisation only:
/// same loss and adaptor gradients as the plain composition that keeps every intermediate.
#[test]
fn lean_training_path_gives_the_same_loss_and_gradients() {
    let (_d, mut llm, a) = tiny();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let h = rand(&[3, 6], 32).to_dtype(DType::F32).unwrap();
    common::assert_lean_equals_plain(
        &mut llm,
        &prompt,
        &a,
        &h,
        &["a cat", "hello there world", "x"],
        1e-5,
        1e-4,
    );
}
