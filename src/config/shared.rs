//! `[shared]`: how a shared subscription's group (`$share/{group}/{filter}`) picks the member
//! each message goes to, for every group and per group by its share name, and the weights
//! clients get under the `weighted` strategy.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How a group picks its next member.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In turn among connected members.
    #[default]
    RoundRobin,
    /// Uniformly among connected members.
    Random,
    /// The member with the fewest unacknowledged messages ("least connections").
    LeastInflight,
    /// In proportion to each member's weight, smoothly interleaved.
    Weighted,
    /// The same publisher always to the same member while the membership is unchanged.
    HashClient,
    /// The same topic always to the same member while the membership is unchanged.
    HashTopic,
    /// The same member until it leaves, then another.
    Sticky,
}

impl Strategy {
    /// Whether the strategy is about affinity (a message waits for its member rather than go
    /// to another with room).
    pub fn affine(self) -> bool {
        matches!(
            self,
            Strategy::HashClient | Strategy::HashTopic | Strategy::Sticky
        )
    }
}

/// `[shared]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// The strategy of every group not named in `groups`.
    pub strategy: Strategy,
    /// `[[shared.groups]]`: a strategy per share name.
    pub groups: Vec<GroupConfig>,
    /// `[shared.weights]`: client id = weight (1 to 1000) under `weighted`, for clients that do
    /// not give one in SUBSCRIBE (v5 User Property `weight`; 3.1.1 clients cannot).
    pub weights: BTreeMap<String, u32>,
}

/// `[[shared.groups]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The share name in `$share/{name}/…`.
    pub name: String,
    /// Its strategy.
    pub strategy: Strategy,
}

/// The weights a member may have.
pub const WEIGHTS: std::ops::RangeInclusive<u32> = 1..=1000;

impl SharedConfig {
    /// The strategy of the group named `share`.
    pub fn strategy_of(&self, share: &str) -> Strategy {
        self.groups
            .iter()
            .find(|g| g.name == share)
            .map_or(self.strategy, |g| g.strategy)
    }

    /// The weight configured for `client_id`, if any.
    pub fn weight_of(&self, client_id: &str) -> Option<u32> {
        self.weights.get(client_id).copied()
    }

    /// The first key with a value it does not allow, and what is allowed.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        let mut names = std::collections::HashSet::new();
        for g in &self.groups {
            if g.name.is_empty() || g.name.contains(['/', '+', '#', '\0']) {
                return Some((
                    "shared.groups.name",
                    "a share name: not empty, without '/', '+' or '#'",
                ));
            }
            if !names.insert(g.name.as_str()) {
                return Some(("shared.groups.name", "unique among [[shared.groups]]"));
            }
        }
        if self.weights.values().any(|w| !WEIGHTS.contains(w)) {
            return Some(("shared.weights", "integers from 1 to 1000"));
        }
        None
    }
}
