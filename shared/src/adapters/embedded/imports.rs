//! CSV imports on the local database, and their files in the data directory. A chunk is one
//! write: its contacts, their memberships, the segment's count and the import's counters and
//! offset commit together, so a chunk applied again after a crash changes and counts nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rusqlite::{params, Connection, OptionalExtension};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::segments::read_segment;
use super::store::{find_by_any_key, write_contact, EmbeddedStore};
use crate::domain::ids::new_id;
use crate::domain::import::{merge_line, Chunk, Import, ImportState, LineError, LineOutcome, NewContact};
use crate::domain::{ContactDraft, TenantId};
use crate::ports::{
    ByteStream, ContactWriteError, FileError, ImportFiles, Imports, MembersError, StoreError, StoreResult,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS imports (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id)
);
";

fn read_import(c: &Connection, tenant: &str, id: &str) -> StoreResult<Option<Import>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM imports WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()?;
    Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
}

fn write_import(c: &Connection, import: &Import) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO imports (tenant_id, id, data) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data",
    )?
    .execute(params![import.tenant_id.as_str(), import.id, serde_json::to_string(import)?])?;
    Ok(())
}

/// One line: its contact created when none of its keys is taken (as `created`, made while the
/// chunk was read), or else found by the first of its keys any contact holds and merged; `Err`
/// with the reason when its keys belong to two contacts.
fn import_line(
    c: &Connection,
    tenant: &str,
    draft: &ContactDraft,
    created: &NewContact,
) -> StoreResult<Result<(String, LineOutcome), String>> {
    if claim_keys(c, tenant, &created.keys, &created.id)? {
        if insert_contact(c, tenant, &created.id, &created.doc)? {
            return Ok(Ok((created.id.clone(), LineOutcome::Created)));
        }
        // Its id is taken: only a chunk applied a second time in one process brings its ids
        // back. Give the keys up and make the contact under an id of its own.
        release_keys(c, tenant, &created.keys)?;
        let fresh = NewContact::of(draft).map_err(StoreError::Corrupt)?;
        if claim_keys(c, tenant, &fresh.keys, &fresh.id)? && insert_contact(c, tenant, &fresh.id, &fresh.doc)? {
            return Ok(Ok((fresh.id, LineOutcome::Created)));
        }
        return Err(StoreError::Corrupt(format!("contact ids {} and {} are both taken", created.id, fresh.id)));
    }
    let keys = draft.keys();
    let found = find_by_any_key(c, tenant, &keys)?;
    let (write, outcome) = merge_line(found.clone(), draft, || new_id("ct"));
    let Some(contact) = write else {
        return Ok(Ok((found.map(|f| f.id).unwrap_or_default(), outcome)));
    };
    // A line whose keys were all free was created above: here a key is taken, so the line
    // merges into its holder (or is refused by `write_contact` if its keys name two contacts).
    match write_contact(c, tenant, &contact) {
        Ok(()) => Ok(Ok((contact.id, outcome))),
        Err(ContactWriteError::KeyTaken { field, other }) => {
            Ok(Err(format!("{field}: already belongs to contact {other}")))
        }
        Err(ContactWriteError::Store(e)) => Err(e),
    }
}

/// Most lines of a first import are new contacts: their keys are claimed for the new id straight
/// away, one index probe each rather than a lookup and then an insert. True when every key was
/// free; false (and nothing claimed) when one is taken or there are none, for the line to be
/// looked up and merged instead.
fn claim_keys(c: &Connection, tenant: &str, keys: &[String], id: &str) -> StoreResult<bool> {
    if keys.is_empty() {
        return Ok(false);
    }
    let mut claim = c.prepare_cached(
        "INSERT INTO contact_keys (tenant_id, key, contact_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id, key) DO NOTHING",
    )?;
    for (i, key) in keys.iter().enumerate() {
        if claim.execute(params![tenant, key, id])? == 0 {
            release_keys(c, tenant, &keys[..i])?;
            return Ok(false);
        }
    }
    Ok(true)
}

