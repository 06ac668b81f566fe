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
    let head = h.files.read_at(tenant, &id, 0, CHUNK_BYTES).await?;
    let (columns, offset, next_line) = match read_header(&head, head.len() as u64 >= bytes) {
        Ok(header) => header,
        Err(why) => {
            let _ = h.files.remove(tenant, &id).await;
            let mut errs = FieldErrors::new();
            errs.push("header", why);
            return Err(ServiceError::Invalid(errs).into());
        }
    };
    let at = now();
    let mut import = Import {
        id: id.clone(),
        tenant_id: tenant.clone(),
        segment_id: segment_id.to_string(),
        state: ImportState::Running,
        columns,
        bytes,
        offset,
        next_line,
        lines: 0,
        created: 0,
        updated: 0,
        unchanged: 0,
        rejected: 0,
        errors: Vec::new(),
        failure: None,
        created_at: at,
        updated_at: at,
        finished_at: None,
    };
    if offset >= bytes {
        // A header and nothing else: done already.
        import.state = ImportState::Completed;
        import.finished_at = Some(at);
        let _ = h.files.remove(tenant, &id).await;
    }
    h.imports.create_import(&import).await?;
    if import.state == ImportState::Running {
        let job = OutgoingJob { job: Job::import(tenant, &id), delay: Duration::ZERO };
        if let Err(e) = h.queue.send_batch(&[job]).await {
            let _ = h.imports.fail_import(tenant, &id, "it could not be queued", now()).await;
            let _ = h.files.remove(tenant, &id).await;
            return Err(e.into());
        }
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

/// Reads and parses the chunk at `offset` (off the async runtime: parsing is CPU work).
async fn read_chunk(h: &ImportRun, import: &Import, offset: u64, line: u64) -> Result<Chunk, Stop> {
    let data = match h.files.read_at(&import.tenant_id, &import.id, offset, CHUNK_BYTES).await {
        Ok(d) => d,
        Err(StoreError::Corrupt(why)) => return Err(Stop::Fail(why)),
        Err(e) => return Err(Stop::Again(e)),
    };
    let eof = offset + data.len() as u64 >= import.bytes;
    if data.is_empty() && !eof {
        return Err(Stop::Fail("the import's file is shorter than when it was stored".into()));
    }
    let columns = import.columns.clone();
    tokio::task::spawn_blocking(move || parse_chunk(&columns, &data, offset, line, eof))
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
                let (a, r) = tokio::join!(h.imports.apply_chunk(&import, &chunk), next);
                (a, Some(r))
            }
            true => (h.imports.apply_chunk(&import, &chunk).await, None),
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
