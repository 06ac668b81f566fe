//! CSV imports: a file of contacts added to a segment. The header names the columns; each line
//! after it finds or creates one contact (merging what the line sets) and makes it a member.
//!
//! A file is read in chunks from a byte offset, each chunk ending on a record boundary, so an
//! import of any size holds one chunk in memory and can resume from its last committed offset.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::address::{check_user_id, Email, Phone};
use super::catalog::check_message_chars;
use super::contact::{check_timezone, Contact, ContactDraft};
use super::ids::check_field_name;
use super::limits::{MAX_STRING, MAX_VARIABLES, MAX_VARIABLE_VALUE};
use super::TenantId;

/// Errors an import keeps to show; past these it only counts.
pub const MAX_KEPT_ERRORS: usize = 100;
/// Bytes one chunk reads at most (a store may take smaller chunks); a single line longer than
/// a chunk ends the import.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A column of an import file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Phone,
    Email,
    Name,
    MessengerPsid,
    TelegramChatId,
    SlackId,
    WebhookUserId,
    Timezone,
    /// Any other header: a contact field of that name.
    Field(String),
}

impl Column {
    fn named(header: &str) -> Column {
        match header.to_ascii_lowercase().as_str() {
            "phone" => Column::Phone,
            "email" => Column::Email,
            "name" => Column::Name,
            "messenger_psid" => Column::MessengerPsid,
            "telegram_chat_id" => Column::TelegramChatId,
            "slack_id" => Column::SlackId,
            "webhook_user_id" => Column::WebhookUserId,
            "timezone" => Column::Timezone,
            _ => Column::Field(header.to_string()),
        }
    }

    fn is_key(&self) -> bool {
        !matches!(self, Column::Name | Column::Timezone | Column::Field(_))
    }

    fn label(&self) -> &str {
        match self {
            Column::Phone => "phone",
            Column::Email => "email",
            Column::Name => "name",
            Column::MessengerPsid => "messenger_psid",
            Column::TelegramChatId => "telegram_chat_id",
            Column::SlackId => "slack_id",
            Column::WebhookUserId => "webhook_user_id",
            Column::Timezone => "timezone",
            Column::Field(f) => f,
        }
    }
}

/// Reads the header line: every column named, none twice, at least one a contact can be found
/// by. Contact fields follow the rules of `fields` elsewhere.
pub fn parse_header(cells: &[&str]) -> Result<Vec<Column>, String> {
    let mut columns = Vec::with_capacity(cells.len());
    let mut seen = BTreeSet::new();
    for (i, raw) in cells.iter().enumerate() {
        let header = raw.trim().trim_start_matches('\u{feff}').trim();
        if header.is_empty() {
            return Err(format!("column {} of the header has no name", i + 1));
        }
        let column = Column::named(header);
        if let Column::Field(name) = &column {
            check_field_name(name).map_err(|m| format!("column \"{}\": a contact field name {m}", clip(name)))?;
        }
        if !seen.insert(column.label().to_ascii_lowercase()) {
            return Err(format!("column \"{}\" appears twice in the header", clip(header)));
        }
        columns.push(column);
    }
    let fields = columns.iter().filter(|c| matches!(c, Column::Field(_))).count();
    if fields > MAX_VARIABLES {
        return Err(format!("the header names {fields} contact fields; at most {MAX_VARIABLES}"));
    }
    if !columns.iter().any(Column::is_key) {
        return Err("the header needs a column to find contacts by: phone, email, messenger_psid, \
                    telegram_chat_id, slack_id or webhook_user_id"
            .into());
    }
    Ok(columns)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One line's cells as a contact draft; an empty cell sets nothing. The reason names the column.
pub fn parse_line(columns: &[Column], cells: &csv::ByteRecord) -> Result<ContactDraft, String> {
    if cells.len() != columns.len() {
        return Err(format!("has {} values; the header has {} columns", cells.len(), columns.len()));
    }
    let mut d = ContactDraft::default();
    for (column, raw) in columns.iter().zip(cells.iter()) {
        let cell = std::str::from_utf8(raw).map_err(|_| format!("{}: is not UTF-8 text", column.label()))?.trim();
        if cell.is_empty() {
            continue;
        }
        let at = |m: String| format!("{}: {m}", column.label());
        match column {
            Column::Phone => d.phone = Some(Phone::parse(cell).map_err(at)?),
            Column::Email => d.email = Some(Email::parse(cell).map_err(at)?),
            Column::Name => d.name = Some(check_value(cell, MAX_STRING).map_err(at)?),
            Column::MessengerPsid => d.messenger_psid = Some(check_user_id(cell).map_err(at)?),
            Column::TelegramChatId => d.telegram_chat_id = Some(check_user_id(cell).map_err(at)?),
            Column::SlackId => d.slack_id = Some(check_user_id(cell).map_err(at)?),
            Column::WebhookUserId => d.webhook_user_id = Some(check_user_id(cell).map_err(at)?),
            Column::Timezone => d.timezone = Some(check_timezone(cell).map_err(at)?),
            Column::Field(name) => {
                d.fields.insert(name.clone(), check_value(cell, MAX_VARIABLE_VALUE).map_err(at)?);
            }
        }
    }
    if !d.has_key() {
        return Err("has no phone, email or channel id to find the contact by".into());
    }
    Ok(d)
}

fn check_value(v: &str, max: usize) -> Result<String, String> {
    if v.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    check_message_chars(v)?;
    Ok(v.to_string())
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    Running,
    Completed,
    Failed,
}

/// A line refused, and why (its number in the file, the header being line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: u64,
    pub reason: String,
}

