//! Mosquitto 2.x configuration files, run as they are: a `mosquitto.conf` is read with
//! Mosquitto's own rules (its defaults, `per_listener_settings`, `include_dir`, the default and
//! local-only listeners) and translated into a Tern [`Config`], with a [`Note`] for every line
//! that means something else or nothing in Tern. The translation is a TOML document too
//! ([`Translation::toml`], what `tern import-mosquitto` prints); the `Config` is read back
//! from that text, so both always agree.

mod bridges;
mod directives;
mod finish;
mod listeners;
mod parse;
mod render;
mod translate;

use std::fmt;
use std::path::Path;

use super::{Config, ConfigError};

/// How much a line's translation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Translated, or meaningless in Tern by design (say, `autosave_interval`): for the record.
    Info,
    /// Not translated, and harmless: logging, a pid file, tuning.
    Warning,
    /// Not translated, and its absence changes who may connect or what is delivered (an auth
    /// plugin, a mount point): Tern refuses to start unless told `--ignore-unsupported`.
    Error,
    /// Not a valid Mosquitto line (Mosquitto refuses it too): Tern refuses to start.
    Invalid,
}

/// What one line of the Mosquitto file became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The file, as named (the main file as given, included files as found in `include_dir`).
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The line as written (trimmed).
    pub directive: String,
    /// How much it matters.
    pub severity: Severity,
    /// What happened to it, and why.
    pub message: String,
}

impl Note {
    fn new(line: &parse::Line, severity: Severity, message: &str) -> Note {
        Note::at(&line.source, severity, message)
    }

    fn at(source: &render::Source, severity: Severity, message: &str) -> Note {
        Note {
            file: source.file.clone(),
            line: source.line,
            directive: source.text.clone(),
            severity,
            message: message.to_string(),
        }
    }

    /// Whether it stops Tern from starting: always for an invalid line, for an unsupported
    /// one unless `ignore_unsupported`.
    pub fn refuses(&self, ignore_unsupported: bool) -> bool {
        match self.severity {
            Severity::Invalid => true,
            Severity::Error => !ignore_unsupported,
            Severity::Info | Severity::Warning => false,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Info => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Invalid => "invalid",
        };
        write!(
            f,
            "{} line {}: {label}: `{}`: {}",
            self.file, self.line, self.directive, self.message
        )
    }
}

/// A Mosquitto file translated.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The settings Tern runs with (what [`Translation::toml`] says); Tern's defaults when an
    /// invalid line leaves the translation incomplete (such a file is refused anyway, see
    /// [`Translation::refusals`]).
    pub config: Config,
    /// One or more per line that is not translated as it stands, in file order.
    pub notes: Vec<Note>,
    /// The equivalent Tern TOML, each key under the Mosquitto lines it comes from.
    pub toml: String,
}

impl Translation {
    /// The notes that stop Tern from starting ([`Note::refuses`]).
    pub fn refusals(&self, ignore_unsupported: bool) -> Vec<&Note> {
        self.notes
            .iter()
            .filter(|n| n.refuses(ignore_unsupported))
            .collect()
    }

    /// The notes worth telling at start: warnings, and errors let through.
    pub fn warnings(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .filter(|n| matches!(n.severity, Severity::Warning | Severity::Error))
    }
}

/// Why a Mosquitto file could not be translated at all (a line that cannot is a [`Note`]).
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    /// The file could not be read.
    #[error("cannot read Mosquitto configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The translation is not a valid Tern configuration (a value Tern refuses that no note
    /// caught).
    #[error("the translation of {path} is not a valid Tern configuration: {source}")]
    Translated {
        /// The Mosquitto file.
        path: String,
        /// Tern's objection.
        source: ConfigError,
    },
}

/// Translates the Mosquitto file `path` (and the files of its `include_dir` lines). Relative
/// paths in it stay relative to the working directory, as in Mosquitto.
pub fn translate_file(path: &Path) -> Result<Translation, MosquittoError> {
    let mut notes = Vec::new();
    let lines = parse::read(path, &mut notes)?;
    translate::translate(lines, notes, &path.display().to_string())
}

/// Translates Mosquitto configuration `text` named `origin` (`include_dir` lines are read
/// from the file system).
pub fn translate_text(text: &str, origin: &str) -> Result<Translation, MosquittoError> {
    let mut notes = Vec::new();
    let lines = parse::expand(parse::lines(text, origin), &mut notes);
    translate::translate(lines, notes, origin)
}

/// Whether the configuration file `path` holding `text` is a Mosquitto file rather than TOML:
/// a `.conf` name is, a `.toml` name is not; otherwise, text that is not TOML and whose first
/// line is a Mosquitto directive.
pub fn is_mosquitto(path: &Path, text: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("conf") => true,
        Some("toml") => false,
        _ => {
            text.parse::<toml::Table>().is_err()
                && parse::lines(text, "")
                    .first()
                    .is_some_and(|l| directives::is_directive(&l.name))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
