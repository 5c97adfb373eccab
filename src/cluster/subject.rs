//! How MQTT topics and topic filters become NATS subjects when brokers share a NATS backplane.
//!
//! Every subject lives under `tern.<cluster>.<class>.`, where the class is [`CLASS_QOS0`]
//! (core NATS messages), [`CLASS_QOS1`] (QoS 1 and 2, captured by a JetStream stream) or
//! [`CLASS_RETAINED`] (the retained stream). After the class, each MQTT level becomes exactly
//! one NATS token, so `+` and `#` map onto `*` and `>` and NATS does the level matching:
//!
//! - an empty level becomes a lone `%` (NATS forbids empty tokens);
//! - a level that is exactly `*` or `>` becomes `%2A` or `%3E`, so a topic is never a wildcard;
//! - in other levels `%`, `.`, ASCII whitespace, control bytes and DEL become `%XX` (uppercase
//!   hex); everything else, non-ASCII UTF-8 included, passes through.
//!
//! The mapping is total (every topic name has a subject) and reversible: [`Subjects::topic_of`]
//! accepts exactly the subjects [`Subjects::topic`] produces, so the encoding is canonical and
//! a subject published by anything else (lowercase hex, needless escapes, `%2F`) is refused
//! rather than turned into a topic that would encode differently.

/// Class of QoS 0 messages, sent as core NATS messages.
pub(crate) const CLASS_QOS0: &str = "0";
/// Class of QoS 1 and 2 messages, captured by a JetStream stream.
pub(crate) const CLASS_QOS1: &str = "1";
/// Class of retained messages, kept in their own stream.
pub(crate) const CLASS_RETAINED: &str = "r";

/// Longest subject accepted in cluster mode. NATS' control line (`PUB <subject> ...`) is limited
/// to 4 KB by default; this leaves room for the reply subject, sizes and header lengths. Callers
/// check the whole subject returned by [`Subjects::topic`] against it.
pub(crate) const MAX_SUBJECT_LEN: usize = 3500;

/// Uppercase hex digits for `%XX` escapes.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The subjects of one cluster, all under `tern.<name>`.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    /// `tern.<name>`, without a trailing dot.
    prefix: String,
}

impl Subjects {
    /// The subjects of cluster `cluster_name`, which the configuration has already checked to
    /// be `[A-Za-z0-9_-]+` (so it is one NATS token and needs no escaping).
    pub(crate) fn new(cluster_name: &str) -> Subjects {
        Subjects {
            prefix: format!("tern.{cluster_name}"),
        }
    }

    /// `tern.<name>.<class>`, the base every class subject is built on.
    fn class_base(&self, class: &str, extra: usize) -> String {
        let mut s = String::with_capacity(self.prefix.len() + class.len() + 1 + extra);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(class);
        s
    }

    /// `tern.<name>.<class>.<escaped topic>` for topic name `topic` (which the caller has
    /// validated: non-empty, no wildcards, no U+0000). Distinct topics give distinct subjects;
    /// the result is never a wildcard and has no empty token. It can be up to about three times
    /// as long as the topic: compare it with [`MAX_SUBJECT_LEN`].
    pub(crate) fn topic(&self, class: &str, topic: &str) -> String {
        let mut s = self.class_base(class, topic.len() + 8);
        for level in topic.split('/') {
            s.push('.');
            escape_level(level, &mut s);
        }
        s
    }

