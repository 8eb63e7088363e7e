//! Reading sentences (and optional labels) from text, TSV, CSV and JSONL files, with every bad
//! line reported by file and line number.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Longest accepted text in characters; longer lines are almost always a broken file.
pub const DEFAULT_MAX_CHARS: usize = 2000;

/// One usable input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The sentence.
    pub text: String,
    /// Its label, when a label column was read.
    pub label: Option<String>,
    /// Source file.
    pub file: PathBuf,
    /// 1-based line number in the source file.
    pub line: usize,
}

/// How to read input files.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Column (TSV/CSV header name or JSONL key) holding the text.
    pub text_column: String,
    /// Column holding the label, if labels are wanted.
    pub label_column: Option<String>,
    /// Longest accepted text in characters.
    pub max_chars: usize,
    /// Report bad lines as warnings and go on, instead of failing on the first one.
    pub skip_bad: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            text_column: "text".into(),
            label_column: None,
            max_chars: DEFAULT_MAX_CHARS,
            skip_bad: false,
        }
    }
}

/// Input rows plus the bad lines that were skipped (only with `skip_bad`).
#[derive(Debug, Default)]
pub struct Corpus {
    /// The usable rows, in file order.
    pub rows: Vec<Row>,
    /// Every skipped line, as a file:line: reason error.
    pub skipped: Vec<Error>,
}

/// Reads several files, each by its extension: `.tsv`, `.csv`, `.jsonl`/`.json`, else one text a line.
pub fn read_files(paths: &[PathBuf], opt: &ReadOptions) -> Result<Corpus> {
    let mut c = Corpus::default();
    for p in paths {
        read_file(p, opt, &mut c)?;
    }
    Ok(c)
}

/// Builds the error for `line` of `path`.
fn bad(path: &Path, line: usize, msg: impl Into<String>) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// Sorts one row into `out`: kept, skipped with a warning (`skip_bad`), or the error that stops reading.
fn keep(r: Result<Row>, opt: &ReadOptions, out: &mut Corpus) -> Result<()> {
    match r {
        Ok(row) => out.rows.push(row),
        Err(e) if opt.skip_bad => {
            tracing::warn!("skipping {e}");
            out.skipped.push(e)
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A row from its text and label as read at `line`, or why it is unusable.
fn checked(
    path: &Path,
    line: usize,
    text: &str,
    label: Option<String>,
    opt: &ReadOptions,
) -> Result<Row> {
    let t = text.trim();
    if t.is_empty() {
        return Err(bad(path, line, "empty text"));
    }
    let n = t.chars().count();
    if n > opt.max_chars {
        return Err(bad(
            path,
            line,
            format!(
                "text is {n} characters, over the limit of {} (`max_chars`)",
                opt.max_chars
            ),
        ));
    }
    if label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err(bad(path, line, "empty label"));
    }
    Ok(Row {
        text: t.to_string(),
        label: label.map(|l| l.trim().to_string()),
        file: path.to_path_buf(),
        line,
    })
}

/// Lines of a file split on raw bytes, so that one non-UTF-8 line is reported, not the whole file.
/// Blank lines at the end of the file are not rows (editors leave them); blank lines between rows
/// are reported.
fn lines(bytes: &[u8]) -> Vec<(usize, std::result::Result<&str, String>)> {
    let mut out: Vec<(usize, std::result::Result<&str, String>)> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            (
                i + 1,
                std::str::from_utf8(l)
                    .map_err(|e| format!("not valid UTF-8 (byte {})", e.valid_up_to())),
            )
        })
        .collect();
    while out
        .last()
        .is_some_and(|(_, l)| l.as_ref().is_ok_and(|l| l.trim().is_empty()))
    {
        out.pop();
    }
    out
}

/// The encoding of a text file that is plainly not UTF-8: a UTF-16 or UTF-32 byte-order mark, or
/// the NUL bytes every other byte of UTF-16 text is (a UTF-8 text file has none).
pub fn not_utf8(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(4096)];
    if head.starts_with(b"\xFF\xFE\0\0") || head.starts_with(b"\0\0\xFE\xFF") {
        return Some("UTF-32");
    }
    if head.starts_with(b"\xFF\xFE") {
        return Some("UTF-16 (little-endian)");
    }
    if head.starts_with(b"\xFE\xFF") {
        return Some("UTF-16 (big-endian)");
    }
    let nul = |parity: usize| {
        head.iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let half = head.len() / 2;
    match (nul(0), nul(1)) {
        (_, odd) if half > 0 && odd * 2 > half => Some("UTF-16 (little-endian)"),
        (even, _) if half > 0 && even * 2 > half => Some("UTF-16 (big-endian)"),
        _ => None,
    }
}

