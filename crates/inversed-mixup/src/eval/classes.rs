//! Classification metrics: argmax, accuracy and macro-F1.

/// Accuracy and macro-averaged F1 of predicted against gold class ids.
pub fn accuracy_macro_f1(gold: &[usize], pred: &[usize], classes: usize) -> (f64, f64) {
    let n = gold.len().max(1) as f64;
    let acc = gold.iter().zip(pred).filter(|(g, p)| g == p).count() as f64 / n;
    let mut f1s = Vec::new();
    for c in 0..classes {
        let tp = gold
            .iter()
            .zip(pred)
            .filter(|(g, p)| **g == c && **p == c)
            .count() as f64;
        let fp = gold
            .iter()
            .zip(pred)
            .filter(|(g, p)| **g != c && **p == c)
            .count() as f64;
        let fn_ = gold
            .iter()
            .zip(pred)
            .filter(|(g, p)| **g == c && **p != c)
            .count() as f64;
        if tp + fp + fn_ == 0.0 {
            continue; // class absent from both: not part of the average
        }
        f1s.push(if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        });
    }
    (acc, f1s.iter().sum::<f64>() / f1s.len().max(1) as f64)
}

/// Index of the largest value (the first of equal maxima; NaN never wins).
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
