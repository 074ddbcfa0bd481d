//! The SCRAM-SHA-256 primitives (RFC 5802 section 3, RFC 7677) that the
//! broker (verifying) and the client library (proving) both compute, so
//! that both sides derive keys with the same code:
//!
//! | name | definition |
//! | --- | --- |
//! | SaltedPassword | PBKDF2-HMAC-SHA-256(password, salt, iterations), 32 bytes |
//! | ClientKey | HMAC(SaltedPassword, "Client Key") |
//! | StoredKey | SHA-256(ClientKey) |
//! | ServerKey | HMAC(SaltedPassword, "Server Key") |
//! | ClientSignature | HMAC(StoredKey, AuthMessage) |
//! | ClientProof | ClientKey XOR ClientSignature |
//! | ServerSignature | HMAC(ServerKey, AuthMessage) |
//!
//! The message syntax (nonces, `n=`/`r=`/`s=`/`i=`/`p=` fields, error
//! texts) stays with each side: what it accepts differs.

use ring::{digest, hmac, pbkdf2};

/// SaltedPassword: PBKDF2-HMAC-SHA-256 of `password` with `salt`,
/// `iterations` rounds (0 counts as 1).
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let iterations = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// `a` XOR `b`: ClientProof from ClientKey and ClientSignature, and
/// ClientKey back from ClientProof and ClientSignature.
pub fn xor(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
    let mut out = a;
    for (o, b) in out.iter_mut().zip(b) {
        *o ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 7677 section 3 (user "user", password "pencil"): the proof the
    /// RFC's exchange carries, `dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=`.
    #[test]
    fn the_rfc_7677_example_derives_the_rfc_proof() {
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ]; // base64 W22ZaJ0SNY7soEsUEjb6gQ==
        let salted = salted_password(b"pencil", &salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = xor(
            client_key,
            hmac_sha256(&stored_key, auth_message.as_bytes()),
        );
        assert_eq!(
            hex(&proof),
            "747cdb65aa56224e2352137e52d7bdcad6a0f738df30782caa69a2cfb0277554"
        );
        assert_eq!(
            xor(proof, hmac_sha256(&stored_key, auth_message.as_bytes())),
            client_key
        );
    }
}
