//! Canonical JSON fingerprints: key order and whitespace never matter,
//! values always do.

use http::Request;
use palisade::idempotency::{Fingerprint, FingerprintMode};
use proptest::prelude::*;

fn fingerprint(body: &str) -> Fingerprint {
    let (parts, ()) = Request::post("/orders").body(()).unwrap().into_parts();
    Fingerprint::compute(&parts, &[], body.as_bytes(), FingerprintMode::CanonicalJson)
}

/// Writes `entries` as a JSON object in the given order with `space`
/// between every token.
fn object(entries: &[(String, i64)], order: &[usize], space: &str) -> String {
    let members: Vec<String> = order
        .iter()
        .map(|&i| {
            let (k, v) = &entries[i];
            format!(
                "{space}{}{space}:{space}{v}{space}",
                serde_json::to_string(k).unwrap()
            )
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

fn entries() -> impl Strategy<Value = Vec<(String, i64)>> {
    prop::collection::btree_map("[a-z\u{e9}\"\\\\]{1,8}", any::<i64>(), 1..12)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint(
        entries in entries(),
        seed in any::<u64>(),
        space in prop::sample::select(vec!["", " ", "\n", "\t ", "  \r\n"]),
    ) {
        let sorted: Vec<usize> = (0..entries.len()).collect();
        let mut shuffled = sorted.clone();
        // A deterministic permutation from the seed.
        shuffled.sort_by_key(|i| (*i as u64).wrapping_mul(seed | 1).rotate_left((seed % 63) as u32));
        prop_assert_eq!(
            fingerprint(&object(&entries, &sorted, "")),
            fingerprint(&object(&entries, &shuffled, space))
        );
    }

    #[test]
    fn a_changed_value_changes_the_fingerprint(entries in entries(), which in any::<prop::sample::Index>(), delta in 1i64..1000) {
        let order: Vec<usize> = (0..entries.len()).collect();
        let mut changed = entries.clone();
        let i = which.index(changed.len());
        changed[i].1 = changed[i].1.wrapping_add(delta);
        prop_assert_ne!(fingerprint(&object(&entries, &order, "")), fingerprint(&object(&changed, &order, "")));
    }
}