/// What one line came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    Created,
    Updated,
    Unchanged,
}

/// What a line does to the contact its keys found (`None`: no contact has them): the contact to
/// write, or `None` when the line changes nothing, and the outcome to count.
pub fn merge_line(
    found: Option<Contact>,
    draft: &ContactDraft,
    new_id: impl FnOnce() -> String,
) -> (Option<Contact>, LineOutcome) {
    match found {
        None => {
            let mut c = Contact::new(new_id());
            c.apply(draft);
            (Some(c), LineOutcome::Created)
        }
        Some(before) => {
            let mut after = before.clone();
            after.apply(draft);
            let stamped = after.updated_at;
            after.updated_at = before.updated_at;
            if after == before {
                return (None, LineOutcome::Unchanged);
            }
            after.updated_at = stamped;
            (Some(after), LineOutcome::Updated)
        }
    }
}

/// An import of a CSV file into a segment, with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    pub id: String,
    pub tenant_id: TenantId,
    pub segment_id: String,
    pub state: ImportState,
    pub columns: Vec<Column>,
    /// The file's size, and the offset of the first line not yet imported.
    pub bytes: u64,
    pub offset: u64,
    /// The file line `offset` starts on.
    pub next_line: u64,
    /// Lines read after the header, refused ones included.
    pub lines: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first [`MAX_KEPT_ERRORS`] refused lines.
    pub errors: Vec<LineError>,
    /// Why the import stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Import {
    /// A running import of a stored file of `bytes`, whose lines start at `offset` (file line
    /// `line`), nothing counted yet.
    pub fn new(
        tenant: &TenantId,
        segment_id: &str,
        id: &str,
        bytes: u64,
        columns: Vec<Column>,
        offset: u64,
        line: u64,
    ) -> Import {
        let at = super::now();
        Import {
            id: id.to_string(),
            tenant_id: tenant.clone(),
            segment_id: segment_id.to_string(),
            state: ImportState::Running,
            columns,
            bytes,
            offset,
            next_line: line,
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
        }
    }

    /// Lines that made or found a contact now in the segment.
    pub fn imported(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }

    /// Moves the counters by one applied chunk, at `to` in the file.
    pub fn apply(&mut self, chunk: &Chunk, outcomes: &[LineOutcome], at: DateTime<Utc>) {
        for o in outcomes {
            match o {
                LineOutcome::Created => self.created += 1,
                LineOutcome::Updated => self.updated += 1,
                LineOutcome::Unchanged => self.unchanged += 1,
            }
        }
        self.lines += chunk.lines;
        self.rejected += chunk.rejected.len() as u64;
        let room = MAX_KEPT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(chunk.rejected.iter().take(room).cloned());
        self.offset = chunk.to;
        self.next_line = chunk.next_line;
        self.updated_at = at;
        if chunk.done {
            self.state = ImportState::Completed;
            self.finished_at = Some(at);
        }
    }

    /// The API view.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "import_id": self.id,
            "segment_id": self.segment_id,
            "state": self.state,
            "lines": self.lines,
            "imported": self.imported(),
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": self.errors,
            "failure": self.failure,
            "bytes": self.bytes,
            "bytes_done": self.offset,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        })
    }
}

impl Chunk {
    /// The chunk without its drafts, with the lines a store refused added to the parser's:
    /// what the import's counters take.
    pub fn counted(&self, mut refused: Vec<LineError>) -> Chunk {
        refused.extend(self.rejected.iter().cloned());
        refused.sort_by_key(|e| e.line);
        Chunk { drafts: Vec::new(), created: Vec::new(), rejected: refused, ..*self }
    }

    /// Makes each draft's [`NewContact`] ahead of the store, for a store that takes them
    /// ([`crate::ports::Imports::takes_new_contacts`]). A draft whose contact cannot be made
    /// leaves the chunk unprepared, and [`Chunk::created`] says why when the line is applied.
    pub fn prepare(&mut self) {
        self.created = self.drafts.iter().map(|(_, d)| NewContact::of(d)).collect::<Result<_, _>>().unwrap_or_default();
    }

