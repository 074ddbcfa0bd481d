//! Password hashes: argon2id PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`)
//! as the users file stores them, made by `pigeon-broker hash-password`.
//!
//! - [`hash`] uses argon2id with the crate's default cost (19 MiB, two
//!   passes, one lane: the OWASP recommendation) and a random 16-byte salt.
//! - [`PasswordHash::verify`] recomputes the hash with the parameters
//!   stored in the string and compares in constant time (the argon2
//!   crate's output comparison). It costs tens of milliseconds of CPU and
//!   the string's memory cost, so callers run it off the async workers and
//!   bound how many run at once (see `service/auth.rs`).
//! - A hash is never printed: its `Debug` shows only the algorithm.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash as Phc;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// A checked argon2id PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(argon2id, redacted)")
    }
}

impl PasswordHash {
    /// Checks that `phc` is an argon2id PHC string with a salt and a hash.
    /// The error never quotes the string.
    pub fn parse(phc: &str) -> Result<PasswordHash, String> {
        let parsed = Phc::new(phc).map_err(|e| {
            format!("it is not a PHC string ({e}); make one with `pigeon-broker hash-password`")
        })?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(format!(
                "it is a {} hash; only argon2id is accepted (make one with `pigeon-broker hash-password`)",
                parsed.algorithm.as_str()
            ));
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(
                "it has no salt or no hash; make one with `pigeon-broker hash-password`".into(),
            );
        }
        Ok(PasswordHash(phc.to_owned()))
    }

    /// Whether `password` hashes to this (constant-time comparison).
    pub fn verify(&self, password: &[u8]) -> bool {
        match Phc::new(&self.0) {
            Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
            Err(_) => false,
        }
    }
}

/// The argon2id PHC string of `password`, with a random salt.
pub fn hash(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash(b"correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        let parsed = PasswordHash::parse(&phc).expect("parse");
        assert!(parsed.verify(b"correct horse"));
        assert!(!parsed.verify(b"correct horsE"));
        assert!(!parsed.verify(b""));
        assert!(
            !format!("{parsed:?}").contains(&phc[20..]),
            "Debug hides the hash"
        );
    }

    #[test]
    fn other_strings_are_refused_without_being_quoted() {
        let err = PasswordHash::parse("hunter2").expect_err("plain text");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("hash-password"), "{err}");
        let bcrypt = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNo";
        let err = PasswordHash::parse(bcrypt).expect_err("argon2i");
        assert!(err.contains("only argon2id"), "{err}");
    }
}
