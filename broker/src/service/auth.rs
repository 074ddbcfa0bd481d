//! Authentication, for every adapter: who a caller is ([`Caller`]), and
//! the ways to become a user: a client certificate, a password (PLAIN over
//! TLS, or a Redis `AUTH` over TLS: [`Broker::authenticate_password`]), or
//! a SCRAM-SHA-256 exchange ([`Broker::scram_first`],
//! [`Broker::scram_final`]).
//!
//! ## Rules
//!
//! - Without `--users`, every caller is [`Identity::Anyone`] and may do
//!   everything; authenticating is refused (there is nobody to be).
//! - With users, a new caller is [`Identity::Nobody`] (may only
//!   authenticate) unless its verified client certificate's CN names a
//!   user.
//! - A password never crosses the wire in clear: a password itself is
//!   accepted only from a TLS connection; on plain TCP only SCRAM, whose
//!   messages prove knowledge of the password without carrying it.
//! - Failures are counted per peer IP ([`FailureLimiter`]); an address
//!   over its budget is refused before any password is checked. Unknown
//!   users cost as much as wrong passwords (a decoy hash is checked, a
//!   decoy SCRAM salt is served) and get the same answer, so the answers
//!   do not tell which users exist.
//! - Password checks (argon2id, tens of ms and 19 MiB each) run on the
//!   blocking pool, at most [`MAX_CONCURRENT_CHECKS`] at once.
//! - No password, hash or proof appears in an error or a log line.
//! - Every failed authentication is recorded in the audit trail
//!   (`op` `authenticate`, `resource` `user:<name>`, `result` `failed`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::RwLock;
use ring::rand::SecureRandom;
use tokio::sync::Semaphore;

use super::Broker;
use super::audit::Outcome;
use crate::error::{BrokerError, ErrorKind};
use crate::security::limiter::FailureLimiter;
use crate::security::password::{self, PasswordHash};
use crate::security::scram::{self, ClientFirst, ScramError, ScramVerifier, ServerFirst};
use crate::security::users::{User, Users};

/// Password checks that may run at once.
pub const MAX_CONCURRENT_CHECKS: usize = 4;

/// The SASL mechanism that sends the password itself (TLS only).
pub const PLAIN: &str = "PLAIN";

/// Who a request comes from.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether its connection is TLS.
    pub tls: bool,
    /// Who it is.
    pub identity: Identity,
}

/// Who a caller is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// The broker has no users: anyone may do anything.
    Anyone,
    /// Not authenticated (yet): may only authenticate.
    Nobody,
    /// Authenticated as this user.
    User(Arc<User>),
}

impl Caller {
    /// The name the audit trail and refusals use.
    pub fn name(&self) -> &str {
        match &self.identity {
            Identity::Anyone => "anonymous",
            Identity::Nobody => "(unauthenticated)",
            Identity::User(user) => &user.name,
        }
    }

    /// Whether the caller may do more than authenticate.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self.identity, Identity::Nobody)
    }
}

/// The users and what protects them.
#[derive(Debug)]
pub struct Authenticator {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    failures: FailureLimiter,
    checks: Arc<Semaphore>,
    /// Salts decoy SCRAM verifiers of unknown users.
    secret: [u8; 32],
}

impl Authenticator {
    /// Loads the users file at `path`.
    pub fn load(path: PathBuf) -> Result<Authenticator, BrokerError> {
        let users =
            Users::load(&path).map_err(|e| BrokerError::new(ErrorKind::InvalidConfig, e))?;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| {
                BrokerError::new(
                    ErrorKind::Internal,
                    "the system's random number generator failed",
                )
            })?;
        if users.is_empty() {
            tracing::warn!(path = %path.display(), "the users file has no user: nobody can connect");
        }
        Ok(Authenticator {
            path,
            users: RwLock::new(Arc::new(users)),
            failures: FailureLimiter::default(),
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
            secret,
        })
    }

    /// Re-reads the users file: new authentications use it (connections
    /// already authenticated keep the user they had). On an error the
    /// users in use stay.
    pub fn reload(&self) -> Result<usize, BrokerError> {
        let users =
            Users::load(&self.path).map_err(|e| BrokerError::new(ErrorKind::InvalidConfig, e))?;
        let count = users.len();
        *self.users.write() = Arc::new(users);
        Ok(count)
    }

    pub(super) fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }
}

