//! The users file (`--users FILE`, TOML): who may connect and what each
//! user may do.
//!
//! ```toml
//! [[users]]
//! name = "billing"
//! password_hash = "$argon2id$v=19$..."   # pigeon-broker hash-password < password.txt
//! scram_sha256 = "SCRAM-SHA-256$4096:..." # optional: pigeon-broker hash-password --scram
//! allow = [
//!   { topics = "orders*", ops = ["produce", "read"] },
//!   { topics = "orders", groups = "billing*", ops = ["consume"] },
//! ]
//! ```
//!
//! | key | meaning |
//! | --- | --- |
//! | `name` | 1–128 bytes of `A-Z a-z 0-9 . _ - @ +`; unique. A client certificate whose subject CN is this name authenticates as the user |
//! | `password_hash` | optional: an argon2id PHC string; the password is then accepted with PLAIN over TLS |
//! | `scram_sha256` | optional: a SCRAM-SHA-256 verifier; the password is then accepted with SCRAM-SHA-256 on any connection |
//! | `allow` | rules: `topics` pattern, optional `groups` pattern, `ops` list (`produce`, `read`, `consume`, `admin`, `all`) |
//! | `produce_quota_bytes_per_sec` | optional: this user's produce quota instead of the broker's (0 unlimited, else at least 1024) |
//! | `fetch_quota_bytes_per_sec` | optional: this user's fetch quota instead of the broker's (0 unlimited, else at least 1024) |
//!
//! A user without `password_hash` and `scram_sha256` can only authenticate
//! with a client certificate. Unknown keys, a bad pattern or op, a duplicate
//! name, a hash that is not argon2id: the file is refused at start (and at
//! a reload) with a message naming the user and the key, never quoting a
//! hash (a TOML syntax error names its line, column and key, not the
//! line's text).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::password::PasswordHash;
use super::rules::{OpSet, Pattern, Rule, Rules};
use super::scram::ScramVerifier;

/// Largest users file read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: Option<String>,
    scram_sha256: Option<String>,
    #[serde(default)]
    allow: Vec<RuleEntry>,
    produce_quota_bytes_per_sec: Option<u64>,
    fetch_quota_bytes_per_sec: Option<u64>,
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    topics: String,
    groups: Option<String>,
    ops: Vec<String>,
}

/// One user: credentials and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// For PLAIN (over TLS).
    pub password: Option<PasswordHash>,
    /// For SCRAM-SHA-256.
    pub scram: Option<ScramVerifier>,
    /// What the user may do.
    pub rules: Rules,
    /// The user's own produce quota: `None` uses the broker's
    /// `produce_quota_bytes_per_sec`, `Some(None)` is unlimited.
    pub produce_quota: Option<Option<u64>>,
    /// The user's own fetch quota, like `produce_quota`.
    pub fetch_quota: Option<Option<u64>>,
}

/// Every user, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
}

impl Users {
    /// Reads and checks the users file at `path`.
    pub fn load(path: &Path) -> Result<Users, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(format!(
                "the users file {} is {size} bytes; at most {MAX_FILE_BYTES} are read",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("users file {}: {e}", path.display()))
    }

    /// Parses and checks the TOML text of a users file.
    pub fn parse(text: &str) -> Result<Users, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let mut by_name = HashMap::new();
        for entry in file.users {
            let user = user(entry)?;
            if by_name.contains_key(&user.name) {
                return Err(format!("user {} is defined twice", user.name));
            }
            by_name.insert(user.name.clone(), Arc::new(user));
        }
        Ok(Users { by_name })
    }

    /// The user called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no user (then nobody can connect).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A TOML error of the users file: where and what, without the source
/// line that the TOML library's own text quotes (it may hold a password
/// hash or a SCRAM verifier, and the error is logged at a reload).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The key of the line, never its value.
            let key = text
                .get(line_start..)
                .and_then(|rest| rest.split_once('='))
                .map(|(key, _)| key.trim())
                .filter(|key| {
                    !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
            match key {
                Some(key) => {
                    format!("TOML error at line {line}, column {column} (key {key}): {message}")
                }
                None => format!("TOML error at line {line}, column {column}: {message}"),
            }
        }
        None => format!("TOML error: {message}"),
    }
}

