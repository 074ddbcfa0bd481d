//! The permission matrix: every operation of [`Checked`], for users with
//! different rules, on topics and groups whose names do and do not match
//! them, compared with what the design's table says (written out here
//! independently of `rules.rs`).
//!
//! And a property test ([`generated`]): random users with random rules,
//! asked about random operations on random topics (dead-letter topics and
//! `__` names included) and groups, must get from [`Checked::may`] what a
//! small model written from docs/security.md says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::*;
use crate::config::FileConfig;
use crate::delivery::GroupSettings;
use crate::error::ErrorKind;
use crate::groups::redrive::RedriveOptions;
use crate::io::StdFs;
use crate::log::SystemClock;
use crate::topics::{NewTopic, RetentionChange};

const USERS: &str = r#"
[[users]]
name = "writer"
allow = [{ topics = "orders*", ops = ["produce", "read"] }]

[[users]]
name = "billing"
allow = [
  { topics = "orders", ops = ["read"] },
  { topics = "orders", groups = "billing*", ops = ["consume"] },
]

[[users]]
name = "group-admin"
allow = [{ topics = "orders", groups = "billing*", ops = ["admin"] }]

[[users]]
name = "admin"
allow = [{ topics = "*", ops = ["all"] }]

[[users]]
name = "nobody-special"
"#;

const TOPICS: [&str; 4] = ["orders", "orders-eu", "payments", "orders.billing.dlq"];
const GROUPS: [&str; 2] = ["billing", "shipping"];

/// The operations, and what the design's table says each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    CreateTopic,
    DeleteTopic,
    DescribeTopic,
    ListOffsets,
    Fetch,
    Produce,
    CreateGroup,
    DeleteGroup,
    AlterGroup,
    DescribeGroup,
    PauseGroup,
    SeekGroup,
    Redrive,
    MessageState,
    Join,
    Receive,
    Settle,
    AlterTopic,
    PartitionBounds,
    TrimPartition,
    DeleteRecords,
    Pending,
    AckHeld,
    Claim,
    LeaveGroup,
}

const OPERATIONS: [Operation; 25] = {
    use Operation::*;
    [
        CreateTopic,
        DeleteTopic,
        DescribeTopic,
        ListOffsets,
        Fetch,
        Produce,
        CreateGroup,
        DeleteGroup,
        AlterGroup,
        DescribeGroup,
        PauseGroup,
        SeekGroup,
        Redrive,
        MessageState,
        Join,
        Receive,
        Settle,
        AlterTopic,
        PartitionBounds,
        TrimPartition,
        DeleteRecords,
        Pending,
        AckHeld,
        Claim,
        LeaveGroup,
    ]
};

/// Whether `user` may do `operation` on `topic` (and `group`), by the
/// design's table and the users above, spelled out case by case. The DLQ
/// topic `orders.billing.dlq` counts as `orders` (its source), with the
/// operation's own group, or `billing` for a topic operation.
fn expected(user: &str, operation: Operation, topic: &str, group: &str) -> bool {
    use Operation::*;
    let source = if topic == "orders.billing.dlq" {
        "orders"
    } else {
        topic
    };
    let billing = group.starts_with("billing");
    let reads = matches!(
        operation,
        DescribeTopic | ListOffsets | Fetch | DescribeGroup | PartitionBounds | Pending
    );
    let consumes = matches!(operation, Join | Receive | Settle | AckHeld | Claim);
    match user {
        "admin" => true,
        "writer" => topic.starts_with("orders") && (reads || operation == Produce),
        "billing" => source == "orders" && (reads || (consumes && billing)),
        // Admin of group billing of orders: its groups, and (as the source's
        // rules cover it) the topic-level administration of their DLQ.
        "group-admin" => {
            source == "orders"
                && ((billing && is_group_op(operation) && !consumes)
                    || (topic != source
                        && matches!(
                            operation,
                            CreateTopic
                                | DeleteTopic
                                | DescribeTopic
                                | AlterTopic
                                | TrimPartition
                                | DeleteRecords
                        )))
        }
        _ => false,
    }
}

