//! Tests of the producer registry: ids and epochs across restarts, the
//! cap and expiry, appends instead of rewrites, torn and damaged logs, the
//! upgrade from `producers.json`, compaction, and power cuts.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::io::{PowerCutFs, StdFs};

fn open(dir: &Path, max_names: usize) -> ProducerRegistry {
    let limits = RegistryLimits {
        max_names,
        expiry: Duration::from_secs(3600),
    };
    ProducerRegistry::open_with(Arc::new(StdFs), dir, limits).expect("open")
}

/// Makes `id` look unused for two hours.
fn age(registry: &ProducerRegistry, id: i64) {
    let ids = registry.ids.read();
    let live = ids.get(&id).expect("known id");
    live.last_used_ms
        .store(now_ms() - 2 * 3600 * 1000, Ordering::Relaxed);
}

#[test]
fn names_keep_their_id_and_bump_their_epoch_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect("open");
    assert_eq!(registry.register("orders-7"), Ok((0, 0)));
    assert_eq!(registry.register("billing"), Ok((1, 0)));
    assert_eq!(registry.register("orders-7"), Ok((0, 1)));
    assert_eq!(registry.current_epoch(0), Some(1));
    drop(registry);
    let registry = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect("reopen");
    assert_eq!(registry.current_epoch(0), Some(1));
    assert_eq!(registry.register("orders-7"), Ok((0, 2)));
    assert_eq!(registry.register("new"), Ok((2, 0)));
    assert_eq!(registry.name_of(0).as_deref(), Some("orders-7"));
    assert_eq!(registry.name_of(7), None);
    assert!(registry.register("").is_err());
    assert!(registry.register(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
}

#[test]
fn a_registration_appends_one_record_and_never_rewrites_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = open(tmp.path(), 100);
    registry.register("first").expect("register");
    let path = tmp.path().join(FILE_NAME);
    let before = std::fs::metadata(&path).expect("log");
    registry.register("second").expect("register");
    registry.register("first").expect("again");
    let after = std::fs::metadata(&path).expect("log");
    assert_eq!(before.ino(), after.ino(), "the file was replaced");
    let record = |name: &str| (RECORD_HEAD + name.len()) as u64;
    assert_eq!(
        after.len() - before.len(),
        record("second") + record("first")
    );
}

#[test]
fn new_names_are_refused_past_the_cap_until_an_idle_one_expires() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = open(tmp.path(), 2);
    assert_eq!(registry.register("a"), Ok((0, 0)));
    assert_eq!(registry.register("b"), Ok((1, 0)));
    let err = registry.register("c").expect_err("full");
    assert!(matches!(err, RegisterError::Full(_)), "{err:?}");
    assert!(err.to_string().contains("max_producer_names"), "{err}");
    assert_eq!(registry.register("b"), Ok((1, 1)), "a known name registers");
    age(&registry, 0);
    assert_eq!(
        registry.register("c"),
        Ok((2, 0)),
        "a's id is retired, not reused"
    );
    assert_eq!(registry.name_of(0), None);
    assert_eq!(registry.current_epoch(0), None);
    drop(registry);
    let registry = open(tmp.path(), 3);
    assert_eq!(registry.len(), 2, "the expiry is durable");
    assert_eq!(registry.register("a"), Ok((3, 0)), "a comes back as new");
}

#[test]
fn a_batch_counts_as_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = open(tmp.path(), 1);
    registry.register("busy").expect("register");
    age(&registry, 0);
    // The partition writer asks for the epoch of each idempotent batch.
    assert_eq!(registry.current_epoch(0), Some(0));
    assert!(matches!(
        registry.register("other"),
        Err(RegisterError::Full(_))
    ));
}

