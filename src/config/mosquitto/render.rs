//! The translation as a TOML document whose every key remembers the Mosquitto lines it came
//! from, rendered with those lines quoted in comments above it. The [`Config`](crate::Config)
//! is read back from this very text, so what `tern import-mosquitto` prints is what
//! `tern --config mosquitto.conf` runs.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Note, Severity};

/// One directive line of a Mosquitto file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    /// The file, as it was named (the main file as given, included ones as found).
    pub file: String,
    /// Line number, from 1.
    pub line: usize,
    /// The line, trimmed.
    pub text: String,
}

impl Source {
    fn place(&self) -> (String, usize) {
        (self.file.clone(), self.line)
    }
}

/// One key of a table, with the lines it came from and remarks on how.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: &'static str,
    pub value: toml::Value,
    pub sources: Vec<Source>,
    /// Why the value is what it is when no line says so (a Mosquitto default).
    pub remark: Option<String>,
}

/// A `[name]` table, or one `[[name]]` entry, with its own tables of arrays inside
/// (`[[bridge.topics]]`).
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub name: String,
    pub array: bool,
    /// The lines that opened it (`listener 8883`, `connection cloud`).
    pub sources: Vec<Source>,
    pub remark: Option<String>,
    pub entries: Vec<Entry>,
    pub children: Vec<Table>,
}

impl Table {
    /// A `[name]` table.
    pub fn new(name: &str) -> Table {
        Table {
            name: name.to_string(),
            array: false,
            sources: Vec::new(),
            remark: None,
            entries: Vec::new(),
            children: Vec::new(),
        }
    }

    /// One `[[name]]` entry opened by `source`.
    pub fn array(name: &str, source: Option<&Source>) -> Table {
        Table {
            array: true,
            sources: source.into_iter().cloned().collect(),
            ..Table::new(name)
        }
    }

    /// Sets `key` (a later line replaces the value; every line stays quoted above it).
    pub fn set(&mut self, key: &'static str, value: impl Into<toml::Value>, source: &Source) {
        let value = value.into();
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.value = value;
                if !e.sources.contains(source) {
                    e.sources.push(source.clone());
                }
            }
            None => self.entries.push(Entry {
                key,
                value,
                sources: vec![source.clone()],
                remark: None,
            }),
        }
    }

    /// Sets `key` from several lines at once (a value that depends on all of them).
    pub fn set_from(
        &mut self,
        key: &'static str,
        value: impl Into<toml::Value>,
        sources: &[Source],
    ) {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry {
            key,
            value: value.into(),
            sources: sources.to_vec(),
            remark: None,
        });
    }

    /// Sets `key` where no line says so, explaining why in `remark`.
    pub fn set_default(&mut self, key: &'static str, value: impl Into<toml::Value>, remark: &str) {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry {
            key,
            value: value.into(),
            sources: Vec::new(),
            remark: Some(remark.to_string()),
        });
    }

    /// Whether `key` is set.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.children.is_empty() && !self.array
    }
}

/// The whole translation, in the order it is written.
#[derive(Debug, Default)]
pub(super) struct Doc {
    pub tables: Vec<Table>,
}

/// The TOML text: a heading, the tables with the lines each key came from (and their notes)
/// quoted above it, then every line that set nothing, with its notes.
pub(super) fn render(doc: &Doc, notes: &[Note], every_line: &[Source], origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Tern configuration translated from the Mosquitto configuration {}\n\
         # by `tern import-mosquitto`. Each key is preceded by the Mosquitto lines it comes\n\
         # from; lines that set nothing in Tern are listed at the end with the reason.\n\
         # Relative paths are relative to the directory Tern is started from, as in Mosquitto.",
        comment_safe(origin)
    );
    let mut shown = Shown::default();
    for table in &doc.tables {
        render_table(&mut out, table, "", notes, &mut shown);
    }
    let rest: Vec<&Source> = every_line
        .iter()
        .filter(|s| !shown.noted.contains(&s.place()))
        .collect();
    if !rest.is_empty() {
        out.push_str("\n# Lines with nothing to set in Tern:\n");
        for s in rest {
            shown.last = None;
            quote(&mut out, s, notes, &mut shown);
            if !notes.iter().any(|n| n.file == s.file && n.line == s.line) {
                out.push_str("#   note: Mosquitto's default, or no effect here\n");
            }
        }
    }
    out
}

fn render_table(out: &mut String, table: &Table, parent: &str, notes: &[Note], shown: &mut Shown) {
    if table.is_empty() {
        return;
    }
    let name = match parent {
        "" => table.name.clone(),
        p => format!("{p}.{}", table.name),
    };
    out.push('\n');
    shown.last = None;
    for s in &table.sources {
        quote(out, s, notes, shown);
    }
    if let Some(r) = &table.remark {
        let _ = writeln!(out, "# ({})", comment_safe(r));
        shown.last = None;
    }
    match table.array {
        true => {
            let _ = writeln!(out, "[[{name}]]");
        }
        false => {
            let _ = writeln!(out, "[{name}]");
        }
    }
    for e in &table.entries {
        for s in &e.sources {
            quote(out, s, notes, shown);
        }
        if let Some(r) = &e.remark {
            let _ = writeln!(out, "# ({})", comment_safe(r));
            shown.last = None;
        }
        let _ = writeln!(out, "{} = {}", e.key, e.value);
        if e.sources.len() != 1 {
            shown.last = None;
        }
    }
    for child in &table.children {
        render_table(out, child, &name, notes, shown);
    }
}

/// Which lines were quoted with their notes, and the last one quoted.
#[derive(Default)]
struct Shown {
    noted: HashSet<(String, usize)>,
    /// The line quoted last, while the keys below it come from it alone (not quoted again).
    last: Option<(String, usize)>,
}

/// `# FILE line N: TEXT`, then the notes on that line (once; a line feeding several keys is
/// quoted above each, unless they follow one another, its notes only the first time).
fn quote(out: &mut String, s: &Source, notes: &[Note], shown: &mut Shown) {
    if shown.last.as_ref() == Some(&s.place()) {
        return;
    }
    shown.last = Some(s.place());
    let _ = writeln!(
        out,
        "# {} line {}: {}",
        comment_safe(&s.file),
        s.line,
        comment_safe(&s.text)
    );
    if shown.noted.insert(s.place()) {
        for n in notes
            .iter()
            .filter(|n| n.file == s.file && n.line == s.line)
        {
            let label = match n.severity {
                Severity::Info => "note",
                Severity::Warning => "warning",
                Severity::Error => "error, not translated",
                Severity::Invalid => "invalid",
            };
            let _ = writeln!(out, "#   {label}: {}", comment_safe(&n.message));
        }
    }
}

/// Text that cannot end or break a TOML comment.
fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}
