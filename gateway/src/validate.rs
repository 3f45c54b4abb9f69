//! The rules a body must keep beyond its shape, one `Validate` per body
//! type, run by [`crate::extract::ApiJson`] before a handler sees the body.
//! The limits are `api::limits`; the OpenAPI schemas state the same numbers
//! (`gateway/tests/contract.rs` keeps them in step).

use api::limits::*;
use api::{concert, shop, users};

use crate::error::{ApiError, ApiResult};

/// A body's own rules.
pub trait Validate {
    /// Refuses a body that breaks a rule, naming the field.
    fn validate(&self) -> ApiResult<()>;
}

/// Checks a text field: at most `max` characters as sent, no control
/// character (400 `INVALID_TEXT`), not blank once trimmed. Returns it
/// trimmed.
pub fn text<'a>(field: &str, value: &'a str, max: usize) -> ApiResult<&'a str> {
    no_controls(field, value)?;
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(field, "must not be blank"));
    }
    Ok(trimmed)
}

/// Refuses a control character (U+0000 to U+001F, U+007F) in a text
/// field with 400 `INVALID_TEXT`.
fn no_controls(field: &str, value: &str) -> ApiResult<()> {
    if value.chars().any(|c| c.is_ascii_control()) {
        return Err(ApiError::InvalidText {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// Checks `value` is within `range`.
pub fn within<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> ApiResult<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be {} to {}", range.start(), range.end()),
        ))
    }
}

/// Checks a list holds a number of entries within `count`, then each
/// entry with `entry`, which is given the entry's own field name
/// (`items[1]`).
fn each<'a, T>(
    field: &str,
    list: &'a [T],
    count: std::ops::RangeInclusive<usize>,
    mut entry: impl FnMut(&str, &'a T) -> ApiResult<()>,
) -> ApiResult<()> {
    within(field, list.len(), count)?;
    for (i, item) in list.iter().enumerate() {
        entry(&format!("{field}[{i}]"), item)?;
    }
    Ok(())
}

/// Checks an id is positive.
pub fn id(field: &str, value: i64) -> ApiResult<()> {
    if value > 0 {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be positive"))
    }
}

/// The form an email is stored, compared and limited in: lowercased, then
/// in Unicode normalisation form C. Addresses that differ only in case or
/// in normalisation are one account, and the length limit holds for what
/// is stored (lowercasing can lengthen a text: `İ` becomes `i̇`).
pub fn email_key(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    email.to_lowercase().nfc().collect()
}

/// Whether `email` has the shape the schema states: one `@`, a non-empty
/// local part, a domain with a dot inside it, no spaces or controls.
fn email_well_formed(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let plain = |part: &str| {
        !part.is_empty()
            && !part
                .chars()
                .any(|c| c == '@' || c.is_whitespace() || c == '\u{feff}' || c.is_control())
    };
    plain(local)
        && plain(domain)
        && domain
            .char_indices()
            .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
}

impl Validate for users::NewUser {
    fn validate(&self) -> ApiResult<()> {
        text("name", &self.name, MAX_NAME_CHARS)?;
        no_controls("email", &self.email)?;
        let email = email_key(&self.email);
        if email.chars().count() > MAX_EMAIL_BYTES || !email_well_formed(&email) {
            return Err(ApiError::invalid(
                "email",
                format!("must be an email address of at most {MAX_EMAIL_BYTES} characters"),
            ));
        }
        password(&self.password, MIN_PASSWORD_CHARS)
    }
}

