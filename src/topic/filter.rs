//! [`TopicFilter`]: a subscription's filter, checked once (at SUBSCRIBE, or when read back
//! from the store or the configuration) and valid from then on, with its `$share/` parts known.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use super::validate::split_subscription;
use super::TopicError;

/// A topic filter as its client sent it, `$share/{ShareName}/` prefix included, valid by
/// construction. Compares, orders and hashes as the string it is, so a map keyed by it can
/// be searched with a `&str`.
#[derive(Clone)]
pub struct TopicFilter {
    raw: Box<str>,
    /// Where the filter proper starts in `raw`, after `$share/{ShareName}/` (0 for an ordinary
    /// filter). A filter is at most 65,535 bytes.
    start: u16,
}

/// Where a ShareName starts: after `$share/`.
const SHARE_NAME_AT: usize = "$share/".len();

impl TopicFilter {
    /// `s` if it is a valid filter ([MQTT-4.7.1-1], [MQTT-4.7.3-1], [MQTT-4.8.2-1],
    /// [MQTT-4.8.2-2]); levels are not limited here (that is a broker setting).
    pub fn parse(s: &str) -> Result<TopicFilter, TopicError> {
        let (name, filter) = split_subscription(s, usize::MAX)?;
        let start = match name {
            Some(_) => u16::try_from(s.len() - filter.len())
                .map_err(|_| TopicError::TooLong { len: s.len() })?,
            None => 0,
        };
        Ok(TopicFilter {
            raw: s.into(),
            start,
        })
    }

    /// The filter as sent, with any `$share/{ShareName}/` prefix.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The ShareName of a shared subscription.
    pub fn share(&self) -> Option<&str> {
        (self.start > 0).then(|| &self.raw[SHARE_NAME_AT..usize::from(self.start) - 1])
    }

    /// The filter proper, without a `$share/{ShareName}/` prefix: what topics are matched
    /// against.
    pub fn filter(&self) -> &str {
        &self.raw[usize::from(self.start)..]
    }

    /// Levels of the filter proper (empty ones count).
    pub fn levels(&self) -> usize {
        self.filter().bytes().filter(|&b| b == b'/').count() + 1
    }
}

impl PartialEq for TopicFilter {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for TopicFilter {}

impl PartialEq<str> for TopicFilter {
    fn eq(&self, other: &str) -> bool {
        *self.raw == *other
    }
}

impl PartialEq<&str> for TopicFilter {
    fn eq(&self, other: &&str) -> bool {
        *self.raw == **other
    }
}

/// Tests only: a filter literal (panics if it is not valid).
#[cfg(test)]
impl From<&str> for TopicFilter {
    fn from(s: &str) -> TopicFilter {
        #[allow(clippy::unwrap_used)]
        TopicFilter::parse(s).unwrap()
    }
}

impl PartialOrd for TopicFilter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicFilter {
    fn cmp(&self, other: &Self) -> Ordering {
        self.raw.cmp(&other.raw)
    }
}

impl Hash for TopicFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}

impl Borrow<str> for TopicFilter {
    fn borrow(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.raw, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_shared_filters() {
        let f = TopicFilter::parse("a/+/#").unwrap();
        assert_eq!(
            (f.as_str(), f.share(), f.filter(), f.levels()),
            ("a/+/#", None, "a/+/#", 3)
        );
        let f = TopicFilter::parse("$share/g1/a/b").unwrap();
        assert_eq!(f.share(), Some("g1"));
        assert_eq!(
            (f.filter(), f.levels(), f.as_str()),
            ("a/b", 2, "$share/g1/a/b")
        );
        let f = TopicFilter::parse("$share").unwrap();
        assert_eq!((f.share(), f.filter()), (None, "$share"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        for bad in [
            "",
            "#/a",
            "a+",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/g+/a",
        ] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compares_as_its_string() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(TopicFilter::parse("$share/g/t").unwrap(), 1);
        m.insert(TopicFilter::parse("t").unwrap(), 2);
        assert_eq!(m.get("t"), Some(&2));
        assert_eq!(m.get("$share/g/t"), Some(&1));
        assert_eq!(
            m.keys().map(TopicFilter::as_str).collect::<Vec<_>>(),
            ["$share/g/t", "t"]
        );
    }

    #[test]
    fn the_longest_filter_fits() {
        let long = format!("$share/g/{}", "x".repeat(65_535 - 9));
        let f = TopicFilter::parse(&long).unwrap();
        assert_eq!(f.filter().len(), 65_535 - 9);
        assert_eq!(f.share(), Some("g"));
    }
}
