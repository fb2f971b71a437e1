//! Classification: every database error pgboot meets goes through [`classify`],
//! which says what kind of failure it is; the exit code follows from the kind,
//! never from the phase in which it happened.
//!
//! Needs a `sqlx::Error`. Returns a [`Failure`]: `Refused` and `Transient`
//! (Postgres or its network is coming up, going down or restarting: wait and
//! try again), `Fatal` (no wait can fix it: exit 78). A migration's own SQL
//! error is not classified here: `migrate.rs` tells it apart (exit 65) after
//! asking [`classify`] whether the connection itself was lost.
//!
//! See CONTRACT.md, "Waiting": "One cause, one exit code".

use crate::error::Error;

/// What to do about a failed database operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens yet (connection refused, no socket file): transient,
    /// and so cheap to try that the wait polls it quickly at first, which is
    /// what lets pgboot notice a starting Postgres within ~100 ms.
    Refused(String),
    /// Worth another try: the connection was lost, the server is starting,
    /// shutting down or restarting, or it is out of connection slots.
    Transient(String),
    /// No wait can fix it: authentication, no such database, no privilege,
    /// TLS, a malformed URL, a pooler that rejects the protocol.
    Fatal(String),
}

impl Failure {
    /// The message, fit to show (the caller still redacts it).
    #[must_use]
    pub fn text(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Transient(m) | Failure::Fatal(m) => m,
        }
    }

    /// Whether Postgres itself gave this answer (an error with a SQLSTATE),
    /// as opposed to silence, a refused or reset connection, or a local
    /// failure: [`classify`] renders every database error with its SQLSTATE.
    #[must_use]
    pub fn answered_by_server(&self) -> bool {
        self.text().contains("(SQLSTATE ")
    }

    /// Whether waiting may fix it.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        !matches!(self, Failure::Fatal(_))
    }

    /// The error for a failure met `what`-ing after the first `SELECT 1`: a
    /// transient one is a lost connection (boot goes back to waiting), a fatal
    /// one exits 78.
    #[must_use]
    pub fn into_error(self, what: &str) -> Error {
        match self {
            Failure::Refused(m) | Failure::Transient(m) => Error::Lost(format!("{what}: {m}")),
            Failure::Fatal(m) => Error::Config(format!("{what}: {m}")),
        }
    }
}

/// How a SQLSTATE is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sqlstate {
    /// The connection or the server went away, or is not there yet.
    Transient,
    /// Authentication, no such database, no privilege, a pooler's protocol error.
    Fatal,
    /// Anything else: the statement's own error (a migration's, in practice).
    Statement,
}

/// Sorts a SQLSTATE. Class 08 (connection exception) is transient except
/// 08P01, a protocol violation: what `PgBouncer` answers to a startup packet it
/// rejects, and no wait fixes that.
#[must_use]
pub fn sqlstate(code: &str) -> Sqlstate {
    match code {
        "28P01" | "28000" | "3D000" | "42501" | "08P01" => Sqlstate::Fatal,
        // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect
        // now (starting up, shutting down, recovery), 57P05 idle session
        // timeout; 53300 too many connections, 53400 configuration limit.
        "57P01" | "57P02" | "57P03" | "57P05" | "53300" | "53400" => Sqlstate::Transient,
        c if c.starts_with("08") => Sqlstate::Transient,
        _ => Sqlstate::Statement,
    }
}

/// The rustls error inside `e`: sqlx hands a failed handshake back as an
/// `Io` error wrapping rustls's (rustls's `complete_io` makes every TLS
/// error an `InvalidData` I/O error), and some set-up failures as `Tls`.
fn rustls_error(e: &sqlx::Error) -> Option<&rustls::Error> {
    match e {
        sqlx::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        sqlx::Error::Tls(t) => t.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Whether `e` is a TLS failure (the caller adds which sslmode and files).
#[must_use]
pub fn is_tls(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Tls(_)) || rustls_error(e).is_some()
}

/// What a rustls error means to the user, naming the option to look at.
/// Every one is fatal: a certificate that does not verify today will not
/// verify in a second, and retrying it for the whole wait hides the cause.
fn tls_message(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "TLS: the server's certificate is not signed by a CA pgboot trusts ({e}); \
             set sslrootcert to the certificate of the CA that signed it"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "TLS: the server's certificate does not name the host pgboot connected to ({e}); \
             connect by a name the certificate holds, or use sslmode=verify-ca"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("TLS: the server's certificate has expired ({e}); renew it")
        }
        E::InvalidCertificate(_) => format!(
            "TLS: the server's certificate does not verify ({e}); check sslrootcert and the \
             server's certificate"
        ),
        E::AlertReceived(_) => format!(
            "TLS: the server rejected the handshake ({e}); check sslcert and sslkey (the \
             client certificate) and the server's ssl settings"
        ),
        _ => {
            format!("TLS: the handshake failed ({e}); check sslmode, sslrootcert, sslcert, sslkey")
        }
    }
}

