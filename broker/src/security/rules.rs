//! Permission rules: which operations a user may do on which topics and
//! groups. Pure values, no I/O: the service layer asks
//! [`Rules::allows`] before every operation (see `service/checked.rs`).
//!
//! ## The model
//!
//! - An operation is one of [`Op`]: `produce`, `read`, `consume`, `admin`
//!   (`all` in a file means the four).
//! - A resource is a topic, and for group operations a group of it
//!   ([`Resource`]).
//! - A rule allows a set of operations on the topics its pattern matches;
//!   a rule that names `groups` applies only to resources with a group the
//!   pattern matches (so `{ topics = "orders", groups = "billing*", ops =
//!   ["admin"] }` lets a user seek billing groups but not delete the
//!   topic). A rule without `groups` applies to every group of its topics.
//! - A pattern is a literal name, or a prefix followed by one `*` (`*`
//!   alone matches everything).
//! - Deny by default: an operation is allowed when at least one rule
//!   allows it, refused otherwise. There are no deny rules.

use std::fmt;

/// An operation a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Append records; register a producer name.
    Produce,
    /// Fetch, list offsets, describe and list topics.
    Read,
    /// Join, receive and settle in a group.
    Consume,
    /// Create, delete, alter topics and groups; seek, pause, resume; DLQ
    /// list and redrive; message show.
    Admin,
}

impl Op {
    /// Every operation, in the order of the bit set.
    pub const ALL: [Op; 4] = [Op::Produce, Op::Read, Op::Consume, Op::Admin];

    /// The name used in the users file and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            Op::Produce => "produce",
            Op::Read => "read",
            Op::Consume => "consume",
            Op::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpSet(u8);

impl OpSet {
    /// Every operation.
    pub const ALL: OpSet = OpSet(0b1111);

    /// The set of `ops`.
    pub fn of(ops: &[Op]) -> OpSet {
        OpSet(ops.iter().fold(0, |bits, op| bits | op.bit()))
    }

    /// Parses the names of a users file (`produce`, `read`, `consume`,
    /// `admin`, `all`); the first unknown name is the error.
    pub fn parse(names: &[String]) -> Result<OpSet, String> {
        let mut set = OpSet::default();
        for name in names {
            set.0 |= match name.as_str() {
                "all" => OpSet::ALL.0,
                other => match Op::ALL.iter().find(|op| op.name() == other) {
                    Some(op) => op.bit(),
                    None => return Err(name.clone()),
                },
            };
        }
        Ok(set)
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }
}

/// A name pattern: literal, or a prefix and a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Literal(String),
    /// Every name starting with this (empty: every name).
    Prefix(String),
}

impl Pattern {
    /// Parses `text`: a `*` may only end it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        match text.split_once('*') {
            None if text.is_empty() => Err("a pattern is empty; use * to match every name".into()),
            None => Ok(Pattern::Literal(text.to_owned())),
            Some((prefix, "")) => Ok(Pattern::Prefix(prefix.to_owned())),
            Some(_) => Err(format!(
                "pattern {text:?} has a * before its end; only a trailing * is allowed (e.g. orders*)"
            )),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(literal) => literal == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// What an operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group, for group operations.
    pub group: Option<&'a str>,
}

impl<'a> Resource<'a> {
    /// A topic.
    pub fn topic(topic: &'a str) -> Resource<'a> {
        Resource { topic, group: None }
    }

    /// A group of a topic.
    pub fn group(topic: &'a str, group: &'a str) -> Resource<'a> {
        Resource {
            topic,
            group: Some(group),
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            None => write!(f, "topic {}", self.topic),
            Some(group) => write!(f, "group {group} of topic {}", self.topic),
        }
    }
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The topics it covers.
    pub topics: Pattern,
    /// The groups it covers; `None`: every group, and topic operations.
    pub groups: Option<Pattern>,
    /// What it allows.
    pub ops: OpSet,
}

impl Rule {
    /// Whether this rule allows `op` on `resource`.
    pub fn allows(&self, op: Op, resource: Resource<'_>) -> bool {
        let group_covered = match (&self.groups, resource.group) {
            (None, _) => true,
            (Some(pattern), Some(group)) => pattern.matches(group),
            (Some(_), None) => false,
        };
        self.ops.contains(op) && self.topics.matches(resource.topic) && group_covered
    }
}

