//! Client-controlled strings (client ids, user names, topics, filters) as they appear in log
//! lines: at most [`MAX_CHARS`] characters, with the full length noted, and control characters
//! escaped, so a client cannot flood the log (a 65,535-byte client id) or forge lines in it
//! (a newline or a terminal escape in its user name).

use std::fmt;

/// Characters of a client-controlled string shown in a log line.
pub const MAX_CHARS: usize = 256;

/// `s` as it may appear in a log line (see the module doc).
pub fn clip(s: &str) -> Clipped<'_> {
    Clipped(s)
}

/// A client-controlled string, shown clipped and escaped.
#[derive(Clone, Copy)]
pub struct Clipped<'a>(&'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_clipped(f, self.0, false)
    }
}

/// Quoted, with quotes and backslashes escaped too, like `str`'s own `Debug`.
impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_clipped(f, self.0, true)
    }
}

fn write_clipped(f: &mut fmt::Formatter<'_>, s: &str, quoted: bool) -> fmt::Result {
    let quote = if quoted { "\"" } else { "" };
    f.write_str(quote)?;
    for (shown, c) in s.chars().enumerate() {
        if shown == MAX_CHARS {
            return write!(f, "{quote}…({} bytes)", s.len());
        }
        if c.is_control() || quoted && (c == '"' || c == '\\') {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    f.write_str(quote)
}

/// At most one log line per period, process-wide, for messages a flood could repeat (a
/// client's rejected publishes, a full retained budget): the first call in each period says
/// yes. Periods are whole seconds of Unix time, so a `static` needs no start-up.
pub struct Throttle {
    period_secs: u64,
    last: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// One line per `period_secs` (at least 1).
    pub const fn per(period_secs: u64) -> Throttle {
        Throttle {
            period_secs: if period_secs == 0 { 1 } else { period_secs },
            last: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a line may be logged now.
    pub fn allow(&self) -> bool {
        let period = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / self.period_secs);
        self.last.swap(period, std::sync::atomic::Ordering::Relaxed) != period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_strings_are_unchanged() {
        assert_eq!(clip("sensor/42").to_string(), "sensor/42");
        assert_eq!(clip("").to_string(), "");
        assert_eq!(clip("é/ü").to_string(), "é/ü");
    }

    #[test]
    fn long_strings_are_clipped_with_their_length() {
        let long = "a".repeat(65_000);
        let shown = clip(&long).to_string();
        assert_eq!(shown, format!("{}…(65000 bytes)", "a".repeat(MAX_CHARS)));
        let exact = "b".repeat(MAX_CHARS);
        assert_eq!(clip(&exact).to_string(), exact);
    }

    #[test]
    fn debug_is_quoted_like_str() {
        assert_eq!(format!("{:?}", clip("a\"b\\c")), "\"a\\\"b\\\\c\"");
        assert_eq!(format!("{:?}", clip("plain")), "\"plain\"");
        let long = "z".repeat(300);
        assert!(format!("{:?}", clip(&long)).ends_with("\"…(300 bytes)"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clip("a\nb").to_string(), "a\\nb");
        assert_eq!(clip("\u{1b}[31mred").to_string(), "\\u{1b}[31mred");
        assert!(!clip("x\r\n\t\u{7f}")
            .to_string()
            .chars()
            .any(char::is_control));
    }
}
