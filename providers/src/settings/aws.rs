//! `type: aws`: regions, failover, endpoints and the profile.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::fields::{Obj, url};
use crate::error::Error;

pub(super) const AWS_KEYS: &[&str] = &[
    "region",
    "failoverRegion",
    "endpoints",
    "ssmEndpoints",
    "profile",
    "timeout",
    "cacheTtl",
    "podAuth",
];
pub(super) const AWS_POD_AUTH_KEYS: &[&str] = &["audience"];

/// The audience STS requires of a web identity token by default.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// `type: aws`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Primary region; without it the SDK's chain (`AWS_REGION`, profile) decides.
    pub region: Option<String>,
    /// Tried when the primary fails with a 5xx or a network error.
    pub failover_region: Option<String>,
    /// Secrets Manager's endpoint per region (local stacks, VPC endpoints).
    /// `AWS_ENDPOINT_URL` applies to every region where this map has no entry.
    pub endpoints: BTreeMap<String, String>,
    /// SSM Parameter Store's endpoint per region. A VPC endpoint serves one
    /// service, so Secrets Manager's are not reused: where this map has no
    /// entry, `AWS_ENDPOINT_URL_SSM` or `AWS_ENDPOINT_URL` applies.
    pub ssm_endpoints: BTreeMap<String, String>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    pub timeout: Duration,
    pub cache_ttl: Option<Duration>,
    /// `podAuth.audience`: what the pod's token for
    /// `AssumeRoleWithWebIdentity` must carry (`sts.amazonaws.com`).
    pub pod_audience: String,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            failover_region: None,
            endpoints: BTreeMap::new(),
            ssm_endpoints: BTreeMap::new(),
            profile: None,
            timeout: Duration::from_secs(10),
            cache_ttl: None,
            pod_audience: STS_AUDIENCE.to_string(),
        }
    }
}

impl AwsSettings {
    pub fn parse(provider: &str, settings: &BTreeMap<String, Value>) -> Result<Self, Error> {
        let mut o = Obj::root(provider, settings);
        o.only(AWS_KEYS)?;
        let region = o.string("region")?;
        let failover_region = o.string("failoverRegion")?;
        if failover_region.is_some() && failover_region == region {
            return Err(o.err("failoverRegion", "is the same as region"));
        }
        let endpoints = region_urls(&mut o, "endpoints")?;
        let ssm_endpoints = region_urls(&mut o, "ssmEndpoints")?;
        let profile = o.string("profile")?;
        let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(10));
        let cache_ttl = o.duration("cacheTtl")?;
        let pod_audience = match o.object("podAuth")? {
            None => STS_AUDIENCE.to_string(),
            Some(mut p) => {
                p.only(AWS_POD_AUTH_KEYS)?;
                let a = p.string("audience")?.unwrap_or(STS_AUDIENCE.to_string());
                p.finish()?;
                a
            }
        };
        o.finish()?;
        Ok(AwsSettings {
            region,
            failover_region,
            endpoints,
            ssm_endpoints,
            profile,
            timeout,
            cache_ttl,
            pod_audience,
        })
    }
}

/// A map of region name to endpoint URL.
fn region_urls(o: &mut Obj<'_>, key: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    if let Some(mut e) = o.object(key)? {
        let keys: Vec<String> = e.map.keys().map(|k| k.to_string()).collect();
        for k in keys {
            let v = e.required(&k)?;
            let v = url(&e, &k, v)?;
            out.insert(k, v);
        }
        e.finish()?;
    }
    Ok(out)
}
