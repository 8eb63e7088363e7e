//! Encoder throughput on the first N lines of a text file: `cargo run --release --example embed_speed -- FILE N BATCH`.
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::fetch;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(2).map(|s| s.parse().unwrap()).unwrap_or(512);
    let bs: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(64);
    let texts: Vec<String> = std::fs::read_to_string(&a[1])
        .unwrap()
        .lines()
        .take(n)
        .map(String::from)
        .collect();
    let enc = Encoder::load(
        &fetch::resolve(None, &fetch::ENCODER).unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    for c in texts.chunks(bs) {
        let r: Vec<&str> = c.iter().map(String::as_str).collect();
        enc.embed(&r).unwrap();
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{} sentences in {s:.2}s: {:.1} sentences/s",
        texts.len(),
        texts.len() as f64 / s
    );
}