    /// The class and topic of `subject`, if it is a subject of class [`CLASS_QOS0`],
    /// [`CLASS_QOS1`] or [`CLASS_RETAINED`] under this prefix, exactly as [`Subjects::topic`]
    /// writes it, and the topic is a valid MQTT topic name (non-empty, no `+`, `#` or U+0000,
    /// at most 65,535 bytes). Lets a subscriber that covers several classes at once (class `*`
    /// in [`Subjects::filter`], which also matches class `r`) tell them apart.
    pub(crate) fn class_and_topic<'s>(&self, subject: &'s str) -> Option<(&'s str, String)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (class, escaped) = rest.split_once('.')?;
        if ![CLASS_QOS0, CLASS_QOS1, CLASS_RETAINED].contains(&class) {
            return None;
        }
        let mut topic = String::with_capacity(escaped.len());
        for (i, token) in escaped.split('.').enumerate() {
            if i > 0 {
                topic.push('/');
            }
            topic.push_str(&unescape_token(token)?);
        }
        let valid = !topic.is_empty()
            && topic.len() <= usize::from(u16::MAX)
            && !topic.contains(['+', '#', '\0']);
        // Canonical form only: refuses `%2F`, lowercase hex, needless escapes, raw `*`/`>`.
        (valid && escape_topic(&topic) == escaped).then_some((class, topic))
    }

    /// The topic of a subject of any class under this prefix (see
    /// [`Subjects::class_and_topic`]); `None` if the subject is not under the prefix, not in a
    /// known class, or not exactly what [`Subjects::topic`] would produce for some topic name.
    pub(crate) fn topic_of(&self, subject: &str) -> Option<String> {
        self.class_and_topic(subject).map(|(_, topic)| topic)
    }

    /// The NATS subjects that together match exactly the topics MQTT filter `filter` matches,
    /// within `class` (`*` covers every class with one subscription: note it also matches
    /// [`CLASS_RETAINED`]). `+` becomes `*` and `#` becomes `>`; other levels are escaped as in
    /// [`Subjects::topic`]. Because MQTT `a/#` also matches `a` itself and NATS `a.>` does not,
    /// `a/#` gives two subjects, `….a` and `….a.>`; a filter that is only `#` gives one, `….>`.
    ///
    /// The MQTT rule that wildcards at the first level do not match topics starting with `$`
    /// is not applied here (NATS has no such rule): the receiving broker's trie applies it.
    /// `filter` is a valid, non-shared filter (the caller validated it).
    pub(crate) fn filter(&self, class: &str, filter: &str) -> Vec<String> {
        let mut base = self.class_base(class, filter.len() + 8);
        let mut multi = false;
        for level in filter.split('/') {
            match level {
                "#" => {
                    multi = true;
                    break; // `#` is the last level of a valid filter
                }
                "+" => base.push_str(".*"),
                _ => {
                    base.push('.');
                    escape_level(level, &mut base);
                }
            }
        }
        if !multi {
            return vec![base];
        }
        let all = format!("{base}.>");
        if filter == "#" {
            vec![all]
        } else {
            vec![base, all]
        }
    }

    /// Every subject of `class`, `tern.<name>.<class>.>`: what a stream of that class captures.
    pub(crate) fn all(&self, class: &str) -> String {
        let mut s = self.class_base(class, 2);
        s.push_str(".>");
        s
    }

    /// A fixed subject outside the topic classes, `tern.<name>.<what>` (e.g. `barrier`).
    pub(crate) fn control(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }
}

/// Whether byte `b` of a non-empty level must be written `%XX`: the escape character itself,
/// the NATS token separator, whitespace (which ends a subject in the NATS protocol), control
/// bytes and DEL.
fn needs_escape(b: u8) -> bool {
    b == b'%' || b == b'.' || b.is_ascii_whitespace() || b < 0x20 || b == 0x7f
}

/// Appends the NATS token for MQTT level `level` (no `/` in it) to `out`: `%` for an empty
/// level, `%2A`/`%3E` for a level that is exactly `*`/`>`, otherwise the level with the bytes of
/// [`needs_escape`] written `%XX`. The token is never empty, never a wildcard, never contains
/// `.` or whitespace, and is distinct for distinct levels.
pub(crate) fn escape_level(level: &str, out: &mut String) {
    match level {
        "" => out.push('%'),
        "*" => out.push_str("%2A"),
        ">" => out.push_str("%3E"),
        _ => {
            for c in level.chars() {
                // Only ASCII is ever escaped: multi-byte UTF-8 has no byte below 0x80.
                match u8::try_from(c) {
                    Ok(b) if b.is_ascii() && needs_escape(b) => {
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xf)]));
                    }
                    _ => out.push(c),
                }
            }
        }
    }
}

/// The escaped topic, levels joined by `.`, without any prefix.
fn escape_topic(topic: &str) -> String {
    let mut s = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            s.push('.');
        }
        escape_level(level, &mut s);
    }
    s
}

