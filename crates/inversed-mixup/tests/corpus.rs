//! Input files: every bad line is reported with its file and line; nothing is dropped silently.

use inversed_mixup::data::corpus::{read_files, ReadOptions};
use inversed_mixup::Error;
use std::path::PathBuf;

fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_of(p: &PathBuf, opt: &ReadOptions) -> (usize, String) {
    match read_files(std::slice::from_ref(p), opt).unwrap_err() {
        Error::Input { path, line, msg } => {
            assert_eq!(&path, p);
            (line, msg)
        }
        e => panic!("expected an input error, got {e}"),
    }
}

#[test]
fn empty_line_is_reported_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = file(&d, "c.txt", b"first sentence\n\nthird\n");
    let (line, msg) = err_of(&p, &ReadOptions::default());
    assert_eq!((line, msg.as_str()), (2, "empty text"));
    let shown = read_files(std::slice::from_ref(&p), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(shown.starts_with(&format!("{}:2:", p.display())), "{shown}");
}

#[test]
fn overlong_line_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let long = "word ".repeat(500);
    let p = file(&d, "c.txt", format!("ok\n{long}\n").as_bytes());
    let (line, msg) = err_of(
        &p,
        &ReadOptions {
            max_chars: 100,
            ..Default::default()
        },
    );
    assert_eq!(line, 2);
    assert!(msg.contains("over the limit"), "{msg}");
}

#[test]
fn non_utf8_line_is_reported_not_the_whole_file() {
    let d = tempfile::tempdir().unwrap();
    let p = file(&d, "c.txt", b"good\nalso good\nbad \xff\xfe bytes\n");
    let (line, msg) = err_of(&p, &ReadOptions::default());
    assert_eq!(line, 3);
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn skip_bad_keeps_good_rows_and_lists_every_bad_one() {
    let d = tempfile::tempdir().unwrap();
    let p = file(&d, "c.txt", b"one\n\ntwo\n\xff\nthree\r\n");
    let c = read_files(
        &[p],
        &ReadOptions {
            skip_bad: true,
            ..Default::default()
        },
    )
    .unwrap();
    let texts: Vec<&str> = c.rows.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(c.rows.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(c.skipped.len(), 2);
}

#[test]
fn tsv_csv_jsonl_columns_and_labels() {
    let d = tempfile::tempdir().unwrap();
    let opt = ReadOptions {
        label_column: Some("label".into()),
        ..Default::default()
    };
    let tsv = file(&d, "a.tsv", b"label\ttext\n1\ta fine film\n0\ta dull one\n");
    let csv = file(
        &d,
        "b.csv",
        b"text,label\n\"hello, world\",pos\n\"she said \"\"hi\"\"\nand left\",neg\n",
    );
    let jsonl = file(&d, "c.jsonl", b"{\"text\": \"json row\", \"label\": 3}\n");
    let c = read_files(&[tsv, csv, jsonl], &opt).unwrap();
    let got: Vec<(String, String, usize)> = c
        .rows
        .iter()
        .map(|r| (r.text.clone(), r.label.clone().unwrap(), r.line))
        .collect();
    assert_eq!(
        got,
        [
            ("a fine film".into(), "1".into(), 2),
            ("a dull one".into(), "0".into(), 3),
            ("hello, world".into(), "pos".into(), 2),
            ("she said \"hi\"\nand left".into(), "neg".into(), 3),
            ("json row".into(), "3".into(), 1),
        ]
    );
}

#[test]
fn malformed_rows_name_their_line() {
    let d = tempfile::tempdir().unwrap();
    let opt = ReadOptions {
        label_column: Some("label".into()),
        ..Default::default()
    };
    let tsv = file(&d, "a.tsv", b"label\ttext\n1\tok\n1\ttoo\tmany\n");
    assert_eq!(err_of(&tsv, &opt).0, 3);
    let nocol = file(&d, "b.tsv", b"y\ttext\n1\tok\n");
    let (line, msg) = err_of(&nocol, &opt);
    assert_eq!(line, 1);
    assert!(msg.contains("no column \"label\""), "{msg}");
    let json = file(
        &d,
        "c.jsonl",
        b"{\"text\": \"ok\", \"label\": 1}\n{\"text\": 5}\nnot json\n",
    );
    assert_eq!(err_of(&json, &opt).0, 2);
    let unterminated = file(&d, "d.csv", b"text,label\n\"never closed,1\n");
    assert_eq!(err_of(&unterminated, &opt).0, 2);
}

#[test]
fn byte_order_mark_and_trailing_blank_lines_are_not_rows() {
    let d = tempfile::tempdir().unwrap();
    let opt = ReadOptions {
        label_column: Some("label".into()),
        ..Default::default()
    };
    let tsv = file(
        &d,
        "bom.tsv",
        b"\xEF\xBB\xBFlabel\ttext\n1\ta fine film\n\n\n",
    );
    let c = read_files(&[tsv], &opt).unwrap();
    assert_eq!(c.rows.len(), 1);
    let txt = file(&d, "t.txt", b"\xEF\xBB\xBFfirst\nsecond\n\n  \n");
    let c = read_files(&[txt], &ReadOptions::default()).unwrap();
    assert_eq!(
        c.rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    // A blank line between rows is still reported.
    let mid = file(&d, "m.txt", b"first\n\nthird\n\n");
    assert_eq!(err_of(&mid, &ReadOptions::default()).0, 2);
}
