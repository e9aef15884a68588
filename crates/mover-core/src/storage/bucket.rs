//! Creates a missing S3 bucket when a repository is initialised, as `restic init` does
//! (VolSync's mover and many setups rely on it for a fresh S3-compatible store). object_store
//! has no bucket calls, so the two requests (HeadBucket, CreateBucket) are presigned with its
//! signer and sent with its HTTP client, which keeps the `--cacert` roots and timeouts.
//! Messages name the bucket and never a credential.

use super::StorageError;
use crate::error::ErrorClass;
use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpConnector, HttpRequestBody};
use object_store::path::Path;
use object_store::signer::Signer;
use std::time::Duration;

/// How long a presigned bucket request stays valid; it is sent at once.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// What is needed to check for, and create, the bucket of an `s3:` location.
#[derive(Clone)]
pub(super) struct S3Bucket {
    builder: AmazonS3Builder,
    client: ClientOptions,
    bucket: String,
    region: String,
}

impl S3Bucket {
    pub(super) fn new(
        builder: AmazonS3Builder,
        client: ClientOptions,
        bucket: String,
        region: String,
    ) -> S3Bucket {
        S3Bucket {
            builder,
            client,
            bucket,
            region,
        }
    }

    /// Makes sure the bucket exists: HeadBucket, then CreateBucket (with the region as its
    /// location constraint outside us-east-1) when the bucket is missing. As in restic, a
    /// HeadBucket refused for lack of permission counts as "exists": many credentials may
    /// write objects but not list or create buckets.
    pub(super) async fn ensure_exists(&self) -> Result<(), StorageError> {
        let head = self
            .send(http::Method::HEAD, HttpRequestBody::empty())
            .await?;
        match head.status {
            s if s.is_success() => return Ok(()),
            http::StatusCode::FORBIDDEN => return Ok(()),
            http::StatusCode::NOT_FOUND => {}
            http::StatusCode::MOVED_PERMANENTLY => {
                let elsewhere = head
                    .region
                    .map(|r| format!(" (it is in {r})"))
                    .unwrap_or_default();
                return Err(self.failed(
                    format!(
                        "the bucket exists in another region than {}{elsewhere}; set \
                         AWS_DEFAULT_REGION to the bucket's region",
                        self.region
                    ),
                    ErrorClass::InvalidInput,
                ));
            }
            s => {
                return Err(self.failed(
                    format!(
                        "checking whether it exists answered HTTP {s}{}",
                        head.detail
                    ),
                    class_of(s),
                ));
            }
        }
        let body = if self.region == "us-east-1" {
            HttpRequestBody::empty()
        } else {
            HttpRequestBody::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        let created = self.send(http::Method::PUT, body).await?;
        match created.status {
            s if s.is_success() => {
                tracing::info!(bucket = %self.bucket, region = %self.region, "created bucket");
                Ok(())
            }
            // Made meanwhile by someone else with the same credentials: what was wanted.
            http::StatusCode::CONFLICT if created.detail.contains("BucketAlreadyOwnedByYou") => {
                Ok(())
            }
            s => Err(self.failed(
                format!("region {} answered HTTP {s}{}", self.region, created.detail),
                class_of(s),
            )),
        }
    }

    async fn send(
        &self,
        method: http::Method,
        body: HttpRequestBody,
    ) -> Result<Answer, StorageError> {
        let config = |e: object_store::Error| {
            self.failed(
                format!("cannot prepare the request: {e}"),
                ErrorClass::InvalidInput,
            )
        };
        let store = self.builder.clone().build().map_err(config)?;
        // The bucket's own URL: the empty key below the bucket endpoint.
        let url = store
            .signed_url(method.clone(), &Path::from(""), SIGNED_FOR)
            .await
            .map_err(config)?;
        let client = super::tls::CertificateAwareConnector
            .connect(&self.client)
            .map_err(config)?;
        let mut request = http::Request::builder().method(method.clone());
        // S3 wants a length on every PUT, also an empty one (HTTP 411 otherwise).
        if method == http::Method::PUT {
            request = request.header(http::header::CONTENT_LENGTH, body.content_length());
        }
        let request = request.uri(url.as_str()).body(body).map_err(|e| {
            self.failed(
                format!("cannot build the request: {e}"),
                ErrorClass::InvalidInput,
            )
        })?;
        let response =
            client
                .execute(request)
                .await
                .map_err(|e| match super::tls::refusal(&e) {
                    Some(refused) => self.failed(refused.to_string(), ErrorClass::InvalidInput),
                    None => self.failed(e.to_string(), ErrorClass::Retryable),
                })?;
        let status = response.status();
        let region = response
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.into_body().bytes().await.unwrap_or_default();
        Ok(Answer {
            status,
            region,
            detail: s3_error_detail(&String::from_utf8_lossy(&text)),
        })
    }

    fn failed(&self, detail: String, class: ErrorClass) -> StorageError {
        StorageError::CreateBucket {
            bucket: self.bucket.clone(),
            detail,
            class,
        }
    }
}

struct Answer {
    status: http::StatusCode,
    region: Option<String>,
    /// `": Code: Message"` from an S3 error document, or empty.
    detail: String,
}

fn class_of(status: http::StatusCode) -> ErrorClass {
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        ErrorClass::Retryable
    } else {
        ErrorClass::InvalidInput
    }
}

/// `": AccessDenied: Access Denied"` from S3's `<Error><Code>..</Code><Message>..</Message>`.
fn s3_error_detail(xml: &str) -> String {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open)? + open.len();
        let len = xml[start..].find(&close)?;
        Some(xml[start..start + len].trim().to_string())
    };
    match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (Some(code), None) => format!(": {code}"),
        (None, Some(message)) => format!(": {message}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_names_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                   <Message>Access Denied</Message><RequestId>1</RequestId></Error>";
        assert_eq!(s3_error_detail(xml), ": AccessDenied: Access Denied");
        assert_eq!(s3_error_detail(""), "");
        assert_eq!(
            s3_error_detail("<Error><Code>BucketAlreadyExists</Code></Error>"),
            ": BucketAlreadyExists"
        );
    }

    #[test]
    fn server_errors_are_retryable() {
        assert_eq!(
            class_of(http::StatusCode::SERVICE_UNAVAILABLE),
            ErrorClass::Retryable
        );
        assert_eq!(
            class_of(http::StatusCode::FORBIDDEN),
            ErrorClass::InvalidInput
        );
    }
}