/// The level a token stands for: a lone `%` is the empty level, `%XX` (either case of hex
/// here; canonical form is checked by re-encoding) a byte. `None` if a `%` is not followed by
/// two hex digits or the bytes are not UTF-8.
fn unescape_token(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether NATS subject pattern `pattern` (`*` is one token, `>` as the last token is one or
/// more tokens) matches literal subject `subject`, as the NATS server decides it.
#[cfg(test)]
pub(crate) fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Whether pattern `wide` covers pattern `narrow`: every subject `narrow` matches, `wide`
/// matches too (`a.>` covers `a.*` and `a.b.>`, `>` covers everything, `a.*` does not cover
/// `a.>`). Lets a subscriber drop subscriptions already covered by another.
pub(crate) fn covers(wide: &str, narrow: &str) -> bool {
    let mut narrow = narrow.split('.');
    for w in wide.split('.') {
        match (w, narrow.next()) {
            (">", Some(_)) => return true,
            (_, None) | (_, Some(">")) => return false,
            ("*", Some(_)) => {}
            (w, Some(n)) if w == n => {}
            _ => return false,
        }
    }
    narrow.next().is_none()
}

/// Whether some subject matches both patterns `a` and `b`.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) | (None, None) => return true,
            (None, _) | (_, None) => return false,
            (Some(p), Some(q)) if p == q || p == "*" || q == "*" => {}
            _ => return false,
        }
    }
}

