//! Pairing, lambda specs, soft labels, intrusion verdicts and mitigations.

use inversed_mixup::method::intrusion::{judge, relabel, Mitigation};
use inversed_mixup::method::mixup::{plan, soft_label, LambdaSpec, Pairing};

const Y: [usize; 6] = [0, 0, 1, 1, 2, 2];

#[test]
fn pairing_strategies_respect_classes() {
    let fixed = LambdaSpec::Fixed(0.5);
    for m in plan(&Y, Pairing::CrossClass, 3, &fixed, 1).unwrap() {
        assert_ne!(Y[m.a], Y[m.b]);
    }
    for m in plan(&Y, Pairing::SameClass, 3, &fixed, 1).unwrap() {
        assert_eq!(Y[m.a], Y[m.b]);
        assert_ne!(m.a, m.b);
    }
    let r = plan(&Y, Pairing::Random, 2, &fixed, 1).unwrap();
    assert_eq!(r.len(), 12);
    assert!(r.iter().all(|m| m.a != m.b));
    // A class with a single example has no same-class partner: an error, not a silent skip.
    assert!(plan(&[0, 1, 1], Pairing::SameClass, 1, &fixed, 1).is_err());
    assert!(plan(&[0, 0], Pairing::CrossClass, 1, &fixed, 1).is_err());
}

#[test]
fn plans_are_seeded() {
    let b = LambdaSpec::Beta(0.4);
    assert_eq!(
        plan(&Y, Pairing::Random, 2, &b, 7).unwrap(),
        plan(&Y, Pairing::Random, 2, &b, 7).unwrap()
    );
    assert_ne!(
        plan(&Y, Pairing::Random, 2, &b, 7).unwrap(),
        plan(&Y, Pairing::Random, 2, &b, 8).unwrap()
    );
}

#[test]
fn lambda_specs_parse_and_grid_expands() {
    assert_eq!("0.3".parse::<LambdaSpec>().unwrap(), LambdaSpec::Fixed(0.3));
    assert_eq!(
        "beta:0.5".parse::<LambdaSpec>().unwrap(),
        LambdaSpec::Beta(0.5)
    );
    let g: LambdaSpec = "grid:0,0.25,0.5,0.75,1".parse().unwrap();
    let p = plan(&Y, Pairing::CrossClass, 1, &g, 0).unwrap();
    assert_eq!(p.len(), 6 * 5);
    assert_eq!(
        p[..5].iter().map(|m| m.lambda).collect::<Vec<_>>(),
        [0.0, 0.25, 0.5, 0.75, 1.0]
    );
    for bad in ["1.5", "beta:0", "grid:", "grid:0,2", "half"] {
        assert!(bad.parse::<LambdaSpec>().is_err(), "{bad}");
    }
    // Beta draws stay inside [0, 1] and are spread out for small alpha.
    let d = plan(
        &[0, 1].repeat(200),
        Pairing::CrossClass,
        1,
        &LambdaSpec::Beta(0.2),
        3,
    )
    .unwrap();
    assert!(d.iter().all(|m| (0.0..=1.0).contains(&m.lambda)));
    let extreme = d
        .iter()
        .filter(|m| m.lambda < 0.1 || m.lambda > 0.9)
        .count();
    assert!(
        extreme > d.len() / 3,
        "Beta(0.2, 0.2) puts most mass near 0 and 1; got {extreme} of {}",
        d.len()
    );
}

#[test]
fn soft_labels_sum_to_one() {
    for (ya, yb, l) in [(0, 1, 0.3), (2, 2, 0.7), (1, 0, 0.0), (0, 2, 1.0)] {
        let s = soft_label(ya, yb, l, 3);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((s[ya] - if ya == yb { 1.0 } else { l }).abs() < 1e-12);
    }
}

#[test]
fn intrusion_verdicts_on_hand_made_cases() {
    // Sources of class 0 and 1, lambda 0.8 -> label favours class 0.
    let soft = soft_label(0, 1, 0.8, 3);
    // Confident prediction of class 2: outside both sources.
    assert!(judge(&[0.05, 0.05, 0.9], &soft, 0, 1, 0.8).intrusion);
    // Confident prediction of class 1: the dominant class flipped.
    let v = judge(&[0.1, 0.85, 0.05], &soft, 0, 1, 0.8);
    assert!(v.intrusion && v.reason.contains("flipped"), "{v:?}");
    // Agreeing prediction: no intrusion.
    assert!(!judge(&[0.9, 0.05, 0.05], &soft, 0, 1, 0.8).intrusion);
    // Unconfident contradiction: below the threshold, no intrusion.
    assert!(!judge(&[0.2, 0.3, 0.5], &soft, 0, 1, 0.8).intrusion);
    // lambda = 0.5 has no dominant class: only an outside class can intrude.
    let even = soft_label(0, 1, 0.5, 3);
    assert!(!judge(&[0.05, 0.9, 0.05], &even, 0, 1, 0.8).intrusion);
    assert!(judge(&[0.05, 0.05, 0.9], &even, 0, 1, 0.8).intrusion);
}

