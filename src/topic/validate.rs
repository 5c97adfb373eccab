//! Validation of topic names, topic filters and `$share/{ShareName}/{filter}` subscriptions.
//! Pure string checks, allocating nothing.
//! Whether `$share/` is special (MQTT 5) or an ordinary filter (3.1.1) is the caller's choice.

use super::TopicError;

/// Longest string an MQTT UTF-8 string field can carry (MQTT-1.5.4).
const MAX_TOPIC_BYTES: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Checks the rules common to names and filters: non-empty, length, U+0000, level count.
fn check_common(s: &str, max_levels: usize) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    check_topic_levels(s, max_levels)
}

/// Validates a topic name as sent in PUBLISH (or a Will Topic): non-empty, at most 65535 bytes,
/// no U+0000, no `+` or `#`, and at most `max_levels` levels (empty levels count).
pub fn validate_topic_name(s: &str, max_levels: usize) -> Result<(), TopicError> {
    check_common(s, max_levels)?;
    // A byte scan: both are ASCII (a `char` pattern decodes every character).
    if s.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInTopicName);
    }
    Ok(())
}

/// The level rule alone, for a topic name the decoder has already checked (non-empty, no
/// U+0000, no wildcard, at most 65,535 bytes): a PUBLISH is not scanned twice for those.
pub fn check_topic_levels(s: &str, max_levels: usize) -> Result<(), TopicError> {
    let levels = s.bytes().filter(|&b| b == b'/').count() + 1;
    if levels > max_levels {
        return Err(TopicError::TooManyLevels {
            levels,
            max: max_levels,
        });
    }
    Ok(())
}

/// Validates an ordinary topic filter: non-empty, at most 65535 bytes, no U+0000, `+` only as a
/// whole level, `#` only as the whole last level, and at most `max_levels` levels.
pub fn validate_topic_filter(s: &str, max_levels: usize) -> Result<(), TopicError> {
    check_common(s, max_levels)?;
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardNotLast);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardNotWholeLevel);
        }
    }
    Ok(())
}

