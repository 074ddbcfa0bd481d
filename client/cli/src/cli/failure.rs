//! Connecting with timeouts sized for a command line and the connection
//! options every subcommand takes (TLS), and turning every failure into
//! one sentence for stderr.
//!
//! The connection options (TLS, and the user with its password from
//! `--password-file` or `PIGEON_PASSWORD`) are parsed once, before the
//! subcommand runs, into a process-wide [`ClientConfig`]
//! ([`set_connection`]): every connection a command opens (the load
//! generator's too, which clones it) speaks TLS and authenticates alike.
//!
//! A CLI invocation is short-lived: when the broker is not there it must say
//! so within seconds, not after the library's patient defaults (10 s
//! connect, 30 s requests, 2 min delivery). So the first connection is made
//! eagerly and its failure ends the command with a message naming the
//! address and how to change it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;
use pigeon_client::client::{Client, ClientConfig, ClientError, Credentials, TlsConfig};

/// What a command fails with; printed as `pigeon: {failure:#}`.
pub(crate) type Failure = anyhow::Error;

/// Longest wait for the broker to accept the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the answer to one request (fetches add their long-poll
/// wait on top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `produce` keeps retrying a message before giving up.
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the broker securely: options of every subcommand.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// CA bundle (PEM) that signs the broker's certificate; turns TLS on.
    #[arg(long, global = true, env = "PIGEON_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to the broker (with --tls-key).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Verify the broker's certificate for this name instead of the host of
    /// --broker.
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// User to authenticate as; the password comes from --password-file or
    /// the PIGEON_PASSWORD environment variable.
    #[arg(long, global = true, env = "PIGEON_USER", value_name = "NAME")]
    user: Option<String>,
    /// File whose first line is the password of --user.
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// The environment variable holding the password of `--user`.
const PASSWORD_ENV: &str = "PIGEON_PASSWORD";

/// The credentials of `--user`, with the password from `--password-file`
/// or `PIGEON_PASSWORD`.
fn credentials(args: &ConnectionArgs) -> Result<Option<Credentials>, Failure> {
    let Some(user) = &args.user else {
        if args.password_file.is_some() {
            return Err(anyhow::anyhow!(
                "--password-file needs --user (or PIGEON_USER): the user the password is for"
            ));
        }
        return Ok(None);
    };
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read the password file {}: {e}", path.display())
            })?;
            text.lines().next().unwrap_or("").to_owned()
        }
        None => std::env::var(PASSWORD_ENV).map_err(|_| {
            anyhow::anyhow!(
                "--user {user} needs a password: set {PASSWORD_ENV} or give --password-file FILE"
            )
        })?,
    };
    if password.is_empty() {
        return Err(anyhow::anyhow!(
            "the password of user {user} is empty; set {PASSWORD_ENV} or give --password-file FILE"
        ));
    }
    Ok(Some(Credentials::new(user.clone(), password)))
}

/// The client configuration of every command, once the options are set.
static CONFIG: OnceLock<ClientConfig> = OnceLock::new();

/// Builds the client configuration from the connection options (reading
/// the certificate files now, so that a bad path is reported first).
pub(crate) fn set_connection(args: &ConnectionArgs) -> Result<(), Failure> {
    let tls = match &args.tls_ca {
        None if args.tls_cert.is_some() || args.tls_server_name.is_some() => {
            return Err(anyhow::anyhow!(
                "--tls-cert and --tls-server-name need --tls-ca (or PIGEON_TLS_CA): the CA bundle that signs the broker's certificate"
            ));
        }
        None => None,
        Some(ca) => {
            let client_cert = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
            let tls = TlsConfig::from_pem_files(ca, client_cert).map_err(client_failure)?;
            Some(match &args.tls_server_name {
                Some(name) => tls.with_server_name(name),
                None => tls,
            })
        }
    };
    let config = ClientConfig {
        tls,
        credentials: credentials(args)?,
        ..default_config()
    };
    let _ = CONFIG.set(config);
    Ok(())
}