fn release_keys(c: &Connection, tenant: &str, keys: &[String]) -> StoreResult<()> {
    let mut release = c.prepare_cached("DELETE FROM contact_keys WHERE tenant_id = ?1 AND key = ?2")?;
    for key in keys {
        release.execute(params![tenant, key])?;
    }
    Ok(())
}

/// The contact's document alone (its keys are written already); false when its id is taken.
fn insert_contact(c: &Connection, tenant: &str, id: &str, doc: &str) -> StoreResult<bool> {
    let inserted = c
        .prepare_cached("INSERT INTO contacts (tenant_id, id, data) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
        .execute(params![tenant, id, doc])?;
    Ok(inserted == 1)
}

/// The chunk's lines, memberships and counters in one savepoint.
fn apply(
    c: &mut Connection,
    import: &Import,
    chunk: &Chunk,
    at: DateTime<Utc>,
) -> Result<Option<Import>, MembersError> {
    let tenant = import.tenant_id.as_str();
    let tx = c.savepoint().map_err(StoreError::from)?;
    let Some(mut stored) = read_import(&tx, tenant, &import.id)? else { return Ok(None) };
    if stored.state != ImportState::Running || stored.offset != chunk.from {
        return Ok(None);
    }
    if read_segment(&tx, tenant, &stored.segment_id)?.is_none() {
        return Err(MembersError::NoSegment);
    }
    let mut outcomes = Vec::with_capacity(chunk.drafts.len());
    let mut refused = Vec::new();
    let mut added = 0i64;
    {
        let mut member = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO segment_members (tenant_id, segment_id, contact_id) VALUES (?1, ?2, ?3)",
            )
            .map_err(StoreError::from)?;
        for (i, (line, draft)) in chunk.drafts.iter().enumerate() {
            let created = match chunk.created(i) {
                Ok(c) => c,
                Err(reason) => {
                    refused.push(LineError { line: *line, reason });
                    continue;
                }
            };
            match import_line(&tx, tenant, draft, &created)? {
                Ok((contact_id, outcome)) => {
                    outcomes.push(outcome);
                    added += member.execute(params![tenant, stored.segment_id, contact_id]).map_err(StoreError::from)?
                        as i64;
                }
                Err(reason) => refused.push(LineError { line: *line, reason }),
            }
        }
    }
    tx.execute(
        "UPDATE segments SET member_count = member_count + ?3 WHERE tenant_id = ?1 AND id = ?2",
        params![tenant, stored.segment_id, added],
    )
    .map_err(StoreError::from)?;
    stored.apply(&chunk.counted(refused), &outcomes, at);
    write_import(&tx, &stored)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(Some(stored))
}

#[async_trait]
impl Imports for EmbeddedStore {
    async fn create_import(&self, import: &Import) -> StoreResult<()> {
        let import = import.clone();
        self.db.write(move |c| write_import(c, &import)).await
    }

    async fn get_import(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Import>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db.read(move |c| read_import(c, &tenant, &id)).await
    }

    async fn list_imports(&self, tenant: &TenantId, limit: u32) -> StoreResult<Vec<Import>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let mut st =
                    c.prepare_cached("SELECT data FROM imports WHERE tenant_id = ?1 ORDER BY id DESC LIMIT ?2")?;
                let docs = st.query_map(params![tenant, limit], |r| r.get::<_, String>(0))?;
                let all: StoreResult<Vec<Import>> =
                    docs.map(|d| -> StoreResult<Import> { Ok(serde_json::from_str(&d?)?) }).collect();
                all
            })
            .await
    }

    async fn apply_chunk(&self, import: &Import, chunk: Chunk) -> Result<Option<Import>, MembersError> {
        let (import, at) = (import.clone(), crate::domain::now());
        self.db.write(move |c| Ok(apply(c, &import, &chunk, at))).await?
    }

    /// The single writer is the import's bound: each line's id, keys and document are made
    /// beside it.
    fn takes_new_contacts(&self) -> bool {
        true
    }

    async fn fail_import(&self, tenant: &TenantId, id: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (tenant, id, reason) = (tenant.to_string(), id.to_string(), reason.to_string());
        self.db
            .write(move |c| {
                let Some(mut import) = read_import(c, &tenant, &id)? else { return Ok(false) };
                if import.state != ImportState::Running {
                    return Ok(false);
                }
                import.state = ImportState::Failed;
                import.failure = Some(reason);
                import.updated_at = at;
                import.finished_at = Some(at);
                write_import(c, &import)?;
                Ok(true)
            })
            .await
    }
}