#[test]
fn a_torn_last_record_is_cut_and_damage_before_the_end_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = open(tmp.path(), 100);
    registry.register("kept").expect("register");
    drop(registry);
    let path = tmp.path().join(FILE_NAME);
    let good = std::fs::read(&path).expect("read");
    // Half of a record, as a crash during an append leaves it.
    let mut torn = good.clone();
    let mut record = Vec::new();
    Entry {
        kind: KIND_REGISTER,
        id: 1,
        epoch: 0,
        last_used_ms: 0,
        name: "lost".into(),
    }
    .encode(&mut record);
    torn.extend_from_slice(&record[..record.len() / 2]);
    std::fs::write(&path, &torn).expect("write");
    let registry = open(tmp.path(), 100);
    assert_eq!(std::fs::read(&path).expect("read"), good, "the tail is cut");
    assert_eq!(registry.register("kept"), Ok((0, 1)));
    assert_eq!(registry.register("lost"), Ok((1, 0)));
    drop(registry);
    // A flipped byte in the first record, with whole records after it.
    let mut damaged = std::fs::read(&path).expect("read");
    for _ in 0..20 {
        Entry {
            kind: KIND_REGISTER,
            id: 9,
            epoch: 0,
            last_used_ms: 0,
            name: "padding-name-for-length".into(),
        }
        .encode(&mut damaged);
    }
    damaged[10] ^= 0xff;
    std::fs::write(&path, &damaged).expect("write");
    let err = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect_err("damaged");
    assert!(err.contains("is damaged at byte 0"), "{err}");
    assert!(err.contains("restore it"), "{err}");
}

#[test]
fn an_older_json_registry_is_converted_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let json = r#"{"version":1,"next_id":5,"producers":{"orders-7":{"id":3,"epoch":4}}}"#;
    std::fs::write(tmp.path().join(LEGACY_FILE_NAME), json).expect("write");
    let registry = open(tmp.path(), 100);
    assert!(!tmp.path().join(LEGACY_FILE_NAME).exists());
    assert_eq!(registry.current_epoch(3), Some(4));
    assert_eq!(registry.register("orders-7"), Ok((3, 5)));
    assert_eq!(registry.register("new"), Ok((5, 0)), "next_id is kept");
    std::fs::write(tmp.path().join(LEGACY_FILE_NAME), b"{not json").expect("write");
    drop(registry);
    // Both files (a crash after the conversion): the log wins.
    let registry = open(tmp.path(), 100);
    assert_eq!(registry.register("new"), Ok((5, 1)));
    assert!(!tmp.path().join(LEGACY_FILE_NAME).exists());
    let damaged = tempfile::tempdir().expect("tempdir");
    std::fs::write(damaged.path().join(LEGACY_FILE_NAME), b"{not json").expect("write");
    let err = ProducerRegistry::open(Arc::new(StdFs), damaged.path()).expect_err("damaged");
    assert!(err.contains("restore it"), "{err}");
}

#[test]
fn the_log_is_compacted_once_it_holds_twice_the_live_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = open(tmp.path(), 100);
    registry.register("other").expect("register");
    for epoch in 0..(COMPACT_MIN_RECORDS as i16 + 10) {
        assert_eq!(registry.register("busy"), Ok((1, epoch)));
    }
    let records = registry.state.lock().records;
    assert!(records < COMPACT_MIN_RECORDS, "{records} records");
    let size = std::fs::metadata(tmp.path().join(FILE_NAME))
        .expect("log")
        .len();
    assert!(size < (COMPACT_MIN_RECORDS * RECORD_HEAD) as u64, "{size}");
    drop(registry);
    let registry = open(tmp.path(), 100);
    let last = COMPACT_MIN_RECORDS as i16 + 10;
    assert_eq!(registry.register("busy"), Ok((1, last)));
    assert_eq!(registry.register("third"), Ok((2, 0)));
}

#[test]
fn after_a_power_cut_no_answered_epoch_is_handed_out_again() {
    for seed in 0..40u64 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fs = Arc::new(PowerCutFs::new());
        let limits = RegistryLimits {
            max_names: 3,
            expiry: Duration::from_secs(3600),
        };
        let registry = ProducerRegistry::open_with(fs.clone(), tmp.path(), limits).expect("open");
        fs.fail_after(seed % 23 + 1);
        // name → the newest (id, epoch) answered.
        let mut answered: HashMap<String, (i64, i16)> = HashMap::new();
        for i in 0..12u64 {
            let name = format!("p{}", (i * 7 + seed) % 4);
            if let Ok(got) = registry.register(&name) {
                answered.insert(name, got);
            }
        }
        drop(registry);
        fs.power_cut(seed).expect("cut");
        let registry = open(tmp.path(), 3);
        for (name, (id, epoch)) in answered {
            match registry.register(&name) {
                Ok((again, next)) if again == id => {
                    assert!(next > epoch, "seed {seed}: {name} epoch {epoch} again")
                }
                Ok((again, _)) => assert!(again > id, "seed {seed}: id {id} reused"),
                Err(e) => panic!("seed {seed}: {name}: {e}"),
            }
        }
    }
}
