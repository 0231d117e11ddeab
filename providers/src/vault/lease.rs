//! Renewing the lease of a dynamic secret (`PUT sys/leases/renew`), so that
//! its credentials stay valid instead of being minted anew by a re-read.

use std::time::Duration;

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError;
use serde::Serialize;

use super::VaultProvider;
use super::envelope::Envelope;
use crate::error::Error;
use crate::value::{Lease, SecretValue};

/// `PUT /v1/sys/leases/renew`. vaultrs 0.8 has no lease endpoints, so this
/// one is written here, as a rustify endpoint that goes through the same
/// middleware and transport as vaultrs's own.
#[derive(Serialize)]
struct RenewLeaseRequest<'a> {
    lease_id: &'a str,
    increment: u64,
}

impl Endpoint for RenewLeaseRequest<'_> {
    type Response = ();
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "sys/leases/renew".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> Result<Option<Vec<u8>>, ClientError> {
        rustify::http::build_body(self, Self::REQUEST_BODY_TYPE).map(Some)
    }
}

impl VaultProvider {
    /// Asks for the lease's own duration again; returns what Vault granted.
    pub(super) async fn renew_lease(
        &self,
        value: &SecretValue,
        lease: &Lease,
    ) -> Result<Duration, Error> {
        let rs = value.metadata().source.clone();
        let token = self.token().await?;
        let renew = RenewLeaseRequest {
            lease_id: &lease.id,
            increment: lease.duration.as_secs(),
        };
        let reply = self.call(&renew, Some(&token), &rs).await?;
        let status = reply.status;
        if !(200..300).contains(&status) {
            let message = self.refusal(status);
            return Err(if crate::upstream::is_unavailable(status) {
                Error::Unavailable {
                    reference: rs,
                    what: self.what(),
                    message,
                }
            } else {
                Error::Upstream {
                    reference: rs,
                    status: Some(status),
                    message: format!("lease renewal refused: {message}"),
                }
            });
        }
        let renewed = Envelope::parse_or_default(&reply.body);
        Ok(Duration::from_secs(renewed.lease_duration))
    }
}