/// A password of `min` to [`MAX_PASSWORD_CHARS`] characters; any
/// characters but control ones (a password is never trimmed).
fn password(value: &str, min: usize) -> ApiResult<()> {
    no_controls("password", value)?;
    let chars = value.chars().count();
    if chars < min || chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!("must be {min} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Validate for users::Login {
    fn validate(&self) -> ApiResult<()> {
        no_controls("email", &self.email)?;
        if email_key(&self.email).chars().count() > MAX_EMAIL_BYTES {
            return Err(ApiError::invalid(
                "email",
                format!("must be at most {MAX_EMAIL_BYTES} characters"),
            ));
        }
        // Any length up to the limit: a login with a password too short to
        // sign up with is just a wrong one.
        password(&self.password, 0)
    }
}

impl Validate for users::Charge {
    fn validate(&self) -> ApiResult<()> {
        within("amount", self.amount, 1..=MAX_CHARGE_AMOUNT)
    }
}

impl Validate for concert::NewConcert {
    fn validate(&self) -> ApiResult<()> {
        text("title", &self.title, MAX_TITLE_CHARS)?;
        each(
            "schedules",
            &self.schedules,
            1..=MAX_SCHEDULES,
            |at, schedule| {
                within(
                    &format!("{at}.seat_count"),
                    schedule.seat_count,
                    1..=MAX_SEATS_PER_SCHEDULE,
                )?;
                within(&format!("{at}.price"), schedule.price, 1..=MAX_PRICE)
            },
        )
    }
}

impl Validate for concert::JoinQueue {
    fn validate(&self) -> ApiResult<()> {
        id("schedule_id", self.schedule_id)
    }
}

impl Validate for concert::HoldSeat {
    fn validate(&self) -> ApiResult<()> {
        id("seat_id", self.seat_id)
    }
}

impl Validate for concert::PayReservation {
    fn validate(&self) -> ApiResult<()> {
        id("reservation_id", self.reservation_id)
    }
}

impl Validate for shop::NewProduct {
    fn validate(&self) -> ApiResult<()> {
        text("name", &self.name, MAX_PRODUCT_NAME_CHARS)?;
        text("category", &self.category, MAX_CATEGORY_CHARS)?;
        within("price", self.price, 0..=MAX_PRICE)?;
        let mut sizes = std::collections::HashSet::new();
        each("stocks", &self.stocks, 1..=MAX_SIZES, |at, stock| {
            let size = text(&format!("{at}.size"), &stock.size, MAX_SIZE_CHARS)?;
            if !sizes.insert(size) {
                return Err(ApiError::invalid(
                    format!("{at}.size"),
                    "sizes must be distinct",
                ));
            }
            within(
                &format!("{at}.quantity"),
                stock.quantity,
                0..=MAX_STOCK_QUANTITY,
            )
        })
    }
}

impl Validate for shop::SetQuantity {
    fn validate(&self) -> ApiResult<()> {
        within("quantity", self.quantity, 1..=MAX_ITEM_QUANTITY)
    }
}

impl Validate for shop::PlaceOrder {
    fn validate(&self) -> ApiResult<()> {
        each("items", &self.items, 1..=MAX_ORDER_ITEMS, |at, line| {
            id(&format!("{at}.product_stock_id"), line.product_stock_id)?;
            within(
                &format!("{at}.quantity"),
                line.quantity,
                1..=MAX_ITEM_QUANTITY,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_controls_blanks_and_long_values() {
        assert_eq!(text("f", "  a b  ", 10).ok(), Some("a b"));
        assert!(matches!(
            text("f", "a\u{7}b", 10),
            Err(ApiError::InvalidText { .. })
        ));
        assert!(matches!(
            text("f", "a\nb", 10),
            Err(ApiError::InvalidText { .. })
        ));
        assert!(matches!(
            text("f", "   ", 10),
            Err(ApiError::Validation { .. })
        ));
        // Counted as sent: spaces that trimming would drop count too.
        assert!(text("f", &format!("{} ", "x".repeat(10)), 10).is_err());
        assert!(text("f", &"한".repeat(10), 10).is_ok());
    }

    #[test]
    fn emails_are_checked_as_the_schema_states() {
        for good in ["a@b.co", "A.B+c@x.y.z", "a@.b.c"] {
            assert!(email_well_formed(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.co",
            "a@.co",
            "a@b.",
            "a@.",
            "a b@c.de",
            "a@b@c.de",
            "a@b.c\u{feff}",
            "a\u{9a}@b.co",
            "a@b.c\u{85}",
        ] {
            assert!(!email_well_formed(bad), "{bad}");
        }
    }
}
