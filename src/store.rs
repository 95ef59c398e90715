//! The persistent state: folder watermarks, the sent index, the audit log and user decisions.
//!
//! Why SQLite (rusqlite, bundled): a sweep can be killed at any instant and must neither lose
//! nor repeat work. SQLite in WAL mode with `synchronous=FULL` makes every committed
//! transaction durable, the schema is versioned and migrated on open, and the file
//! (`state_dir/state.sqlite3`) can be inspected by the user with the `sqlite3` CLI.
//!
//! The API is deliberately small and typed; the sweeper (not this module) decides the order
//! of operations, e.g. "append the audit row, move, then advance the watermark".
//!
//! Tables (one row per …):
//! - `folders`: mailbox of an account — its UIDVALIDITY and the last UID processed.
//! - `sent`: Message-ID the user sent — date, recipients, subject, where it was seen.
//! - `audit`: verdict or action taken on a message.
//! - `released`: message the user took back out of quarantine; it is never moved again.
//! - `sweeps`: sweep of an account — start, end, counts (JSON).
//! - `relays`: relay domain seen in the Received chain of a genuine bounce's original
//!   (the learned relay fingerprint, see [`crate::evidence::fingerprint`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

/// File name of the database inside `state_dir`.
pub const DB_FILE: &str = "state.sqlite3";

/// Current schema version (see `MIGRATIONS`).
pub const SCHEMA_VERSION: i64 = 4;

/// Errors from the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer backsweep.
    #[error(
        "state database {path} has schema version {found}, newer than this backsweep supports \
         ({SCHEMA_VERSION}); upgrade backsweep"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// A query failed.
    #[error("state database error while {context}: {source}")]
    Sql {
        /// What was being done.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
}

trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { context, source })
    }
}

/// A folder's synchronisation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The folder's UIDVALIDITY when `last_uid` was recorded.
    pub uidvalidity: u32,
    /// Highest UID already processed (0 = none).
    pub last_uid: u32,
}

/// One message of the sent index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEntry {
    /// Message-ID without angle brackets (stored as given; callers normalise).
    pub message_id: String,
    /// Date header as Unix seconds, if parseable.
    pub date: Option<i64>,
    /// Recipients (To, Cc, Bcc), lower-cased addresses.
    pub recipients: Vec<String>,
    /// Subject (decoded), may be empty.
    pub subject: String,
    /// The Sent folder it was found in.
    pub mailbox: String,
    /// Its UID there.
    pub uid: u32,
}

/// One audit-log record (an input; [`AuditRecord`] is what is read back).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    /// Account name.
    pub account: String,
    /// Folder the message was in.
    pub mailbox: String,
    /// UID in that folder.
    pub uid: u32,
    /// Message-ID of the message (not of the original), if any.
    pub message_id: Option<String>,
    /// Verdict, e.g. `backscatter`, `genuine`, `unknown`, `released`.
    pub verdict: String,
    /// Rule ids that fired.
    pub rules: Vec<String>,
    /// What was done: e.g. `moved`, `kept`, `dry-run`, `released`.
    pub action: String,
    /// Destination folder of a move, if any.
    pub destination: Option<String>,
}

/// A quarantine move that was begun but not recorded as done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMove {
    /// Record id (for [`Store::quarantine_done`]).
    pub id: i64,
    /// The message's inbox UID.
    pub uid: u32,
    /// Its content hash.
    pub content_hash: String,
    /// The quarantine folder's UIDVALIDITY and UIDNEXT before a COPY-fallback move.
    pub dest_mark: Option<(u32, u32)>,
}

/// An audit-log record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row id (increasing).
    pub id: i64,
    /// Unix seconds when it was written.
    pub time: i64,
    /// The entry.
    pub entry: AuditEntry,
}

/// Summary of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepInfo {
    /// Row id, returned by [`Store::sweep_started`].
    pub id: i64,
    /// Account name.
    pub account: String,
    /// Unix seconds at start.
    pub started: i64,
    /// Unix seconds at the end; `None` if it did not finish (still running or crashed).
    pub finished: Option<i64>,
    /// Counts as a JSON object text (e.g. `{"moved":3,"kept":1}`); `None` until finished.
    pub counts_json: Option<String>,
}

