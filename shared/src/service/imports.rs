//! CSV imports into a segment. The file is stored whole as it streams in (never held in memory),
//! its header checked, then read a chunk at a time by jobs on the same queue as deliveries: each
//! chunk finds or creates its contacts and adds them to the segment in one store write that also
//! moves the import's counters, and a job ends after a couple of seconds by queueing the next.
//! A crash repeats at most the chunk in hand, which the store applies once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::ids::new_id;
use crate::domain::import::{parse_chunk, read_header, Chunk, Import, ImportState, CHUNK_BYTES};
use crate::domain::{now, FieldErrors, Job, TenantId};
use crate::ports::{
    ByteStream, FileError, ImportFiles, Imports, JobQueue, MembersError, OutgoingJob, Segments, StoreError,
};

use super::deliver::backoff;
use super::worker::JobResult;
use super::{ServiceError, Settings};

/// What imports need. Built once by `app`, shared by the API and the workers.
pub struct ImportRun {
    pub imports: Arc<dyn Imports>,
    pub files: Arc<dyn ImportFiles>,
    pub segments: Arc<dyn Segments>,
    pub queue: Arc<dyn JobQueue>,
    pub settings: Settings,
}

/// Why an import was not started.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the body broke off: {0}")]
    Body(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> Self {
        ImportError::Service(e.into())
    }
}

/// A job reads chunks for this long at most, then hands on to the next job.
const JOB_BUDGET: Duration = Duration::from_secs(2);

/// `POST /v1/imports`: stores the file, checks its header and queues its first chunk. The
/// answer comes once the file is stored; the contacts are imported in the background.
pub async fn start(
    h: &ImportRun,
    tenant: &TenantId,
    segment_id: &str,
    body: ByteStream,
) -> Result<Import, ImportError> {
    h.segments.get_segment(tenant, segment_id).await?.ok_or(ServiceError::NotFound("segment"))?;
    let id = new_id("imp");
    let bytes = match h.files.store(tenant, &id, body, h.settings.max_import_bytes).await {
        Ok(n) => n,
        Err(FileError::TooLarge(max)) => return Err(ImportError::TooLarge(max)),
        Err(FileError::Body(e)) => return Err(ImportError::Body(e.to_string())),
        Err(FileError::Store(e)) => return Err(e.into()),
    };
    begin(h, tenant, segment_id, &id, bytes, Origin::Api).await
}

/// An import of a file uploaded straight to the file store (an object under `imports/` in the
/// AWS shape's bucket): there is no caller to answer, so a file that cannot be imported is kept
/// as a failed import saying why. `id` derives from the upload, so a repeated notice of the
/// same upload starts nothing new.
pub async fn start_uploaded(
    h: &ImportRun,
    tenant: &TenantId,
    segment_id: &str,
    id: &str,
    source: &str,
) -> Result<Import, ImportError> {
    if let Some(existing) = h.imports.get_import(tenant, id).await? {
        if existing.state == ImportState::Running {
            // The notice came again because queueing failed (or the process died) after the
            // import was stored: queue it again. A second job for it is harmless, since a
            // chunk applies only where the import stands.
            h.queue.send_batch(&[OutgoingJob { job: Job::import(tenant, id), delay: Duration::ZERO }]).await?;
        }
        return Ok(existing);
    }
    let bytes = h.files.adopt(tenant, id, source).await?;
    if h.segments.get_segment(tenant, segment_id).await?.is_none() {
        let mut import = Import::new(tenant, segment_id, id, bytes, Vec::new(), 0, 1);
        import.state = ImportState::Failed;
        import.failure = Some(format!("no segment \"{segment_id}\" in this tenant"));
        import.finished_at = Some(import.created_at);
        h.imports.create_import(&import).await?;
        let _ = h.files.remove(tenant, id).await;
        return Ok(import);
    }
    begin(h, tenant, segment_id, id, bytes, Origin::Upload).await
}

/// Who started an import, which decides what a failure comes to.
#[derive(PartialEq, Eq)]
enum Origin {
    /// An API call: a header the rules refuse is a `422` and nothing is stored; an import that
    /// cannot be queued fails, and the caller hears so.
    Api,
    /// An upload's notice, with no caller: a refused header is kept as a failed import saying
    /// why; an import that cannot be queued stays running for the notice's retry to queue.
    Upload,
}

