//! `SubscriptionTrie<V>`: one value per distinct topic filter, keyed by filter levels.
//! Pure data (no locking, no tokio); the caller decides what `V` is (e.g. a subscriber set).
//! Matching walks `topic.split('/')` and allocates nothing; `$` topics skip root wildcards.

use std::collections::HashMap;
use std::iter::Peekable;
use std::str::Split;

/// One level of the trie. `#` is always a last level, so it needs no node of its own.
/// Kept small: a gateway's 50,000 device filters are mostly nodes with one child or none
/// (memory per subscription, measured by `benches/run.sh subs`).
#[derive(Debug, Clone)]
struct Node<V> {
    /// Value of the filter that ends exactly at this node.
    value: Option<V>,
    /// Value of the filter that is this node's path followed by `/#` (boxed: rarer).
    hash: Option<Box<V>>,
    /// Child for a `+` level.
    plus: Option<Box<Node<V>>>,
    /// Children for literal levels (including the empty level).
    children: Children<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            value: None,
            hash: None,
            plus: None,
            children: Children::Few(Vec::new()),
        }
    }
}

/// Literal children up to this many are a vector searched in order; more, a hash map.
const FEW: usize = 8;

/// A node's literal children: most nodes have one or none, for which a hash map's smallest
/// table (four slots and control bytes) would cost several times the child itself.
#[derive(Debug, Clone)]
enum Children<V> {
    /// At most [`FEW`], each vector exactly as long as it needs.
    Few(Vec<(Box<str>, Node<V>)>),
    /// More than [`FEW`]. Boxed: the variant stays a pointer wide, so every node is smaller.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Box<str>, Node<V>>>),
}

impl<V> Children<V> {
    fn get(&self, level: &str) -> Option<&Node<V>> {
        match self {
            Children::Few(v) => v.iter().find(|(k, _)| **k == *level).map(|(_, n)| n),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(k, _)| **k == *level).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(level),
        }
    }

    /// The child for `level`, created empty if there is none.
    fn get_or_default(&mut self, level: &str) -> &mut Node<V> {
        if let Children::Few(v) = self {
            if v.len() >= FEW && !v.iter().any(|(k, _)| **k == *level) {
                *self = Children::Many(Box::new(std::mem::take(v).into_iter().collect()));
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(k, _)| **k == *level) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((Box::from(level), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(Box::from(level)).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(v) => {
                if let Some(i) = v.iter().position(|(k, _)| **k == *level) {
                    v.swap_remove(i);
                    v.shrink_to_fit();
                }
            }
            Children::Many(m) => {
                m.remove(level);
                if m.len() <= FEW / 2 {
                    let few: Vec<_> = std::mem::take(&mut **m).into_iter().collect();
                    *self = Children::Few(few);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&str, &Node<V>)) {
        match self {
            Children::Few(v) => v.iter().for_each(|(k, n)| f(k, n)),
            Children::Many(m) => m.iter().for_each(|(k, n)| f(k, n)),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.hash.is_none()
            && self.plus.is_none()
            && self.children.is_empty()
    }
}

/// Topic filters mapped to values, matched against topic names per MQTT 4.7.
///
/// Filters are expected to be valid (see [`validate_topic_filter`](super::validate_topic_filter));
/// in an invalid filter, a `#` that is not the last level and a level like `a+` are stored as
/// literal levels, never a panic.
#[derive(Debug, Clone)]
pub struct SubscriptionTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for SubscriptionTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Levels of a filter with one-level lookahead, to spot a trailing `#`.
type Levels<'a> = Peekable<Split<'a, char>>;

fn levels(filter: &str) -> Levels<'_> {
    filter.split('/').peekable()
}

/// Whether `level` is a `#` in last position, i.e. a real multi-level wildcard.
fn is_trailing_hash(level: &str, rest: &mut Levels<'_>) -> bool {
    level == "#" && rest.peek().is_none()
}

impl<V> SubscriptionTrie<V> {
    /// Creates an empty trie.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Number of distinct filters stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the value stored for `filter`, inserting `f()` first if there is none.
    pub fn get_or_insert_with(&mut self, filter: &str, f: impl FnOnce() -> V) -> &mut V {
        let mut node = &mut self.root;
        let mut rest = levels(filter);
        let slot = loop {
            let Some(level) = rest.next() else {
                break &mut node.value;
            };
            if is_trailing_hash(level, &mut rest) {
                if node.hash.is_none() {
                    self.len += 1;
                }
                return node.hash.get_or_insert_with(|| Box::new(f()));
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.get_or_default(level)
            };
        };
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(f)
    }

    /// The value stored for exactly `filter` (no wildcard matching), if any.
    pub fn get(&self, filter: &str) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = levels(filter);
        while let Some(level) = rest.next() {
            if is_trailing_hash(level, &mut rest) {
                return node.hash.as_deref();
            }
            node = if level == "+" {
                node.plus.as_deref()?
            } else {
                node.children.get(level)?
            };
        }
        node.value.as_ref()
    }

    /// The value stored for exactly `filter` (no wildcard matching), mutably, if any.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let mut node = &mut self.root;
        let mut rest = levels(filter);
        while let Some(level) = rest.next() {
            if is_trailing_hash(level, &mut rest) {
                return node.hash.as_deref_mut();
            }
            node = if level == "+" {
                node.plus.as_deref_mut()?
            } else {
                node.children.get_mut(level)?
            };
        }
        node.value.as_mut()
    }

    /// Calls `pred` on the value stored for `filter`; if it returns true, removes the value and
    /// prunes nodes left empty. Returns whether the value was removed (false if there was none).
    pub fn remove_if(&mut self, filter: &str, pred: impl FnOnce(&mut V) -> bool) -> bool {
        let removed = remove_in(&mut self.root, levels(filter), pred);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` with every stored filter and its value, in no particular order (for listing
    /// what is stored; matching uses [`SubscriptionTrie::for_each_match`]).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut path = String::new();
        walk(&self.root, &mut path, true, &mut f);
    }

    /// Whether the trie holds no nodes at all (every removal pruned its path).
    #[cfg(test)]
    pub(crate) fn is_pruned(&self) -> bool {
        self.root.is_empty()
    }

    /// Calls `f` once for the value of every stored filter that matches the topic name `topic`.
    ///
    /// `+` matches exactly one level (possibly empty), `#` matches its parent level and any
    /// number of levels below, and a topic starting with `$` is not matched by a filter whose
    /// first level is `+` or `#` [MQTT-4.7.2-1].
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a V)) {
        let root = &self.root;
        let mut rest = topic.split('/');
        let dollar = topic.starts_with('$');
        if !dollar {
            if let Some(v) = root.hash.as_deref() {
                f(v);
            }
        }
        // `split` always yields at least one level, even for "".
        let Some(first) = rest.next() else { return };
        if !dollar {
            if let Some(child) = &root.plus {
                match_in(child, rest.clone(), &mut f);
            }
        }
        if let Some(child) = root.children.get(first) {
            match_in(child, rest, &mut f);
        }
    }
}