    /// The contact the `i`th draft makes if none of its keys is taken: made by
    /// [`Chunk::prepare`], or here for a chunk that was not prepared.
    pub fn created(&self, i: usize) -> Result<std::borrow::Cow<'_, NewContact>, String> {
        match self.created.get(i) {
            Some(c) => Ok(std::borrow::Cow::Borrowed(c)),
            None => NewContact::of(&self.drafts[i].1).map(std::borrow::Cow::Owned),
        }
    }
}

/// A line's contact as it is created when none of its keys belongs to a contact yet: its new
/// id, the keys it claims and its document. Made while the chunk is parsed, beside the store's
/// writer, so that a store with a single writer (the embedded one) only has to write it; a store
/// that does not take them pays nothing for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    pub id: String,
    /// Its keys as stored ([`super::ContactKey::as_key`]).
    pub keys: Vec<String>,
    /// The contact as JSON.
    pub doc: String,
}

impl NewContact {
    pub fn of(draft: &ContactDraft) -> Result<NewContact, String> {
        let mut contact = Contact::new(super::ids::new_id("ct"));
        contact.apply(draft);
        let doc = serde_json::to_string(&contact).map_err(|e| format!("cannot be stored ({e})"))?;
        Ok(NewContact { id: contact.id, keys: draft.keys().iter().map(|k| k.as_key()).collect(), doc })
    }
}

/// One chunk of a file, read: the lines to apply and the ones refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The offsets it spans: `from` is where the import stood, `to` where it stands after.
    pub from: u64,
    pub to: u64,
    pub next_line: u64,
    pub lines: u64,
    /// The lines' drafts with their line numbers.
    pub drafts: Vec<(u64, ContactDraft)>,
    /// For each draft, in the same order, the contact it makes if it is new (once prepared).
    pub created: Vec<NewContact>,
    pub rejected: Vec<LineError>,
    /// Whether the file ends with this chunk.
    pub done: bool,
}

/// Reads the records of `data` (the file from byte `from`, which starts file line `line`; `eof`
/// when `data` reaches the end of the file). Unless at the end, the last record may be cut
/// short, so it is left for the next chunk. `Err` when no whole record fits in `data`.
pub fn parse_chunk(columns: &[Column], data: &[u8], from: u64, line: u64, eof: bool) -> Result<Chunk, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut records: Vec<(u64, u64, Result<ContactDraft, String>)> = Vec::new();
    loop {
        let start = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(true) => records.push((start.byte(), line + start.line() - 1, parse_line(columns, &record))),
            Ok(false) => break,
            // Reading from memory, only a record the reader cannot split fails: refuse that line.
            Err(e) => records.push((start.byte(), line + start.line() - 1, Err(format!("is not valid CSV ({e})")))),
        }
    }
    let (to, next_line) = if eof {
        let end = reader.position();
        (from + data.len() as u64, line + end.line().saturating_sub(1))
    } else {
        let Some((byte, at, _)) = records.pop() else { return Err(format!("line {line} is not complete")) };
        if records.is_empty() {
            return Err(format!("line {line} is longer than {} bytes", data.len()));
        }
        (from + byte, at)
    };
    let mut chunk = Chunk { from, to, next_line, lines: records.len() as u64, done: eof, ..Chunk::default() };
    for (_, at, parsed) in records {
        match parsed {
            Ok(d) => chunk.drafts.push((at, d)),
            Err(reason) => chunk.rejected.push(LineError { line: at, reason }),
        }
    }
    Ok(chunk)
}