fn is_group_op(operation: Operation) -> bool {
    use Operation::*;
    !matches!(
        operation,
        CreateTopic
            | DeleteTopic
            | DescribeTopic
            | ListOffsets
            | Fetch
            | Produce
            | AlterTopic
            | PartitionBounds
            | TrimPartition
            | DeleteRecords
    )
}

async fn run(
    checked: &Checked<'_>,
    operation: Operation,
    topic: &str,
    group: &str,
) -> Result<(), BrokerError> {
    use Operation::*;
    let owner = MemberOwner::Connection(1);
    match operation {
        CreateTopic => {
            let new = NewTopic {
                name: topic.into(),
                partitions: 1,
                retention_ms: None,
                retention_bytes: None,
            };
            checked.create_topic(new).await.or_else(ignore_domain)
        }
        DeleteTopic => checked.delete_topic(topic).await.or_else(ignore_domain),
        DescribeTopic => checked.describe_topic(topic).map(|_| ()),
        ListOffsets => checked
            .list_offset(topic, 0, OffsetSpec::Latest)
            .map(|_| ()),
        Fetch => {
            let query = FetchQuery {
                partitions: vec![FetchRead {
                    topic: topic.into(),
                    partition: 0,
                    offset: 0,
                    max_bytes: 1024,
                }],
                max_wait: Duration::ZERO,
                min_bytes: 0,
                max_bytes: 1024,
            };
            checked
                .fetch(&query, &Arc::new(Semaphore::new(1 << 16)))
                .await
                .map(|_| ())
        }
        Produce => {
            let batches = vec![PartitionBatches {
                partition: 0,
                batches: vec![Bytes::from_static(b"not a batch")],
            }];
            checked
                .submit_produce(topic, batches, Duration::from_secs(1))
                .await
                .map(|_| ())
        }
        CreateGroup => {
            checked
                .create_group(topic, group, GroupSettings::default())
                .await
        }
        DeleteGroup => checked.delete_group(topic, &format!("{group}-gone")).await,
        AlterGroup => {
            checked
                .alter_group(topic, group, GroupSettings::default())
                .await
        }
        DescribeGroup => checked.describe_group(topic, group).await.map(|_| ()),
        PauseGroup => checked.pause_group(topic, group, false).await,
        SeekGroup => checked
            .seek_group(topic, group, None, SeekTarget::Latest)
            .await
            .map(|_| ()),
        Redrive => {
            let options = RedriveOptions {
                max: 1,
                dry_run: true,
                rate_per_sec: 0,
                list: false,
            };
            checked.redrive(topic, group, options).await.map(|_| ())
        }
        MessageState => checked.message_state(topic, group, 0, 0).await.map(|_| ()),
        Join => checked
            .join(topic, group, "c", owner, None)
            .await
            .map(|_| ()),
        Receive => checked
            .receive(topic, group, 1, &owner, 1, 1024, Duration::ZERO)
            .await
            .map(|_| ()),
        Settle => checked
            .settle(topic, group, 1, &owner, Vec::new())
            .await
            .map(|_| ()),
        AlterTopic => checked
            .alter_topic(topic, RetentionChange::Default, RetentionChange::Keep)
            .await
            .map(|_| ()),
        PartitionBounds => checked.partition_bounds((topic, None), 0).map(|_| ()),
        TrimPartition => checked.trim_partition(topic, 0, 0).await.map(|_| ()),
        DeleteRecords => checked.delete_records(topic, 0, &[]).await.map(|_| ()),
        Pending => checked.pending(topic, group).await.map(|_| ()),
        AckHeld => checked.ack_held(topic, group, &[]).await.map(|_| ()),
        Claim => checked
            .claim(topic, group, 1, &owner, Vec::new(), 0, false)
            .await
            .map(|_| ()),
        LeaveGroup => checked.leave_group(topic, group, &owner).await.map(|_| ()),
    }
}

/// Errors of the operation itself (the resource exists or not): not a
/// permission question.
fn ignore_domain(e: BrokerError) -> Result<(), BrokerError> {
    match e.kind {
        ErrorKind::NotAuthorized | ErrorKind::AuthenticationRequired => Err(e),
        _ => Ok(()),
    }
}

