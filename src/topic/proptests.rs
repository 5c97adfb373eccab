//! Property tests: the trie agrees with the naive matcher on random filters and topics.
//! Levels come from a small alphabet so that collisions, empty levels and `$` topics are common.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::naive::filter_matches;
use super::{validate_topic_filter, validate_topic_name, SubscriptionTrie};

const MAX_LEVELS: usize = 8;

fn level(wildcards: bool) -> impl Strategy<Value = &'static str> {
    const PLAIN: &[&str] = &["", "$SYS", "a", "b", "$", "é"];
    const WILD: &[&str] = &["", "$SYS", "a", "b", "$", "é", "+", "+", "#", "#"];
    prop::sample::select(if wildcards { WILD } else { PLAIN })
}

fn path(wildcards: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(level(wildcards), 1..5).prop_map(|levels| levels.join("/"))
}

/// Valid filters: random paths, with invalid ones (`#` not last) dropped.
fn filters() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(path(true), 0..24).prop_map(|set| {
        set.into_iter()
            .filter(|f| validate_topic_filter(f, MAX_LEVELS).is_ok())
            .collect()
    })
}

fn trie_of(filters: &BTreeSet<String>) -> SubscriptionTrie<String> {
    let mut trie = SubscriptionTrie::new();
    for f in filters {
        trie.get_or_insert_with(f, || f.clone());
    }
    trie
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn trie_matches_equal_naive_matches(
        filters in filters(),
        topics in prop::collection::vec(path(false), 1..8),
    ) {
        let trie = trie_of(&filters);
        prop_assert_eq!(trie.len(), filters.len());
        for topic in &topics {
            if validate_topic_name(topic, MAX_LEVELS).is_err() {
                continue;
            }
            let mut got = Vec::new();
            trie.for_each_match(topic, |v| got.push(v.clone()));
            got.sort();
            let want: Vec<String> = filters
                .iter()
                .filter(|f| filter_matches(f, topic))
                .cloned()
                .collect();
            prop_assert_eq!(got, want, "topic {:?}", topic);
        }
    }

    #[test]
    fn removing_all_filters_leaves_an_empty_trie(filters in filters()) {
        let mut trie = trie_of(&filters);
        for f in &filters {
            prop_assert_eq!(trie.get(f), Some(f));
            prop_assert!(trie.remove_if(f, |v| v == f));
            prop_assert!(trie.get(f).is_none());
        }
        prop_assert!(trie.is_empty());
        let mut any = false;
        trie.for_each_match("a", |_| any = true);
        prop_assert!(!any);
        prop_assert!(trie.is_pruned());
    }
}
