//! SCRAM-SHA-256 (RFC 5802, RFC 7677), the broker's side: the stored
//! verifier and the two-step exchange. No channel binding (gs2 header `n,,`
//! or `y,,`); no authorization identity other than the user itself.
//!
//! ## The verifier
//!
//! The users file's `scram_sha256` holds what the broker needs to check a
//! proof, and nothing that would let a reader log in (the password, or the
//! `ClientKey`, never appear):
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt, base64>$<StoredKey, base64>:<ServerKey, base64>
//! SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
//! StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
//! ServerKey      = HMAC(SaltedPassword, "Server Key")
//! ```
//!
//! ## The exchange
//!
//! | step | message |
//! | --- | --- |
//! | client-first | `n,,n=<user>,r=<client nonce>` |
//! | server-first | `r=<client nonce><server nonce>,s=<salt>,i=<iterations>` |
//! | client-final | `c=biws,r=<nonce>,p=<ClientProof, base64>` |
//! | server-final | `v=<ServerSignature, base64>` |
//!
//! The broker checks `SHA-256(ClientProof XOR HMAC(StoredKey, AuthMessage))`
//! against `StoredKey` in constant time. For a user it does not know (or
//! one without a verifier) it answers the first step with a salt derived
//! from the name and a broker secret, and fails the second: a client
//! cannot tell an unknown user from a wrong password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use pigeon_protocol::scram::{hmac_sha256, salted_password, sha256, xor};
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

/// The mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations of a new verifier (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewest iterations a verifier may have.
const MIN_ITERATIONS: u32 = 4096;
/// Most iterations a verifier may have (bounds the client's work too).
const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest client nonce accepted.
const MAX_NONCE_LEN: usize = 256;

/// What the broker stores for a user to check SCRAM proofs.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(redacted)")
    }
}

impl ScramVerifier {
    /// The verifier of `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramVerifier {
        let salted = salted_password(password, salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// A new verifier of `password` with a random 16-byte salt.
    pub fn generate(password: &[u8]) -> Result<ScramVerifier, String> {
        let mut salt = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| "the system's random number generator failed".to_owned())?;
        Ok(ScramVerifier::derive(password, &salt, DEFAULT_ITERATIONS))
    }

    /// Parses the users file's form (see the module documentation). The
    /// error never quotes the text.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let malformed = || {
            "it is not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; make one with `pigeon-broker hash-password --scram`".to_owned()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(malformed)?;
        let (params, keys) = rest.split_once('$').ok_or_else(malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(malformed)?;
        let (stored, server) = keys.split_once(':').ok_or_else(malformed)?;
        let iterations: u32 = iterations.parse().map_err(|_| malformed())?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "its iteration count must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            ));
        }
        let key = |b64: &str| -> Result<[u8; 32], String> {
            let bytes = BASE64.decode(b64).map_err(|_| malformed())?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| malformed())
        };
        let salt = BASE64.decode(salt).map_err(|_| malformed())?;
        if salt.is_empty() {
            return Err(malformed());
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// The users file's form.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// A verifier no proof matches, for a user that has none: its salt is
    /// derived from the name and `secret`, so it is the same at every try.
    pub fn decoy(user: &str, secret: &[u8; 32]) -> ScramVerifier {
        let salt = hmac_sha256(secret, user.as_bytes());
        let mut stored_key = [0u8; 32];
        let _ = ring::rand::SystemRandom::new().fill(&mut stored_key);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key,
            server_key: [0; 32],
        }
    }
}

/// Why a SCRAM step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802.
    #[error("the SCRAM message is malformed: {0}")]
    Malformed(String),
    /// The proof does not match (wrong password, unknown user).
    #[error("the SCRAM proof does not match")]
    BadProof,
}

fn malformed(what: impl Into<String>) -> ScramError {
    ScramError::Malformed(what.into())
}

/// A client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name (decoded from its `=2C`/`=3D` escapes).
    pub user: String,
    gs2_header: String,
    bare: String,
    nonce: String,
}

impl ClientFirst {
    /// Parses the first client message.
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| malformed("it is not UTF-8"))?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("no gs2 header"))?;
        if flag.starts_with("p=") {
            return Err(malformed(
                "channel binding is not supported; use the gs2 header n,,",
            ));
        }
        if flag != "n" && flag != "y" {
            return Err(malformed("the gs2 header must start with n or y"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("no gs2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let mut attributes = bare.split(',');
        let user = match attributes.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(malformed("mandatory extensions are not supported"));
            }
            Some(a) => decode_name(
                a.strip_prefix("n=")
                    .ok_or_else(|| malformed("no user name"))?,
            )?,
            None => return Err(malformed("no user name")),
        };
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("no client nonce"))?;
        check_nonce(nonce)?;
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_name(authzid)? != user {
                return Err(malformed("an authorization identity other than the user"));
            }
        } else if !authzid.is_empty() {
            return Err(malformed("a bad authorization identity"));
        }
        Ok(ClientFirst {
            user,
            gs2_header,
            bare: bare.to_owned(),
            nonce: nonce.to_owned(),
        })
    }
}

