//! TLS failures that no retry can fix. object_store retries a failed connection for up to
//! its retry timeout; a certificate the client does not trust fails the same way every
//! time, so the connector here turns it into an error object_store does not retry, and
//! [`refusal`] finds it again so the command fails at once with one line that says what to
//! do about it.

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use std::error::Error as StdError;

/// The endpoint's certificate was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's TLS certificate is not trusted ({reason}); give its CA with --cacert \
     (RESTIC_CACERT), or skip the check with --insecure-tls"
)]
pub struct CertificateRefused {
    reason: String,
}

/// reqwest's connector, with refused certificates made final.
#[derive(Debug, Default)]
pub(super) struct CertificateAwareConnector;

impl HttpConnector for CertificateAwareConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(FinalCertificateErrors(inner)))
    }
}

#[derive(Debug)]
struct FinalCertificateErrors(HttpClient);

#[async_trait]
impl HttpService for FinalCertificateErrors {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        match self.0.execute(req).await {
            Err(e) => match certificate_reason(&e) {
                Some(reason) => Err(HttpError::new(
                    HttpErrorKind::Unknown,
                    CertificateRefused { reason },
                )),
                None => Err(e),
            },
            ok => ok,
        }
    }
}

/// The refusal somewhere in `e`'s causes, if a certificate was refused.
pub(super) fn refusal<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a CertificateRefused> {
    causes(e).find_map(|c| c.downcast_ref::<CertificateRefused>())
}

/// Why rustls refused the peer's certificate, if that is what `e` comes from.
fn certificate_reason(e: &(dyn StdError + 'static)) -> Option<String> {
    for cause in causes(e) {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(
                r @ (rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType),
            ) => return Some(r.to_string()),
            Some(_) => return None,
            None => {}
        }
    }
    None
}

/// `e` and its sources, looking inside `std::io::Error`s (whose `source` skips the error
/// they wrap).
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => cur.source(),
        };
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(tls);
        let http = HttpError::new(HttpErrorKind::Connect, io);
        let reason = certificate_reason(&http).expect("a certificate error");
        assert!(reason.contains("UnknownIssuer"), "{reason}");
        let other = HttpError::new(
            HttpErrorKind::Connect,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(certificate_reason(&other), None);
        let final_error = HttpError::new(HttpErrorKind::Unknown, CertificateRefused { reason });
        let wrapped = object_store::Error::Generic {
            store: "S3",
            source: Box::new(final_error),
        };
        let found = refusal(&wrapped).expect("the refusal is found again");
        assert!(found.to_string().contains("--insecure-tls"), "{found}");
    }
}
