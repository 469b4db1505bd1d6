//! Sequences read from untrusted files with a bound on their length, checked while they are
//! read: a crafted snapshot state cannot make fennec allocate more than the bound's worth, even
//! where a few bytes of JSON (`[]`) become a large fixed-size structure.
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct State {
//!     #[serde(deserialize_with = "at_most_3")]
//!     chips: Vec<u32>,
//! }
//! fn at_most_3<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
//!     fennec_devices::bounded::vec(d, 3)
//! }
//! assert!(serde_json::from_str::<State>(r#"{"chips": [1, 2, 3]}"#).is_ok());
//! assert!(serde_json::from_str::<State>(r#"{"chips": [1, 2, 3, 4]}"#).is_err());
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// A sequence of at most `max` elements, refused at the first element past it.
pub fn vec<'de, D, T>(deserializer: D, max: usize) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        element: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {} elements", self.max)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(element) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(A::Error::custom(format!(
                        "more than {} elements where at most {} may be",
                        self.max, self.max
                    )));
                }
                out.push(element);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Bounded {
        max,
        element: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u64; 32]>, D::Error> {
        vec(d, 2)
    }

    #[derive(serde::Deserialize)]
    struct Big {
        #[serde(deserialize_with = "two")]
        #[allow(dead_code)]
        blocks: Vec<[u64; 32]>,
    }

    #[test]
    fn test_bounded_vec_refuses_the_element_past_the_bound_before_taking_it() {
        let zeros = format!("[{}]", vec!["0"; 32].join(","));
        let ok = format!(r#"{{"blocks": [{zeros}, {zeros}]}}"#);
        assert!(serde_json::from_str::<Big>(&ok).is_ok());
        let many = format!(r#"{{"blocks": [{}]}}"#, vec![zeros; 100_000].join(","));
        let e = serde_json::from_str::<Big>(&many)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at most 2"), "{e}");
    }
}