/// The client configuration of every command.
fn client_config() -> ClientConfig {
    CONFIG.get().cloned().unwrap_or_else(default_config)
}

fn default_config() -> ClientConfig {
    ClientConfig {
        client_name: format!("pigeon-cli {}", env!("CARGO_PKG_VERSION")),
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    }
}

/// Connects to the broker at `addr` now, so that an unreachable broker is
/// reported at once and as such.
pub(crate) async fn connect(addr: &str) -> Result<Client, Failure> {
    Client::connect_with(addr, client_config())
        .await
        .map_err(|err| match err {
            ClientError::Connection { kind, message, .. } => unreachable_broker(addr, &reason(kind, &message)),
            ClientError::Timeout { after } => unreachable_broker(
                addr,
                &format!("no handshake within {} ms", after.as_millis()),
            ),
            ClientError::Codec(err) => anyhow::anyhow!(
                "the server at {addr} does not speak the Pigeon protocol ({err}); is --broker the address of pigeon-broker's protocol listener?"
            ),
            other => client_failure(other),
        })
}

fn unreachable_broker(addr: &str, reason: &str) -> Failure {
    anyhow::anyhow!(
        "cannot reach the broker at {addr}: {reason}; is pigeon-broker running? (set --broker or PIGEON_BROKER)"
    )
}

/// A [`ClientError`] as a failure of the command.
pub(crate) fn client_failure(err: ClientError) -> Failure {
    anyhow::anyhow!(explain(&err))
}

/// One sentence (without the `pigeon: ` prefix) saying what went wrong.
pub(crate) fn explain(err: &ClientError) -> String {
    match err {
        ClientError::Broker { code, message } if message.is_empty() => {
            code.description().to_string()
        }
        ClientError::Broker { message, .. } => message.clone(),
        ClientError::Connection {
            addr,
            kind,
            message,
        } => format!(
            "the connection to the broker at {addr} failed: {}",
            reason(*kind, message)
        ),
        ClientError::Timeout { after } => {
            format!("the broker did not answer within {} ms", after.as_millis())
        }
        ClientError::Tls { addr, message } if addr.is_empty() => message.clone(),
        ClientError::Tls { addr, message } => {
            format!("TLS to the broker at {addr} failed: {message}")
        }
        ClientError::CircuitOpen {
            addr,
            unreachable_for,
        } => format!(
            "the broker at {addr} has been unreachable for {} s",
            unreachable_for.as_secs()
        ),
        ClientError::DeliveryTimeout { after, last_error } => format!(
            "the broker did not acknowledge it within {} s; last error: {}",
            after.as_secs(),
            explain(last_error)
        ),
        other => other.to_string(),
    }
}

/// The reason of a connection failure in lower case, without the OS error
/// number: `connection refused`.
fn reason(kind: std::io::ErrorKind, message: &str) -> String {
    if kind == std::io::ErrorKind::ConnectionRefused {
        return "connection refused".to_string();
    }
    let message = match message.find(" (os error") {
        Some(at) => &message[..at],
        None => message,
    };
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => kind.to_string(),
    }
}

/// Whether `failure` is only that stdout was closed under us (a broken pipe).
pub(crate) fn is_closed_stdout(failure: &Failure) -> bool {
    failure.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_client::protocol::ErrorCode;

    #[test]
    fn connection_reasons_are_short_and_lower_case() {
        use std::io::ErrorKind;
        assert_eq!(
            reason(
                ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)"
            ),
            "connection refused"
        );
        assert_eq!(
            reason(ErrorKind::Other, "Network unreachable (os error 101)"),
            "network unreachable"
        );
    }

    #[test]
    fn broker_errors_show_the_brokers_message() {
        let err = ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            message: "topic t does not exist".into(),
        };
        assert_eq!(explain(&err), "topic t does not exist");
        let bare = ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            message: String::new(),
        };
        assert_eq!(explain(&bare), "the topic does not exist");
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let err = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let failure = anyhow::Error::new(err).context("writing to stdout");
        assert!(is_closed_stdout(&failure));
        assert!(!is_closed_stdout(&anyhow::anyhow!("other")));
    }
}