/// The header of a file: its columns and where the first line after it starts.
pub fn read_header(data: &[u8], eof: bool) -> Result<(Vec<Column>, u64, u64), String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err("the file is empty: it needs a header line".into()),
        Err(e) => return Err(format!("the header is not valid CSV ({e})")),
    }
    let end = reader.position();
    if !eof && end.byte() as usize >= data.len() {
        return Err(format!("the header is longer than {CHUNK_BYTES} bytes"));
    }
    let cells: Vec<&str> = record
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .map_err(|_| "the header is not UTF-8 text".to_string())?;
    Ok((parse_header(&cells)?, end.byte(), end.line()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(h: &str) -> Vec<Column> {
        read_header(h.as_bytes(), true).unwrap().0
    }

    #[test]
    fn the_header_names_known_columns_and_fields() {
        let (cols, offset, line) =
            read_header(b"\xEF\xBB\xBFPhone,email,plan\n+14155550100,a@b.co,gold\n", false).unwrap();
        assert_eq!(cols, vec![Column::Phone, Column::Email, Column::Field("plan".into())]);
        assert_eq!((offset, line), (20, 2));
    }

    #[test]
    fn a_bad_header_says_why() {
        let err = |h: &str| read_header(h.as_bytes(), true).unwrap_err();
        assert!(err("name,plan\n").contains("needs a column to find contacts by"));
        assert!(err("phone,Phone\n").contains("appears twice"));
        assert!(err("phone,,x\n").contains("column 2"));
        assert!(err("phone,first name\n").contains("first name"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn lines_become_drafts_or_reasons_with_their_line_numbers() {
        let cols = columns("phone,name,timezone,plan\n");
        let data = "+14155550100,Ada,Europe/Berlin,gold\n\
                    12,Bob,,\n\
                    +14155550101,\"Multi\nline\",,\n\
                    ,Nobody,,\n\
                    +14155550102,Eve,Mars/Base,\n\
                    +14155550103,Too,many,cells,here\n";
        let chunk = parse_chunk(&cols, data.as_bytes(), 30, 2, true).unwrap();
        assert_eq!(chunk.lines, 6);
        assert_eq!((chunk.to, chunk.done), (30 + data.len() as u64, true));
        let lines: Vec<u64> = chunk.drafts.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 4]);
        assert_eq!(chunk.drafts[0].1.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(chunk.drafts[0].1.fields.get("plan").map(String::as_str), Some("gold"));
        assert_eq!(chunk.drafts[1].1.name.as_deref(), Some("Multi\nline"));
        let bad: Vec<(u64, &str)> = chunk.rejected.iter().map(|e| (e.line, e.reason.as_str())).collect();
        assert_eq!(bad[0].0, 3);
        assert!(bad[0].1.starts_with("phone:"), "{bad:?}");
        assert_eq!(bad[1], (6, "has no phone, email or channel id to find the contact by"));
        assert!(bad[2].1.starts_with("timezone:") && bad[2].0 == 7, "{bad:?}");
        assert_eq!(bad[3], (8, "has 5 values; the header has 4 columns"));
    }

    #[test]
    fn a_chunk_not_at_the_end_leaves_its_last_record_for_the_next() {
        let cols = columns("email\n");
        let data = b"a@x.co\nb@x.co\nc@x.c";
        let chunk = parse_chunk(&cols, data, 6, 2, false).unwrap();
        assert_eq!(chunk.drafts.len(), 2);
        assert_eq!((chunk.to, chunk.next_line, chunk.done), (6 + 14, 4, false));
        let rest = parse_chunk(&cols, b"c@x.co\n", chunk.to, chunk.next_line, true).unwrap();
        assert_eq!(rest.drafts[0].0, 4);
        assert!(parse_chunk(&cols, b"a-very-long-line", 6, 2, false).unwrap_err().contains("longer than"));
    }

    #[test]
    fn a_prepared_chunk_holds_each_drafts_contact_as_created() {
        let cols = columns("phone,email,name,plan");
        let data = b"+14155550101,a@x.co,Ann,gold\n+14155550102,,Bo,\n";
        let mut chunk = parse_chunk(&cols, data, 0, 2, true).unwrap();
        assert!(chunk.created.is_empty(), "parsing alone prepares nothing");
        chunk.prepare();
        assert_eq!(chunk.created.len(), 2);
        let ann = &chunk.created[0];
        assert_eq!(ann.keys, chunk.drafts[0].1.keys().iter().map(|k| k.as_key()).collect::<Vec<_>>());
        assert_eq!(ann.keys.len(), 2);
        let doc: Contact = serde_json::from_str(&ann.doc).unwrap();
        assert_eq!((doc.id.as_str(), doc.name.as_deref()), (ann.id.as_str(), Some("Ann")));
        assert_eq!(doc.fields.get("plan").map(String::as_str), Some("gold"));
        assert_ne!(chunk.created[1].id, ann.id);
        assert_eq!(*chunk.created(1).unwrap(), chunk.created[1]);
        let unprepared = Chunk { created: Vec::new(), ..chunk.clone() };
        assert_eq!(unprepared.created(1).unwrap().keys, chunk.created[1].keys, "made when asked, unprepared");
    }

    #[test]
    fn counters_keep_the_first_hundred_errors_and_count_the_rest() {
        let now = crate::domain::now();
        let t = TenantId::parse("t1").unwrap();
        let mut import = Import::new(&t, "s", "imp_1", 10, vec![Column::Phone], 0, 2);
        let rejected = (0..150).map(|i| LineError { line: i + 2, reason: "bad".into() }).collect();
        let chunk = Chunk { from: 0, to: 10, next_line: 160, lines: 152, rejected, done: true, ..Chunk::default() };
        import.apply(&chunk, &[LineOutcome::Created, LineOutcome::Unchanged], now);
        assert_eq!((import.rejected, import.errors.len(), import.imported()), (150, 100, 2));
        assert_eq!(import.state, ImportState::Completed);
    }
}