/// A user's rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Whether some rule allows `op` on `resource`.
    pub fn allows(&self, op: Op, resource: Resource<'_>) -> bool {
        self.0.iter().any(|rule| rule.allows(op, resource))
    }

    /// Whether some rule allows `op` on some topic.
    pub fn allows_anywhere(&self, op: Op) -> bool {
        self.0.iter().any(|rule| rule.ops.contains(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(topics: &str, groups: Option<&str>, ops: &[Op]) -> Rule {
        Rule {
            topics: Pattern::parse(topics).expect("pattern"),
            groups: groups.map(|g| Pattern::parse(g).expect("pattern")),
            ops: OpSet::of(ops),
        }
    }

    #[test]
    fn the_design_example_allows_what_it_says_and_nothing_else() {
        let billing = Rules(vec![
            rule("orders*", None, &[Op::Produce, Op::Read]),
            rule("orders", Some("billing*"), &[Op::Consume]),
        ]);
        assert!(billing.allows(Op::Produce, Resource::topic("orders")));
        assert!(billing.allows(Op::Read, Resource::topic("orders-eu")));
        assert!(billing.allows(Op::Consume, Resource::group("orders", "billing-1")));
        assert!(!billing.allows(Op::Consume, Resource::group("orders", "shipping")));
        assert!(!billing.allows(Op::Consume, Resource::group("orders-eu", "billing")));
        assert!(!billing.allows(Op::Admin, Resource::topic("orders")));
        assert!(!billing.allows(Op::Produce, Resource::topic("payments")));
        // A rule naming groups does not cover the topic itself.
        assert!(!billing.allows(Op::Consume, Resource::topic("orders")));
    }

    #[test]
    fn patterns_and_op_names_parse_strictly() {
        assert_eq!(Pattern::parse("*"), Ok(Pattern::Prefix(String::new())));
        assert!(Pattern::parse("or*ders").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("").is_err());
        assert_eq!(OpSet::parse(&["all".into()]), Ok(OpSet::ALL));
        assert_eq!(
            OpSet::parse(&["read".into(), "wrte".into()]),
            Err("wrte".into())
        );
    }

    /// Names from a small alphabet, so that patterns and names collide.
    fn name() -> impl Strategy<Value = String> {
        "[ab]{1,3}"
    }

    fn pattern() -> impl Strategy<Value = String> {
        (name(), any::<bool>()).prop_map(|(n, star)| if star { format!("{n}*") } else { n })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop::sample::select(Op::ALL.to_vec())
    }

    /// The rules as a plain predicate, written independently of `Rule`.
    fn reference(
        rules: &[(String, Option<String>, Vec<Op>)],
        op: Op,
        topic: &str,
        group: Option<&str>,
    ) -> bool {
        let matches = |p: &str, n: &str| match p.strip_suffix('*') {
            Some(prefix) => n.starts_with(prefix),
            None => p == n,
        };
        rules.iter().any(|(topics, groups, ops)| {
            ops.contains(&op)
                && matches(topics, topic)
                && match groups {
                    None => true,
                    Some(g) => group.is_some_and(|group| matches(g, group)),
                }
        })
    }

    proptest! {
        #[test]
        fn rules_allow_exactly_what_the_reference_allows(
            spec in prop::collection::vec(
                (pattern(), prop::option::of(pattern()), prop::collection::vec(op(), 0..3)),
                0..4,
            ),
            op in op(), topic in name(), group in prop::option::of(name()),
        ) {
            let rules = Rules(spec.iter().map(|(t, g, ops)| Rule {
                topics: Pattern::parse(t).expect("pattern"),
                groups: g.as_deref().map(|g| Pattern::parse(g).expect("pattern")),
                ops: OpSet::of(ops),
            }).collect());
            let resource = Resource { topic: &topic, group: group.as_deref() };
            prop_assert_eq!(rules.allows(op, resource), reference(&spec, op, &topic, group.as_deref()));
        }
    }
}