/// A hash no password matches, checked for unknown users so that they
/// take as long as known ones.
fn decoy_hash() -> Option<&'static PasswordHash> {
    static DECOY: OnceLock<Option<PasswordHash>> = OnceLock::new();
    DECOY
        .get_or_init(|| {
            let hash = password::hash(b"pigeon decoy password").ok()?;
            PasswordHash::parse(&hash).ok()
        })
        .as_ref()
}

fn failed(user: &str) -> BrokerError {
    BrokerError::new(
        ErrorKind::AuthenticationFailed,
        format!("authentication failed for user {user}: unknown user or wrong password"),
    )
}

impl Broker {
    /// Whether callers must authenticate (the broker has users).
    pub fn requires_authentication(&self) -> bool {
        self.auth.is_some()
    }

    /// A new caller at `peer`: anyone without users; else the user its
    /// verified client certificate names, or nobody yet.
    pub fn new_caller(
        &self,
        peer: SocketAddr,
        tls: bool,
        certificate_user: Option<&str>,
    ) -> Caller {
        let identity = match (&self.auth, certificate_user) {
            (None, _) => Identity::Anyone,
            (Some(auth), Some(name)) => match auth.user(name) {
                Some(user) => {
                    tracing::debug!(%peer, user = name, "authenticated by client certificate");
                    Identity::User(user)
                }
                None => Identity::Nobody,
            },
            (Some(_), None) => Identity::Nobody,
        };
        Caller {
            peer,
            tls,
            identity,
        }
    }

    /// The quota buckets a connection of `caller` charges: its user's
    /// (shared by all of the user's connections, at the user's own rates
    /// if the users file sets them), else the connection's own at the
    /// broker's rates.
    pub fn connection_quota(&self, caller: &Caller) -> crate::service::quota::ConnectionQuota {
        let (produce, fetch) = (
            self.config.produce_quota_bytes_per_sec,
            self.config.fetch_quota_bytes_per_sec,
        );
        let now = Instant::now();
        match &caller.identity {
            Identity::User(user) => self.quotas.attach(
                &user.name,
                user.produce_quota.unwrap_or(produce),
                user.fetch_quota.unwrap_or(fetch),
                now,
            ),
            Identity::Anyone | Identity::Nobody => {
                crate::service::quota::ConnectionQuota::own(produce, fetch, now)
            }
        }
    }

    /// The SASL mechanisms offered on a connection.
    pub fn sasl_mechanisms(&self, tls: bool) -> Vec<String> {
        let mut offered = vec![scram::MECHANISM.to_owned()];
        if tls {
            offered.push(PLAIN.to_owned());
        }
        offered
    }

    /// The authenticator, or the refusal a broker without users gives.
    fn authenticator(&self) -> Result<&Authenticator, BrokerError> {
        self.auth.as_ref().ok_or_else(|| {
            BrokerError::new(
                ErrorKind::AuthenticationFailed,
                "this broker has no users (it runs without --users): connect without a user and password",
            )
        })
    }

    /// Records a failed authentication of `user` from `peer` in the audit
    /// trail, and passes the error on.
    fn auth_failed(&self, peer: SocketAddr, tls: bool, user: &str, e: BrokerError) -> BrokerError {
        let caller = Caller {
            peer,
            tls,
            identity: Identity::Nobody,
        };
        let resource = format!("user:{user}");
        self.audit(
            &caller,
            "authenticate",
            &resource,
            Outcome::Failed,
            Some(&e.message),
        );
        e
    }

    /// Refuses `peer` while it is over its failure budget.
    fn check_failures(&self, auth: &Authenticator, peer: SocketAddr) -> Result<(), BrokerError> {
        auth.failures
            .check(peer.ip(), Instant::now())
            .map_err(|wait| {
                BrokerError::new(
                    ErrorKind::AuthenticationFailed,
                    format!(
                        "too many failed authentications from {}; try again in {} s",
                        peer.ip(),
                        wait.as_secs().max(1)
                    ),
                )
            })
    }

