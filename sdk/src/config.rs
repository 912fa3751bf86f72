//! The plugin's `config` table, as the gateway passes it to `configure`.

use serde::de::DeserializeOwned;

/// The `[plugins.NAME.config]` table of the gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    value: serde_json::Value,
}

impl Config {
    /// Parse the JSON text the host sends; an empty text is an empty table.
    pub fn from_json(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self { value: serde_json::Value::Object(Default::default()) });
        }
        let value = serde_json::from_str(text).map_err(|e| format!("config is not valid JSON: {e}"))?;
        Ok(Self { value })
    }

    /// Deserialize the whole table into `T`. Use `#[serde(deny_unknown_fields)]`
    /// on `T` so a misspelt key is reported instead of ignored.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone()).map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// The raw JSON value.
    pub fn raw(&self) -> &serde_json::Value {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        vnodes: u32,
    }

    #[test]
    fn unknown_key_is_named() {
        let c = Config::from_json(r#"{"vnode": 3}"#).unwrap();
        let err = c.parse::<Conf>().unwrap_err();
        assert!(err.contains("vnode"), "{err}");
    }

    #[test]
    fn empty_text_is_empty_table() {
        let c = Config::from_json("").unwrap();
        assert!(c.raw().as_object().unwrap().is_empty());
    }
}
