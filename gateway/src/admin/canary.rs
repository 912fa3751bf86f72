//! The query of `PUT /plugins/NAME?canary=P`: the share, and the automatic
//! decision's window and thresholds (any of them turns it on).

use crate::wasm::canary::Auto;

/// `canary=P` (1..=99 % of keys), `window=N` (canary calls before the
/// verdict), `max_fault_points=F`, `max_p99_ratio=R`, `max_error_points=E`.
pub fn query(query: Option<&str>) -> Result<Option<(u32, Option<Auto>)>, String> {
    let mut percent = None;
    let mut auto = Auto::default();
    let mut judged = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = |what: &str| format!("query parameter {k}={v:?}: {what}");
        match &*k {
            "canary" => percent = Some(v.parse::<u32>().ok().filter(|p| (1..=99).contains(p)).ok_or_else(|| bad("a whole percent from 1 to 99"))?),
            "window" => auto.window = v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| bad("a number of calls, at least 1"))?,
            "max_fault_points" => auto.max_fault_points = v.parse::<f64>().ok().filter(|f| (0.0..=100.0).contains(f)).ok_or_else(|| bad("percentage points from 0 to 100"))?,
            "max_p99_ratio" => auto.max_p99_ratio = v.parse::<f64>().ok().filter(|r| *r >= 1.0).ok_or_else(|| bad("a ratio, at least 1"))?,
            "max_error_points" => auto.max_error_points = v.parse::<f64>().ok().filter(|f| (0.0..=100.0).contains(f)).ok_or_else(|| bad("percentage points from 0 to 100"))?,
            _ => continue,
        }
        judged |= k != "canary";
    }
    match percent {
        None if judged => Err("window, max_fault_points, max_p99_ratio and max_error_points judge a canary: add canary=PERCENT".into()),
        None => Ok(None),
        Some(p) => Ok(Some((p, judged.then_some(auto)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_query_is_read_and_bad_values_are_named() {
        assert_eq!(query(None).unwrap(), None);
        assert_eq!(query(Some("config=%7B%7D")).unwrap(), None);
        assert_eq!(query(Some("canary=20")).unwrap(), Some((20, None)));
        let (p, auto) = query(Some("canary=5&window=50&max_p99_ratio=1.5")).unwrap().unwrap();
        assert_eq!((p, auto.unwrap().window, auto.unwrap().max_p99_ratio), (5, 50, 1.5));
        assert!(query(Some("canary=0")).unwrap_err().contains("canary=\"0\""));
        assert!(query(Some("canary=100")).is_err());
        assert!(query(Some("window=10")).unwrap_err().contains("add canary=PERCENT"));
        assert!(query(Some("canary=10&window=x")).unwrap_err().contains("window"));
        let (_, auto) = query(Some("canary=5&max_error_points=0.5")).unwrap().unwrap();
        assert_eq!(auto.unwrap().max_error_points, 0.5);
        assert!(query(Some("canary=5&max_error_points=101")).unwrap_err().contains("max_error_points"));
    }
}
