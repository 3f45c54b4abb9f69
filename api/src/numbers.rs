//! Integers as JSON Schema means them: `244` and `244.0` are the same
//! integer, so a body field typed `integer` takes both. serde alone refuses
//! `244.0` for an `i64`; body fields use [`whole`] with `deserialize_with`.
//! (Query parameters are text and parse as plain integers.)

use serde::de::{self, Deserializer, Visitor};

struct Whole<T>(std::marker::PhantomData<T>);

impl<'de, T> Visitor<'de> for Whole<T>
where
    T: TryFrom<i64> + TryFrom<u64>,
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Exactly representable whole numbers only: 2^53 and beyond are
        // refused rather than rounded.
        if v.fract() != 0.0 || !v.is_finite() || v.abs() >= 9_007_199_254_740_992.0 {
            return Err(E::custom(format!("{v} is not an integer")));
        }
        self.visit_i64(v as i64)
    }
}

/// Deserializes an integer written as `244` or `244.0`.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    deserializer.deserialize_any(Whole(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::whole")]
        n: i32,
    }

    fn n(json: &str) -> Result<i32, serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| b.n)
    }

    #[test]
    fn whole_numbers_in_either_spelling_are_integers() {
        assert_eq!(n(r#"{"n": 244}"#).ok(), Some(244));
        assert_eq!(n(r#"{"n": 244.0}"#).ok(), Some(244));
        assert_eq!(n(r#"{"n": -3e2}"#).ok(), Some(-300));
        assert!(n(r#"{"n": 244.5}"#).is_err());
        assert!(n(r#"{"n": 3000000000}"#).is_err());
        assert!(n(r#"{"n": 1e300}"#).is_err());
        assert!(n(r#"{"n": "244"}"#).is_err());
    }
}