/// Current time in Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const MIGRATIONS: &[&str] = &[
    // version 1
    "CREATE TABLE folders (
        account     TEXT NOT NULL,
        mailbox     TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid    INTEGER NOT NULL,
        PRIMARY KEY (account, mailbox)
    );
    CREATE TABLE sent (
        account    TEXT NOT NULL,
        message_id TEXT NOT NULL,
        date       INTEGER,
        recipients TEXT NOT NULL,
        subject    TEXT NOT NULL,
        mailbox    TEXT NOT NULL,
        uid        INTEGER NOT NULL,
        UNIQUE (account, message_id)
    );
    CREATE INDEX sent_by_mailbox ON sent (account, mailbox);
    CREATE INDEX sent_by_date ON sent (account, date);
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        INTEGER NOT NULL,
        account     TEXT NOT NULL,
        mailbox     TEXT NOT NULL,
        uid         INTEGER NOT NULL,
        message_id  TEXT,
        verdict     TEXT NOT NULL,
        rules       TEXT NOT NULL,
        action      TEXT NOT NULL,
        destination TEXT
    );
    CREATE INDEX audit_by_account ON audit (account, id);
    CREATE TABLE released (
        account      TEXT NOT NULL,
        message_id   TEXT,
        content_hash TEXT,
        time         INTEGER NOT NULL
    );
    CREATE INDEX released_by_id ON released (account, message_id);
    CREATE INDEX released_by_hash ON released (account, content_hash);
    CREATE TABLE sweeps (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        account  TEXT NOT NULL,
        started  INTEGER NOT NULL,
        finished INTEGER,
        counts   TEXT
    );
    CREATE INDEX sweeps_by_account ON sweeps (account, id);",
    // version 2: quarantine moves (to recognise a message the user took back,
    // and to finish a move interrupted by a crash) and the From addresses the
    // user really sends with.
    "CREATE TABLE quarantined (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        account      TEXT NOT NULL,
        message_id   TEXT,
        content_hash TEXT NOT NULL,
        uid          INTEGER NOT NULL,
        time         INTEGER NOT NULL,
        state        TEXT NOT NULL
    );
    CREATE INDEX quarantined_by_hash ON quarantined (account, content_hash);
    CREATE TABLE sent_senders (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY (account, address)
    );",
    // version 3: the relays the user's mail leaves through, learned from the
    // originals of genuine bounces (one row per original and relay domain, so
    // judging a bounce again never counts it twice).
    "CREATE TABLE relays (
        account     TEXT NOT NULL,
        original_id TEXT NOT NULL,
        domain      TEXT NOT NULL,
        PRIMARY KEY (account, original_id, domain)
    );",
    // version 4: where the quarantine folder stood (UIDVALIDITY, UIDNEXT)
    // before a COPY-fallback move, so that after a crash only a copy made
    // by that very move can complete it (a message with the same
    // Message-ID, or an identical one moved earlier, never can).
    "ALTER TABLE quarantined ADD COLUMN dest_uidvalidity INTEGER;
    ALTER TABLE quarantined ADD COLUMN dest_uidnext INTEGER;",
];

