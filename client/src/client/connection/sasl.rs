//! Authenticating a new connection as a user ([`Credentials`]): SASL over
//! SaslHandshake (key 1) and SaslAuthenticate (key 2), right after the
//! Handshake and before any other request.
//!
//! - Over TLS: `PLAIN` (the password goes inside the encrypted session, and
//!   the broker checks it against its argon2id hash).
//! - Over plain TCP: `SCRAM-SHA-256` (RFC 5802, RFC 7677): the password
//!   never crosses the wire; the client proves it knows it, and checks the
//!   broker's signature in return, so a broker that does not hold the
//!   user's verifier cannot pass for the real one.
//!
//! The password is kept only in [`Credentials`], whose `Debug` hides it,
//! and is never put in an error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

use crate::client::error::ClientError;
use crate::protocol::{ErrorCode, SaslAuthenticateRequest, SaslHandshakeRequest};
use pigeon_protocol::scram::{hmac_sha256, salted_password, sha256, xor};

/// Most PBKDF2 iterations a broker may ask of the client.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Fewest (RFC 7677's minimum): fewer would weaken what an eavesdropper
/// could brute-force.
const MIN_ITERATIONS: u32 = 4096;

/// A user name and password to authenticate with.
///
/// ```
/// use pigeon_client::client::Credentials;
/// let credentials = Credentials::new("billing", "s3cret");
/// assert!(!format!("{credentials:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// The SASL mechanism for a connection: PLAIN inside TLS, SCRAM outside.
pub(crate) fn mechanism(tls: bool) -> &'static str {
    if tls { "PLAIN" } else { "SCRAM-SHA-256" }
}

/// The SaslHandshake request naming `mechanism`.
pub(crate) fn handshake(mechanism: &str) -> SaslHandshakeRequest {
    SaslHandshakeRequest {
        mechanism: mechanism.to_owned(),
    }
}

/// The one PLAIN message: `NUL user NUL password`.
pub(crate) fn plain(credentials: &Credentials) -> SaslAuthenticateRequest {
    let mut message = Vec::with_capacity(credentials.user.len() + credentials.password.len() + 2);
    message.push(0);
    message.extend_from_slice(credentials.user.as_bytes());
    message.push(0);
    message.extend_from_slice(credentials.password.as_bytes());
    SaslAuthenticateRequest {
        auth_bytes: Bytes::from(message),
    }
}

fn failed(message: impl Into<String>) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::AuthenticationFailed,
        message: message.into(),
    }
}

/// A SCRAM-SHA-256 exchange, the client's side.
pub(crate) struct Scram {
    bare: String,
    nonce: String,
}

/// The exchange after the broker's first message: what its last message
/// must prove.
pub(crate) struct ScramProof {
    auth_message: String,
    server_key: [u8; 32],
}

impl Scram {
    /// A new exchange for `credentials`, and its client-first message.
    pub(crate) fn start(
        credentials: &Credentials,
    ) -> Result<(Scram, SaslAuthenticateRequest), ClientError> {
        let mut random = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| failed("the system's random number generator failed"))?;
        Ok(Scram::with_nonce(credentials, BASE64.encode(random)))
    }

    fn with_nonce(credentials: &Credentials, nonce: String) -> (Scram, SaslAuthenticateRequest) {
        let user = credentials.user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={user},r={nonce}");
        let first = format!("n,,{bare}");
        let request = SaslAuthenticateRequest {
            auth_bytes: Bytes::from(first),
        };
        (Scram { bare, nonce }, request)
    }

    /// The client-final message answering the broker's `server_first`.
    pub(crate) fn prove(
        self,
        credentials: &Credentials,
        server_first: &[u8],
    ) -> Result<(ScramProof, SaslAuthenticateRequest), ClientError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| failed("the broker's SCRAM message is not UTF-8"))?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|a| a.strip_prefix(name))
                .ok_or_else(|| failed(format!("the broker's SCRAM message has no {name} field")))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(failed(
                "the broker's SCRAM nonce does not extend this client's",
            ));
        }
        let salt = BASE64
            .decode(field("s=")?)
            .map_err(|_| failed("the broker's SCRAM salt is not base64"))?;
        let iterations: u32 = field("i=")?
            .parse()
            .map_err(|_| failed("the broker's SCRAM iteration count is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(failed(format!(
                "the broker asks for {iterations} SCRAM iterations; this client accepts {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            )));
        }
        let salted = salted_password(credentials.password.as_bytes(), &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare);
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = xor(client_key, signature);
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        let request = SaslAuthenticateRequest {
            auth_bytes: Bytes::from(last),
        };
        let proof = ScramProof {
            auth_message,
            server_key: hmac_sha256(&salted, b"Server Key"),
        };
        Ok((proof, request))
    }
}

impl ScramProof {
    /// Checks the broker's server-final message.
    pub(crate) fn verify(self, server_final: &[u8]) -> Result<(), ClientError> {
        let text = std::str::from_utf8(server_final).unwrap_or("");
        if let Some(error) = text.strip_prefix("e=") {
            return Err(failed(format!(
                "the broker refused the SCRAM proof: {error}"
            )));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(|| failed("the broker's last SCRAM message carries no signature"))?;
        let expected = hmac_sha256(&self.server_key, self.auth_message.as_bytes());
        if !bool::from(signature.ct_eq(&expected)) {
            return Err(failed(
                "the broker's SCRAM signature is wrong: it does not hold this user's verifier (is it the real broker?)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7677_exchange_gives_the_rfc_proof_and_accepts_the_rfc_signature() {
        let credentials = Credentials::new("user", "pencil");
        let (scram, first) = Scram::with_nonce(&credentials, "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(&first.auth_bytes[..], b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (proof, last) = scram.prove(&credentials, server_first).expect("prove");
        assert_eq!(
            &last.auth_bytes[..],
            &b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="[..]
        );
        proof
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("the broker's signature");
    }

    #[test]
    fn a_forged_signature_or_a_weak_iteration_count_is_refused() {
        let credentials = Credentials::new("user", "pencil");
        let (scram, _) = Scram::with_nonce(&credentials, "abc".into());
        let (proof, _) = scram
            .prove(&credentials, b"r=abcdef,s=c2FsdA==,i=4096")
            .expect("prove");
        let err = proof.verify(b"v=AAAA").expect_err("forged");
        assert!(err.to_string().contains("signature is wrong"), "{err}");
        let (scram, _) = Scram::with_nonce(&credentials, "abc".into());
        assert!(
            scram
                .prove(&credentials, b"r=abcdef,s=c2FsdA==,i=1")
                .is_err()
        );
        let (scram, _) = Scram::with_nonce(&credentials, "abc".into());
        assert!(
            scram
                .prove(&credentials, b"r=xyz,s=c2FsdA==,i=4096")
                .is_err(),
            "nonce"
        );
    }

    #[test]
    fn user_names_are_escaped_and_plain_carries_user_and_password() {
        let credentials = Credentials::new("a,b=c", "pw");
        let (_, first) = Scram::with_nonce(&credentials, "n".into());
        assert_eq!(&first.auth_bytes[..], b"n,,n=a=2Cb=3Dc,r=n");
        assert_eq!(&plain(&credentials).auth_bytes[..], b"\0a,b=c\0pw");
    }
}