/// Checks one entry.
fn user(entry: UserEntry) -> Result<User, String> {
    let name = entry.name;
    check_name(&name)?;
    let password = entry
        .password_hash
        .map(|phc| PasswordHash::parse(&phc))
        .transpose()
        .map_err(|e| format!("user {name}: password_hash: {e}"))?;
    let scram = entry
        .scram_sha256
        .map(|text| ScramVerifier::parse(&text))
        .transpose()
        .map_err(|e| format!("user {name}: scram_sha256: {e}"))?;
    let rules = entry
        .allow
        .into_iter()
        .map(|r| rule(r).map_err(|e| format!("user {name}: allow: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let quota = |key: &str, rate: Option<u64>| {
        rate.map(|r| crate::config::quota_rate(key, Some(r)))
            .transpose()
            .map_err(|e| format!("user {name}: {e}"))
    };
    let produce_quota = quota(
        "produce_quota_bytes_per_sec",
        entry.produce_quota_bytes_per_sec,
    )?;
    let fetch_quota = quota("fetch_quota_bytes_per_sec", entry.fetch_quota_bytes_per_sec)?;
    Ok(User {
        name,
        password,
        scram,
        rules: Rules(rules),
        produce_quota,
        fetch_quota,
    })
}

fn rule(entry: RuleEntry) -> Result<Rule, String> {
    let ops = OpSet::parse(&entry.ops).map_err(|op| {
        format!("{op:?} is not an operation; use produce, read, consume, admin or all")
    })?;
    if entry.ops.is_empty() {
        return Err(format!(
            "the rule for topics {:?} lists no ops",
            entry.topics
        ));
    }
    Ok(Rule {
        topics: Pattern::parse(&entry.topics).map_err(|e| format!("topics: {e}"))?,
        groups: entry
            .groups
            .map(|g| Pattern::parse(&g).map_err(|e| format!("groups: {e}")))
            .transpose()?,
        ops,
    })
}

/// A user name: 1–128 bytes of `A-Z a-z 0-9 . _ - @ +`.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    if name.is_empty() || name.len() > MAX_USER_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "user name {name:?} must be 1 to {MAX_USER_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-', '@' and '+'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::rules::{Op, Resource};

    fn example() -> String {
        let hash = crate::security::password::hash(b"pw").expect("hash");
        let scram = ScramVerifier::generate(b"pw").expect("scram").to_text();
        format!(
            r#"
[[users]]
name = "billing"
password_hash = "{hash}"
scram_sha256 = "{scram}"
allow = [
  {{ topics = "orders*", ops = ["produce", "read"] }},
  {{ topics = "orders", groups = "billing*", ops = ["consume"] }},
]

[[users]]
name = "ops"
password_hash = "{hash}"
allow = [{{ topics = "*", ops = ["all"] }}]

[[users]]
name = "reporting@example.com"
"#
        )
    }

    #[test]
    fn the_design_example_parses() {
        let users = Users::parse(&example()).expect("parse");
        assert_eq!(users.len(), 3);
        let billing = users.get("billing").expect("billing");
        assert!(billing.password.is_some() && billing.scram.is_some());
        assert!(
            billing
                .rules
                .allows(Op::Consume, Resource::group("orders", "billing-eu"))
        );
        let ops = users.get("ops").expect("ops");
        assert!(ops.rules.allows(Op::Admin, Resource::topic("anything")));
        assert!(ops.scram.is_none());
        let reporting = users
            .get("reporting@example.com")
            .expect("certificate-only user");
        assert!(reporting.password.is_none() && reporting.rules.0.is_empty());
        assert_eq!(billing.produce_quota, None, "the broker's quota");
    }

    #[test]
    fn a_syntax_error_on_a_hash_line_does_not_quote_the_hash() {
        let hash = crate::security::password::hash(b"pw").expect("hash");
        let scram = ScramVerifier::generate(b"pw").expect("scram").to_text();
        for line in [
            format!("password_hash = \"{hash}\" oops"),
            format!("scram_sha256 = \"{scram}\" oops"),
            format!("password_hash = \"{hash}"),
        ] {
            let text = format!("[[users]]\nname = \"a\"\n{line}\n");
            let err = Users::parse(&text).expect_err("broken");
            assert!(err.starts_with("TOML error at line 3, column"), "{err}");
            for secret in [hash.as_str(), scram.as_str()] {
                for field in secret.split(['$', ':', ',']).filter(|f| f.len() >= 12) {
                    assert!(!err.contains(field), "{err}");
                }
            }
        }
    }

    #[test]
    fn a_user_may_set_its_own_quotas() {
        let users = Users::parse(
            "[[users]]\nname = \"a\"\nproduce_quota_bytes_per_sec = 4096\nfetch_quota_bytes_per_sec = 0",
        )
        .expect("parse");
        let a = users.get("a").expect("a");
        assert_eq!(a.produce_quota, Some(Some(4096)));
        assert_eq!(a.fetch_quota, Some(None), "0: unlimited for this user");
    }

    #[test]
    fn mistakes_are_refused_naming_the_user_and_the_key() {
        let err =
            Users::parse("[[users]]\nname = \"a\"\npassword = \"x\"").expect_err("unknown key");
        assert!(err.contains("password"), "{err}");
        let err = Users::parse("[[users]]\nname = \"a\"\npassword_hash = \"hunter2\"")
            .expect_err("not a hash");
        assert!(
            err.starts_with("user a: password_hash:") && !err.contains("hunter2"),
            "{err}"
        );
        let err = Users::parse(
            "[[users]]\nname = \"a\"\nallow = [{ topics = \"t\", ops = [\"write\"] }]",
        )
        .expect_err("bad op");
        assert!(
            err.contains("user a: allow:") && err.contains("\"write\""),
            "{err}"
        );
        let err = Users::parse(
            "[[users]]\nname = \"a\"\nallow = [{ topics = \"t*x\", ops = [\"read\"] }]",
        )
        .expect_err("bad pattern");
        assert!(err.contains("topics:"), "{err}");
        let err =
            Users::parse("[[users]]\nname = \"a\"\n[[users]]\nname = \"a\"").expect_err("twice");
        assert!(err.contains("defined twice"), "{err}");
        let err = Users::parse("[[users]]\nname = \"a\"\nfetch_quota_bytes_per_sec = 10")
            .expect_err("quota below 1024");
        assert!(
            err.starts_with("user a: fetch_quota_bytes_per_sec is 10"),
            "{err}"
        );
        let err = Users::parse("[[users]]\nname = \"a\"\nproduce_quota_bytes_per_sec = \"lots\"")
            .expect_err("quota not a number");
        assert!(err.contains("produce_quota_bytes_per_sec"), "{err}");
        let err = Users::parse("[[users]]\nname = \"a/b\"").expect_err("bad name");
        assert!(err.contains("user name"), "{err}");
    }
}