/// Checks the stored file's header, stores the import and queues its first chunk.
async fn begin(
    h: &ImportRun,
    tenant: &TenantId,
    segment_id: &str,
    id: &str,
    bytes: u64,
    origin: Origin,
) -> Result<Import, ImportError> {
    let head = h.files.read_at(tenant, id, 0, CHUNK_BYTES).await?;
    let mut import = match read_header(&head, head.len() as u64 >= bytes) {
        Ok((columns, offset, line)) => Import::new(tenant, segment_id, id, bytes, columns, offset, line),
        Err(why) if origin == Origin::Upload => {
            let mut import = Import::new(tenant, segment_id, id, bytes, Vec::new(), 0, 1);
            import.state = ImportState::Failed;
            import.failure = Some(why);
            import.finished_at = Some(import.created_at);
            import
        }
        Err(why) => {
            let _ = h.files.remove(tenant, id).await;
            let mut errs = FieldErrors::new();
            errs.push("header", why);
            return Err(ServiceError::Invalid(errs).into());
        }
    };
    if import.state == ImportState::Running && import.offset >= bytes {
        // A header and nothing else: done already.
        import.state = ImportState::Completed;
        import.finished_at = Some(import.created_at);
    }
    h.imports.create_import(&import).await?;
    if import.state != ImportState::Running {
        let _ = h.files.remove(tenant, id).await;
        return Ok(import);
    }
    let job = OutgoingJob { job: Job::import(tenant, id), delay: Duration::ZERO };
    if let Err(e) = h.queue.send_batch(&[job]).await {
        if origin == Origin::Api {
            let _ = h.imports.fail_import(tenant, id, "it could not be queued", now()).await;
            let _ = h.files.remove(tenant, id).await;
        }
        return Err(e.into());
    }
    tracing::info!(import_id = %id, bytes, "import started");
    Ok(import)
}

/// How reading a chunk went wrong.
enum Stop {
    /// The file cannot be imported: the import fails with this reason.
    Fail(String),
    /// A store blinked: the job comes again.
    Again(StoreError),
}

/// Reads and parses the chunk at `offset`, and prepares it for a store that takes its new
/// contacts (off the async runtime: parsing is CPU work).
async fn read_chunk(h: &ImportRun, import: &Import, offset: u64, line: u64) -> Result<Chunk, Stop> {
    let data = match h.files.read_at(&import.tenant_id, &import.id, offset, h.imports.chunk_bytes()).await {
        Ok(d) => d,
        Err(StoreError::Corrupt(why)) => return Err(Stop::Fail(why)),
        Err(e) => return Err(Stop::Again(e)),
    };
    let eof = offset + data.len() as u64 >= import.bytes;
    if data.is_empty() && !eof {
        return Err(Stop::Fail("the import's file is shorter than when it was stored".into()));
    }
    let (columns, prepare) = (import.columns.clone(), h.imports.takes_new_contacts());
    tokio::task::spawn_blocking(move || {
        let mut chunk = parse_chunk(&columns, &data, offset, line, eof)?;
        if prepare {
            chunk.prepare();
        }
        Ok(chunk)
    })
    .await
    .map_err(|e| Stop::Again(StoreError::Unavailable(format!("parsing a chunk failed: {e}"))))?
    .map_err(Stop::Fail)
}

