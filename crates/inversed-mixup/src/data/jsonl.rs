//! JSON Lines output: one serialised object a line, written atomically or appended to a log.

use crate::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Appends `row` as one line to `out` (a learning-curve log, for example).
pub fn append<T: Serialize>(out: &mut dyn Write, row: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, row)?;
    out.write_all(b"\n")
}

/// Writes `rows` to `path` atomically, one JSON object a line.
pub fn write<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    crate::data::io::write_atomic_with(path, |w| rows.iter().try_for_each(|r| append(w, r)))
}

/// Reads every line of `path` as a `T`; a missing file is empty, a malformed line names its line.
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Input {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("corrupt row: {e}"),
            })
        })
        .collect()
}

/// Keeps the lines of a learning curve up to and including `step` (a resumed run appends from
/// there, so the curve never repeats a step); a torn last line (the run was killed while writing
/// it) is dropped, a corrupt line elsewhere is an error naming it. A missing file counts as empty.
pub fn truncate_curve(path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut keep = String::new();
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(l) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() => {
                tracing::warn!("{}:{}: dropping a torn last line", path.display(), i + 1);
                break;
            }
            Err(e) => {
                return Err(Error::Input {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: format!("corrupt curve line ({e})"),
                })
            }
        };
        if v["step"].as_u64().is_some_and(|s| s as usize <= step) {
            keep.push_str(l);
            keep.push('\n');
        }
    }
    crate::data::io::write_atomic(path, keep.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Row {
        a: u32,
        b: String,
    }

    #[test]
    fn rows_round_trip_and_bad_lines_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        let rows = vec![
            Row {
                a: 1,
                b: "x\ny".into(),
            },
            Row {
                a: 2,
                b: "z".into(),
            },
        ];
        write(&p, &rows).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
        assert_eq!(read::<Row>(&p).unwrap(), rows);
        assert!(read::<Row>(&dir.path().join("missing.jsonl"))
            .unwrap()
            .is_empty());
        std::fs::write(&p, "{\"a\":1,\"b\":\"x\"}\nnot json\n").unwrap();
        let e = read::<Row>(&p).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn floats_read_back_are_rewritten_unchanged() {
        // A resumed run reads its saved rows and writes them again: they must not change. Without
        // serde_json's float_roundtrip about one random float in eleven came back one ulp off.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        let xs: Vec<f64> = (1..2000u64)
            .map(|i| {
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64 * 100.0
            })
            .chain([97.42447372584027])
            .collect();
        write(&p, &xs).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let back: Vec<f64> = read(&p).unwrap();
        assert!(xs
            .iter()
            .zip(&back)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        write(&p, &back).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn a_curve_is_cut_back_to_the_checkpoint_and_a_torn_line_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(
            &p,
            "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4,\"x",
        )
        .unwrap();
        truncate_curve(&p, 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n"
        );
        std::fs::write(&p, "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let e = truncate_curve(&p, 2).unwrap_err().to_string();
        assert!(
            e.contains("c.jsonl:2:") && e.contains("corrupt curve line"),
            "{e}"
        );
        truncate_curve(&dir.path().join("missing.jsonl"), 3).unwrap();
    }
}