/// Splits a subscription into its optional ShareName and its topic filter, validating both
/// (the filter with at most `max_levels` levels); both borrow from `s`.
///
/// `$share/{ShareName}/{filter}` yields `(Some(ShareName), filter)`; the ShareName must be
/// non-empty and free of `/`, `+` and `#`, and the filter must be present and valid. Anything
/// else (including `$share` alone or `$sharex/...`) is an ordinary filter and yields `(None, s)`.
pub fn split_subscription(s: &str, max_levels: usize) -> Result<(Option<&str>, &str), TopicError> {
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        validate_topic_filter(s, max_levels)?;
        return Ok((None, s));
    };
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { len: s.len() });
    }
    let (name, filter) = match rest.split_once('/') {
        Some((name, filter)) => (name, Some(filter)),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    if name.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    let filter = match filter {
        Some(f) if !f.is_empty() => f,
        _ => return Err(TopicError::MissingShareFilter),
    };
    validate_topic_filter(filter, max_levels)?;
    Ok((Some(name), filter))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAX: usize = 32;

    /// [MQTT-4.7.3-1]
    #[test]
    fn empty_name_and_filter_are_rejected() {
        assert_eq!(validate_topic_name("", MAX), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("", MAX), Err(TopicError::Empty));
        assert_eq!(split_subscription("", MAX), Err(TopicError::Empty));
    }

    /// [MQTT-4.7.3-3]
    #[test]
    fn name_longer_than_65535_bytes_is_rejected() {
        let long = "a".repeat(65_536);
        assert_eq!(
            validate_topic_name(&long, MAX),
            Err(TopicError::TooLong { len: 65_536 })
        );
        assert_eq!(
            validate_topic_filter(&long, MAX),
            Err(TopicError::TooLong { len: 65_536 })
        );
        assert!(validate_topic_name(&long[1..], MAX).is_ok());
    }

    /// [MQTT-4.7.3-2]
    #[test]
    fn null_character_is_rejected() {
        assert_eq!(
            validate_topic_name("a\0b", MAX),
            Err(TopicError::NullCharacter)
        );
        assert_eq!(
            validate_topic_filter("a/\0", MAX),
            Err(TopicError::NullCharacter)
        );
        assert_eq!(
            split_subscription("$share/g\0/t", MAX),
            Err(TopicError::NullCharacter)
        );
    }

    /// [MQTT-3.3.2-2]
    #[test]
    fn wildcard_in_topic_name_is_rejected() {
        for name in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert_eq!(
                validate_topic_name(name, MAX),
                Err(TopicError::WildcardInTopicName),
                "{name}"
            );
        }
    }

    /// [MQTT-4.7.1-1] Topic names may have empty levels, `$` and any other UTF-8.
    #[test]
    fn unusual_but_valid_names_are_accepted() {
        for name in ["/", "//", "a//b", "/a", "a/", "$SYS/x", "é/x", "a b", "$"] {
            assert!(validate_topic_name(name, MAX).is_ok(), "{name}");
        }
    }

    /// Level limit is a broker setting; empty levels count.
    #[test]
    fn too_many_levels_are_rejected() {
        assert!(validate_topic_name("a/b/c", 3).is_ok());
        assert_eq!(
            validate_topic_name("a/b/c/", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            validate_topic_filter("+/+/+/#", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            split_subscription("$share/g/a/b/c/d", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
    }

    /// [MQTT-4.7.1-2]
    #[test]
    fn multi_level_wildcard_must_be_whole_last_level() {
        for filter in ["a/#/b", "#/a", "a#", "a/b#", "#a", "##", "a/#/"] {
            assert_eq!(
                validate_topic_filter(filter, MAX),
                Err(TopicError::MultiLevelWildcardNotLast),
                "{filter}"
            );
        }
        for filter in ["#", "a/#", "/#", "+/#", "a//#"] {
            assert!(validate_topic_filter(filter, MAX).is_ok(), "{filter}");
        }
    }

    /// [MQTT-4.7.1-3]
    #[test]
    fn single_level_wildcard_must_be_whole_level() {
        for filter in ["a/b+/c", "+a", "a+", "++", "a/+b"] {
            assert_eq!(
                validate_topic_filter(filter, MAX),
                Err(TopicError::SingleLevelWildcardNotWholeLevel),
                "{filter}"
            );
        }
        for filter in ["+", "+/+", "/+", "+/", "a/+/c", "+/+/#"] {
            assert!(validate_topic_filter(filter, MAX).is_ok(), "{filter}");
        }
    }

    /// [MQTT-4.8.2-1] [MQTT-4.8.2-2]
    #[test]
    fn shared_subscription_is_split_into_name_and_filter() {
        assert_eq!(
            split_subscription("$share/g/a/+/#", MAX).unwrap(),
            (Some("g"), "a/+/#")
        );
        assert_eq!(
            split_subscription("$share/group/#", MAX).unwrap(),
            (Some("group"), "#")
        );
        assert_eq!(
            split_subscription("$share/g//", MAX).unwrap(),
            (Some("g"), "/")
        );
    }

    /// [MQTT-4.8.2-1]
    #[test]
    fn shared_subscription_with_empty_share_name_is_rejected() {
        assert_eq!(
            split_subscription("$share//t", MAX),
            Err(TopicError::EmptyShareName)
        );
        assert_eq!(
            split_subscription("$share/", MAX),
            Err(TopicError::EmptyShareName)
        );
    }

    /// [MQTT-4.8.2-2]
    #[test]
    fn shared_subscription_needs_valid_share_name_and_filter() {
        assert_eq!(
            split_subscription("$share/g", MAX),
            Err(TopicError::MissingShareFilter)
        );
        assert_eq!(
            split_subscription("$share/g/", MAX),
            Err(TopicError::MissingShareFilter)
        );
        assert_eq!(
            split_subscription("$share/g+/t", MAX),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            split_subscription("$share/#/t", MAX),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            split_subscription("$share/g/a/#/b", MAX),
            Err(TopicError::MultiLevelWildcardNotLast)
        );
        assert_eq!(
            split_subscription("$share/g/a+", MAX),
            Err(TopicError::SingleLevelWildcardNotWholeLevel)
        );
    }

    /// Only the exact `$share/` prefix introduces a shared subscription.
    #[test]
    fn share_lookalikes_are_ordinary_filters() {
        for filter in ["$share", "$sharex/g/t", "$SHARE/g/t", "a/$share/g/t"] {
            assert_eq!(split_subscription(filter, MAX).unwrap(), (None, filter));
        }
        assert_eq!(
            split_subscription("a/b+", MAX),
            Err(TopicError::SingleLevelWildcardNotWholeLevel)
        );
    }
}
