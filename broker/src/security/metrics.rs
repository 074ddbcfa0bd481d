//! The security metrics (their `# HELP` lines are registered by
//! [`describe`], called from [`crate::metrics`]):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pigeon_tls_handshake_failures_total` | counter (handshakes that failed, timed out, or met a client not speaking TLS) | |
//! | `pigeon_tls_reloads_total` | counter (certificate reloads at SIGHUP) | `result` (`ok`, `failed`) |
//! | `pigeon_audit_records_total` | counter (records appended to `__audit`) | |
//! | `pigeon_audit_dropped_total` | counter (records lost: queue full, or the append failed) | |

use metrics::counter;

/// A TLS handshake failed (or a plain client was refused).
pub fn tls_handshake_failed() {
    counter!("pigeon_tls_handshake_failures_total").increment(1);
}

/// A SIGHUP reload of the TLS files ended.
pub fn tls_reloaded(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("pigeon_tls_reloads_total", "result" => result).increment(1);
}

/// Records appended to the audit trail.
pub fn audit_written(records: u64) {
    counter!("pigeon_audit_records_total").increment(records);
}

/// Audit records lost.
pub fn audit_dropped(records: u64) {
    counter!("pigeon_audit_dropped_total").increment(records);
}

/// Registers the `# HELP` text of the security metrics.
pub fn describe() {
    use metrics::describe_counter;
    describe_counter!(
        "pigeon_tls_handshake_failures_total",
        "TLS handshakes that failed, timed out, or met a client not speaking TLS."
    );
    describe_counter!(
        "pigeon_tls_reloads_total",
        "Reloads of the TLS certificate, key and client CA at SIGHUP, by result."
    );
    describe_counter!(
        "pigeon_audit_records_total",
        "Records appended to the audit trail (__audit)."
    );
    describe_counter!(
        "pigeon_audit_dropped_total",
        "Audit records lost (the queue was full, or the append failed)."
    );
}