fn read_file(path: &Path, opt: &ReadOptions, out: &mut Corpus) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if let Some(enc) = not_utf8(&bytes) {
        let msg = format!("this file is {enc}, not UTF-8: save it as UTF-8");
        return Err(Error::Input {
            path: path.to_path_buf(),
            line: 1,
            msg,
        });
    }
    // A UTF-8 byte-order mark (spreadsheet exports) is not part of the first line.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "tsv" => read_delimited(path, bytes, b'\t', opt, out),
        "csv" => read_delimited(path, bytes, b',', opt, out),
        "jsonl" | "json" => {
            for (ln, l) in lines(bytes) {
                keep(
                    l.map_err(|m| bad(path, ln, m))
                        .and_then(|l| json_row(path, ln, l, opt)),
                    opt,
                    out,
                )?;
            }
            Ok(())
        }
        _ => {
            for (ln, l) in lines(bytes) {
                keep(
                    l.map_err(|m| bad(path, ln, m))
                        .and_then(|l| checked(path, ln, l, None, opt)),
                    opt,
                    out,
                )?;
            }
            Ok(())
        }
    }
}

/// One JSON Lines row: the text field and, when asked for, the label field (string or number).
fn json_row(path: &Path, ln: usize, l: &str, opt: &ReadOptions) -> Result<Row> {
    let v: serde_json::Value =
        serde_json::from_str(l).map_err(|e| bad(path, ln, format!("invalid JSON: {e}")))?;
    let text = v
        .get(&opt.text_column)
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad(path, ln, format!("no string field {:?}", opt.text_column)))?;
    let label = match &opt.label_column {
        None => None,
        Some(c) => Some(match v.get(c) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(bad(path, ln, format!("no label field {c:?}"))),
        }),
    };
    checked(path, ln, text, label, opt)
}

/// TSV (no quoting: benchmark texts contain bare quotes) or CSV (`"` quoting, fields may span
/// lines) with a header line naming the columns.
fn read_delimited(
    path: &Path,
    bytes: &[u8],
    delim: u8,
    opt: &ReadOptions,
    out: &mut Corpus,
) -> Result<()> {
    let csv = delim == b',';
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(false)
        .flexible(true)
        .quoting(csv)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let field = |rec: &csv::ByteRecord, i: usize| String::from_utf8_lossy(&rec[i]).into_owned();
    if !rdr
        .read_byte_record(&mut rec)
        .map_err(|e| bad(path, 1, e.to_string()))?
    {
        return Err(bad(path, 1, "empty file: expected a header line"));
    }
    let hl = rec.position().map_or(1, |p| p.line() as usize);
    let cols: Vec<String> = (0..rec.len())
        .map(|i| field(&rec, i).trim().to_string())
        .collect();
    let find = |name: &str| {
        cols.iter().position(|c| c == name).ok_or_else(|| {
            bad(
                path,
                hl,
                format!(
                    "no column {name:?} in header (columns: {})",
                    cols.join(", ")
                ),
            )
        })
    };
    let ti = find(&opt.text_column)?;
    let li = opt.label_column.as_deref().map(find).transpose()?;
    // The reader skips blank lines; the gap between one record's end and the next one's start
    // names them, so that none is dropped silently.
    let mut next = rdr.position().line() as usize;
    loop {
        let start = rdr.position().byte() as usize;
        let more = match rdr.read_byte_record(&mut rec) {
            Ok(m) => m,
            Err(e) => {
                let line = e.position().map_or(next, |p| p.line() as usize);
                return keep(Err(bad(path, line, e.to_string())), opt, out);
            }
        };
        if !more {
            return Ok(());
        }
        let line = rec.position().map_or(next, |p| p.line() as usize);
        for blank in next..line {
            keep(Err(bad(path, blank, "empty text")), opt, out)?;
        }
        next = rdr.position().line() as usize;
        let raw = &bytes[start..rdr.position().byte() as usize];
        let row = if csv && raw.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
            Err(bad(path, line, "unterminated quoted field"))
        } else if rec.len() != cols.len() {
            Err(bad(
                path,
                line,
                format!("{} fields but the header has {}", rec.len(), cols.len()),
            ))
        } else {
            let utf8 = |i: usize| {
                std::str::from_utf8(&rec[i])
                    .map(str::to_string)
                    .map_err(|e| {
                        bad(
                            path,
                            line,
                            format!(
                                "not valid UTF-8 (byte {} of column {})",
                                e.valid_up_to(),
                                cols[i]
                            ),
                        )
                    })
            };
            utf8(ti).and_then(|t| checked(path, line, &t, li.map(utf8).transpose()?, opt))
        };
        keep(row, opt, out)?;
    }
}