/// Handles an import job: applies chunks from where the import stands for up to
/// [`JOB_BUDGET`], reading and parsing each next chunk while the store applies the current one.
pub async fn run(h: &ImportRun, job: &Job) -> JobResult {
    let started = Instant::now();
    let (tenant, id) = (&job.tenant_id, job.request_id.as_str());
    let again = || JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: backoff(&h.settings, 1, None) }]);
    let mut import = match h.imports.get_import(tenant, id).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            tracing::error!(import_id = %id, "import job for no stored import; dropped");
            return JobResult::Delete;
        }
        Err(e) => {
            tracing::warn!(import_id = %id, error = %e, "import could not be read; it comes again");
            return again();
        }
    };
    let mut ahead: Option<Chunk> = None;
    while import.state == ImportState::Running {
        let chunk = match ahead.take().filter(|c| c.from == import.offset) {
            Some(c) => c,
            None => match read_chunk(h, &import, import.offset, import.next_line).await {
                Ok(c) => c,
                Err(Stop::Fail(why)) => return fail(h, &import, &why).await,
                Err(Stop::Again(e)) => {
                    tracing::warn!(import_id = %id, error = %e, "import chunk could not be read; it comes again");
                    return again();
                }
            },
        };
        let (applied, read) = match chunk.done {
            false => {
                let next = read_chunk(h, &import, chunk.to, chunk.next_line);
                let (a, r) = tokio::join!(h.imports.apply_chunk(&import, chunk), next);
                (a, Some(r))
            }
            true => (h.imports.apply_chunk(&import, chunk).await, None),
        };
        match applied {
            Ok(Some(i)) => import = i,
            // Applied already (a job delivered twice): carry on from where the import stands.
            Ok(None) => match h.imports.get_import(tenant, id).await {
                Ok(Some(i)) => import = i,
                Ok(None) => return JobResult::Delete,
                Err(_) => return again(),
            },
            Err(MembersError::NoSegment) => return fail(h, &import, "the segment was deleted during the import").await,
            Err(e) => {
                tracing::warn!(import_id = %id, error = %e, "import chunk was not applied; it comes again");
                return again();
            }
        }
        ahead = read.and_then(Result::ok);
        if import.state == ImportState::Running && started.elapsed() >= JOB_BUDGET {
            return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: Duration::ZERO }]);
        }
    }
    if let Err(e) = h.files.remove(tenant, id).await {
        tracing::warn!(import_id = %id, error = %e, "import file could not be removed");
    }
    if import.state == ImportState::Completed {
        tracing::info!(import_id = %id, lines = import.lines, rejected = import.rejected, "import completed");
    }
    JobResult::Delete
}

async fn fail(h: &ImportRun, import: &Import, why: &str) -> JobResult {
    tracing::error!(import_id = %import.id, reason = why, "import failed");
    if h.imports.fail_import(&import.tenant_id, &import.id, why, now()).await.is_err() {
        return JobResult::Replace(vec![OutgoingJob {
            job: Job::import(&import.tenant_id, &import.id),
            delay: backoff(&h.settings, 1, None),
        }]);
    }
    let _ = h.files.remove(&import.tenant_id, &import.id).await;
    JobResult::Delete
}

/// An upload that starts an import, read from its object key `imports/{tenant}/{segment}/{name}`
/// (as an S3 notice spells it: URL-encoded, `+` for a space) and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub tenant: TenantId,
    pub segment_id: String,
    /// The object's key, decoded.
    pub key: String,
    /// The import's id: the same upload always names the same import.
    pub import_id: String,
}

impl Upload {
    pub fn from_notice(encoded_key: &str, etag: &str) -> Result<Upload, String> {
        let key = decode_key(encoded_key).ok_or_else(|| format!("the key {encoded_key:?} is not URL-encoded UTF-8"))?;
        let rest = key.strip_prefix("imports/").ok_or("the key is not under imports/")?;
        let mut parts = rest.splitn(3, '/');
        let (Some(tenant), Some(segment), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("the key is not imports/{tenant}/{segment_id}/{file name}".into());
        };
        if name.is_empty() {
            return Err("the key names no file".into());
        }
        let tenant = TenantId::parse(tenant).map_err(|e| format!("tenant: {e}"))?;
        crate::domain::ids::check_id(segment).map_err(|e| format!("segment id: {e}"))?;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{key}\n{etag}").as_bytes());
        let import_id = format!("imp_up{}", &hex::encode(digest)[..30]);
        Ok(Upload { tenant, segment_id: segment.to_string(), key, import_id })
    }
}

/// Decodes an S3 notice's key: `%XX` escapes and `+` for a space.
fn decode_key(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = encoded.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_key_names_the_tenant_segment_and_a_stable_import() {
        let up = Upload::from_notice("imports/acme/vip%2Dlist/June+list%C3%A9.csv", "\"abc\"").unwrap();
        assert_eq!((up.tenant.as_str(), up.segment_id.as_str()), ("acme", "vip-list"));
        assert_eq!(up.key, "imports/acme/vip-list/June listé.csv");
        assert_eq!(
            up.import_id,
            Upload::from_notice("imports/acme/vip%2Dlist/June+list%C3%A9.csv", "\"abc\"").unwrap().import_id
        );
        assert_ne!(
            up.import_id,
            Upload::from_notice("imports/acme/vip%2Dlist/June+list%C3%A9.csv", "\"abd\"").unwrap().import_id
        );
        for bad in ["imports/acme/vip", "other/acme/vip/a.csv", "imports/acme/vip/", "imports/acme/vip/%zz"] {
            assert!(Upload::from_notice(bad, "e").is_err(), "{bad}");
        }
    }
}