    /// Checks `user`'s password as sent by a client over TLS (SASL PLAIN,
    /// Redis `AUTH`): the authenticated caller, or why not. `tls` is
    /// whether the password came over TLS; on plain TCP it is refused
    /// unchecked (it has crossed the wire in clear: change it).
    pub async fn authenticate_password(
        &self,
        peer: SocketAddr,
        tls: bool,
        user: &str,
        password: &[u8],
    ) -> Result<Caller, BrokerError> {
        let auth = self.authenticator()?;
        if !tls {
            tracing::warn!(%peer, user, "refused a password sent without TLS");
            let refused = BrokerError::new(
                ErrorKind::AuthenticationFailed,
                "a password is accepted only over TLS; this connection is plain TCP (authenticate with SCRAM-SHA-256, or connect with TLS)",
            );
            return Err(self.auth_failed(peer, tls, user, refused));
        }
        self.check_failures(auth, peer)
            .map_err(|e| self.auth_failed(peer, tls, user, e))?;
        let known = auth.user(user);
        let hash = known.as_ref().and_then(|u| u.password.clone());
        let checked = hash.clone().or_else(|| decoy_hash().cloned());
        let permit = auth.checks.clone().acquire_owned().await.map_err(|_| {
            BrokerError::new(ErrorKind::ShuttingDown, "the broker is shutting down")
        })?;
        let password = password.to_vec();
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            checked.is_some_and(|h| h.verify(&password))
        })
        .await
        .unwrap_or(false);
        match known {
            Some(found) if matches && hash.is_some() => {
                tracing::debug!(%peer, user, "authenticated with a password");
                Ok(Caller {
                    peer,
                    tls,
                    identity: Identity::User(found),
                })
            }
            _ => {
                auth.failures.record_failure(peer.ip(), Instant::now());
                tracing::info!(%peer, user, known = hash.is_some(), "password authentication failed");
                Err(self.auth_failed(peer, tls, user, failed(user)))
            }
        }
    }

    /// The first step of SCRAM-SHA-256: the exchange to finish with
    /// [`Broker::scram_final`], and its server-first message.
    pub fn scram_first(
        &self,
        peer: SocketAddr,
        client_first: &[u8],
    ) -> Result<ServerFirst, BrokerError> {
        let auth = self.authenticator()?;
        let client = ClientFirst::parse(client_first)
            .map_err(|e| self.auth_failed(peer, false, "", scram_malformed(e)))?;
        self.check_failures(auth, peer)
            .map_err(|e| self.auth_failed(peer, false, &client.user, e))?;
        let verifier = auth
            .user(&client.user)
            .and_then(|u| u.scram.clone())
            .unwrap_or_else(|| ScramVerifier::decoy(&client.user, &auth.secret));
        ServerFirst::new(client, verifier).map_err(scram_malformed)
    }

    /// The second step of SCRAM-SHA-256: the authenticated caller and the
    /// server-final message, or why not.
    pub fn scram_final(
        &self,
        peer: SocketAddr,
        tls: bool,
        exchange: ServerFirst,
        client_final: &[u8],
    ) -> Result<(Caller, Vec<u8>), BrokerError> {
        let auth = self.authenticator()?;
        let name = exchange.user().to_owned();
        let user = auth.user(&name).filter(|u| u.scram.is_some());
        match (exchange.finish(client_final), user) {
            (Ok(server_final), Some(user)) => {
                tracing::debug!(%peer, user = name, "authenticated with SCRAM-SHA-256");
                let caller = Caller {
                    peer,
                    tls,
                    identity: Identity::User(user),
                };
                Ok((caller, server_final))
            }
            (Err(ScramError::Malformed(what)), _) => {
                let malformed = scram_malformed(ScramError::Malformed(what));
                Err(self.auth_failed(peer, tls, &name, malformed))
            }
            _ => {
                auth.failures.record_failure(peer.ip(), Instant::now());
                tracing::info!(%peer, user = name, "SCRAM-SHA-256 authentication failed");
                Err(self.auth_failed(peer, tls, &name, failed(&name)))
            }
        }
    }

    /// Re-reads the users file (at SIGHUP); the number of users, or why
    /// the file was refused (the users in use stay).
    pub fn reload_users(&self) -> Option<Result<usize, BrokerError>> {
        self.auth.as_ref().map(Authenticator::reload)
    }
}

fn scram_malformed(e: ScramError) -> BrokerError {
    BrokerError::new(ErrorKind::AuthenticationFailed, e.to_string())
}
