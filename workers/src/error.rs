//! The workers' error type: what went wrong while applying a batch, sorted
//! by what the engine must do about it.

use platform::db::ErrorClass;

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
    /// Sorts database errors by `platform::db`'s SQLSTATE table: conflicts
    /// are retried at once, an unavailable database is waited out, data
    /// and integrity errors refuse the input, everything else is a bug.
    fn from(error: sqlx::Error) -> Self {
        match platform::db::classify(&error) {
            ErrorClass::Conflict => LaneError::Conflict(error.to_string()),
            ErrorClass::Unavailable => LaneError::Transient(Box::new(error)),
            ErrorClass::Refused => LaneError::Refused(error),
            ErrorClass::Bug => LaneError::Bug(error.to_string()),
        }
    }
}

/// Result of a lane step.
pub type LaneResult<T> = Result<T, LaneError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlstate_table_sorts_conflicts_outages_refusals_and_bugs() {
        use platform::db::classify_sqlstate as class;
        for (code, expected) in [
            ("40001", ErrorClass::Conflict),
            ("40P01", ErrorClass::Conflict),
            ("55P03", ErrorClass::Conflict),
            ("55000", ErrorClass::Bug),
            ("08006", ErrorClass::Unavailable),
            ("53300", ErrorClass::Unavailable),
            ("57P01", ErrorClass::Unavailable),
            ("58030", ErrorClass::Unavailable),
            ("22003", ErrorClass::Refused),
            ("23505", ErrorClass::Refused),
            ("42601", ErrorClass::Bug),
            ("", ErrorClass::Bug),
        ] {
            assert_eq!(class(code), expected, "{code}");
        }
    }

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
