//! Every kernel gives the same numbers on every instruction-set path this CPU can run (scalar,
//! AVX2, AVX-512), on random inputs: each path is forced in turn with `simd::set_cap` and compared
//! with the scalar one. Paths the CPU lacks are skipped with a printed reason. The cap is global,
//! so the tests of this file take turns (one lock).

use candle_core::{Device, Tensor, Var};
use imix_kernels::simd::{self, Level};
use imix_kernels::{fastmath, FrozenLinear};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

static CAP: Mutex<()> = Mutex::new(());

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-2.0f32..2.0)).collect()
}

fn rand_t(dims: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(rand_vec(dims.iter().product(), seed), dims, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Runs `f` on every supported path and checks each result against the scalar path's within
/// `atol + rtol·|scalar|` per element.
fn same_on_every_path(name: &str, atol: f32, rtol: f32, f: &dyn Fn() -> Vec<f32>) {
    let _guard = CAP.lock().unwrap_or_else(|e| e.into_inner());
    for l in Level::ALL.into_iter().filter(|&l| l > simd::detected()) {
        println!(
            "{name}: {} path skipped: this CPU lacks it (detected: {})",
            l.name(),
            simd::detected().name()
        );
    }
    let mut runs = Vec::new();
    for l in simd::supported() {
        simd::set_cap(Some(l));
        assert_eq!(simd::level(), l);
        runs.push((l, f()));
    }
    simd::set_cap(None);
    let (_, reference) = &runs[0];
    assert!(
        reference.iter().all(|v| v.is_finite()),
        "{name}: the scalar path gave a non-finite value"
    );
    assert!(
        reference.iter().any(|v| v.abs() > 1e-3),
        "{name}: the scalar path gave (near) zeros only: no signal"
    );
    for (l, got) in &runs[1..] {
        assert_eq!(
            got.len(),
            reference.len(),
            "{name}: {} path: length",
            l.name()
        );
        for (i, (g, r)) in got.iter().zip(reference).enumerate() {
            assert!(
                (g - r).abs() <= atol + rtol * r.abs(),
                "{name}: {} path element {i}: {g} vs scalar {r}",
                l.name()
            );
        }
    }
}

#[test]
fn elementwise_kernels_agree_on_every_path() {
    // Lengths with a tail after the vector blocks; large enough for the parallel split.
    for n in [1, 13, 1000, 70_001] {
        let (x, g, d) = (rand_vec(n, 1), rand_vec(n, 2), rand_vec(n, 3));
        same_on_every_path("gelu", 1e-6, 1e-6, &|| fastmath::gelu(&x));
        same_on_every_path("gelu_grad", 1e-6, 1e-6, &|| fastmath::gelu_grad(&x, &g));
        same_on_every_path("swiglu", 1e-6, 1e-6, &|| fastmath::swiglu(&x, &g));
        same_on_every_path("swiglu_grad_gate", 1e-6, 1e-6, &|| {
            fastmath::swiglu_grad_gate(&x, &g, &d)
        });
        same_on_every_path("swiglu_grad_up", 1e-6, 1e-6, &|| {
            fastmath::swiglu_grad_up(&x, &d)
        });
        same_on_every_path("exp", 0.0, 1e-6, &|| {
            fastmath::exp_vec(&x.iter().map(|v| v * 40.0).collect::<Vec<_>>())
        });
        same_on_every_path("swiglu_grad_both", 1e-6, 1e-6, &|| {
            let (mut og, mut ou) = (vec![0f32; n], vec![0f32; n]);
            fastmath::swiglu_grad_both_into(&x, &g, &d, &mut og, &mut ou);
            og.into_iter().chain(ou).collect()
        });
    }
}

#[test]
fn norms_softmax_and_rope_agree_on_every_path() {
    for (rows, d) in [(3, 7), (5, 64), (4, 576)] {
        let x = rand_t(&[rows, d], 10);
        let w = rand_t(&[d], 11);
        let g = rand_t(&[rows, d], 12);
        same_on_every_path("softmax", 1e-7, 1e-5, &|| {
            flat(&imix_kernels::fused::softmax(&x).unwrap())
        });
        same_on_every_path("rms_norm", 1e-6, 1e-5, &|| {
            flat(&imix_kernels::fused::rms_norm(&x, &w, 1e-5).unwrap())
        });
        let b = rand_t(&[d], 17);
        same_on_every_path("fused layer_norm and its gradients", 1e-5, 1e-4, &|| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w).unwrap(),
                Var::from_tensor(&b).unwrap(),
            );
            let y = imix_kernels::fused::layer_norm(
                xv.as_tensor(),
                wv.as_tensor(),
                bv.as_tensor(),
                1e-5,
            )
            .unwrap();
            let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = flat(&y);
            for v in [&xv, &wv, &bv] {
                out.extend(flat(grads.get(v.as_tensor()).unwrap()));
            }
            out
        });
        same_on_every_path("rms_norm_input_grad", 1e-5, 1e-4, &|| {
            flat(&imix_kernels::fused::rms_norm_input_grad(&x, &w, &g, 1e-5).unwrap())
        });
        let (xs, ws, bs) = (rand_vec(rows * d, 13), rand_vec(d, 14), rand_vec(d, 15));
        same_on_every_path("layer_norm", 1e-5, 1e-5, &|| {
            let mut y = xs.clone();
            imix_kernels::layer_norm::layer_norm(&mut y, &ws, &bs, 1e-12);
            y
        });
    }
    // RoPE on (b, h, t, hd) with (t, hd/2) tables.
    let (t, hd) = (9, 16);
    let x = rand_t(&[2, 3, t, hd], 16);
    let ang: Vec<f32> = (0..t * hd / 2)
        .map(|i| (i / (hd / 2)) as f32 * 0.1 * (1 + i % (hd / 2)) as f32)
        .collect();
    let cos = Tensor::from_vec(
        ang.iter().map(|a| a.cos()).collect::<Vec<_>>(),
        (t, hd / 2),
        &Device::Cpu,
    )
    .unwrap();
    let sin = Tensor::from_vec(
        ang.iter().map(|a| a.sin()).collect::<Vec<_>>(),
        (t, hd / 2),
        &Device::Cpu,
    )
    .unwrap();
    same_on_every_path("rope", 1e-6, 1e-6, &|| {
        flat(&imix_kernels::fused::rope(&x, &cos, &sin).unwrap())
    });
}