/// Visits every value at or below `node`, whose levels so far are `path` (`top`: the root,
/// which has no level of its own).
fn walk<V>(node: &Node<V>, path: &mut String, top: bool, f: &mut impl FnMut(&str, &V)) {
    if let Some(v) = &node.value {
        f(path, v);
    }
    let len = path.len();
    if let Some(v) = node.hash.as_deref() {
        path.push_str(if top { "#" } else { "/#" });
        f(path, v);
        path.truncate(len);
    }
    let mut visit = |level: &str, child: &Node<V>| {
        if !top {
            path.push('/');
        }
        path.push_str(level);
        walk(child, path, false, f);
        path.truncate(len);
    };
    if let Some(child) = node.plus.as_deref() {
        visit("+", child);
    }
    node.children.for_each(visit);
}

/// Visits matches below `node`, which has matched every topic level consumed from `rest` so far.
fn match_in<'a, V, F: FnMut(&'a V)>(node: &'a Node<V>, mut rest: Split<'_, char>, f: &mut F) {
    // `x/#` matches `x` itself and everything below it.
    if let Some(v) = node.hash.as_deref() {
        f(v);
    }
    let Some(level) = rest.next() else {
        if let Some(v) = &node.value {
            f(v);
        }
        return;
    };
    if let Some(child) = &node.plus {
        match_in(child, rest.clone(), f);
    }
    if let Some(child) = node.children.get(level) {
        match_in(child, rest, f);
    }
}

/// Removes the value at the remaining `rest` levels below `node` if `pred` agrees, pruning
/// children that become empty on the way back up.
fn remove_in<V>(
    node: &mut Node<V>,
    mut rest: Levels<'_>,
    pred: impl FnOnce(&mut V) -> bool,
) -> bool {
    let Some(level) = rest.next() else {
        return take_if(&mut node.value, pred);
    };
    if is_trailing_hash(level, &mut rest) {
        let remove = node.hash.as_deref_mut().is_some_and(pred);
        if remove {
            node.hash = None;
        }
        return remove;
    }
    if level == "+" {
        let Some(child) = node.plus.as_deref_mut() else {
            return false;
        };
        let removed = remove_in(child, rest, pred);
        if removed && child.is_empty() {
            node.plus = None;
        }
        removed
    } else {
        let Some(child) = node.children.get_mut(level) else {
            return false;
        };
        let removed = remove_in(child, rest, pred);
        if removed && child.is_empty() {
            node.children.remove(level);
        }
        removed
    }
}