/// Import files live under `<data dir>/imports/<tenant>/<id>.csv` until they are read.
pub(super) fn files_root(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("imports")
}

impl EmbeddedStore {
    /// Deletes the uploads a killed process left half-written (their callers never got an
    /// answer, so no import names them); how many.
    pub async fn remove_partial_imports(&self) -> StoreResult<usize> {
        let root = self.files.clone();
        blocking(move || {
            let mut removed = 0;
            for tenant in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                for file in std::fs::read_dir(tenant.path()).into_iter().flatten().flatten() {
                    if file.path().extension().is_some_and(|e| e == "part") {
                        std::fs::remove_file(file.path())?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    fn import_path(&self, tenant: &TenantId, id: &str) -> PathBuf {
        // Both parts are Herald's own ids (checked characters, no separators).
        self.files.join(tenant.as_str()).join(format!("{id}.csv"))
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("import file: {e}"))
}

/// Runs file work off the async runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> std::io::Result<R> + Send + 'static) -> StoreResult<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io),
        Err(e) => Err(StoreError::Unavailable(format!("import file task failed: {e}"))),
    }
}

/// Bytes gathered before each write to the file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Appends `buf` to the file, handing both back.
async fn append(mut file: File, buf: Vec<u8>) -> StoreResult<(File, Vec<u8>)> {
    blocking(move || {
        file.write_all(&buf)?;
        Ok((file, buf))
    })
    .await
}

#[async_trait]
impl ImportFiles for EmbeddedStore {
    async fn store(&self, tenant: &TenantId, id: &str, mut body: ByteStream, max: u64) -> Result<u64, FileError> {
        let path = self.import_path(tenant, id);
        let part = path.with_extension("part");
        let to = part.clone();
        let mut file = blocking(move || {
            std::fs::create_dir_all(to.parent().unwrap_or(&to))?;
            File::create(&to)
        })
        .await?;
        let (mut size, mut buf) = (0u64, Vec::with_capacity(WRITE_BUFFER));
        let written: Result<(), FileError> = async {
            while let Some(bytes) = body.next().await {
                let bytes = bytes.map_err(FileError::Body)?;
                size += bytes.len() as u64;
                if size > max {
                    return Err(FileError::TooLarge(max));
                }
                buf.extend_from_slice(&bytes);
                if buf.len() >= WRITE_BUFFER {
                    let (f, mut b) = append(file.try_clone().map_err(io)?, std::mem::take(&mut buf)).await?;
                    b.clear();
                    (file, buf) = (f, b);
                }
            }
            let (f, _) = append(file.try_clone().map_err(io)?, std::mem::take(&mut buf)).await?;
            blocking(move || f.sync_all()).await?;
            Ok(())
        }
        .await;
        let done = part.clone();
        match written {
            Ok(()) => blocking(move || std::fs::rename(&done, &path)).await?,
            Err(e) => {
                let _ = blocking(move || std::fs::remove_file(&done)).await;
                return Err(e);
            }
        }
        Ok(size)
    }

    async fn read_at(&self, tenant: &TenantId, id: &str, offset: u64, len: usize) -> StoreResult<Vec<u8>> {
        let path = self.import_path(tenant, id);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(len);
            file.take(len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("import file task failed: {e}")))?;
        match read {
            Ok(buf) => Ok(buf),
            // Nothing brings a lost file back: the import cannot go on.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Corrupt("the import's file is gone".into()))
            }
            Err(e) => Err(io(e)),
        }
    }

    async fn adopt(&self, tenant: &TenantId, id: &str, source: &str) -> StoreResult<u64> {
        let (path, source) = (self.import_path(tenant, id), PathBuf::from(source));
        blocking(move || {
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
                std::fs::rename(&source, &path)?;
            }
            Ok(std::fs::metadata(&path)?.len())
        })
        .await
    }

    async fn remove(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        let path = self.import_path(tenant, id);
        blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }
}