#[test]
fn decoding_products_agree_on_every_path() {
    // Row counts around the 4- and 2-row tiles; widths with and without a 16-lane remainder;
    // output widths with and without whole 4-row groups and 32-row tasks.
    for (m, k, out) in [
        (1, 576, 100),
        (2, 576, 64),
        (3, 24, 70),
        (4, 64, 33),
        (5, 576, 132),
        (16, 576, 96),
        (7, 13, 9),
    ] {
        let (x, w) = (rand_vec(m * k, 20), rand_vec(out * k, 21));
        same_on_every_path("matvec", 2e-5, 1e-5, &|| {
            imix_kernels::matvec::matmul_wt(&x, m, k, &w, out)
        });
    }
}

#[test]
fn attention_kernels_agree_on_every_path() {
    // Packed encoder attention: head widths of 32 (MiniLM), 40 (a remainder piece), 6 (no AVX2).
    for (heads, hd, len) in [(12, 32, 11), (3, 40, 17), (2, 6, 5)] {
        let d = heads * hd;
        let qkv = rand_vec(len * 3 * d, 30);
        same_on_every_path("packed attention", 1e-6, 1e-5, &|| {
            let (mut out, mut buf) = (vec![0f32; len * d], Vec::new());
            imix_kernels::packed_attention::attend_seq(&qkv, &mut out, heads, hd, &mut buf);
            out
        });
    }
    // Decoding attention (b, kv, rep, hd) over a cache (b, kv, t, hd), and the masked variant.
    let (q, k, v) = (
        rand_t(&[2, 3, 3, 64], 31),
        rand_t(&[2, 3, 19, 64], 32),
        rand_t(&[2, 3, 19, 64], 33),
    );
    same_on_every_path("decode attention", 1e-6, 1e-5, &|| {
        flat(&imix_kernels::decode_attention::decode_attention(&q, &k, &v).unwrap())
    });
    let (q, k, v) = (
        rand_t(&[2, 4, 7, 32], 34),
        rand_t(&[2, 4, 7, 32], 35),
        rand_t(&[2, 4, 7, 32], 36),
    );
    let bias = Tensor::from_vec(
        (0..14)
            .map(|i| if i % 7 > 4 { -1e9f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (2, 7),
        &Device::Cpu,
    )
    .unwrap();
    same_on_every_path("masked attention", 1e-6, 1e-5, &|| {
        flat(&imix_kernels::decode_attention::masked_attention(&q, &k, &v, &bias).unwrap())
    });
    // Causal training attention with grouped heads and a constant prefix: forward and input gradient.
    let (heads, kv_heads, hd, t, p) = (4, 2, 16, 6, 3);
    let table = |f: fn(f64) -> f64| {
        Arc::new(
            (0..t * hd / 2)
                .map(|i| f((i / (hd / 2)) as f64 * 0.3))
                .collect::<Vec<f64>>(),
        )
    };
    let prefix = Some((
        rand_t(&[2, kv_heads, p, hd], 37),
        rand_t(&[2, kv_heads, p, hd], 38),
    ));
    let att = imix_kernels::causal_attention::Causal {
        heads,
        kv_heads,
        head_dim: hd,
        cos: table(f64::cos),
        sin: table(f64::sin),
        prefix,
    };
    let qkv = rand_t(&[2, t, (heads + 2 * kv_heads) * hd], 39);
    let ga = rand_t(&[2, t, heads * hd], 40);
    same_on_every_path("causal attention", 1e-6, 1e-5, &|| {
        flat(&att.forward(&qkv).unwrap())
    });
    same_on_every_path("causal attention grad", 1e-5, 1e-4, &|| {
        flat(&att.input_grad(&qkv, &ga).unwrap())
    });
}

#[test]
fn adamw_agrees_on_every_path() {
    let (p0, g) = (rand_t(&[7, 301], 60), rand_t(&[7, 301], 61));
    let h = imix_kernels::adamw::AdamWStep {
        scale: 0.5,
        b1: (0.9, 0.1),
        b2: (0.999, 0.001),
        inv_c: (10.0, 1000.0),
        eps: 1e-8,
        decay_lr: (0.9999, 1e-2),
    };
    same_on_every_path("adamw", 1e-7, 1e-6, &|| {
        let p = p0.copy().unwrap();
        let mut mv = imix_kernels::adamw::Moments::zeros(7 * 301, candle_core::DType::F32).unwrap();
        for _ in 0..3 {
            imix_kernels::adamw::step(&p, &mut mv, &g, h).unwrap();
        }
        let (m, v) = mv.to_tensors(&[7, 301], &Device::Cpu).unwrap();
        flat(&p)
            .into_iter()
            .chain(flat(&m))
            .chain(flat(&v))
            .collect()
    });
}

#[test]
fn losses_agree_on_every_path() {
    let (n, hidden, vocab) = (6, 48, 300);
    let h0 = rand_t(&[n, hidden], 50);
    let w = FrozenLinear::new(rand_t(&[vocab, hidden], 51));
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 37 % vocab as u32).collect();
    same_on_every_path("output cross-entropy and its gradient", 1e-5, 1e-4, &|| {
        let h = Var::from_tensor(&h0).unwrap();
        let loss = imix_kernels::loss::output_cross_entropy_chunked(h.as_tensor(), &w, &labels, 64)
            .unwrap();
        let g = loss.backward().unwrap();
        let mut v = vec![loss.to_scalar::<f32>().unwrap()];
        v.extend(flat(g.get(h.as_tensor()).unwrap()));
        v
    });
    let logits = rand_t(&[n, 37], 52);
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 5 % 37).collect();
    same_on_every_path("cross-entropy", 1e-6, 1e-5, &|| {
        vec![imix_kernels::loss::cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()]
    });
}