/// An open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `state_dir/state.sqlite3`, creating `state_dir` with mode
    /// 0700 on Unix, and runs pending migrations.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        if !state_dir.exists() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(state_dir)
                .map_err(|source| StoreError::CreateDir {
                    path: state_dir.to_path_buf(),
                    source,
                })?;
        }
        Store::open_file(&state_dir.join(DB_FILE))
    }

    /// Opens a database file directly (tests, tools).
    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Every per-message lookup of a sweep goes through the statement
        // cache (see `cached_row`); this holds all of them.
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.cached_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map(|v| v.unwrap_or(0))
        .ctx("reading the schema version")
    }

    // -- watermarks --------------------------------------------------------------------

    /// The watermark of a folder, if it was ever processed.
    pub fn watermark(&self, account: &str, mailbox: &str) -> Result<Option<Watermark>, StoreError> {
        self.cached_row(
            "SELECT uidvalidity, last_uid FROM folders WHERE account = ?1 AND mailbox = ?2",
            params![account, mailbox],
            |r| {
                Ok(Watermark {
                    uidvalidity: r.get(0)?,
                    last_uid: r.get(1)?,
                })
            },
        )
        .optional()
        .ctx("reading a folder watermark")
    }

    /// Records a folder's watermark (insert or replace).
    pub fn set_watermark(
        &self,
        account: &str,
        mailbox: &str,
        wm: Watermark,
    ) -> Result<(), StoreError> {
        self.cached_execute(
            "INSERT INTO folders (account, mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, mailbox) DO UPDATE SET uidvalidity = ?3, last_uid = ?4",
            params![account, mailbox, wm.uidvalidity, wm.last_uid],
        )
        .map(|_| ())
        .ctx("writing a folder watermark")
    }

    /// Starts a folder over after a UIDVALIDITY change: deletes the folder's sent-index rows
    /// and sets its watermark to `(uidvalidity, 0)`, in one transaction. Returns how many
    /// sent rows were deleted.
    pub fn reset_folder(
        &mut self,
        account: &str,
        mailbox: &str,
        uidvalidity: u32,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().ctx("starting a folder reset")?;
        let deleted = tx
            .execute(
                "DELETE FROM sent WHERE account = ?1 AND mailbox = ?2",
                params![account, mailbox],
            )
            .ctx("deleting a folder's sent index")?;
        tx.execute(
            "INSERT INTO folders (account, mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT (account, mailbox) DO UPDATE SET uidvalidity = ?3, last_uid = 0",
            params![account, mailbox, uidvalidity],
        )
        .ctx("resetting a folder watermark")?;
        tx.commit().ctx("committing a folder reset")?;
        Ok(deleted)
    }

    // -- sent index --------------------------------------------------------------------

    /// Adds sent messages in one transaction and, if `watermark` is given, advances that
    /// folder's watermark in the same transaction (so a crash never leaves the index and the
    /// watermark out of step). A Message-ID already indexed for the account is updated to
    /// the new location. Returns the number of entries written.
    pub fn insert_sent(
        &mut self,
        account: &str,
        entries: &[SentEntry],
        watermark: Option<(&str, Watermark)>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().ctx("starting a sent-index batch")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sent (account, message_id, date, recipients, subject, mailbox, uid)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account, message_id) DO UPDATE SET
                        date = COALESCE(excluded.date, sent.date),
                        recipients = excluded.recipients, subject = excluded.subject,
                        mailbox = excluded.mailbox, uid = excluded.uid",
                )
                .ctx("preparing a sent-index insert")?;
            for e in entries {
                let rcpts = e
                    .recipients
                    .iter()
                    .map(|r| r.trim().to_lowercase())
                    .filter(|r| !r.is_empty())
                    .collect::<Vec<_>>()
                    .join(",");
                stmt.execute(params![
                    account,
                    e.message_id,
                    e.date,
                    rcpts,
                    e.subject,
                    e.mailbox,
                    e.uid
                ])
                .ctx("inserting into the sent index")?;
            }
        }
        if let Some((mailbox, wm)) = watermark {
            tx.execute(
                "INSERT INTO folders (account, mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, mailbox) DO UPDATE SET uidvalidity = ?3, last_uid = ?4",
                params![account, mailbox, wm.uidvalidity, wm.last_uid],
            )
            .ctx("advancing a sent folder watermark")?;
        }
        tx.commit().ctx("committing a sent-index batch")?;
        Ok(entries.len())
    }

    /// Whether the account's sent index holds this Message-ID.
    pub fn sent_contains(&self, account: &str, message_id: &str) -> Result<bool, StoreError> {
        self.cached_row(
            "SELECT 1 FROM sent WHERE account = ?1 AND message_id = ?2",
            params![account, message_id],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
        .ctx("looking up a Message-ID")
    }

    /// The oldest date in the account's sent index: the index covers mail sent since then.
    /// `None` if the index is empty or no entry has a date.
    pub fn sent_coverage(&self, account: &str) -> Result<Option<i64>, StoreError> {
        self.cached_row(
            "SELECT MIN(date) FROM sent WHERE account = ?1",
            params![account],
            |r| r.get::<_, Option<i64>>(0),
        )
        .ctx("reading the sent index coverage")
    }

    /// Number of entries in the account's sent index.
    pub fn sent_count(&self, account: &str) -> Result<u64, StoreError> {
        self.cached_row(
            "SELECT COUNT(*) FROM sent WHERE account = ?1",
            params![account],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u64::try_from(n).unwrap_or(0))
        .ctx("counting the sent index")
    }

    /// Sent entries addressed to `recipient` (case-insensitive) dated within
    /// `from..=to` (Unix seconds), oldest first.
    pub fn sent_to_recipient_between(
        &self,
        account: &str,
        recipient: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<SentEntry>, StoreError> {
        let rcpt = recipient.trim().to_lowercase();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT message_id, date, recipients, subject, mailbox, uid FROM sent
                 WHERE account = ?1 AND date BETWEEN ?2 AND ?3
                   AND instr(',' || recipients || ',', ',' || ?4 || ',') > 0
                 ORDER BY date, message_id",
            )
            .ctx("preparing a recipient lookup")?;
        let rows = stmt
            .query_map(params![account, from, to, rcpt], |r| {
                let rcpts: String = r.get(2)?;
                Ok(SentEntry {
                    message_id: r.get(0)?,
                    date: r.get(1)?,
                    recipients: rcpts
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    subject: r.get(3)?,
                    mailbox: r.get(4)?,
                    uid: r.get(5)?,
                })
            })
            .ctx("looking up sent mail by recipient")?;
        rows.collect::<Result<Vec<_>, _>>()
            .ctx("reading sent mail by recipient")
    }

    // -- audit log ---------------------------------------------------------------------

    /// Appends an audit record stamped with the current time; returns its id.
    pub fn audit_append(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.cached_execute(
                "INSERT INTO audit (time, account, mailbox, uid, message_id, verdict, rules, action, destination)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    now_unix(),
                    entry.account,
                    entry.mailbox,
                    entry.uid,
                    entry.message_id,
                    entry.verdict,
                    entry.rules.join(","),
                    entry.action,
                    entry.destination
                ],
            )
            .ctx("appending to the audit log")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The last `limit` audit records of an account, newest first.
    pub fn audit_recent(&self, account: &str, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, time, account, mailbox, uid, message_id, verdict, rules, action, destination
                 FROM audit WHERE account = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .ctx("preparing an audit query")?;
        let rows = stmt
            .query_map(params![account, limit], |r| {
                let rules: String = r.get(7)?;
                Ok(AuditRecord {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    entry: AuditEntry {
                        account: r.get(2)?,
                        mailbox: r.get(3)?,
                        uid: r.get(4)?,
                        message_id: r.get(5)?,
                        verdict: r.get(6)?,
                        rules: rules
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                        action: r.get(8)?,
                        destination: r.get(9)?,
                    },
                })
            })
            .ctx("querying the audit log")?;
        rows.collect::<Result<Vec<_>, _>>()
            .ctx("reading the audit log")
    }

    // -- user decisions ----------------------------------------------------------------

    /// Remembers that the user released a message (by Message-ID and/or content hash) so
    /// it is never moved again.
    pub fn released_insert(
        &self,
        account: &str,
        message_id: Option<&str>,
        content_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        self.cached_execute(
                "INSERT INTO released (account, message_id, content_hash, time) VALUES (?1, ?2, ?3, ?4)",
                params![account, message_id, content_hash, now_unix()],
            )
            .map(|_| ())
            .ctx("recording a released message")
    }

    /// Whether a message matching this Message-ID or content hash was released by the user.
    pub fn is_released(
        &self,
        account: &str,
        message_id: Option<&str>,
        content_hash: Option<&str>,
    ) -> Result<bool, StoreError> {
        if message_id.is_none() && content_hash.is_none() {
            return Ok(false);
        }
        self.cached_row(
                "SELECT 1 FROM released WHERE account = ?1
                   AND ((?2 IS NOT NULL AND message_id = ?2) OR (?3 IS NOT NULL AND content_hash = ?3))
                 LIMIT 1",
                params![account, message_id, content_hash],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .ctx("checking released messages")
    }

    /// How many audit records the account has per (verdict, action), for `status`.
    pub fn audit_counts(&self, account: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.grouped_counts(
            account,
            "SELECT verdict, action, COUNT(*) FROM audit WHERE account = ?1
             GROUP BY verdict, action ORDER BY verdict, action",
            "counting audit records",
        )
    }

    /// Runs a `SELECT text, text, COUNT(*) ... WHERE account = ?1 GROUP BY ...` query.
    fn grouped_counts(
        &self,
        account: &str,
        sql: &str,
        context: &'static str,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).ctx(context)?;
        let rows = stmt
            .query_map(params![account], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .ctx(context)?;
        rows.map(|r| r.map(|(a, b, n)| (a, b, u64::try_from(n).unwrap_or(0))))
            .collect::<Result<Vec<_>, _>>()
            .ctx(context)
    }

    // -- batches -------------------------------------------------------------------------

    /// Starts a batch: the writes until [`Store::commit`] become durable
    /// together, with one disk sync instead of one per write (a sweep writes
    /// an audit record per judged message).
    pub fn begin(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx("starting a batch")
    }

    /// Makes a batch durable.
    pub fn commit(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").ctx("committing a batch")
    }

    /// Abandons an unfinished batch (after an error); harmless without one.
    pub fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// `query_row` through the connection's statement cache: a sweep runs
    /// the same few lookups for every candidate, and preparing them anew
    /// each time cost more than running them.
    fn cached_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    /// `execute` through the statement cache (see [`Store::cached_row`]).
    fn cached_execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    // -- quarantine moves ---------------------------------------------------------------

    /// Records, before it happens, that a message is about to be moved to quarantine.
    /// Returns the record id for [`Store::quarantine_done`]. A record still `pending`
    /// after a crash tells the next sweep to check the quarantine folder before moving.
    /// `dest_mark` is the quarantine folder's UIDVALIDITY and UIDNEXT just
    /// before a COPY-fallback move (see [`Store::pending_moves`]).
    pub fn quarantine_intent(
        &self,
        account: &str,
        message_id: Option<&str>,
        content_hash: &str,
        uid: u32,
        dest_mark: Option<(u32, u32)>,
    ) -> Result<i64, StoreError> {
        self.cached_execute(
                "INSERT INTO quarantined
                   (account, message_id, content_hash, uid, time, state, dest_uidvalidity, dest_uidnext)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                params![
                    account,
                    message_id,
                    content_hash,
                    uid,
                    now_unix(),
                    dest_mark.map(|m| m.0),
                    dest_mark.map(|m| m.1)
                ],
            )
            .ctx("recording a quarantine move")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks a quarantine move as done.
    pub fn quarantine_done(&self, id: i64) -> Result<(), StoreError> {
        self.cached_execute(
            "UPDATE quarantined SET state = 'moved' WHERE id = ?1",
            params![id],
        )
        .map(|_| ())
        .ctx("completing a quarantine move")
    }

    /// Whether a message with this content was moved to quarantine before (or was
    /// about to be): seeing it in the inbox again means the user took it back.
    pub fn was_quarantined(
        &self,
        account: &str,
        content_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        self.cached_row(
            "SELECT state FROM quarantined WHERE account = ?1 AND content_hash = ?2
                 ORDER BY id DESC LIMIT 1",
            params![account, content_hash],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .ctx("looking up a quarantine move")
    }

    /// Drops the recorded quarantine position of an unfinished move whose
    /// COPY was found not to have happened, so that no later copy can ever
    /// match it. The record stays pending (the message is still caught
    /// mid-move, not taken back by the user).
    pub fn quarantine_disarm(&self, id: i64) -> Result<(), StoreError> {
        self.cached_execute(
            "UPDATE quarantined SET dest_uidvalidity = NULL, dest_uidnext = NULL
                 WHERE id = ?1 AND state = 'pending'",
            params![id],
        )
        .map(|_| ())
        .ctx("dropping the position of an unfinished quarantine move")
    }

    /// The unfinished moves of `account`.
    pub fn pending_moves(&self, account: &str) -> Result<Vec<PendingMove>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, uid, content_hash, dest_uidvalidity, dest_uidnext FROM quarantined
                 WHERE account = ?1 AND state = 'pending' ORDER BY id",
            )
            .ctx("listing unfinished moves")?;
        let rows = stmt
            .query_map(params![account], |r| {
                let validity: Option<u32> = r.get(3)?;
                let next: Option<u32> = r.get(4)?;
                Ok(PendingMove {
                    id: r.get(0)?,
                    uid: r.get(1)?,
                    content_hash: r.get(2)?,
                    dest_mark: validity.zip(next),
                })
            })
            .ctx("listing unfinished moves")?;
        rows.collect::<Result<Vec<_>, _>>()
            .ctx("listing unfinished moves")
    }

    // -- the user's own From addresses ---------------------------------------------------

    /// Remembers From addresses seen in the user's Sent folders.
    pub fn add_sent_senders(&self, account: &str, addresses: &[String]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO sent_senders (account, address) VALUES (?1, ?2)")
            .ctx("preparing a sender insert")?;
        for a in addresses {
            stmt.execute(params![account, a.to_lowercase()])
                .ctx("recording a sender address")?;
        }
        Ok(())
    }

    /// Whether the user's sent mail was ever sent from `address`.
    pub fn is_sent_sender(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        self.cached_row(
            "SELECT 1 FROM sent_senders WHERE account = ?1 AND address = ?2",
            params![account, address.to_lowercase()],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
        .ctx("looking up a sender address")
    }

    // -- learned fingerprints ------------------------------------------------------------

    /// Every Message-ID in the account's sent index (for the Message-ID fingerprint).
    pub fn sent_message_ids(&self, account: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT message_id FROM sent WHERE account = ?1")
            .ctx("preparing a Message-ID listing")?;
        let rows = stmt
            .query_map(params![account], |r| r.get::<_, String>(0))
            .ctx("listing sent Message-IDs")?;
        rows.collect::<Result<Vec<_>, _>>()
            .ctx("reading sent Message-IDs")
    }

    /// Remembers the relay domains of a genuine bounce's original (idempotent).
    pub fn add_relays(
        &self,
        account: &str,
        original_id: &str,
        domains: &[String],
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO relays (account, original_id, domain) VALUES (?1, ?2, ?3)",
            )
            .ctx("preparing a relay insert")?;
        for d in domains {
            stmt.execute(params![account, original_id, d])
                .ctx("recording a relay")?;
        }
        Ok(())
    }

    /// The learned relays as (original Message-ID, relay domain) pairs.
    pub fn relays(&self, account: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT original_id, domain FROM relays WHERE account = ?1")
            .ctx("preparing a relay listing")?;
        let rows = stmt
            .query_map(params![account], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("listing relays")?;
        rows.collect::<Result<Vec<_>, _>>().ctx("reading relays")
    }

    /// How many audit records the account has per (verdict, deciding rule): the
    /// first rule of a record is the reason that decided its verdict. For `status`.
    pub fn audit_rule_counts(
        &self,
        account: &str,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.grouped_counts(
            account,
            "SELECT verdict, substr(rules, 1, instr(rules || ',', ',') - 1) AS rule, COUNT(*)
             FROM audit WHERE account = ?1 GROUP BY verdict, rule ORDER BY verdict, rule",
            "counting audit records by rule",
        )
    }

    // -- sweeps ------------------------------------------------------------------------

    /// Records the start of a sweep; returns its id for [`Store::sweep_finished`].
    pub fn sweep_started(&self, account: &str) -> Result<i64, StoreError> {
        self.cached_execute(
            "INSERT INTO sweeps (account, started) VALUES (?1, ?2)",
            params![account, now_unix()],
        )
        .ctx("recording a sweep start")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of a sweep with its counts (a JSON object text).
    pub fn sweep_finished(&self, id: i64, counts_json: &str) -> Result<(), StoreError> {
        self.cached_execute(
            "UPDATE sweeps SET finished = ?2, counts = ?3 WHERE id = ?1",
            params![id, now_unix(), counts_json],
        )
        .map(|_| ())
        .ctx("recording a sweep end")
    }

    /// The most recent sweep of an account (finished or not).
    pub fn last_sweep(&self, account: &str) -> Result<Option<SweepInfo>, StoreError> {
        self.cached_row(
            "SELECT id, account, started, finished, counts FROM sweeps
                 WHERE account = ?1 ORDER BY id DESC LIMIT 1",
            params![account],
            |r| {
                Ok(SweepInfo {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    started: r.get(2)?,
                    finished: r.get(3)?,
                    counts_json: r.get(4)?,
                })
            },
        )
        .optional()
        .ctx("reading the last sweep")
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied INTEGER NOT NULL)",
    )
    .map_err(open_err)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(open_err)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
        if version <= current {
            continue;
        }
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(sql).map_err(open_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?1, ?2)",
            params![version, now_unix()],
        )
        .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, date: Option<i64>, rcpts: &[&str], mailbox: &str, uid: u32) -> SentEntry {
        SentEntry {
            message_id: id.into(),
            date,
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
            subject: format!("subject {id}"),
            mailbox: mailbox.into(),
            uid,
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state")).expect("open");
        (dir, store)
    }

    #[test]
    fn open_creates_schema_and_reopens() {
        let (dir, store) = open();
        assert_eq!(store.schema_version().expect("v"), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode.to_lowercase(), "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(sync, 2, "FULL");
        store
            .set_watermark(
                "a",
                "INBOX",
                Watermark {
                    uidvalidity: 7,
                    last_uid: 42,
                },
            )
            .expect("set");
        drop(store);
        let store = Store::open(&dir.path().join("state")).expect("reopen");
        assert_eq!(store.schema_version().expect("v"), SCHEMA_VERSION);
        assert_eq!(
            store.watermark("a", "INBOX").expect("wm"),
            Some(Watermark {
                uidvalidity: 7,
                last_uid: 42
            })
        );
        assert!(dir.path().join("state").join(DB_FILE).is_file());
    }

    #[test]
    fn refuses_newer_schema() {
        let (dir, store) = open();
        store
            .conn
            .execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .expect("insert");
        drop(store);
        let e = Store::open(&dir.path().join("state")).expect_err("too new");
        assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
    }

    #[test]
    fn watermarks() {
        let (_d, store) = open();
        assert_eq!(store.watermark("a", "INBOX").expect("wm"), None);
        store
            .set_watermark(
                "a",
                "INBOX",
                Watermark {
                    uidvalidity: 1,
                    last_uid: 5,
                },
            )
            .expect("set");
        store
            .set_watermark(
                "a",
                "INBOX",
                Watermark {
                    uidvalidity: 1,
                    last_uid: 9,
                },
            )
            .expect("set");
        store
            .set_watermark(
                "b",
                "INBOX",
                Watermark {
                    uidvalidity: 3,
                    last_uid: 1,
                },
            )
            .expect("set");
        assert_eq!(
            store.watermark("a", "INBOX").expect("wm"),
            Some(Watermark {
                uidvalidity: 1,
                last_uid: 9
            })
        );
        assert_eq!(
            store.watermark("b", "INBOX").expect("wm"),
            Some(Watermark {
                uidvalidity: 3,
                last_uid: 1
            })
        );
    }

    #[test]
    fn sent_index_and_reset() {
        let (_d, mut store) = open();
        let n = store
            .insert_sent(
                "a",
                &[
                    entry(
                        "m1@x",
                        Some(1000),
                        &["Bob@Example.com", "c@example.com"],
                        "Sent",
                        1,
                    ),
                    entry("m2@x", Some(500), &["d@example.com"], "Sent", 2),
                    entry("m3@x", None, &["e@example.com"], "Other", 1),
                ],
                Some((
                    "Sent",
                    Watermark {
                        uidvalidity: 11,
                        last_uid: 2,
                    },
                )),
            )
            .expect("insert");
        assert_eq!(n, 3);
        assert_eq!(
            store.watermark("a", "Sent").expect("wm"),
            Some(Watermark {
                uidvalidity: 11,
                last_uid: 2
            })
        );
        assert!(store.sent_contains("a", "m1@x").expect("q"));
        assert!(!store.sent_contains("b", "m1@x").expect("q"));
        assert!(!store.sent_contains("a", "nope@x").expect("q"));
        assert_eq!(store.sent_coverage("a").expect("cov"), Some(500));
        assert_eq!(store.sent_coverage("b").expect("cov"), None);
        assert_eq!(store.sent_count("a").expect("count"), 3);

        // Duplicate Message-ID: updated, not duplicated.
        store
            .insert_sent(
                "a",
                &[entry("m1@x", None, &["bob@example.com"], "Sent", 7)],
                None,
            )
            .expect("dup");
        assert_eq!(store.sent_count("a").expect("count"), 3);

        let hits = store
            .sent_to_recipient_between("a", "BOB@example.com", 900, 1100)
            .expect("rcpt");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].message_id, "m1@x");
        assert_eq!(hits[0].date, Some(1000), "a None date keeps the known one");
        assert_eq!(hits[0].uid, 7);
        assert!(store
            .sent_to_recipient_between("a", "bob@example.com", 0, 999)
            .expect("rcpt")
            .is_empty());
        // No substring matches: "ob@example.com" is not "bob@example.com".
        assert!(store
            .sent_to_recipient_between("a", "ob@example.com", 0, 2000)
            .expect("rcpt")
            .is_empty());

        let deleted = store.reset_folder("a", "Sent", 12).expect("reset");
        assert_eq!(deleted, 2);
        assert!(!store.sent_contains("a", "m1@x").expect("q"));
        assert!(
            store.sent_contains("a", "m3@x").expect("q"),
            "other folder kept"
        );
        assert_eq!(
            store.watermark("a", "Sent").expect("wm"),
            Some(Watermark {
                uidvalidity: 12,
                last_uid: 0
            })
        );
    }

    #[test]
    fn audit_log() {
        let (_d, store) = open();
        let e = AuditEntry {
            account: "a".into(),
            mailbox: "INBOX".into(),
            uid: 17,
            message_id: Some("bounce@mta".into()),
            verdict: "backscatter".into(),
            rules: vec!["dsn.multipart-report".into(), "verdict.not-in-index".into()],
            action: "moved".into(),
            destination: Some("Quarantine".into()),
        };
        let id1 = store.audit_append(&e).expect("append");
        let id2 = store
            .audit_append(&AuditEntry {
                uid: 18,
                message_id: None,
                rules: vec![],
                action: "kept".into(),
                destination: None,
                ..e.clone()
            })
            .expect("append");
        assert!(id2 > id1);
        let recs = store.audit_recent("a", 10).expect("recent");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].id, id2);
        assert_eq!(recs[1].entry, e);
        assert!(recs[1].time > 0);
        assert!(store.audit_recent("b", 10).expect("recent").is_empty());
    }

    #[test]
    fn released_messages() {
        let (_d, store) = open();
        assert!(!store.is_released("a", Some("m@x"), Some("h1")).expect("q"));
        store
            .released_insert("a", Some("m@x"), Some("h1"))
            .expect("ins");
        store.released_insert("a", None, Some("h2")).expect("ins");
        assert!(store.is_released("a", Some("m@x"), None).expect("q"));
        assert!(store.is_released("a", None, Some("h1")).expect("q"));
        assert!(store
            .is_released("a", Some("other@x"), Some("h2"))
            .expect("q"));
        assert!(!store
            .is_released("a", Some("other@x"), Some("h3"))
            .expect("q"));
        assert!(!store.is_released("b", Some("m@x"), Some("h1")).expect("q"));
        assert!(!store.is_released("a", None, None).expect("q"));
    }

    #[test]
    fn fingerprints_and_rule_counts() {
        let (_d, mut store) = open();
        store
            .insert_sent("a", &[entry("m1@x", Some(1), &["b@y"], "Sent", 1)], None)
            .expect("insert");
        assert_eq!(store.sent_message_ids("a").expect("ids"), vec!["m1@x"]);
        let relays = vec!["provider.example".to_string()];
        store.add_relays("a", "m1@x", &relays).expect("relays");
        store.add_relays("a", "m1@x", &relays).expect("again");
        assert_eq!(
            store.relays("a").expect("relays"),
            vec![("m1@x".to_string(), "provider.example".to_string())]
        );
        assert!(store.relays("b").expect("relays").is_empty());
        for rules in [
            vec!["verdict.window-nothing-sent".to_string(), "x".to_string()],
            vec!["verdict.window-nothing-sent".to_string()],
            vec![],
        ] {
            store
                .audit_append(&AuditEntry {
                    account: "a".into(),
                    verdict: "backscatter".into(),
                    rules,
                    ..AuditEntry::default()
                })
                .expect("audit");
        }
        assert_eq!(
            store.audit_rule_counts("a").expect("counts"),
            vec![
                ("backscatter".to_string(), String::new(), 1),
                (
                    "backscatter".to_string(),
                    "verdict.window-nothing-sent".to_string(),
                    2
                )
            ]
        );
    }

    #[test]
    fn sweeps() {
        let (_d, store) = open();
        assert_eq!(store.last_sweep("a").expect("q"), None);
        let id = store.sweep_started("a").expect("start");
        let s = store.last_sweep("a").expect("q").expect("some");
        assert_eq!((s.id, s.finished, s.counts_json.clone()), (id, None, None));
        store.sweep_finished(id, r#"{"moved":2}"#).expect("finish");
        let s = store.last_sweep("a").expect("q").expect("some");
        assert!(s.finished.is_some());
        assert_eq!(s.counts_json.as_deref(), Some(r#"{"moved":2}"#));
        let id2 = store.sweep_started("a").expect("start");
        assert_eq!(store.last_sweep("a").expect("q").map(|s| s.id), Some(id2));
    }
}
