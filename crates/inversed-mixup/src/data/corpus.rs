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
        Self { text_column: "text".into(), label_column: None, max_chars: DEFAULT_MAX_CHARS, skip_bad: false }
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

fn read_file(path: &Path, opt: &ReadOptions, out: &mut Corpus) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let err = |line: usize, msg: String| Error::Input { path: path.to_path_buf(), line, msg };
    // Split on raw bytes first so that one non-UTF-8 line is reported, not the whole file.
    let mut lines: Vec<(usize, std::result::Result<&str, String>)> = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if !body.is_empty() {
        for (i, l) in body.split(|&b| b == b'\n').enumerate() {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let s = std::str::from_utf8(l).map_err(|e| format!("not valid UTF-8 (byte {})", e.valid_up_to()));
            lines.push((i + 1, s));
        }
    }
    let handle = |r: std::result::Result<Row, Error>, out: &mut Corpus| -> Result<()> {
        match r {
            Ok(row) => out.rows.push(row),
            Err(e) if opt.skip_bad => {
                tracing::warn!("skipping {e}");
                out.skipped.push(e)
            }
            Err(e) => return Err(e),
        }
        Ok(())
    };
    let check = |line: usize, text: &str, label: Option<String>| -> std::result::Result<Row, Error> {
        let t = text.trim();
        if t.is_empty() {
            return Err(err(line, "empty text".into()));
        }
        let n = t.chars().count();
        if n > opt.max_chars {
            return Err(err(line, format!("text is {n} characters, over the limit of {} (--max-chars)", opt.max_chars)));
        }
        if let Some(l) = &label {
            if l.trim().is_empty() {
                return Err(err(line, "empty label".into()));
            }
        }
        Ok(Row { text: t.to_string(), label: label.map(|l| l.trim().to_string()), file: path.to_path_buf(), line })
    };
    match ext.as_str() {
        "tsv" | "csv" => {
            let delim = if ext == "tsv" { '\t' } else { ',' };
            let mut it = lines.into_iter();
            let (hl, header) = it.next().ok_or_else(|| err(1, "empty file: expected a header line".into()))?;
            let header = header.map_err(|m| err(hl, m))?;
            let cols = split_record(header, delim).map_err(|m| err(hl, m))?;
            let find = |name: &str| cols.iter().position(|c| c.trim() == name).ok_or_else(|| err(hl, format!("no column {name:?} in header (columns: {})", cols.join(", "))));
            let ti = find(&opt.text_column)?;
            let li = opt.label_column.as_deref().map(find).transpose()?;
            let mut pending: Option<(usize, String)> = None;
            for (ln, l) in it {
                let l = match l {
                    Ok(l) => l,
                    Err(m) => {
                        handle(Err(err(ln, m)), out)?;
                        continue;
                    }
                };
                // CSV quoted fields may span lines: keep reading until quotes balance.
                let (start, rec) = match pending.take() {
                    Some((s, mut acc)) => {
                        acc.push('\n');
                        acc.push_str(l);
                        (s, acc)
                    }
                    None => (ln, l.to_string()),
                };
                if delim == ',' && rec.matches('"').count() % 2 == 1 {
                    pending = Some((start, rec));
                    continue;
                }
                let r = split_record(&rec, delim).map_err(|m| err(start, m)).and_then(|f| {
                    if f.len() != cols.len() {
                        return Err(err(start, format!("{} fields but the header has {}", f.len(), cols.len())));
                    }
                    check(start, &f[ti], li.map(|i| f[i].clone()))
                });
                handle(r, out)?;
            }
            if let Some((s, _)) = pending {
                handle(Err(err(s, "unterminated quoted field".into())), out)?;
            }
        }
        "jsonl" | "json" => {
            for (ln, l) in lines {
                let r = l.map_err(|m| err(ln, m)).and_then(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).map_err(|e| err(ln, format!("invalid JSON: {e}")))?;
                    let text = v.get(&opt.text_column).and_then(|t| t.as_str()).ok_or_else(|| err(ln, format!("no string field {:?}", opt.text_column)))?;
                    let label = match &opt.label_column {
                        None => None,
                        Some(c) => Some(match v.get(c) {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(serde_json::Value::Number(n)) => n.to_string(),
                            _ => return Err(err(ln, format!("no label field {c:?}"))),
                        }),
                    };
                    check(ln, text, label)
                });
                handle(r, out)?;
            }
        }
        _ => {
            for (ln, l) in lines {
                handle(l.map_err(|m| err(ln, m)).and_then(|l| check(ln, l, None)), out)?;
            }
        }
    }
    Ok(())
}

/// Splits one record; CSV fields may be quoted with `"` and `""` escapes.
fn split_record(line: &str, delim: char) -> std::result::Result<Vec<String>, String> {
    if delim == '\t' {
        return Ok(line.split('\t').map(str::to_string).collect());
    }
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == delim {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            if c == '"' {
                return Err("stray quote inside an unquoted CSV field".into());
            }
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}
