//! The lease of a dynamic secret: renewed (`PUT sys/leases/renew`), so
//! that its credentials stay valid instead of being minted anew by a
//! re-read, and revoked (`PUT sys/leases/revoke`) when its holder is gone,
//! so that they stop being valid at once rather than at the end of the TTL.

use std::time::Duration;

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError;
use serde::Serialize;

use super::VaultProvider;
use super::envelope::LeaseFields;
use crate::error::Error;
use crate::value::Lease;

/// `PUT /v1/sys/leases/{renew,revoke}`. vaultrs 0.8 has no lease
/// endpoints, so they are written here, as a rustify endpoint that goes
/// through the same middleware and transport as vaultrs's own. Revoke
/// answers 204 whether or not the lease still exists.
#[derive(Serialize)]
struct LeaseRequest<'a> {
    #[serde(skip)]
    operation: &'static str,
    lease_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<u64>,
}

impl Endpoint for LeaseRequest<'_> {
    type Response = ();
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("sys/leases/{}", self.operation)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> Result<Option<Vec<u8>>, ClientError> {
        rustify::http::build_body(self, Self::REQUEST_BODY_TYPE).map(Some)
    }
}

impl VaultProvider {
    /// Asks for the lease's own duration again; returns what Vault granted
    /// (less than asked when the lease nears its max TTL).
    pub(super) async fn renew_lease(&self, rs: &str, lease: &Lease) -> Result<Duration, Error> {
        let rs = rs.to_string();
        let token = self.token().await?;
        let renew = LeaseRequest {
            operation: "renew",
            lease_id: &lease.id,
            increment: Some(lease.duration.as_secs()),
        };
        let reply = self.call(&renew, Some(&token), &rs).await?;
        self.lease_answer(reply.status, "renewal", rs)?;
        let renewed = LeaseFields::parse_or_default(&reply.body);
        Ok(Duration::from_secs(renewed.lease_duration))
    }

    /// Ends the lease now: its credentials stop working.
    pub(super) async fn revoke_lease(&self, rs: &str, lease: &Lease) -> Result<(), Error> {
        let rs = rs.to_string();
        let token = self.token().await?;
        let revoke = LeaseRequest {
            operation: "revoke",
            lease_id: &lease.id,
            increment: None,
        };
        let reply = self.call(&revoke, Some(&token), &rs).await?;
        self.lease_answer(reply.status, "revocation", rs)
    }

    fn lease_answer(&self, status: u16, what: &str, reference: String) -> Result<(), Error> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let message = self.refusal(status);
        Err(if crate::upstream::is_unavailable(status) {
            Error::Unavailable {
                reference,
                what: self.what(),
                message,
            }
        } else {
            Error::Upstream {
                reference,
                status: Some(status),
                message: format!("lease {what} refused: {message}"),
            }
        })
    }
}