/// Sorts a sqlx error, with a message fit to show.
#[must_use]
pub fn classify(e: &sqlx::Error) -> Failure {
    if let Some(tls) = rustls_error(e) {
        return Failure::Fatal(tls_message(tls));
    }
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = format!("{} (SQLSTATE {code})", db.message());
            match (sqlstate(&code), code.as_str()) {
                (_, "28P01" | "28000") => Failure::Fatal(format!(
                    "authentication failed: {msg}; check the user and password"
                )),
                (_, "3D000") => Failure::Fatal(format!(
                    "{msg}; create the database or fix the database name"
                )),
                (_, "42501") => Failure::Fatal(format!(
                    "{msg}; grant the role CONNECT (or the missing privilege)"
                )),
                (_, "08P01") => Failure::Fatal(format!(
                    "{msg}: the server, or a pooler such as PgBouncer in front of it, \
                     rejected pgboot's protocol; if it is PgBouncer, point \
                     --migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL) at Postgres directly"
                )),
                (Sqlstate::Transient, _) => Failure::Transient(msg),
                // The server refused the connection or a statement pgboot
                // itself runs: no wait changes that.
                _ => Failure::Fatal(msg),
            }
        }
        sqlx::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Failure::Refused(io.to_string())
        }
        sqlx::Error::Io(io) => Failure::Transient(io.to_string()),
        sqlx::Error::Tls(t) => Failure::Fatal(format!(
            "TLS: {t}; check sslmode, sslrootcert, sslcert and sslkey"
        )),
        sqlx::Error::Configuration(c) => Failure::Fatal(format!("configuration: {c}")),
        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            Failure::Transient("timed out".into())
        }
        // sqlx reports a connection closed mid-message (the server went
        // away between two messages) as a protocol error.
        sqlx::Error::Protocol(p) => Failure::Transient(format!("protocol: {p}")),
        other => Failure::Fatal(other.to_string()),
    }
}

/// Whether `e` means the connection itself is gone (or going), as opposed to
/// the statement failing on a healthy connection.
#[must_use]
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            sqlstate(&db.code().map(|c| c.to_string()).unwrap_or_default()) == Sqlstate::Transient
        }
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// The error for a database failure met `what`-ing after the first `SELECT 1`.
#[must_use]
pub fn db_error(what: &str, e: &sqlx::Error) -> Error {
    classify(e).into_error(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;
    use std::io::{Error as IoError, ErrorKind};

    fn io(k: ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(IoError::from(k))
    }

    #[test]
    fn every_sqlstate_class_has_its_treatment() {
        let table = [
            ("28P01", Sqlstate::Fatal),
            ("28000", Sqlstate::Fatal),
            ("3D000", Sqlstate::Fatal),
            ("42501", Sqlstate::Fatal),
            ("08P01", Sqlstate::Fatal),
            ("08006", Sqlstate::Transient),
            ("08001", Sqlstate::Transient),
            ("08003", Sqlstate::Transient),
            ("57P01", Sqlstate::Transient),
            ("57P02", Sqlstate::Transient),
            ("57P03", Sqlstate::Transient),
            ("53300", Sqlstate::Transient),
            ("53400", Sqlstate::Transient),
            ("42P07", Sqlstate::Statement),
            ("23505", Sqlstate::Statement),
            ("55P03", Sqlstate::Statement),
            ("40P01", Sqlstate::Statement),
            ("42601", Sqlstate::Statement),
            ("57014", Sqlstate::Statement),
            ("", Sqlstate::Statement),
        ];
        for (code, want) in table {
            assert_eq!(sqlstate(code), want, "{code}");
        }
    }

    #[test]
    fn io_errors_are_refused_or_transient_and_lose_the_connection() {
        for (kind, refused) in [
            (ErrorKind::ConnectionRefused, true),
            (ErrorKind::NotFound, true),
            (ErrorKind::ConnectionReset, false),
            (ErrorKind::ConnectionAborted, false),
            (ErrorKind::BrokenPipe, false),
            (ErrorKind::UnexpectedEof, false),
            (ErrorKind::TimedOut, false),
        ] {
            let e = io(kind);
            let f = classify(&e);
            assert_eq!(matches!(f, Failure::Refused(_)), refused, "{kind:?}");
            assert!(f.is_transient(), "{kind:?}");
            assert!(connection_lost(&e), "{kind:?}");
        }
    }

    #[test]
    fn tls_configuration_and_protocol_errors() {
        assert!(!classify(&sqlx::Error::Tls("bad certificate".into())).is_transient());
        assert!(!classify(&sqlx::Error::Configuration("bad".into())).is_transient());
        assert!(!connection_lost(&sqlx::Error::Tls("x".into())));
        let eof = sqlx::Error::Protocol("unexpected EOF".into());
        assert!(classify(&eof).is_transient());
        assert!(connection_lost(&eof));
    }

    #[test]
    fn rustls_failures_are_fatal_and_name_the_option() {
        use rustls::{CertificateError as C, Error as E};
        let wrapped = |e: E| sqlx::Error::Io(IoError::new(ErrorKind::InvalidData, e));
        for (err, fragment) in [
            (E::InvalidCertificate(C::UnknownIssuer), "sslrootcert"),
            (E::InvalidCertificate(C::NotValidForName), "verify-ca"),
            (E::InvalidCertificate(C::Expired), "expired"),
            (E::InvalidCertificate(C::BadSignature), "sslrootcert"),
            (
                E::AlertReceived(rustls::AlertDescription::UnknownCA),
                "sslcert",
            ),
            (E::HandshakeNotComplete, "sslmode"),
        ] {
            let e = wrapped(err);
            assert!(is_tls(&e));
            match classify(&e) {
                Failure::Fatal(m) => assert!(m.starts_with("TLS: ") && m.contains(fragment), "{m}"),
                f => panic!("{f:?} should be fatal"),
            }
        }
        // An I/O error that is not TLS stays what it was.
        assert!(!is_tls(&io(ErrorKind::ConnectionReset)));
        assert!(classify(&io(ErrorKind::InvalidData)).is_transient());
    }

    #[test]
    fn the_exit_code_follows_from_the_class_whatever_the_phase() {
        for what in [
            "reading the migration table",
            "trying the advisory lock",
            "creating _sqlx_migrations",
        ] {
            assert_eq!(
                db_error(what, &io(ErrorKind::ConnectionReset)).exit(),
                Exit::Unavailable
            );
            assert_eq!(
                Failure::Fatal("x".into()).into_error(what).exit(),
                Exit::Config
            );
        }
    }
}
