//! The KV version 2 store: secrets by path, each a list of versions, read
//! as `GET /v1/<mount>/data/<path>[?version=N]` answers.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Secrets by path under the mount (`team-a/app`).
#[derive(Default)]
pub(super) struct KvStore {
    secrets: BTreeMap<String, Vec<Version>>,
}

struct Version {
    data: Value,
    created_time: String,
}

/// What a read asked for that the store cannot give.
pub(super) enum Missing {
    /// No such path, or no such version: Vault's 404 `{"errors":[]}`.
    NotFound,
    /// `?version=` that is not a number.
    BadVersion,
}

impl KvStore {
    /// Writes `data` (a JSON object) as the path's next version.
    pub(super) fn put(&mut self, path: &str, data: Value) {
        assert!(
            data.is_object(),
            "a KV v2 secret is a JSON object of keys (at {path})"
        );
        self.secrets
            .entry(path.to_string())
            .or_default()
            .push(Version {
                data,
                created_time: rfc3339_now(),
            });
    }

    /// Removes the path and all its versions (`vault kv metadata delete`).
    pub(super) fn delete(&mut self, path: &str) {
        self.secrets.remove(path);
    }

    /// The `data` of a read answer: `{"data": {...}, "metadata": {...}}`.
    /// `query` is the request's query string; `version=0` or none is the
    /// latest, as in Vault.
    pub(super) fn read(&self, path: &str, query: Option<&str>) -> Result<Value, Missing> {
        let versions = self.secrets.get(path).ok_or(Missing::NotFound)?;
        let number = match requested_version(query)? {
            0 => versions.len(),
            n => usize::try_from(n).map_err(|_| Missing::NotFound)?,
        };
        let version = number
            .checked_sub(1)
            .and_then(|i| versions.get(i))
            .ok_or(Missing::NotFound)?;
        Ok(json!({
            "data": version.data,
            "metadata": {
                "created_time": version.created_time,
                "custom_metadata": null,
                "deletion_time": "",
                "destroyed": false,
                "version": number,
            }
        }))
    }
}

fn requested_version(query: Option<&str>) -> Result<u64, Missing> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("version="));
    match value {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| Missing::BadVersion),
    }
}

/// Now as Vault writes times: `2024-05-01T12:34:56.123456789Z`.
fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as Vault writes times.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let time = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        time / 3600,
        time / 60 % 60,
        time % 60,
        since.subsec_nanos()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_latest() {
        let mut kv = KvStore::default();
        kv.put("team-a/app", json!({"password": "one"}));
        kv.put("team-a/app", json!({"password": "two"}));
        let latest = kv.read("team-a/app", None).ok().unwrap();
        assert_eq!(latest["data"]["password"], "two");
        assert_eq!(latest["metadata"]["version"], 2);
        for q in ["version=0", "version=", "other=1"] {
            let r = kv.read("team-a/app", Some(q)).ok().unwrap();
            assert_eq!(r["metadata"]["version"], 2, "{q}");
        }
        let first = kv.read("team-a/app", Some("version=1")).ok().unwrap();
        assert_eq!(first["data"]["password"], "one");
        assert!(matches!(
            kv.read("team-a/app", Some("version=3")),
            Err(Missing::NotFound)
        ));
        assert!(matches!(
            kv.read("team-a/app", Some("version=x")),
            Err(Missing::BadVersion)
        ));
        assert!(matches!(
            kv.read("team-a/other", None),
            Err(Missing::NotFound)
        ));
        kv.delete("team-a/app");
        assert!(matches!(
            kv.read("team-a/app", None),
            Err(Missing::NotFound)
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        let now = rfc3339_now();
        assert_eq!(now.len(), "2024-05-01T12:34:56.123456789Z".len(), "{now}");
    }
}
