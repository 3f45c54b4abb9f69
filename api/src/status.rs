//! The states of things, as the API and the database spell them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The name on the wire and in the database.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownStatus(other.to_owned())),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // Stored as `text`, typed as `text` outright: a type named by
        // `#[sqlx(type_name = "text")]` is looked up by name on each new
        // connection before its first bind.
        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

/// A status text no variant spells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl std::fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown status {:?}", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

// Variants are spelled as on the wire in SCREAMING_SNAKE_CASE; `as_str`
// repeats the spelling, and a test checks the two agree.
text_enum! {
    /// Where an accepted request stands.
    RequestStatus {
        /// Accepted, not yet applied.
        Pending = "PENDING",
        /// Applied; `result` says what it did.
        Succeeded = "SUCCEEDED",
        /// Refused by a business rule (`error.code`); nothing changed.
        Rejected = "REJECTED",
        /// Could not be applied (`error.code`); nothing changed.
        Failed = "FAILED",
    }
}

text_enum! {
    /// A reservation's state.
    ReservationStatus {
        /// Held, waiting for payment until `expires_at`.
        Pending = "PENDING",
        /// Paid.
        Confirmed = "CONFIRMED",
        /// Cancelled by its user.
        Cancelled = "CANCELLED",
        /// Not paid in time; the seat went back on sale.
        Expired = "EXPIRED",
    }
}

text_enum! {
    /// A seat's state on a schedule.
    SeatStatus {
        /// On sale.
        Available = "AVAILABLE",
        /// Held by someone, not yet paid.
        Held = "HELD",
        /// Sold.
        Reserved = "RESERVED",
    }
}

text_enum! {
    /// A place in the waiting queue.
    QueueStatus {
        /// In line; `position` says where.
        Waiting = "WAITING",
        /// Admitted: may hold and pay until `active_until`.
        Active = "ACTIVE",
        /// Its time ran out.
        Expired = "EXPIRED",
        /// Used: the reservation it admitted was paid.
        Processed = "PROCESSED",
    }
}

text_enum! {
    /// A payment's state.
    PaymentStatus {
        /// Being paid.
        Pending = "PENDING",
        /// Paid.
        Success = "SUCCESS",
        /// Failed.
        Failed = "FAILED",
        /// Paid back.
        Refunded = "REFUNDED",
    }
}

text_enum! {
    /// How a payment was made.
    PaymentMethod {
        /// From the user's balance.
        Balance = "BALANCE",
        /// By card.
        Card = "CARD",
    }
}

text_enum! {
    /// How a balance changed.
    BalanceChange {
        /// Money added by the user.
        Charge = "CHARGE",
        /// Money spent on a payment.
        Use = "USE",
        /// Money returned by a cancelled payment.
        Refund = "REFUND",
    }
}

text_enum! {
    /// An order's state.
    OrderStatus {
        /// Placed, not yet paid.
        PendingPayment = "PENDING_PAYMENT",
        /// Paid.
        Paid = "PAID",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_wire_spelling() {
        fn check<T: Serialize + Copy + std::fmt::Display>(values: &[T]) {
            for value in values {
                let wire = serde_json::to_value(value).expect("serialize");
                assert_eq!(wire, serde_json::Value::String(value.to_string()));
            }
        }
        fn parses<T: std::str::FromStr + PartialEq + std::fmt::Debug + std::fmt::Display>(
            values: &[T],
        ) {
            for value in values {
                assert_eq!(value.to_string().parse::<T>().ok().as_ref(), Some(value));
            }
        }
        use RequestStatus as R;
        check(&[R::Pending, R::Succeeded, R::Rejected, R::Failed]);
        use ReservationStatus as V;
        check(&[V::Pending, V::Confirmed, V::Cancelled, V::Expired]);
        check(&[
            SeatStatus::Available,
            SeatStatus::Held,
            SeatStatus::Reserved,
        ]);
        use QueueStatus as Q;
        check(&[Q::Waiting, Q::Active, Q::Expired, Q::Processed]);
        use PaymentStatus as P;
        check(&[P::Pending, P::Success, P::Failed, P::Refunded]);
        check(&[PaymentMethod::Balance, PaymentMethod::Card]);
        use BalanceChange as B;
        check(&[B::Charge, B::Use, B::Refund]);
        check(&[OrderStatus::PendingPayment, OrderStatus::Paid]);
        parses(&[OrderStatus::PendingPayment, OrderStatus::Paid]);
        parses(&[V::Pending, V::Confirmed, V::Cancelled, V::Expired]);
        assert!("pending".parse::<RequestStatus>().is_err());
    }
}