/// The patterns of `wanted` without those another covers, if no two of the rest overlap (a
/// JetStream consumer refuses filter subjects that overlap); `None` if some do.
pub(crate) fn disjoint(wanted: &[String]) -> Option<Vec<String>> {
    let mut kept: Vec<String> = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let covered = wanted
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && covers(o, w) && (!covers(w, o) || j < i));
        if !covered && !kept.contains(w) {
            kept.push(w.clone());
        }
    }
    for (i, a) in kept.iter().enumerate() {
        if kept[i + 1..].iter().any(|b| overlap(a, b)) {
            return None;
        }
    }
    Some(kept)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const TOPICS: &[&str] = &[
        "a/b", "a//c", "/", "//", "a/", "/a", "a.b/c", "a/*/b", "a/>", "*", ">", "sp ace/x", "%",
        "%25", "a%2Eb", "ü/ñ/€", "$SYS/x", "$SYS/y/x", "tab\there", "a/b/c", "x/y", "a*b/c>",
        "\u{7f}", "new\nline", ".", "..", "a/b/c/d/e", "a", "%2A", "a/b/", "cr\r\x0b\x0c\x01",
    ];

    const FILTERS: &[&str] = &[
        "#", "+", "+/", "/+", "a/#", "a/+", "+/+/+", "a/+/c", "a/b/+", "$SYS/#", "$SYS/+/x", "+/x",
        "a//c", "/#", "a.b/#", "*", ">", "a/*/b", "sp ace/#", "%", "ü/#", "+/+", "a/b/c", "a/>",
        "+/#", "x/y", "//", "a", "a/b/#", "*/#", ">/+",
    ];

    const CLASSES: &[&str] = &[CLASS_QOS0, CLASS_QOS1, CLASS_RETAINED];

    /// MQTT matching without the `$` rule: `+` is one level, `#` (last) is the parent and any
    /// number of levels below it.
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let mut levels = topic.split('/');
        for f in filter.split('/') {
            match (f, levels.next()) {
                ("#", _) => return true,
                (_, None) => return false,
                ("+", Some(_)) => {}
                (f, Some(l)) if f == l => {}
                _ => return false,
            }
        }
        levels.next().is_none()
    }

    /// `left=right` pairs separated by whitespace.
    fn pairs(list: &str) -> impl Iterator<Item = (&str, &str)> {
        list.split_whitespace()
            .map(|pair| pair.split_once('=').unwrap())
    }

    fn subjects() -> Subjects {
        Subjects::new("c-1")
    }

    /// The checks every (filter, topic) pair must pass in `class`.
    /// Also across classes: a filter of class `class` never matches another class's subject.
    fn check_pair(s: &Subjects, class: &str, filter: &str, topic: &str) {
        let pats = s.filter(class, filter);
        for topic_class in CLASSES {
            let subject = s.topic(topic_class, topic);
            let nats = pats.iter().any(|p| nats_matches(p, &subject));
            let same_class = class == "*" || class == *topic_class;
            let expect = same_class && mqtt_matches(filter, topic);
            assert_eq!(
                nats, expect,
                "filter {filter:?} topic {topic:?} {pats:?} {subject}"
            );
        }
    }

    fn check_subject_shape(subject: &str) {
        assert!(subject.len() < MAX_SUBJECT_LEN);
        assert!(
            !subject.contains(|c: char| c.is_whitespace() || c.is_control()),
            "{subject:?}"
        );
        assert!(subject.split('.').all(|t| !t.is_empty()), "{subject:?}");
    }

    #[test]
    fn escapes_as_specified() {
        let s = subjects();
        #[rustfmt::skip]
        let cases = [
            ("a/b", "a.b"), ("a//b", "a.%.b"), ("/", "%.%"), ("a.b/c", "a%2Eb.c"),
            ("sp ace", "sp%20ace"), ("%", "%25"), ("ü/ñ", "ü.ñ"), ("*", "%2A"), (">", "%3E"),
            ("a*b/c>", "a*b.c>"), ("a/*/>", "a.%2A.%3E"), ("\u{7f}\t\n", "%7F%09%0A"),
            ("$SYS/#x+", "$SYS.#x+"),
        ];
        for (topic, escaped) in cases {
            assert_eq!(s.topic("0", topic), format!("tern.c-1.0.{escaped}"));
        }
        assert_eq!(s.all("1"), "tern.c-1.1.>");
        assert_eq!(s.control("barrier"), "tern.c-1.barrier");
        assert_eq!(s.filter("*", "#"), ["tern.c-1.*.>"]);
        assert_eq!(s.filter("0", "a/#"), ["tern.c-1.0.a", "tern.c-1.0.a.>"]);
        assert_eq!(s.filter("1", "+/a.b/+"), ["tern.c-1.1.*.a%2Eb.*"]);
        assert_eq!(s.filter("r", "/#"), ["tern.c-1.r.%", "tern.c-1.r.%.>"]);
    }

    #[test]
    fn table_round_trips_and_matches() {
        let s = subjects();
        for &topic in TOPICS {
            for &class in CLASSES {
                let subject = s.topic(class, topic);
                check_subject_shape(&subject);
                assert!(
                    subject.split('.').all(|t| t != "*" && t != ">"),
                    "{subject}"
                );
                assert!(subject.len() <= "tern.c-1.0.".len() + 3 * topic.len() + 1);
                assert_eq!(s.topic_of(&subject).as_deref(), Some(topic), "{subject}");
                assert_eq!(s.class_and_topic(&subject).unwrap().0, class);
            }
        }
        for &filter in FILTERS {
            let levels: Vec<&str> = filter.split('/').collect();
            for class in ["0", "1", "r", "*"] {
                let pats = s.filter(class, filter);
                let want = 1 + usize::from(filter.ends_with('#') && filter != "#");
                assert_eq!(pats.len(), want, "{filter}");
                for pat in &pats {
                    check_subject_shape(pat);
                    let tokens: Vec<&str> = pat.split('.').collect();
                    assert_eq!(tokens[..3], ["tern", "c-1", class]);
                    for (j, token) in tokens[3..].iter().enumerate() {
                        match *token {
                            "*" => assert_eq!(levels[j], "+", "{filter} {pat}"),
                            ">" => assert_eq!(levels[j], "#", "{filter} {pat}"),
                            _ => assert!(!["+", "#"].contains(&levels[j]), "{filter} {pat}"),
                        }
                    }
                }
                for &topic in TOPICS {
                    check_pair(&s, class, filter, topic);
                }
            }
        }
    }

    #[test]
    fn topic_of_refuses_foreign_and_non_canonical_subjects() {
        let s = subjects();
        // Whitespace-separated: none of these subjects contains whitespace.
        let bad = "tern.c-2.0.a tern.c-10.0.a tern.c-1 tern.c-1.0 tern.c-1.0. tern.c-1.x.a \
            tern.c-1.barrier tern.c-1.0.a..b tern.c-1.0.a%2 tern.c-1.0.a%G1 tern.c-1.0.a%2e \
            tern.c-1.0.%61 tern.c-1.0.a%2Fb tern.c-1.0.%FF tern.c-1.0.%C3 tern.c-1.0.* \
            tern.c-1.0.> tern.c-1.0.a+ tern.c-1.0.# tern.c-1.0.%00 tern.c-1.0.% \
            tern.c-1.0.%2A%2A tern.c-1.0.a%2A other.c-1.0.a tern.c-1.*.a .tern.c-1.0.a";
        for subject in bad.split_whitespace() {
            assert_eq!(s.topic_of(subject), None, "{subject}");
        }
        assert_eq!(s.topic_of("tern.c-1.r.%.%").as_deref(), Some("/"));
        assert_eq!(s.topic_of("tern.c-1.0.%2A").as_deref(), Some("*"));
        assert_eq!(s.topic_of("tern.c-1.1.a*").as_deref(), Some("a*"));
    }

    #[test]
    fn nats_matching() {
        let yes = "a=a a.*=a.b a.>=a.b a.>=a.b.c >=a *.*=a.b *.b.>=a.b.c.d a.%=a.%";
        let no = "a=b a.*=a a.*=a.b.c a.>=a a.b=a a=a.b *=a.b a.%2A=a.b";
        for (p, s) in pairs(yes) {
            assert!(nats_matches(p, s), "{p} {s}");
        }
        for (p, s) in pairs(no) {
            assert!(!nats_matches(p, s), "{p} {s}");
        }
    }

    #[test]
    fn covering() {
        let yes = "a.>=a.* a.>=a.b.> >=a >=> >=*.*.> a.*=a.b a.*=a.* *.b=a.b a=a a.>=a.> *.>=a.*.c";
        let no = "a.*=a.> a=* a.b=a a.>=a a.b.>=a.> a.*=a *=> a.b=a.b.c a.b=a.* a.*.c=a.>";
        for (w, n) in pairs(yes) {
            assert!(covers(w, n), "{w} {n}");
        }
        for (w, n) in pairs(no) {
            assert!(!covers(w, n), "{w} {n}");
        }
        // Soundness against brute force: a cover's matches include the covered pattern's.
        let pats = "a * > a.b a.* *.b a.> *.> a.b.c a.*.c *.*.* a.b.> *.*.>";
        let subjects = [
            "a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.c.c", "b.b.b", "a.b.c.d",
        ];
        for w in pats.split_whitespace() {
            for n in pats.split_whitespace() {
                let brute = subjects
                    .iter()
                    .all(|s| !nats_matches(n, s) || nats_matches(w, s));
                if covers(w, n) {
                    assert!(brute, "{w} {n}");
                }
            }
        }
    }

    #[test]
    fn every_short_hostile_topic() {
        const ALPHABET: [char; 10] = ['/', '.', '%', ' ', '*', '>', 'a', 'ü', '\t', '$'];
        const FILTERS: [&str; 10] = [
            "#", "+", "a/#", "+/+", "/+", "a/+", "%/#", "*/>", "+/a", " /#",
        ];
        let s = subjects();
        let mut words = vec![String::new()];
        let mut count = 0;
        for _ in 0..4 {
            let mut longer = Vec::with_capacity(words.len() * ALPHABET.len());
            for word in &words {
                for c in ALPHABET {
                    let topic = format!("{word}{c}");
                    let subject = s.topic(CLASS_QOS1, &topic);
                    check_subject_shape(&subject);
                    assert_eq!(s.topic_of(&subject).as_deref(), Some(topic.as_str()));
                    for filter in FILTERS {
                        check_pair(&s, CLASS_QOS0, filter, &topic);
                    }
                    count += 1;
                    longer.push(topic);
                }
            }
            words = longer;
        }
        assert_eq!(count, 10 + 100 + 1_000 + 10_000);
    }

    #[test]
    fn overlapping_patterns_are_found() {
        for (a, b, both) in [
            ("t.1.a.*", "t.1.*.b", true),
            ("t.1.a.>", "t.1.a", false),
            ("t.1.a.>", "t.1.a.b.c", true),
            ("t.1.a.b", "t.1.a.c", false),
            ("t.1.*", "t.1.*.x", false),
            ("t.1.>", "t.1.x", true),
        ] {
            assert_eq!(overlap(a, b), both, "{a} {b}");
            assert_eq!(overlap(b, a), both, "{b} {a}");
        }
    }

    #[test]
    fn covered_patterns_are_dropped_and_partial_overlaps_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            disjoint(&s(&["t.a.>", "t.a.b", "t.a.*", "t.c", "t.c"])),
            Some(s(&["t.a.>", "t.c"]))
        );
        assert_eq!(disjoint(&s(&["t.a.*.c", "t.a.b.*"])), None);
        assert_eq!(disjoint(&s(&["t.a", "t.a.>"])), Some(s(&["t.a", "t.a.>"])));
    }
}
