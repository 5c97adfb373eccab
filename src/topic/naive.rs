//! A deliberately naive topic matcher, the oracle the trie is tested against.
//! Test-only: it splits both strings on every call and is far too slow for routing.

/// Whether a valid topic filter matches a valid topic name (MQTT 4.7).
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with '$'
    if topic.starts_with('$') && matches!(filter.split('/').next(), Some("+" | "#")) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