fn caller(broker: &Broker, user: &str) -> Caller {
    let auth = broker.auth.as_ref().expect("users configured");
    let user = auth.user(user).expect("known user");
    Caller {
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        tls: true,
        identity: Identity::User(user),
    }
}

async fn setup() -> (tempfile::TempDir, Broker) {
    let topics = ["orders", "orders-eu", "payments"];
    let groups: Vec<(&str, &str)> = topics
        .iter()
        .flat_map(|topic| GROUPS.map(|group| (*topic, group)))
        .collect();
    open_broker(Some(USERS), &topics, &groups).await
}

/// A broker on a fresh data dir (with `users` as its users file, if
/// given) holding `topics` of one partition and `groups` as
/// `(topic, group)`.
async fn open_broker(
    users: Option<&str>,
    topics: &[&str],
    groups: &[(&str, &str)],
) -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
    config.data_dir = tmp.path().join("data");
    if let Some(users) = users {
        let path = tmp.path().join("users.toml");
        std::fs::write(&path, users).expect("users");
        config.users = Some(path);
    }
    let broker = Broker::open(config, Arc::new(StdFs), Arc::new(SystemClock))
        .await
        .expect("open");
    for topic in topics {
        let new = NewTopic {
            name: (*topic).into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(new).await.expect("topic");
    }
    for (topic, group) in groups {
        broker
            .create_group(topic, group, GroupSettings::default())
            .await
            .expect("group");
    }
    (tmp, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_allowed_exactly_as_the_rules_say() {
    let (_tmp, broker) = setup().await;
    let mut checked_cases = 0;
    // The admin goes last: its deletes really delete.
    for user in [
        "writer",
        "billing",
        "group-admin",
        "nobody-special",
        "admin",
    ] {
        let caller = caller(&broker, user);
        let checked = broker.checked(&caller);
        for operation in OPERATIONS {
            for topic in TOPICS {
                for group in GROUPS {
                    let result = run(&checked, operation, topic, group)
                        .await
                        .or_else(ignore_domain);
                    let refused = matches!(&result, Err(e) if e.kind == ErrorKind::NotAuthorized);
                    let want = expected(user, operation, topic, group);
                    assert_eq!(
                        !refused, want,
                        "user {user}, {operation:?} on {topic}/{group}: {result:?}"
                    );
                    if refused {
                        let message = result.expect_err("refused").message;
                        assert!(message.contains(&format!("user {user} ")), "{message}");
                        assert!(message.contains(topic), "{message}");
                    }
                    checked_cases += 1;
                }
            }
        }
    }
    assert!(checked_cases > 300, "{checked_cases}");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lists_show_only_what_the_user_may_describe_and_the_broker_needs_admin() {
    let (_tmp, broker) = setup().await;
    let listed = |user: &'static str| {
        let caller = caller(&broker, user);
        let broker = &broker;
        async move {
            let groups = broker
                .checked(&caller)
                .list_groups(None, |_, _| Ok(()))
                .await;
            let groups = groups.expect("a list is never refused");
            let mut names: Vec<String> = groups
                .into_iter()
                .map(|g| format!("{}/{}", g.topic, g.group))
                .collect();
            names.sort();
            names
        }
    };
    let mut everything: Vec<String> = ["orders", "orders-eu", "payments"]
        .iter()
        .flat_map(|t| GROUPS.iter().map(move |g| format!("{t}/{g}")))
        .collect();
    everything.sort();
    assert_eq!(listed("admin").await, everything);
    assert_eq!(
        listed("writer").await,
        [
            "orders-eu/billing",
            "orders-eu/shipping",
            "orders/billing",
            "orders/shipping"
        ]
    );
    assert_eq!(listed("group-admin").await, ["orders/billing"]);
    assert!(listed("nobody-special").await.is_empty());
    for (user, allowed) in [("admin", true), ("writer", false), ("billing", false)] {
        let caller = caller(&broker, user);
        let described = broker.checked(&caller).describe_broker().await;
        assert_eq!(described.is_ok(), allowed, "{user}: {described:?}");
    }
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_register_anothers_producer_name_nor_write_with_its_id() {
    use pigeon_protocol::batch::{BatchBuilder, ProducerStamp};
    let (_tmp, broker) = setup().await;
    let writer = caller(&broker, "writer");
    let admin = caller(&broker, "admin");
    let (writer_id, _) = broker
        .checked(&writer)
        .register_producer("svc")
        .expect("writer's svc");
    let (admin_id, epoch) = broker
        .checked(&admin)
        .register_producer("svc")
        .expect("admin's svc");
    assert_ne!(writer_id, admin_id, "the same name, two producers");
    assert_eq!(epoch, 0, "the admin's registration fenced nothing");
    assert_eq!(
        broker.producers.name_of(writer_id).as_deref(),
        Some("writer/svc")
    );
    // The writer stamps a batch with the admin's producer id: refused.
    let mut builder = BatchBuilder::new();
    builder.push(None, b"forged", &[]);
    let stamp = ProducerStamp {
        producer_id: admin_id,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let batches = vec![PartitionBatches {
        partition: 0,
        batches: vec![builder.build(stamp, 0)],
    }];
    let refused = broker
        .checked(&writer)
        .submit_produce("orders", batches, Duration::from_secs(1))
        .await
        .expect_err("not the writer's producer");
    assert_eq!(refused.kind, ErrorKind::NotAuthorized, "{refused:?}");
    assert!(
        refused.message.contains("user writer"),
        "{}",
        refused.message
    );
    // A user without produce anywhere cannot register at all.
    let reader = caller(&broker, "nobody-special");
    let err = broker
        .checked(&reader)
        .register_producer("svc")
        .expect_err("no produce");
    assert_eq!(err.kind, ErrorKind::NotAuthorized);
    broker.close().await;
}

/// Generated rules against a model: for random users (random allow rules:
/// literal or trailing-`*` topic patterns, optional group patterns, random
/// op sets) and random operations on random topics and groups (dead-letter
/// topics `<topic>.<group>.dlq` of existing groups and of none, `__` names
/// included), [`Checked::may`] decides exactly as the small model below,
/// written from docs/security.md with plain string operations.
mod generated {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    use super::*;
    use crate::security::rules::{Op, OpSet, Pattern, Resource, Rule, Rules};
    use crate::security::users::User;

    const TOPIC_NAMES: [&str; 6] = ["orders", "orders-eu", "payments", "a", "a.b", "__audit"];
    const GROUP_NAMES: [&str; 5] = ["billing", "billing-2", "shipping", "b.c", "c"];
    /// The groups that exist (each with its dead-letter topic).
    const EXISTING: [(&str, &str); 4] = [
        ("orders", "billing"),
        ("orders", "shipping"),
        ("payments", "billing"),
        ("a", "b.c"),
    ];
    /// Topics asked about besides the names: the dead-letter topics, one
    /// that looks like a dead-letter topic but has no group, and one that
    /// is both a topic name and another group's DLQ name shape.
    const DLQ_LIKE: [&str; 6] = [
        "orders.billing.dlq",
        "orders.shipping.dlq",
        "payments.billing.dlq",
        "a.b.c.dlq",
        "orders.nobody.dlq",
        "a.dlq",
    ];
    const PATTERNS: [&str; 22] = [
        "*",
        "orders",
        "orders*",
        "orders.*",
        "orders.billing.dlq",
        "o*",
        "payments",
        "pay*",
        "a",
        "a*",
        "a.b",
        "a.b*",
        "__audit",
        "__*",
        "billing",
        "billing*",
        "shipping",
        "b.c",
        "b*",
        "c",
        "c*",
        "orders.b*",
    ];

    /// The model's rule: patterns as text, ops as a list.
    #[derive(Debug, Clone)]
    struct ModelRule {
        topics: String,
        groups: Option<String>,
        ops: Vec<Op>,
    }

    fn matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        }
    }

    /// Whether a rule allows `op` on `topic` (and `group`) by its own
    /// patterns: a rule with groups covers only resources with a group.
    fn direct(rules: &[ModelRule], op: Op, topic: &str, group: Option<&str>) -> bool {
        rules.iter().any(|r| {
            let group_ok = match (&r.groups, group) {
                (None, _) => true,
                (Some(p), Some(g)) => matches(p, g),
                (Some(_), None) => false,
            };
            r.ops.contains(&op) && matches(&r.topics, topic) && group_ok
        })
    }

    /// docs/security.md: allowed on the topic itself, or, for the DLQ of
    /// existing groups, on that group (or the operation's own group) of
    /// every source topic.
    fn model(rules: &[ModelRule], op: Op, topic: &str, group: Option<&str>) -> bool {
        if direct(rules, op, topic, group) {
            return true;
        }
        let sources: Vec<(&str, &str)> = EXISTING
            .iter()
            .copied()
            .filter(|(t, g)| format!("{t}.{g}.dlq") == topic)
            .collect();
        !sources.is_empty()
            && sources
                .iter()
                .all(|(t, g)| direct(rules, op, t, Some(group.unwrap_or(g))))
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop::sample::select(Op::ALL.to_vec())
    }

    fn rule_strategy() -> impl Strategy<Value = ModelRule> {
        (
            prop::sample::select(PATTERNS.to_vec()),
            prop::option::of(prop::sample::select(PATTERNS.to_vec())),
            prop::sample::subsequence(Op::ALL.to_vec(), 1..=4),
        )
            .prop_map(|(topics, groups, ops)| ModelRule {
                topics: topics.to_owned(),
                groups: groups.map(str::to_owned),
                ops,
            })
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let names: Vec<&str> = TOPIC_NAMES.iter().chain(DLQ_LIKE.iter()).copied().collect();
        prop_oneof![
            4 => prop::sample::select(names).prop_map(str::to_owned),
            1 => "[a-z_.]{1,12}",
        ]
    }

    fn group_strategy() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            4 => prop::sample::select(GROUP_NAMES.to_vec()).prop_map(str::to_owned),
            1 => "[a-z_.]{1,8}",
        ])
    }

    fn user_of(rules: &[ModelRule]) -> User {
        let rules = rules
            .iter()
            .map(|r| Rule {
                topics: Pattern::parse(&r.topics).expect("pattern"),
                groups: r
                    .groups
                    .as_deref()
                    .map(|g| Pattern::parse(g).expect("pattern")),
                ops: OpSet::of(&r.ops),
            })
            .collect();
        User {
            name: "generated".into(),
            password: None,
            scram: None,
            rules: Rules(rules),
            produce_quota: None,
            fetch_quota: None,
        }
    }

    #[test]
    fn generated_rules_decide_as_the_model() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (_tmp, broker) =
            rt.block_on(open_broker(None, &["orders", "payments", "a"], &EXISTING));
        let case = (
            prop::collection::vec(rule_strategy(), 0..5),
            prop::collection::vec((op_strategy(), topic_strategy(), group_strategy()), 1..40),
        );
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        let counts = std::cell::Cell::new((0u32, 0u32, 0u32));
        let result = runner.run(&case, |(rules, asks)| {
            let caller = Caller {
                peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                tls: false,
                identity: Identity::User(Arc::new(user_of(&rules))),
            };
            let checked = broker.checked(&caller);
            for (op, topic, group) in &asks {
                let resource = Resource {
                    topic,
                    group: group.as_deref(),
                };
                let want = model(&rules, *op, topic, group.as_deref());
                let got = checked.may(*op, resource);
                if got != want {
                    return Err(TestCaseError::fail(format!(
                        "{op} on {resource}: Checked says {got}, the model {want}; rules {rules:?}"
                    )));
                }
                let (mut allowed, mut refused, mut through_source) = counts.get();
                match want {
                    true if !direct(&rules, *op, topic, group.as_deref()) => through_source += 1,
                    true => allowed += 1,
                    false => refused += 1,
                }
                counts.set((allowed, refused, through_source));
            }
            Ok(())
        });
        rt.block_on(broker.close());
        if let Err(e) = result {
            panic!("{e}");
        }
        // The generated cases reach every branch of the model.
        let (allowed, refused, through_source) = counts.get();
        assert!(
            allowed > 100 && refused > 100 && through_source > 10,
            "{allowed} {refused} {through_source}"
        );
    }
}
