//! Import files in the stack's S3 bucket. A file posted to `POST /v1/imports` is put under
//! `import-files/{tenant}/{import}.csv`; one uploaded to `imports/{tenant}/{segment}/…` (for files
//! above the API's body limit) is moved there when its upload's event starts the import. Jobs read
//! it by ranges, a chunk at a time.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use futures::StreamExt;

use super::sdk_text;
use crate::domain::TenantId;
use crate::ports::{ByteStream, FileError, ImportFiles, StoreError, StoreResult};

/// Where uploads that start an import are put: `imports/{tenant}/{segment}/{any name}`.
pub const UPLOAD_PREFIX: &str = "imports/";

pub struct S3Files {
    client: Client,
    bucket: String,
}

fn unavailable<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(sdk_text(&e))
}

impl S3Files {
    pub fn new(client: Client, bucket: String) -> S3Files {
        S3Files { client, bucket }
    }

    fn key(tenant: &TenantId, id: &str) -> String {
        format!("import-files/{tenant}/{id}.csv")
    }

    /// The object's size, or `None` when there is no such object.
    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl ImportFiles for S3Files {
    async fn store(&self, tenant: &TenantId, id: &str, mut body: ByteStream, max: u64) -> Result<u64, FileError> {
        // A Lambda's request body is whole in memory already (6 MB at most); larger files are
        // uploaded to the bucket straight.
        let mut buf = Vec::new();
        while let Some(bytes) = body.next().await {
            let bytes = bytes.map_err(FileError::Body)?;
            if (buf.len() + bytes.len()) as u64 > max {
                return Err(FileError::TooLarge(max));
            }
            buf.extend_from_slice(&bytes);
        }
        let size = buf.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(S3Files::key(tenant, id))
            .content_type("text/csv")
            .body(buf.into())
            .send()
            .await
            .map_err(unavailable)?;
        Ok(size)
    }

    async fn read_at(&self, tenant: &TenantId, id: &str, offset: u64, len: usize) -> StoreResult<Vec<u8>> {
        let key = S3Files::key(tenant, id);
        let range = format!("bytes={offset}-{}", offset + len.max(1) as u64 - 1);
        let out = match self.client.get_object().bucket(&self.bucket).key(&key).range(range).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Err(StoreError::Corrupt("the import's file is gone".into()))
            }
            // A range that starts at the end: nothing left to read.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(e)),
        };
        let body = out.body.collect().await.map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn remove(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(S3Files::key(tenant, id))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn adopt(&self, tenant: &TenantId, id: &str, source: &str) -> StoreResult<u64> {
        let key = S3Files::key(tenant, id);
        if let Some(size) = self.size(&key).await? {
            return Ok(size);
        }
        let from = format!("{}/{}", self.bucket, urlencode_key(source));
        self.client.copy_object().bucket(&self.bucket).key(&key).copy_source(from).send().await.map_err(unavailable)?;
        self.client.delete_object().bucket(&self.bucket).key(source).send().await.map_err(unavailable)?;
        self.size(&key).await?.ok_or_else(|| StoreError::Unavailable(format!("{key} is not there after the copy")))
    }
}

/// `CopySource` takes the key URL-encoded (its `/` kept).
fn urlencode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
