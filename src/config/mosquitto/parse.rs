//! Reading a Mosquitto file into directive lines, as Mosquitto reads it: `#` starts a comment
//! line, a directive is a name and the rest of its line, and `include_dir DIR` (in the main file
//! only) reads DIR's `*.conf` files in place, in Mosquitto's order. A little more lenient than
//! Mosquitto (tabs separate words, an indented `#` is a comment), never stricter.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::render::Source;
use super::{MosquittoError, Note, Severity};

/// One directive: its name and the rest of the line.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub source: Source,
    pub name: String,
    /// What follows the name, untrimmed at the end.
    pub rest: String,
}

impl Line {
    /// The words after the name.
    pub fn words(&self) -> Vec<&str> {
        self.rest.split_whitespace().collect()
    }

    /// The rest of the line, trimmed: string values (paths may hold spaces, and Mosquitto
    /// takes a `#` here as part of the value).
    pub fn text(&self) -> &str {
        self.rest.trim()
    }
}

/// The directive lines of `path` and of the files its `include_dir` lines name, in the order
/// Mosquitto reads them; problems with included directories are notes.
pub(super) fn read(path: &Path, notes: &mut Vec<Note>) -> Result<Vec<Line>, MosquittoError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(MosquittoError::Read {
            path: shown,
            source: std::io::Error::other("is a directory"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| MosquittoError::Read {
        path: shown.clone(),
        source,
    })?;
    Ok(expand(lines(&text, &shown), notes))
}

/// `lines` of the main file with each `include_dir` line followed by the lines of the
/// directory's files; problems with them are notes.
pub(super) fn expand(lines_in: Vec<Line>, notes: &mut Vec<Note>) -> Vec<Line> {
    let mut out = Vec::new();
    for line in lines_in {
        if line.name != "include_dir" {
            out.push(line);
            continue;
        }
        let files = match included_files(Path::new(line.text())) {
            Ok(files) => files,
            Err(e) => {
                notes.push(Note::new(
                    &line,
                    Severity::Invalid,
                    &format!("cannot read the directory: {e}"),
                ));
                out.push(line);
                continue;
            }
        };
        let mut included = Vec::new();
        for f in files {
            let name = f.display().to_string();
            match std::fs::read_to_string(&f) {
                Ok(t) => {
                    for l in lines(&t, &name) {
                        if l.name == "include_dir" {
                            notes.push(Note::new(
                                &l,
                                Severity::Warning,
                                "ignored: Mosquitto reads include_dir only in the main file",
                            ));
                        }
                        included.push(l);
                    }
                }
                Err(e) => notes.push(Note::new(
                    &line,
                    Severity::Invalid,
                    &format!("cannot read {name}: {e}"),
                )),
            }
        }
        out.push(line);
        out.extend(included);
    }
    out
}

/// The directive lines of one file's `text`.
pub(super) fn lines(text: &str, file: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                return None;
            }
            let (name, rest) = match trimmed.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r),
                None => (trimmed, ""),
            };
            Some(Line {
                source: Source {
                    file: file.to_string(),
                    line: i + 1,
                    text: trimmed.to_string(),
                },
                name: name.to_string(),
                rest: rest.to_string(),
            })
        })
        .collect()
}

/// The `*.conf` files of `dir` in Mosquitto's order: case-sensitive alphabetical, each upper
/// case letter before its lower case (`00.conf`, `A.conf`, `a.conf`, `B.conf`).
pub(super) fn included_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() > ".conf".len() && n.ends_with(".conf"))
                && !p.is_dir()
        })
        .collect();
    files.sort_by(|a, b| mosquitto_order(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

fn mosquitto_order(a: &str, b: &str) -> Ordering {
    let key = |c: char| (c.to_ascii_lowercase(), c.is_ascii_lowercase());
    a.chars().map(key).cmp(b.chars().map(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of mosquitto.conf(5): 00, 01, A, a, B, b.
    #[test]
    fn include_order_is_mosquittos() {
        let mut names = vec!["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"];
        names.sort_by(|a, b| mosquitto_order(a, b));
        assert_eq!(
            names,
            ["00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]
        );
    }

    #[test]
    fn comments_blank_lines_and_words() {
        let ls = lines(
            "# c\n\n  # indented\nlistener 1883 127.0.0.1\r\npassword_file /a b/c \nport\t1884\n",
            "m.conf",
        );
        assert_eq!(ls.len(), 3);
        assert_eq!(ls[0].name, "listener");
        assert_eq!(ls[0].words(), ["1883", "127.0.0.1"]);
        assert_eq!(ls[0].source.line, 4);
        assert_eq!(ls[1].text(), "/a b/c");
        assert_eq!(ls[2].name, "port");
        assert_eq!(ls[2].words(), ["1884"]);
    }
}