#[test]
fn relabel_blends_and_stays_a_distribution() {
    let soft = soft_label(0, 1, 0.8, 3);
    let r = relabel(&soft, &[0.1, 0.85, 0.05]);
    assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!((r[0] - 0.45).abs() < 1e-12 && (r[1] - 0.525).abs() < 1e-12);
    assert_eq!("drop".parse::<Mitigation>().unwrap(), Mitigation::Drop);
    assert!("ignore".parse::<Mitigation>().is_err());
}

/// Label-safe mixing: same-class pairs with mid-lambda draws never cross labels, so the label is
/// right whichever source the sentence follows.
#[test]
fn same_class_mid_lambda_mixes_never_cross_labels() {
    let u: LambdaSpec = "uniform:0.3,0.7".parse().unwrap();
    assert_eq!(u, LambdaSpec::Uniform(0.3, 0.7));
    let y: Vec<usize> = [0, 1, 2].repeat(30);
    let p = plan(&y, Pairing::SameClass, 2, &u, 5).unwrap();
    assert_eq!(p.len(), 180);
    for m in &p {
        assert_eq!(y[m.a], y[m.b], "{m:?}");
        assert!((0.3..=0.7).contains(&m.lambda), "{m:?}");
        let s = soft_label(y[m.a], y[m.b], m.lambda, 3);
        assert_eq!(s[y[m.a]], 1.0, "a same-class mix keeps a one-hot label");
    }
    assert!(
        p.iter().any(|m| m.lambda < 0.4) && p.iter().any(|m| m.lambda > 0.6),
        "spread over [0.3, 0.7]"
    );
    assert_eq!(p, plan(&y, Pairing::SameClass, 2, &u, 5).unwrap(), "seeded");
    for bad in [
        "uniform:0.7,0.3",
        "uniform:0.5",
        "uniform:0,1.5",
        "uniform:a,b",
    ] {
        assert!(bad.parse::<LambdaSpec>().is_err(), "{bad}");
    }
}

/// The copy rule of over-generate and select: a verbatim source and a case/spacing variant of it
/// are copies, a paraphrase is not; an embedding at cosine 0.95 or more to a source is a copy too.
#[test]
fn the_copy_rule_rejects_copies_and_keeps_a_paraphrase() {
    use inversed_mixup::method::augment::is_near_copy;
    let (a, b) = (
        "the acting is superb and the story kept me hooked",
        "the music is annoying",
    );
    assert!(is_near_copy(a, a, b, 0.5, 0.1));
    assert!(is_near_copy(
        "The  acting is SUPERB and the story kept me hooked",
        a,
        b,
        0.5,
        0.1
    ));
    assert!(
        is_near_copy("the music is annoying !", a, b, 0.1, 0.5),
        "one extra token of five"
    );
    assert!(!is_near_copy(
        "a gripping plot with wonderful performances",
        a,
        b,
        0.8,
        0.2
    ));
    assert!(is_near_copy(
        "a gripping plot with wonderful performances",
        a,
        b,
        0.96,
        0.2
    ));
}

/// Teacher labels: a blend of the label and the teacher's prediction that stays a distribution and
/// is the teacher's prediction at weight 1.
#[test]
fn teacher_labels_sum_to_one_and_follow_the_teacher_at_weight_one() {
    use inversed_mixup::method::augment::teacher_label;
    let mix = soft_label(0, 1, 0.7, 3);
    let teacher = [0.1, 0.2, 0.7];
    for w in [0.0, 0.25, 0.5, 1.0] {
        let t = teacher_label(&mix, &teacher, w);
        assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{w}: {t:?}");
    }
    assert_eq!(teacher_label(&mix, &teacher, 1.0), teacher);
    assert_eq!(teacher_label(&mix, &teacher, 0.0), mix);
}
