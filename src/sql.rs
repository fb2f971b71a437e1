//! pgboot's own queries, sent with the simple query protocol.
//!
//! Needs an open connection. Returns rows or values, or the `sqlx::Error`
//! for `failure::classify`. sqlx's `query()` prepares a *named* statement
//! (`sqlx_s_1`, …) on the server, and with a parameter it needs two round
//! trips; behind a transaction-pooling `PgBouncer` the next client, or the
//! next round trip, lands on another server connection, and the statement
//! "already exists" or "does not exist". A simple `Query` message is one
//! round trip with nothing left on the server, so pgboot's own checks work
//! through any pooler, in any mode. Values are inlined as literals by
//! [`lit`] (strings) or formatted (integers): none comes from outside
//! without passing through [`lit`].

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Decode, Postgres, Row, Type};

/// `s` as a SQL string literal (an escape string, so the result does not
/// depend on `standard_conforming_strings`).
#[must_use]
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            // Postgres text cannot hold NUL; dropping it keeps the literal valid.
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Runs `sql`; returns every row of its result.
///
/// # Errors
/// The server's or the connection's error.
pub async fn rows(conn: &mut PgConnection, sql: &str) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(conn)
        .await
}

/// Runs `sql`; returns its first row, if any.
///
/// # Errors
/// The server's or the connection's error.
pub async fn row(conn: &mut PgConnection, sql: &str) -> Result<Option<PgRow>, sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_optional(conn)
        .await
}

/// Runs `sql`; returns the first column of its first row.
///
/// # Errors
/// The server's or the connection's error; `RowNotFound` when there is no row.
pub async fn scalar<T>(conn: &mut PgConnection, sql: &str) -> Result<T, sqlx::Error>
where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres>,
{
    row(conn, sql)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?
        .try_get(0)
}

/// Runs `sql` for its effect.
///
/// # Errors
/// The server's or the connection's error.
pub async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::lit;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(lit("pgboot"), "E'pgboot'");
        assert_eq!(lit("it's"), "E'it''s'");
        assert_eq!(lit(r"a\'; DROP TABLE t; --"), r"E'a\\''; DROP TABLE t; --'");
        assert_eq!(lit("a\0b"), "E'ab'");
        assert_eq!(lit(""), "E''");
    }
}