/// The exchange after the first step: what the second step is checked
/// against.
#[derive(Debug)]
pub struct ServerFirst {
    client: ClientFirst,
    verifier: ScramVerifier,
    nonce: String,
    message: String,
}

impl ServerFirst {
    /// Answers `client` with `verifier` (a [`ScramVerifier::decoy`] for an
    /// unknown user): the state and the server-first message.
    pub fn new(client: ClientFirst, verifier: ScramVerifier) -> Result<ServerFirst, ScramError> {
        let mut random = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| malformed("the broker's random number generator failed"))?;
        let nonce = format!("{}{}", client.nonce, BASE64.encode(random));
        let message = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(ServerFirst {
            client,
            verifier,
            nonce,
            message,
        })
    }

    /// The server-first message.
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// The user the exchange is for.
    pub fn user(&self) -> &str {
        &self.client.user
    }

    /// Checks the client-final message: the server-final message if the
    /// proof matches.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("it is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("no channel binding attribute"))?;
        if binding != BASE64.encode(&self.client.gs2_header) {
            return Err(malformed(
                "the channel binding does not repeat the gs2 header",
            ));
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(malformed("the nonce is not the one of this exchange"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed("the proof is not base64"))?;
        let proof = <[u8; 32]>::try_from(proof.as_slice())
            .map_err(|_| malformed("the proof is not 32 bytes"))?;
        let auth_message = format!("{},{},{without_proof}", self.client.bare, self.message);
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key = xor(proof, signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// A SCRAM `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an
/// error.
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        out.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(malformed("a bad escape in the user name")),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(malformed("an empty user name"));
    }
    Ok(out)
}

fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    let printable = nonce
        .bytes()
        .all(|b| (0x21..=0x7E).contains(&b) && b != b',');
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !printable {
        return Err(malformed(format!(
            "the client nonce must be 1 to {MAX_NONCE_LEN} printable characters without a comma"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_exchange() -> ServerFirst {
        let salt = BASE64.decode(SALT).expect("salt");
        let verifier = ScramVerifier::derive(b"pencil", &salt, 4096);
        let client = ClientFirst::parse(CLIENT_FIRST.as_bytes()).expect("client-first");
        // The RFC's server nonce instead of a random one.
        let message = format!("r={SERVER_NONCE},s={SALT},i=4096");
        ServerFirst {
            client,
            verifier,
            nonce: SERVER_NONCE.into(),
            message,
        }
    }

    #[test]
    fn the_rfc_7677_exchange_is_accepted_with_the_rfc_server_signature() {
        let server = rfc_exchange();
        assert_eq!(server.user(), "user");
        let last = server
            .finish(CLIENT_FINAL.as_bytes())
            .expect("proof matches");
        assert_eq!(String::from_utf8(last).expect("utf-8"), SERVER_FINAL);
    }

    #[test]
    fn a_wrong_password_or_a_decoy_fails_the_proof() {
        let salt = BASE64.decode(SALT).expect("salt");
        let mut server = rfc_exchange();
        server.verifier = ScramVerifier::derive(b"pencil!", &salt, 4096);
        assert_eq!(
            server.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::BadProof)
        );
        let mut server = rfc_exchange();
        server.verifier = ScramVerifier::decoy("user", &[7; 32]);
        assert_eq!(
            server.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::BadProof)
        );
        // A decoy's salt is the same at every try (no tell).
        assert_eq!(
            ScramVerifier::decoy("x", &[7; 32]).salt,
            ScramVerifier::decoy("x", &[7; 32]).salt
        );
    }

    #[test]
    fn a_tampered_nonce_or_binding_is_refused() {
        let tampered = CLIENT_FINAL.replace("k0,p=", "k1,p=");
        assert!(matches!(
            rfc_exchange().finish(tampered.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let tampered = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert!(matches!(
            rfc_exchange().finish(tampered.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn the_verifier_text_round_trips_and_bad_text_is_not_quoted() {
        let verifier = ScramVerifier::generate(b"secret").expect("generate");
        let text = verifier.to_text();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(ScramVerifier::parse(&text), Ok(verifier));
        let err = ScramVerifier::parse("SCRAM-SHA-256$12:abc$def").expect_err("bad");
        assert!(!err.contains("abc"), "{err}");
        assert!(ScramVerifier::parse("SCRAM-SHA-256$100:c2FsdA==$AA==:AA==").is_err());
    }

    #[test]
    fn client_first_messages_are_parsed_strictly() {
        let first = ClientFirst::parse(b"n,,n=a=2Cb=3Dc,r=abc").expect("escapes");
        assert_eq!(first.user, "a,b=c");
        assert!(ClientFirst::parse(b"p=tls-unique,,n=u,r=x").is_err());
        assert!(ClientFirst::parse(b"n,,m=ext,n=u,r=x").is_err());
        assert!(ClientFirst::parse(b"n,,n=u").is_err());
        assert!(ClientFirst::parse(b"n,,n=u=zz,r=x").is_err());
        assert!(ClientFirst::parse(b"n,a=other,n=u,r=x").is_err());
        assert!(ClientFirst::parse(b"n,a=u,n=u,r=x").is_ok());
        assert!(ClientFirst::parse(&[0xff, 0xfe]).is_err());
    }
}
