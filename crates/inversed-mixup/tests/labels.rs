//! Labelled data: label parsing errors, unknown labels, few-shot sampling.

use inversed_mixup::data::labelled::{few_shot, read_labelled};
use inversed_mixup::eval::classes::accuracy_macro_f1;
use inversed_mixup::eval::stats::spearman;
use inversed_mixup::Error;

fn write(d: &tempfile::TempDir, name: &str, s: &str) -> std::path::PathBuf {
    let p = d.path().join(name);
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn labels_are_read_sorted_and_unknown_ones_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(&d, "t.tsv", "label\ttext\npos\tgood\nneg\tbad\npos\tfine\n");
    let l = read_labelled(std::slice::from_ref(&p), "text", "label", None).unwrap();
    assert_eq!(l.labels, ["neg", "pos"]);
    assert_eq!(l.y, [1, 0, 1]);
    let q = write(&d, "u.tsv", "label\ttext\npos\tgood\nmeh\tso so\n");
    match read_labelled(std::slice::from_ref(&q), "text", "label", Some(&l.labels)).unwrap_err() {
        Error::Input { path, line, msg } => {
            assert_eq!((path, line), (q, 3));
            assert!(msg.contains("unknown label \"meh\""), "{msg}");
        }
        e => panic!("{e}"),
    }
    let empty_label = write(&d, "e.tsv", "label\ttext\n\tno label here\n");
    let e = read_labelled(&[empty_label], "text", "label", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("e.tsv:2") && e.contains("empty label"), "{e}");
}

#[test]
fn few_shot_takes_k_per_class_deterministically() {
    let d = tempfile::tempdir().unwrap();
    let mut s = String::from("label\ttext\n");
    for i in 0..30 {
        s.push_str(&format!(
            "{}\tsentence number {i}\n",
            ["a", "b", "c"][i % 3]
        ));
    }
    let p = write(&d, "t.tsv", &s);
    let l = read_labelled(&[p], "text", "label", None).unwrap();
    let a = few_shot(&l, 4, 1);
    assert_eq!(a.rows.len(), 12);
    for c in 0..3 {
        assert_eq!(a.y.iter().filter(|&&y| y == c).count(), 4);
    }
    assert_eq!(a.texts(), few_shot(&l, 4, 1).texts());
    assert_ne!(a.texts(), few_shot(&l, 4, 2).texts());
}

#[test]
fn metrics_on_known_cases() {
    let (acc, f1) = accuracy_macro_f1(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
    assert!((acc - 0.75).abs() < 1e-12);
    // class 0: P=1 R=.5 F1=2/3; class 1: P=2/3 R=1 F1=.8
    assert!((f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
}