fn take_if<V>(slot: &mut Option<V>, pred: impl FnOnce(&mut V) -> bool) -> bool {
    let remove = slot.as_mut().is_some_and(pred);
    if remove {
        *slot = None;
    }
    remove
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::naive::filter_matches;
    use super::*;

    /// Filters (stored as their own values) matching `topic`, sorted.
    fn matches(trie: &SubscriptionTrie<String>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |v| out.push(v.clone()));
        out.sort();
        out
    }

    fn trie_of(filters: &[&str]) -> SubscriptionTrie<String> {
        let mut trie = SubscriptionTrie::new();
        for f in filters {
            trie.get_or_insert_with(f, || (*f).to_owned());
        }
        trie
    }

    fn check(filters: &[&str], topic: &str, expected: &[&str]) {
        let trie = trie_of(filters);
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(matches(&trie, topic), expected, "topic {topic:?}");
        let mut naive: Vec<String> = filters
            .iter()
            .filter(|f| filter_matches(f, topic))
            .map(|s| (*s).to_owned())
            .collect();
        naive.sort();
        assert_eq!(naive, expected, "naive, topic {topic:?}");
    }

    /// [MQTT-4.7.1-2] `sport/tennis/player1/#` examples from the spec.
    /// A level with many children (a gateway's device filters) moves from the short vector to
    /// the hash map and back as filters come and go; lookups, matches and pruning are the same.
    #[test]
    fn many_children_at_one_level() {
        let mut trie = SubscriptionTrie::new();
        let filters: Vec<String> = (0..100).map(|i| format!("dev/{i}/up")).collect();
        for f in &filters {
            trie.get_or_insert_with(f, || f.clone());
        }
        trie.get_or_insert_with("dev/+/up", || "dev/+/up".to_owned());
        assert_eq!(trie.len(), 101);
        assert_eq!(matches(&trie, "dev/42/up"), ["dev/+/up", "dev/42/up"]);
        assert_eq!(trie.get("dev/99/up").map(String::as_str), Some("dev/99/up"));
        for f in &filters[..97] {
            assert!(trie.remove_if(f, |_| true), "{f}");
        }
        assert_eq!(matches(&trie, "dev/98/up"), ["dev/+/up", "dev/98/up"]);
        assert_eq!(matches(&trie, "dev/5/up"), ["dev/+/up"]);
        for f in filters[97..].iter().map(String::as_str).chain(["dev/+/up"]) {
            assert!(trie.remove_if(f, |_| true), "{f}");
        }
        assert!(trie.is_empty() && trie.is_pruned());
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_descendants() {
        let f = ["sport/tennis/player1/#"];
        check(&f, "sport/tennis/player1", &f);
        check(&f, "sport/tennis/player1/ranking", &f);
        check(&f, "sport/tennis/player1/score/wimbledon", &f);
        check(&f, "sport/tennis/player2", &[]);
        check(&["a/#"], "a/", &["a/#"]);
        check(&["a/#"], "ab", &[]);
        check(&["#"], "a/b/c", &["#"]);
        check(&["#"], "/", &["#"]);
    }

    /// `a/#` matches `a`, but `a` does not match `a/b`.
    #[test]
    fn hash_versus_exact_parent() {
        let f = ["a/#", "a"];
        check(&f, "a", &["a", "a/#"]);
        check(&f, "a/b", &["a/#"]);
    }

    /// [MQTT-4.7.1-3] `+` matches exactly one level, including an empty one.
    #[test]
    fn single_level_wildcard_matches_one_level() {
        let f = ["sport/tennis/+", "sport/+", "+", "+/+", "/+"];
        check(&f, "sport/tennis/player1", &["sport/tennis/+"]);
        check(&f, "sport/tennis/player1/ranking", &[]);
        check(&f, "sport", &["+"]);
        check(&f, "sport/", &["sport/+", "+/+"]);
        check(&f, "/finance", &["+/+", "/+"]);
        check(&f, "/", &["+/+", "/+"]);
        check(&["a/+/b"], "a//b", &["a/+/b"]);
        check(&["a/+"], "a", &[]);
    }

    /// Empty levels are real levels.
    #[test]
    fn empty_levels_are_distinct_levels() {
        let f = ["a//b", "a/b", "/a", "a", "a/"];
        check(&f, "a//b", &["a//b"]);
        check(&f, "a/b", &["a/b"]);
        check(&f, "/a", &["/a"]);
        check(&f, "a/", &["a/"]);
        check(&f, "a", &["a"]);
    }

    /// [MQTT-4.7.2-1] `$` topics are not matched by a leading wildcard, but `$SYS/#` works.
    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let f = ["#", "+/x", "+", "$SYS/#", "$SYS/+", "+/#", "$SYS"];
        check(&f, "$SYS/x", &["$SYS/#", "$SYS/+"]);
        check(&f, "$SYS", &["$SYS", "$SYS/#"]);
        check(&f, "$", &[]);
        check(&f, "a/x", &["#", "+/x", "+/#"]);
        check(&f, "a$/x", &["#", "+/x", "+/#"]);
    }

    /// Unicode topics never panic (mqttbytes slices inside a char on `é/x`).
    #[test]
    fn unicode_topics_match() {
        let f = ["#", "é/+", "+/x", "日本/#"];
        check(&f, "é/x", &["#", "é/+", "+/x"]);
        check(&f, "日本", &["#", "日本/#"]);
        check(&f, "€", &["#"]);
    }

    #[test]
    fn get_or_insert_with_stores_one_value_per_filter() {
        let mut trie: SubscriptionTrie<Vec<u32>> = SubscriptionTrie::default();
        assert!(trie.is_empty());
        trie.get_or_insert_with("a/+", Vec::new).push(1);
        trie.get_or_insert_with("a/+", || unreachable!()).push(2);
        trie.get_or_insert_with("a/#", Vec::new).push(3);
        trie.get_or_insert_with("#", Vec::new).push(4);
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.get("a/+").unwrap(), &[1, 2]);
        assert_eq!(trie.get("a/#").unwrap(), &[3]);
        assert_eq!(trie.get("#").unwrap(), &[4]);
        assert!(trie.get("a").is_none());
        assert!(trie.get("a/b").is_none());
        trie.get_mut("#").unwrap().push(5);
        assert_eq!(trie.get("#").unwrap(), &[4, 5]);
        assert!(trie.get_mut("b/#").is_none());
    }

    #[test]
    fn remove_if_removes_only_when_pred_agrees_and_prunes() {
        let mut trie: SubscriptionTrie<Vec<u32>> = SubscriptionTrie::new();
        trie.get_or_insert_with("a/+/c", || vec![1, 2]);
        trie.get_or_insert_with("a/#", || vec![3]);
        // pred removes one subscriber but keeps the filter
        assert!(!trie.remove_if("a/+/c", |v| {
            v.retain(|&x| x != 1);
            v.is_empty()
        }));
        assert_eq!(trie.get("a/+/c").unwrap(), &[2]);
        assert!(!trie.remove_if("a/b/c", |_| true));
        assert!(!trie.remove_if("a/+", |_| true));
        assert!(trie.remove_if("a/+/c", |_| true));
        assert_eq!(trie.len(), 1);
        assert!(trie.root.children.get("a").unwrap().plus.is_none());
        assert!(trie.remove_if("a/#", |_| true));
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
        assert!(!trie.remove_if("a/#", |_| true));
    }

    /// Invalid filters are stored literally, never a panic.
    #[test]
    fn invalid_filters_do_not_panic() {
        let mut trie = trie_of(&["a/#/b", "a+", "", "#/#"]);
        assert_eq!(trie.len(), 4);
        assert_eq!(matches(&trie, "a/#/b"), vec!["a/#/b".to_owned()]);
        assert_eq!(matches(&trie, ""), vec!["".to_owned()]);
        for f in ["a/#/b", "a+", "", "#/#"] {
            assert!(trie.remove_if(f, |_| true), "{f}");
        }
        assert!(trie.root.is_empty());
    }

    /// Listing gives back every stored filter exactly as stored, each with its own value:
    /// wildcards, empty levels, `$` topics and more children than fit the small vector.
    #[test]
    fn for_each_lists_every_filter_with_its_value() {
        let mut filters = vec![
            "#", "+", "a", "a/#", "a/+", "a/+/c", "/", "/a", "", "a//b", "+/#", "$SYS/#",
        ];
        let many: Vec<String> = (0..40).map(|i| format!("x/{i}")).collect();
        filters.extend(many.iter().map(String::as_str));
        let trie = trie_of(&filters);
        let mut listed = Vec::new();
        trie.for_each(|filter, value| {
            assert_eq!(filter, value);
            listed.push(filter.to_owned());
        });
        listed.sort();
        let mut expected: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        expected.sort();
        assert_eq!(listed, expected);
    }
}
