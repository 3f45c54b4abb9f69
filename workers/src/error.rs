//! The workers' error type: what went wrong while applying a batch, sorted
//! by what the engine must do about it.

/// Why a lane step failed.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The database is unreachable, restarting or out of resources: back
    /// off and retry without advancing anything.
    #[error("unavailable: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another transaction got in the way (serialization failure,
    /// deadlock, a request decided concurrently): retry the batch at once.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database refused this input (a constraint or a value out of
    /// range): retrying fails the same way, so the record at fault is
    /// isolated, recorded FAILED and dead-lettered.
    #[error("refused by the database: {0}")]
    Refused(#[source] sqlx::Error),
    /// A rule of the code itself is broken (a lane changed a balance it
    /// had not locked, a statement is malformed, a row it needs is
    /// missing): a bug. The record is isolated, recorded FAILED and
    /// dead-lettered, so one bug never stalls a partition.
    #[error("bug: {0}")]
    Bug(String),
}

/// What the engine does about a [`LaneError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Retry the batch after a short jittered wait.
    Retry,
    /// Back off (100 ms to 5 s) and retry; nothing advances meanwhile.
    BackOff,
    /// Apply the batch record by record; the record at fault is FAILED.
    Isolate,
}

impl LaneError {
    /// What to do about it.
    pub fn remedy(&self) -> Remedy {
        match self {
            LaneError::Transient(_) => Remedy::BackOff,
            LaneError::Conflict(_) => Remedy::Retry,
            LaneError::Refused(_) | LaneError::Bug(_) => Remedy::Isolate,
        }
    }

    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LaneError::Transient(_) => "transient",
            LaneError::Conflict(_) => "conflict",
            LaneError::Refused(_) => "refused",
            LaneError::Bug(_) => "bug",
        }
    }
}

impl From<sqlx::Error> for LaneError {
    /// Sorts database errors: SQLSTATE 40001/40P01/55P03 are conflicts;
    /// classes 08 (connection), 53 (resources), 57 (operator intervention)
    /// and 58 (system) and every client-side connection failure are
    /// transient; classes 22 (data) and 23 (integrity) are refusals of the
    /// input; everything else (syntax, undefined objects, decoding a
    /// column, a missing row) is a bug.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    "40001" | "40P01" | "55P03" => LaneError::Conflict(error.to_string()),
                    c if ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p)) => {
                        LaneError::Transient(Box::new(error))
                    }
                    c if c.starts_with("22") || c.starts_with("23") => LaneError::Refused(error),
                    _ => LaneError::Bug(error.to_string()),
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => LaneError::Transient(Box::new(error)),
            _ => LaneError::Bug(error.to_string()),
        }
    }
}

/// Result of a lane step.
pub type LaneResult<T> = Result<T, LaneError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_side_failures_are_transient_and_decoding_is_a_bug() {
        let io = sqlx::Error::Io(std::io::Error::other("reset"));
        assert_eq!(LaneError::from(io).remedy(), Remedy::BackOff);
        assert_eq!(
            LaneError::from(sqlx::Error::PoolTimedOut).remedy(),
            Remedy::BackOff
        );
        assert_eq!(
            LaneError::from(sqlx::Error::RowNotFound).remedy(),
            Remedy::Isolate
        );
        assert_eq!(LaneError::Bug("x".into()).kind(), "bug");
    }
}
