//! Policy state across a hot swap: [`save`] in `snapshot`, [`load`] in
//! `restore`. The encoding is postcard, compact and schema-less, so a new
//! version that changes its state type should version it (or accept a
//! failed [`load`] and start fresh).

use serde::{de::DeserializeOwned, Serialize};

/// Encode `value` for `LoadBalancer::snapshot` (the `lb` seam).
pub fn save<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode what [`save`] wrote, for `LoadBalancer::restore` (the `lb` seam).
pub fn load<T: DeserializeOwned>(state: &[u8]) -> Result<T, String> {
    postcard::from_bytes(state).map_err(|e| format!("cannot decode the previous version's state: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let v: (u64, Vec<i64>) = (7, vec![-1, 2]);
        assert_eq!(super::load::<(u64, Vec<i64>)>(&super::save(&v)).unwrap(), v);
        assert!(super::load::<u64>(&[]).is_err());
    }
}
