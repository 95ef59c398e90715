//! One sweep of one account: learn what the user sent, judge the new inbox
//! mail, move backscatter to quarantine.
//!
//! The order of work is chosen so that nothing is lost or repeated when the
//! process dies at any point:
//!
//! 1. **Sent index.** Each Sent folder is read incrementally by UID
//!    (header fields only, `BODY.PEEK`, batched); every batch and its
//!    watermark are committed in one transaction. A UIDVALIDITY change drops
//!    that folder's part of the index and reads it again.
//! 2. **Triage.** New inbox UIDs are fetched a few header fields at a time;
//!    only messages the analyzer calls candidates are downloaded, and only a
//!    bounded prefix of them. Both the inbox and the Sent folders are read up
//!    to the highest UID a `UID SEARCH` of this session has shown, never to
//!    the UIDNEXT the server announced: a message numbered but not yet
//!    visible to the session must not fall below a watermark unseen. On a
//!    large inbox a second, read-only connection reads batches from the
//!    newest down while this one reads from the oldest up
//!    ([`crate::prefetch`]); every decision and move stays on this one.
//! 3. **Judge.** Analysis plus sent index gives a [`Verdict`]. A message the
//!    user took back out of quarantine (recognised by content hash, or by a
//!    `release`) is never moved again.
//! 4. **Move.** The intent is recorded before the move and completed after
//!    it; the inbox watermark only passes batches that are done, all of
//!    them from the oldest up. A crash before the move leaves the message in
//!    the inbox to be judged again; a crash after it leaves nothing in the
//!    inbox to repeat. Servers without
//!    MOVE get COPY + `\Deleted` + UID EXPUNGE (UIDPLUS only), and a
//!    half-done copy is detected by searching the quarantine folder first.
//!
//! `\Seen` is never set: every fetch is a `PEEK`, and moves keep flags.

use crate::analysis::{Analysis, Analyzer, Kind};
use crate::config::{Account, SearchNet as SearchNetSwitch, UnknownAction};
use crate::evidence::window::SentTo;
use crate::evidence::Evidence;
use crate::imap::{
    ConnectSettings, FetchedPrefix, ImapError, ImapSession, MailboxStatus, MoveOutcome,
};
use crate::prefetch::{claims, Claims, Delivered, ReadAhead, TwoEnds};
use crate::search_net::{self, SearchNet};
use crate::secrets::{self, Secret, SecretError};
use crate::store::{AuditEntry, SentEntry, Store, StoreError, Watermark};
use crate::verdict::{self, Judgement, Reason, SentEvidence, Verdict};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Messages per triage / sent-index fetch, and per watermark step. Large,
/// because a server pays for part of a header fetch per command (Dovecot
/// writes its cache of the fields at the end of each); small enough that a
/// batch's headers (a few hundred bytes per message) stay a few megabytes.
pub const BATCH: usize = 5000;

/// Candidates whose content is fetched and judged at a time: bounds the
/// memory a batch of large bounces can take (each is read to at most
/// [`SECOND_PREFIX_BYTES`]). Their moves wait (see [`MOVE_FLUSH`]).
pub const JUDGE_BATCH: usize = 500;

/// Moves wait, across batches, until this many are due or the sweep ends:
/// a server pays for a MOVE (and the keyword STORE before it) mostly per
/// command, so backscatter spread over a large inbox is moved in a few
/// commands, not one pair per batch. The watermark waits with them (a crash
/// before the moves means those batches are judged again, nothing more).
const MOVE_FLUSH: usize = 1000;

/// Nor do moves wait longer than this: their batches' store writes stay open
/// meanwhile, which would keep another writer (`backsweep release`) waiting
/// on a slow server.
const MOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How much of a candidate is downloaded first. The notice, its
/// delivery-status part and the returned header usually fit in 4 KB; when
/// they do not, the message is read on up to [`SECOND_PREFIX_BYTES`].
pub const PREFIX_BYTES: u32 = 4 * 1024;

/// How far a candidate is read when its first prefix was cut before the
/// original's identity could be found (the continuation starts where the
/// prefix ended, so nothing is downloaded twice).
pub const SECOND_PREFIX_BYTES: u32 = 128 * 1024;

/// How many bytes of a message its content hash covers (the start of the
/// message: identical after any MOVE or COPY, whatever the new UID).
const HASH_BYTES: usize = 4096;

/// The keyword put on quarantined mail, so a mail client can show it and a
/// message dragged back is recognisable.
pub const BACKSCATTER_KEYWORD: &str = "$Backscatter";

/// Header fields read from Sent folders.
const SENT_FIELDS: &[&str] = &["Message-ID", "Date", "From", "To", "Cc", "Bcc", "Subject"];

/// Errors that stop a sweep of one account (other accounts go on).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The password could not be obtained (the message names the account).
    #[error("{source}")]
    Secret {
        /// The account.
        account: String,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The IMAP server failed or refused.
    #[error("account {account}: {source}")]
    Imap {
        /// The account.
        account: String,
        /// What failed.
        #[source]
        source: ImapError,
    },
    /// The state store failed.
    #[error("account {account}: state store: {source}")]
    Store {
        /// The account.
        account: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
}

/// How to sweep.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    /// Judge and report, but move nothing and advance no watermark (the
    /// sent index is still filled, so the verdicts are the real ones).
    pub dry_run: bool,
    /// Show the progress of long work (the first Sent indexing, a large
    /// inbox) on standard error; for an interactive terminal only.
    pub progress: bool,
    /// Messages per header fetch and watermark step (default [`BATCH`];
    /// at least 1): smaller batches record progress more often.
    pub batch: usize,
    /// Candidates fetched and judged at a time (default [`JUDGE_BATCH`]; at
    /// least 1): bounds the memory that large bounces take.
    pub judge_batch: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            dry_run: false,
            progress: false,
            batch: BATCH,
            judge_batch: JUDGE_BATCH,
        }
    }
}

/// What happened to one inbox message that was looked at closely.
#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    /// Its UID in the inbox.
    pub uid: u32,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// Its From header.
    pub from: String,
    /// Its Subject.
    pub subject: String,
    /// What kind of message analysis found.
    pub kind: Kind,
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reasons: Vec<Reason>,
    /// The analysis rules that fired.
    pub rules: Vec<String>,
    /// `moved`, `would-move` (dry run), `kept`, or `released` (the user took it back).
    pub action: String,
    /// Where it went, when moved.
    pub destination: Option<String>,
}

/// The result of sweeping one account.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SweepReport {
    /// The account.
    pub account: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Sent messages newly indexed.
    pub sent_indexed: u64,
    /// Sent index size after the sweep.
    pub sent_total: u64,
    /// New inbox messages looked at (header triage).
    pub examined: u64,
    /// Of those, downloaded and analysed.
    pub candidates: u64,
    /// Moved to quarantine (or would be, in a dry run).
    pub quarantined: u64,
    /// Bytes of message data downloaded (headers and prefixes).
    pub bytes_downloaded: u64,
    /// How the moves were done (`move`, `copy+expunge`, `copy+flag`).
    pub move_method: Option<String>,
    /// The candidates, with verdict and action.
    pub messages: Vec<MessageReport>,
}

/// Sweeps one account once.
pub async fn sweep_account(
    account: &Account,
    store: &mut Store,
    analyzer: &Analyzer,
    options: SweepOptions,
) -> Result<SweepReport, SweepError> {
    let secret = secrets::resolve_async(&account.name, &account.password)
        .await
        .map_err(|source| SweepError::Secret {
            account: account.name.clone(),
            source,
        })?;
    let evidence = Evidence::resolve(account).map_err(|source| SweepError::Secret {
        account: account.name.clone(),
        source,
    })?;
    let mut sweep = Sweep {
        account,
        store,
        analyzer,
        options,
        evidence,
        report: SweepReport {
            account: account.name.clone(),
            dry_run: options.dry_run,
            ..SweepReport::default()
        },
    };
    sweep.run(&secret).await?;
    Ok(sweep.report)
}

/// Connects to an account's server (used by `check-config` and `release`).
pub async fn connect(account: &Account) -> Result<ImapSession, SweepError> {
    let secret = secrets::resolve_async(&account.name, &account.password)
        .await
        .map_err(|source| SweepError::Secret {
            account: account.name.clone(),
            source,
        })?;
    ImapSession::connect(&ConnectSettings::from(account), &secret)
        .await
        .map_err(|source| connect_error(&account.name, source))
}

/// A failed connect: an OAuth2 token problem is reported like a password problem (its message
/// already names the account and says to run `backsweep login`).
fn connect_error(account: &str, source: ImapError) -> SweepError {
    match source {
        ImapError::OAuth(e) => SweepError::Secret {
            account: account.to_string(),
            source: SecretError::OAuth(e),
        },
        source => SweepError::Imap {
            account: account.to_string(),
            source,
        },
    }
}

/// The sent index of one account as [`SentEvidence`] for the verdict.
#[derive(Clone, Copy)]
pub struct StoreEvidence<'a> {
    store: &'a Store,
    account: &'a Account,
    covered_since: Option<i64>,
    evidence: Option<&'a Evidence>,
}

impl<'a> StoreEvidence<'a> {
    /// Evidence from `store` for `account`.
    pub fn new(store: &'a Store, account: &'a Account) -> Result<StoreEvidence<'a>, StoreError> {
        let covered_since = store.sent_coverage(&account.name)?;
        Ok(StoreEvidence {
            store,
            account,
            covered_since,
            evidence: None,
        })
    }

    /// Adds the evidence beyond the sent index (keys, fingerprint, window).
    pub fn with_evidence(mut self, evidence: &'a Evidence) -> StoreEvidence<'a> {
        self.evidence = Some(evidence);
        self
    }
}

impl SentEvidence for StoreEvidence<'_> {
    fn contains(&self, message_id: &str) -> bool {
        self.store
            .sent_contains(&self.account.name, message_id)
            .unwrap_or(false)
    }

    fn covered_since(&self) -> Option<i64> {
        self.covered_since
    }

    fn is_own_address(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        self.account.addresses.contains(&address)
            || self
                .store
                .is_sent_sender(&self.account.name, &address)
                .unwrap_or(false)
    }

    fn evidence(&self) -> Option<&Evidence> {
        self.evidence
    }

    fn sent_to(&self, recipient: &str, from: i64, to: i64) -> Option<Vec<SentTo>> {
        let entries = self
            .store
            .sent_to_recipient_between(&self.account.name, recipient, from, to)
            .ok()?;
        Some(
            entries
                .into_iter()
                .filter_map(|e| {
                    Some(SentTo {
                        date: e.date?,
                        message_id: e.message_id,
                        subject: e.subject,
                    })
                })
                .collect(),
        )
    }
}

struct Sweep<'a> {
    account: &'a Account,
    store: &'a mut Store,
    analyzer: &'a Analyzer,
    options: SweepOptions,
    /// Keys and fingerprints beyond the sent index, learned after indexing Sent.
    evidence: Evidence,
    report: SweepReport,
}

impl Sweep<'_> {
    fn imap_err(&self, source: ImapError) -> SweepError {
        SweepError::Imap {
            account: self.account.name.clone(),
            source,
        }
    }

    fn store_err(&self, source: StoreError) -> SweepError {
        SweepError::Store {
            account: self.account.name.clone(),
            source,
        }
    }

    async fn run(&mut self, secret: &Secret) -> Result<(), SweepError> {
        let mut session = ImapSession::connect(&ConnectSettings::from(self.account), secret)
            .await
            .map_err(|e| connect_error(&self.account.name, e))?;
        let sweep_id = if self.options.dry_run {
            None
        } else {
            Some(
                self.store
                    .sweep_started(&self.account.name)
                    .map_err(|e| self.store_err(e))?,
            )
        };
        let result = async {
            let started = std::time::Instant::now();
            self.index_sent(&mut session).await?;
            tracing::debug!(
                account = %self.account.name,
                indexed = self.report.sent_indexed,
                ms = started.elapsed().as_millis() as u64,
                "sent index"
            );
            self.evidence
                .learn(self.store, &self.account.name)
                .map_err(|e| self.store_err(e))?;
            self.sweep_inbox(&mut session, secret).await
        }
        .await;
        if let (Some(id), Ok(())) = (sweep_id, &result) {
            let counts = serde_json::json!({
                "sent_indexed": self.report.sent_indexed,
                "examined": self.report.examined,
                "candidates": self.report.candidates,
                "quarantined": self.report.quarantined,
                "bytes_downloaded": self.report.bytes_downloaded,
            });
            self.store
                .sweep_finished(id, &counts.to_string())
                .map_err(|e| self.store_err(e))?;
        }
        let _ = session.logout().await;
        result
    }

    /// The Sent folders to index: configured, or SPECIAL-USE `\Sent`.
    async fn sent_folders(&self, session: &mut ImapSession) -> Result<Vec<String>, SweepError> {
        if let Some(folders) = &self.account.sent {
            return Ok(folders.clone());
        }
        let found = session
            .find_special_use("\\Sent")
            .await
            .map_err(|e| self.imap_err(e))?;
        if found.is_empty() {
            tracing::warn!(
                account = %self.account.name,
                "no folder is marked \\Sent and none is configured: set `sent:` in the config, \
                 or bounces can only be judged by other evidence"
            );
        }
        Ok(found)
    }

    async fn index_sent(&mut self, session: &mut ImapSession) -> Result<(), SweepError> {
        let name = self.account.name.clone();
        for folder in self.sent_folders(session).await? {
            let status = session
                .examine(&folder)
                .await
                .map_err(|e| self.imap_err(e))?;
            let last_uid = match self
                .store
                .watermark(&name, &folder)
                .map_err(|e| self.store_err(e))?
            {
                Some(w) if w.uidvalidity == status.uidvalidity => w.last_uid,
                Some(_) => {
                    tracing::info!(account = %name, folder, "UIDVALIDITY changed: re-indexing the folder");
                    if !self.options.dry_run {
                        self.store
                            .reset_folder(&name, &folder, status.uidvalidity)
                            .map_err(|e| self.store_err(e))?;
                    }
                    0
                }
                None => 0,
            };
            let uidnext = status.uidnext.unwrap_or(u32::MAX);
            if status.exists == 0 || last_uid.saturating_add(1) >= uidnext {
                continue;
            }
            // As in the inbox: only what this session sees, so that a sent
            // message is never passed by unindexed (its bounce would look
            // like backscatter).
            let visible = self.visible_after(session, last_uid).await?;
            let fields: Vec<&str> = SENT_FIELDS.to_vec();
            for asked in visible.chunks(self.options.batch.max(1)) {
                let (start, end) = (asked[0], asked[asked.len() - 1]);
                let fetched = session
                    .uid_fetch_header_fields(&crate::imap::uid_set(asked), &fields)
                    .await
                    .map_err(|e| self.imap_err(e))?;
                let uids: Vec<u32> = fetched.iter().map(|f| f.uid).collect();
                self.check_complete(session, asked, &uids).await?;
                let mut entries = Vec::new();
                let mut senders: Vec<String> = Vec::new();
                for f in fetched.iter().filter(|f| f.uid >= start && f.uid <= end) {
                    self.report.bytes_downloaded += f.header.len() as u64;
                    if let Some((entry, from)) = sent_entry(&folder, f.uid, &f.header) {
                        entries.push(entry);
                        senders.extend(from);
                    }
                }
                self.report.sent_indexed += entries.len() as u64;
                // Even a dry run records what was sent (an upsert, harmless to
                // repeat), so its verdicts are the ones a real sweep would
                // reach; only the watermark stays put.
                let wm = Watermark {
                    uidvalidity: status.uidvalidity,
                    last_uid: end,
                };
                let watermark = (!self.options.dry_run).then_some((folder.as_str(), wm));
                self.store
                    .insert_sent(&name, &entries, watermark)
                    .map_err(|e| self.store_err(e))?;
                senders.sort();
                senders.dedup();
                self.store
                    .add_sent_senders(&name, &senders)
                    .map_err(|e| self.store_err(e))?;
                self.show_progress("indexing", &folder, end, uidnext);
            }
            self.end_progress();
        }
        self.report.sent_total = self
            .store
            .sent_count(&name)
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    async fn sweep_inbox(
        &mut self,
        session: &mut ImapSession,
        secret: &Secret,
    ) -> Result<(), SweepError> {
        let name = self.account.name.clone();
        let inbox = self.account.inbox.clone();
        let mut timer = StageTimer::start();
        let status = if self.options.dry_run {
            session.examine(&inbox).await
        } else {
            session.select(&inbox).await
        }
        .map_err(|e| self.imap_err(e))?;
        timer.lap("select");
        let watermark = self
            .store
            .watermark(&name, &inbox)
            .map_err(|e| self.store_err(e))?;
        if !self.options.dry_run {
            self.settle_pending_moves(session).await?;
        }
        timer.lap("settling");
        let last_uid = match watermark {
            Some(w) if w.uidvalidity == status.uidvalidity => w.last_uid,
            Some(_) => {
                tracing::info!(account = %name, "inbox UIDVALIDITY changed: looking at the whole inbox again");
                0
            }
            None => self.first_sweep_start(session).await?,
        };
        let uidnext = status.uidnext.unwrap_or(u32::MAX);
        // The messages this session can see above the watermark. Only these
        // are swept, and the watermark never passes the highest of them: a
        // message the server numbered (UIDNEXT) but this session's view does
        // not show yet is left for the next sweep, never skipped.
        let visible = if status.exists > 0 && last_uid.saturating_add(1) < uidnext {
            self.visible_after(session, last_uid).await?
        } else {
            Vec::new()
        };
        timer.lap("search");
        let Some(&high) = visible.last() else {
            return Ok(());
        };
        if !self.options.dry_run {
            session
                .create_folder_if_missing(&self.account.quarantine)
                .await
                .map_err(|e| self.imap_err(e))?;
        }
        let fields = self.analyzer.triage_fields();
        let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        // With a search net, the server names the messages worth a header
        // look; the triage below then decides exactly as without it.
        let netted = self.search_net_hits(session, last_uid + 1, high).await?;
        timer.lap("folder and net");
        tracing::debug!(account = %name, visible = visible.len(), stages = %timer, "inbox opened");
        let swept = self
            .sweep_batches(
                session,
                secret,
                &visible,
                netted.as_deref(),
                &field_refs,
                &status,
            )
            .await;
        if swept.is_err() {
            // Whatever the batches wrote since their last move is undone:
            // without a watermark step, they are simply judged again.
            self.store.rollback();
        }
        swept?;
        self.end_progress();
        Ok(())
    }

    /// Triages, judges and moves the visible new inbox messages batch by
    /// batch (read from both ends, see below), moving the watermark over
    /// the batches done from the oldest up once their moves are made. On an
    /// error, store writes since the last commit are left open for the
    /// caller to roll back.
    async fn sweep_batches(
        &mut self,
        session: &mut ImapSession,
        secret: &Secret,
        visible: &[u32],
        netted: Option<&[u32]>,
        field_refs: &[&str],
        status: &MailboxStatus,
    ) -> Result<(), SweepError> {
        let uidnext = status.uidnext.unwrap_or(u32::MAX);
        let name = self.account.name.clone();
        let inbox = self.account.inbox.clone();
        // Moves judged but not made yet, and whether their batches' store
        // writes are still open (committed together with the moves).
        let mut to_move = Vec::new();
        let mut waiting_since: Option<std::time::Instant> = None;
        let mut open = false;
        let size = self.options.batch.max(1);
        let batches: Vec<&[u32]> = visible.chunks(size).collect();
        // For each batch, the messages whose header fields are read (shared
        // with the second connection).
        let wanted: Arc<[Vec<u32>]> = batches
            .iter()
            .map(|batch| {
                let (start, end) = (batch[0], batch[batch.len() - 1]);
                match netted {
                    Some(hits) => hits
                        .iter()
                        .copied()
                        .filter(|u| (start..=end).contains(u))
                        .collect(),
                    None => batch.to_vec(),
                }
            })
            .collect();
        // The batches are read from both ends: this connection from the
        // oldest up, a second one (with more than one batch; see
        // `crate::prefetch`) from the newest down, until they meet. A flood
        // of new backscatter (the newest mail) is thus judged and moved while
        // the older mail is still being read. Every batch is judged as soon
        // as its header fields are in, but the watermark only ever passes
        // batches that are done from the oldest up.
        let n = batches.len();
        let shared: Claims = Arc::new(Mutex::new(TwoEnds::new(n)));
        let mut done = DoneFromFirst::new(n);
        let mut second = (self.account.connections > 1 && n > 1).then(|| {
            ReadAhead::open(
                &name,
                ConnectSettings::from(self.account),
                secret.clone(),
                &inbox,
                (field_refs, PREFIX_BYTES),
                Arc::clone(&wanted),
                Arc::clone(&shared),
            )
        });
        for step in 0..n {
            let mut timer = StageTimer::start();
            // The next batch: one the second connection has read, else the
            // oldest nobody has, else (all claimed) the second's next one.
            let mut next = second
                .as_mut()
                .and_then(ReadAhead::try_delivered)
                .map(Delivered::into_parts);
            if next.is_none() {
                let own = claims(&shared).oldest();
                next = own.map(|batch| (batch, None));
            }
            if next.is_none() {
                if let Some(second) = second.as_mut() {
                    next = second.delivered().await.map(Delivered::into_parts);
                }
            }
            // Every batch is claimed and none is on its way: all done.
            let Some((number, prefetched)) = next else {
                break;
            };
            let batch = batches[number];
            let (start, end) = (batch[0], batch[batch.len() - 1]);
            self.report.examined += batch.len() as u64;
            let wanted = &wanted[number];
            let headers = match prefetched {
                Some(headers) => headers,
                None if wanted.is_empty() => Vec::new(),
                None => session
                    .uid_fetch_header_fields(&crate::imap::uid_set(wanted), field_refs)
                    .await
                    .map_err(|e| self.imap_err(e))?,
            };
            let fetched: Vec<u32> = headers.iter().map(|h| h.uid).collect();
            self.check_complete(session, wanted, &fetched).await?;
            timer.lap("header fetch");
            let mut candidates = Vec::new();
            for h in headers.iter().filter(|h| h.uid >= start && h.uid <= end) {
                self.report.bytes_downloaded += h.header.len() as u64;
                // A header the server cannot split (no line ends) cannot be
                // triaged: look at the message itself.
                let unreadable = h.header.iter().all(u8::is_ascii_whitespace);
                if unreadable || self.analyzer.is_candidate(&h.header) {
                    candidates.push(h.uid);
                }
            }
            timer.lap("triage");
            // One store batch per inbox batch, or per run of batches whose
            // moves wait (see `quarantine` for the commit that must precede
            // the move).
            if !open {
                self.store.begin().map_err(|e| self.store_err(e))?;
                open = true;
            }
            let chunks: Vec<&[u32]> = candidates.chunks(self.options.judge_batch.max(1)).collect();
            for (c, chunk) in chunks.iter().enumerate() {
                let mut prefixes = None;
                if let Some(second) = second.as_mut() {
                    prefixes = second.take_prefixes(number, c).await;
                    // With no batch left to read, it reads the next chunk's
                    // prefixes while this one is judged.
                    if let Some(next) = chunks.get(c + 1) {
                        second.read_prefixes(number, c + 1, next.to_vec());
                    }
                }
                let moves = self.judge(session, chunk, prefixes).await?;
                to_move.extend(moves);
            }
            timer.lap("judging");
            if !to_move.is_empty() {
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                let last = step + 1 == n;
                if last || to_move.len() >= MOVE_FLUSH || since.elapsed() >= MOVE_WAIT {
                    self.quarantine(session, &to_move).await?;
                    to_move.clear();
                    waiting_since = None;
                    timer.lap("moves");
                }
            }
            tracing::debug!(
                account = %name,
                uids = %format!("{start}:{end}"),
                messages = batch.len(),
                headers = headers.len(),
                candidates = candidates.len(),
                waiting_moves = to_move.len(),
                stages = %timer,
                "inbox batch"
            );
            done.mark(number);
            if !to_move.is_empty() {
                // Their moves wait: no commit, no watermark step yet.
                continue;
            }
            self.store.commit().map_err(|e| self.store_err(e))?;
            open = false;
            if let Some(below) = done.advance() {
                let below = batches[below];
                let last_uid = below[below.len() - 1];
                if !self.options.dry_run {
                    let wm = Watermark {
                        uidvalidity: status.uidvalidity,
                        last_uid,
                    };
                    self.store
                        .set_watermark(&name, &inbox, wm)
                        .map_err(|e| self.store_err(e))?;
                }
                self.show_progress("sweeping", &inbox, last_uid, uidnext);
            }
        }
        if let Some(second) = second {
            second.close().await;
        }
        if !done.all_done() {
            // Cannot happen (every batch is claimed by one connection, and
            // read by this one if the other fails); the watermark has not
            // passed what was left, so the next sweep reads it.
            return Err(self.imap_err(ImapError::Invalid(
                "not every inbox batch was read; will try again".into(),
            )));
        }
        // In UID order, as one connection judges them.
        self.report.messages.sort_by_key(|m| m.uid);
        Ok(())
    }

    /// Finishes what a crash interrupted, before this sweep copies anything:
    ///
    /// - a move whose message has left the inbox (the server moved it, but
    ///   its answer was lost) is marked done; left pending, it would make the
    ///   message look like one caught mid-move, not one the user took back,
    ///   if it ever returned;
    /// - on the COPY fallback, a message whose copy that very COPY made is in
    ///   quarantine (see [`QuarantineCopies::take`]) is flagged `\Deleted` and,
    ///   with UIDPLUS, expunged (exactly it): the move is complete;
    /// - a COPY-fallback move whose copy is not there never happened: its
    ///   recorded position is dropped (so no later copy can ever match it) and
    ///   the message is judged and moved again as usual. A `\Deleted` message
    ///   without its copy was flagged by someone else and is left alone.
    async fn settle_pending_moves(&mut self, session: &mut ImapSession) -> Result<(), SweepError> {
        let pending = self
            .store
            .pending_moves(&self.account.name)
            .map_err(|e| self.store_err(e))?;
        if pending.is_empty() {
            return Ok(());
        }
        let uids: Vec<u32> = pending.iter().map(|p| p.uid).collect();
        let present = session
            .uid_fetch_headers(&crate::imap::uid_set(&uids), &["Message-ID"])
            .await
            .map_err(|e| self.imap_err(e))?;
        let is_present = |uid: u32| present.iter().any(|h| h.uid == uid);
        // The COPY-fallback moves still in the inbox: what their UIDs hold
        // now, and every quarantine copy made since the earliest of them
        // (one read of each folder for all of them).
        let copied: Vec<u32> = pending
            .iter()
            .filter(|p| p.dest_mark.is_some() && is_present(p.uid))
            .map(|p| p.uid)
            .collect();
        let (contents, mut copies) = if copied.is_empty() {
            (Vec::new(), QuarantineCopies::default())
        } else {
            let contents = session
                .uid_fetch_prefixes(&copied, HASH_BYTES as u32)
                .await
                .map_err(|e| self.imap_err(e))?;
            let marks: Vec<(u32, u32)> = pending.iter().filter_map(|p| p.dest_mark).collect();
            (contents, self.copies_since(session, &marks).await?)
        };
        for p in pending {
            let Some(here) = present.iter().find(|h| h.uid == p.uid) else {
                self.store
                    .quarantine_done(p.id)
                    .map_err(|e| self.store_err(e))?;
                continue;
            };
            let Some(mark) = p.dest_mark else {
                continue; // a MOVE: the message is judged again
            };
            // The UID must still hold that message (it always does unless
            // the inbox was recreated), and its copy must be in quarantine:
            // the same content at or above the position recorded before its
            // COPY, not already taken by another message settled here.
            let same = contents
                .iter()
                .any(|c| c.uid == p.uid && content_hash(&c.data) == p.content_hash);
            if !same || !copies.take(mark, &p.content_hash) {
                self.store
                    .quarantine_disarm(p.id)
                    .map_err(|e| self.store_err(e))?;
                continue;
            }
            self.finish_interrupted_copy(session, p.uid).await?;
            self.store
                .quarantine_done(p.id)
                .map_err(|e| self.store_err(e))?;
            let message_id = mail_parser::MessageParser::default()
                .parse_headers(&here.header)
                .and_then(|h| {
                    h.message_id()
                        .and_then(crate::analysis::text::normalize_message_id)
                });
            self.store
                .audit_append(&AuditEntry {
                    account: self.account.name.clone(),
                    mailbox: self.account.inbox.clone(),
                    uid: p.uid,
                    message_id,
                    verdict: Verdict::Backscatter.as_str().to_string(),
                    rules: vec!["sweep.interrupted-move-finished".to_string()],
                    action: "moved".to_string(),
                    destination: Some(self.account.quarantine.clone()),
                })
                .map_err(|e| self.store_err(e))?;
        }
        Ok(())
    }

    /// The search net for this account and server, if it is on and sound
    /// (see [`crate::search_net`]); why not is logged.
    fn search_net(&self, session: &ImapSession) -> Option<SearchNet> {
        let caps = session.capabilities();
        match self.account.search_net {
            SearchNetSwitch::Off => return None,
            SearchNetSwitch::Auto if search_net::word_search_server(caps) => {
                tracing::debug!(account = %self.account.name, "server searches words (Gmail/Exchange): header triage of every message");
                return None;
            }
            SearchNetSwitch::Auto | SearchNetSwitch::On => {}
        }
        let fields = self.analyzer.triage_fields();
        let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        match SearchNet::build(
            self.analyzer.rules(),
            &field_refs,
            search_net::takes_literals(caps),
        ) {
            Ok(net) => Some(net),
            Err(why) => {
                tracing::info!(account = %self.account.name, "no search net ({why}): header triage of every message");
                None
            }
        }
    }

    /// With a search net: the net's hits among the UIDs `first..=last`
    /// (ascending). `None` without a net.
    async fn search_net_hits(
        &self,
        session: &mut ImapSession,
        first: u32,
        last: u32,
    ) -> Result<Option<Vec<u32>>, SweepError> {
        let Some(net) = self.search_net(session) else {
            return Ok(None);
        };
        let range = format!("{first}:{last}");
        let started = std::time::Instant::now();
        let mut hits = Vec::new();
        for command in net.commands(&range, search_net::MAX_KEYS_PER_COMMAND) {
            hits.extend(
                session
                    .uid_search(&command)
                    .await
                    .map_err(|e| self.imap_err(e))?,
            );
        }
        hits.sort_unstable();
        hits.dedup();
        tracing::debug!(
            account = %self.account.name,
            uids = %range,
            keys = net.keys().len(),
            hits = hits.len(),
            ms = started.elapsed().as_millis() as u64,
            "search net"
        );
        Ok(Some(hits))
    }

    /// The UIDs above `last_uid` in the selected folder as this session sees
    /// it (ascending). Sweeps and the Sent index stop at the highest of them
    /// instead of trusting UIDNEXT: a watermark must never pass a message
    /// this session has not been shown yet.
    async fn visible_after(
        &self,
        session: &mut ImapSession,
        last_uid: u32,
    ) -> Result<Vec<u32>, SweepError> {
        let Some(first) = last_uid.checked_add(1) else {
            return Ok(Vec::new());
        };
        // `N:*` always includes the highest UID, even below N.
        let mut uids = session
            .uid_search(&format!("UID {first}:*"))
            .await
            .map_err(|e| self.imap_err(e))?;
        uids.retain(|u| *u > last_uid);
        Ok(uids)
    }

    /// One line of progress, rewritten in place (interactive terminals only).
    fn show_progress(&self, what: &str, folder: &str, uid: u32, uidnext: u32) {
        if self.options.progress {
            let total = uidnext.saturating_sub(1).max(1);
            let pct = u64::from(uid.min(total)) * 100 / u64::from(total);
            eprint!(
                "\r{}: {what} {folder}: {pct:>3} % (UID {uid} of {total})   ",
                self.account.name
            );
        }
    }

    fn end_progress(&self) {
        if self.options.progress {
            eprint!("\r\x1b[K");
        }
    }

    /// Fails if a header fetch left out a message that was asked for and
    /// still exists: IMAP libraries end a response quietly at a tagged `NO`,
    /// and a watermark must never pass a message that was not looked at.
    /// Messages expunged meanwhile are fine (one `UID SEARCH` tells, and only
    /// when something is missing).
    async fn check_complete(
        &self,
        session: &mut ImapSession,
        asked: &[u32],
        fetched: &[u32],
    ) -> Result<(), SweepError> {
        let fetched: std::collections::HashSet<u32> = fetched.iter().copied().collect();
        let gaps: Vec<u32> = asked
            .iter()
            .copied()
            .filter(|u| !fetched.contains(u))
            .collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let missing = session
            .uid_search(&format!("UID {}", crate::imap::uid_set(&gaps)))
            .await
            .map_err(|e| self.imap_err(e))?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(self.imap_err(ImapError::Invalid(format!(
            "the server's answer left out {} message(s) (UIDs {}); will try again",
            missing.len(),
            crate::imap::uid_set(&missing)
        ))))
    }

    /// Where the first sweep starts: UID 1, or the first message since the
    /// configured `since:` date.
    async fn first_sweep_start(&self, session: &mut ImapSession) -> Result<u32, SweepError> {
        let Some(since) = &self.account.since else {
            return Ok(0);
        };
        let uids = session
            .uid_search(&format!("SINCE {}", since.imap_format()))
            .await
            .map_err(|e| self.imap_err(e))?;
        Ok(uids.first().map_or(u32::MAX - 1, |u| u.saturating_sub(1)))
    }

    /// Fetches and judges a chunk of candidates (UIDs), records the
    /// verdicts of those that stay, and returns those to move (uid, content
    /// hash, index into the report) without moving them: moves are made
    /// together (see [`MOVE_FLUSH`]).
    async fn judge(
        &mut self,
        session: &mut ImapSession,
        candidates: &[u32],
        read_ahead: Option<Vec<FetchedPrefix>>,
    ) -> Result<Vec<(u32, String, usize)>, SweepError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut timer = StageTimer::start();
        let analyzer = self.analyzer;
        let mut prefixes: HashMap<u32, (FetchedPrefix, Analysis)> =
            HashMap::with_capacity(candidates.len());
        let analyze = |p: FetchedPrefix| {
            let analysis = analyzer.analyze(&p.data);
            prefixes.insert(p.uid, (p, analysis));
        };
        match read_ahead {
            // Read by the second connection (checked below like any answer).
            Some(read) => read.into_iter().for_each(analyze),
            // Each prefix is analysed as it arrives, while the server sends
            // the next; nothing is decided until the whole answer is in.
            None => session
                .uid_fetch_slices_each(candidates, 0, PREFIX_BYTES, analyze)
                .await
                .map_err(|e| self.imap_err(e))?,
        }
        timer.lap("prefixes and first analysis");
        // The sent index does not change while a chunk is judged: read its
        // coverage once. Every reading below is judged on all the evidence:
        // what decides that a message may move also decides whether its
        // reading must be complete first (`needs_more`).
        let evidence = StoreEvidence::new(self.store, self.account)
            .map_err(|e| self.store_err(e))?
            .with_evidence(&self.evidence);
        let name = self.account.name.clone();
        // First look: the prefixes. A cut-off prefix may hide the notice or
        // the returned original (and quoted text may then name the wrong
        // message): nothing is moved, and no "not a bounce" concluded, on a
        // partial read — those messages are fetched again, further, in one
        // command.
        let mut looked: Vec<(u32, Vec<String>, Vec<u8>, Analysis)> = Vec::new();
        let mut again: Vec<u32> = Vec::new();
        for uid in candidates {
            let prefix = prefixes.remove(uid);
            // A message that exists but came back without content must not be
            // judged as empty (and passed by for good): retry the batch later.
            if prefix
                .as_ref()
                .is_none_or(|(p, _)| p.data.is_empty() && p.size.is_some_and(|s| s > 0))
                && session
                    .uid_search(&format!("UID {uid}"))
                    .await
                    .map_err(|e| self.imap_err(e))?
                    .contains(uid)
            {
                return Err(self.imap_err(ImapError::Invalid(format!(
                    "the server returned no content for inbox UID {uid}; will try again"
                ))));
            }
            let Some((prefix, analysis)) = prefix else {
                continue; // expunged meanwhile
            };
            // On its way out (another client's expunge, or our own move
            // interrupted: see `settle_pending_moves`).
            if prefix
                .flags
                .iter()
                .any(|f| f.eq_ignore_ascii_case("\\Deleted"))
            {
                continue;
            }
            self.report.candidates += 1;
            self.report.bytes_downloaded += prefix.data.len() as u64;
            let data = prefix.data;
            let judgement = verdict::judge(&analysis, &evidence, header_date(&data));
            let cut_short = prefix.size.is_some_and(|s| s > PREFIX_BYTES);
            if cut_short && self.needs_more(&data, &analysis, &judgement) {
                again.push(*uid);
            }
            looked.push((*uid, prefix.flags, data, analysis));
        }
        // A report cut off before its status or returned header: its parts'
        // starts, without whatever lies between (a long transcript, the
        // original's body). Only a reading that needs nothing more is kept;
        // the others are fetched further, as one prefix.
        timer.lap("first verdicts");
        let reports: Vec<u32> = looked
            .iter()
            .filter(|l| again.contains(&l.0) && is_multipart_report(&l.2))
            .map(|l| l.0)
            .collect();
        if !reports.is_empty() {
            let fetched = session
                .uid_fetch_parts(&reports, &REPORT_PART_BYTES)
                .await
                .map_err(|e| self.imap_err(e))?;
            for f in fetched {
                let bytes: usize = f
                    .parts
                    .iter()
                    .flatten()
                    .map(|(m, c)| m.len() + c.len())
                    .sum();
                self.report.bytes_downloaded += bytes as u64;
                let Some(entry) = looked.iter().position(|l| l.0 == f.uid) else {
                    continue;
                };
                let Some(rebuilt) = rebuild_report(&looked[entry].2, &f.parts) else {
                    continue;
                };
                let analysis = self.analyzer.analyze(&rebuilt);
                let judgement = verdict::judge(&analysis, &evidence, header_date(&looked[entry].2));
                if !self.needs_more(&rebuilt, &analysis, &judgement) {
                    looked[entry].3 = analysis;
                    again.retain(|u| *u != f.uid);
                }
            }
        }
        timer.lap("report parts");
        // The rest, up to SECOND_PREFIX_BYTES in all, continues each prefix
        // where it ended, reading as much again as has been read in each round
        // (4 KB more, then 8, 16, ...): a message that needs a little more
        // costs a little more. One command per round and prefix length.
        let read_further = again.len();
        while !again.is_empty() {
            let mut offsets: Vec<u32> = again
                .iter()
                .filter_map(|u| looked.iter().find(|l| l.0 == *u))
                .map(|l| l.2.len() as u32)
                .collect();
            offsets.sort_unstable();
            offsets.dedup();
            let mut still = Vec::new();
            for offset in offsets {
                let want = offset.min(SECOND_PREFIX_BYTES.saturating_sub(offset));
                if want == 0 {
                    continue;
                }
                let uids: Vec<u32> = again
                    .iter()
                    .copied()
                    .filter(|u| {
                        looked
                            .iter()
                            .any(|l| l.0 == *u && l.2.len() as u32 == offset)
                    })
                    .collect();
                let rest = session
                    .uid_fetch_slices(&uids, offset, want)
                    .await
                    .map_err(|e| self.imap_err(e))?;
                for m in rest {
                    let Some(entry) = looked.iter_mut().find(|l| l.0 == m.uid) else {
                        continue;
                    };
                    self.report.bytes_downloaded += m.data.len() as u64;
                    entry.2.extend_from_slice(&m.data);
                    entry.3 = self.analyzer.analyze(&entry.2);
                    // Less than asked: the message ended.
                    let ended = (m.data.len() as u32) < want;
                    if !ended {
                        let judgement = verdict::judge(&entry.3, &evidence, header_date(&entry.2));
                        if self.needs_more(&entry.2, &entry.3, &judgement) {
                            still.push(m.uid);
                        }
                    }
                }
            }
            again = still;
        }
        timer.lap("rest");
        let mut to_move: Vec<(u32, String, usize)> = Vec::new();
        for (uid, flags, data, analysis) in &looked {
            let received_at = header_date(data);
            let mut judgement = verdict::judge(analysis, &evidence, received_at);
            self.learn_relays(analysis, &judgement)?;
            let hash = content_hash(data);
            let earlier_move = self
                .store
                .was_quarantined(&name, &hash)
                .map_err(|e| self.store_err(e))?;
            // The keyword is set just before the move: with our own move still
            // pending it marks an interrupted move (connection cut between the
            // STORE and the MOVE), not a message the user took back.
            let keyword = flags
                .iter()
                .any(|f| f.eq_ignore_ascii_case(BACKSCATTER_KEYWORD));
            let taken_back = (keyword && earlier_move.as_deref() != Some("pending"))
                || self
                    .store
                    .is_released(&name, analysis.message_id.as_deref(), Some(&hash))
                    .map_err(|e| self.store_err(e))?
                || earlier_move.as_deref() == Some("moved");
            let wants_move = self.wants_move(analysis, &judgement);
            let action = if wants_move && taken_back {
                judgement.reasons.insert(
                    0,
                    Reason {
                        rule: "verdict.released-by-user",
                        detail: "you took this message back out of quarantine; it stays".into(),
                    },
                );
                if !self.options.dry_run {
                    self.store
                        .released_insert(&name, analysis.message_id.as_deref(), Some(&hash))
                        .map_err(|e| self.store_err(e))?;
                }
                "released"
            } else if wants_move && self.options.dry_run {
                "would-move"
            } else if wants_move {
                "moved"
            } else {
                "kept"
            };
            let report = message_report(*uid, data, analysis, &judgement, action);
            tracing::debug!(
                account = %name,
                uid,
                message_id = report.message_id.as_deref().unwrap_or(""),
                verdict = report.verdict.as_str(),
                action,
                "judged"
            );
            if action == "moved" {
                to_move.push((*uid, hash, self.report.messages.len()));
            } else if !self.options.dry_run {
                self.audit(*uid, &report, None)?;
            }
            if wants_move && action != "released" {
                self.report.quarantined += 1;
            }
            self.report.messages.push(report);
        }
        timer.lap("verdicts");
        tracing::debug!(account = %name, candidates = candidates.len(), read_further, stages = %timer, "judged");
        Ok(to_move)
    }

    /// Remembers the relays of a bounce whose original is in the sent index
    /// (the relay fingerprint; used from the next sweep on).
    fn learn_relays(&self, analysis: &Analysis, judgement: &Judgement) -> Result<(), SweepError> {
        let hit = judgement
            .reasons
            .first()
            .is_some_and(|r| r.rule == "verdict.sent-index-hit");
        let Some(original) = analysis.original_message_ids.first() else {
            return Ok(());
        };
        if !hit || analysis.kind != Kind::Bounce {
            return Ok(());
        }
        let domains = crate::evidence::fingerprint::relay_domains(&analysis.original.received);
        if domains.is_empty() {
            return Ok(());
        }
        self.store
            .add_relays(&self.account.name, original, &domains)
            .map_err(|e| self.store_err(e))
    }

    /// Whether a reading of `data` (a prefix, or a rebuilt report) leaves
    /// something open that more of the message could settle: the kind, the
    /// original, or — before a move — the original's complete header.
    fn needs_more(&self, data: &[u8], analysis: &Analysis, judgement: &Judgement) -> bool {
        analysis.kind == Kind::None
            || analysis.original_message_ids.is_empty()
            || (self.wants_move(analysis, judgement)
                && !original_header_complete(self.analyzer, data, analysis))
    }

    /// Whether a judged message goes to quarantine: backscatter, and unknown
    /// when the account says so; feedback reports never.
    fn wants_move(&self, analysis: &Analysis, judgement: &Judgement) -> bool {
        match judgement.verdict {
            Verdict::Backscatter => analysis.kind != Kind::Feedback,
            Verdict::Unknown => {
                self.account.unknown == UnknownAction::Quarantine && analysis.kind != Kind::Feedback
            }
            _ => false,
        }
    }

    /// Moves judged backscatter to quarantine, recording intent and result.
    async fn quarantine(
        &mut self,
        session: &mut ImapSession,
        to_move: &[(u32, String, usize)],
    ) -> Result<(), SweepError> {
        if to_move.is_empty() {
            return Ok(());
        }
        let name = self.account.name.clone();
        let dest = self.account.quarantine.clone();
        let copy_fallback = !session.has_capability("MOVE");
        // Without MOVE a crash can fall between a COPY and the removal from
        // the inbox. Each COPY command's messages are then recorded and moved
        // on their own, with the quarantine folder's position taken just
        // before that COPY: any copy at or above it with the same content
        // comes from that very COPY, which carried all of them or none (see
        // `QuarantineCopies::take`).
        let all: Vec<u32> = to_move.iter().map(|m| m.0).collect();
        let groups: Vec<Vec<u32>> = if copy_fallback {
            crate::imap::command_groups(&all)
        } else {
            vec![all]
        };
        let mut timer = StageTimer::start();
        for uids in groups.into_iter().filter(|g| !g.is_empty()) {
            let dest_mark = if copy_fallback {
                Some(
                    session
                        .status_uidnext(&dest)
                        .await
                        .map_err(|e| self.imap_err(e))?,
                )
            } else {
                None
            };
            let mut intents = Vec::new();
            for (uid, hash, index) in to_move.iter().filter(|m| uids.contains(&m.0)) {
                let message_id = self.report.messages[*index].message_id.clone();
                let id = self
                    .store
                    .quarantine_intent(&name, message_id.as_deref(), hash, *uid, dest_mark)
                    .map_err(|e| self.store_err(e))?;
                intents.push((id, *uid, *index));
            }
            // The intents (and this batch's audit so far) must be on disk before
            // anything moves: commit, move, then record the result in a new batch.
            self.store.commit().map_err(|e| self.store_err(e))?;
            self.store.begin().map_err(|e| self.store_err(e))?;
            timer.lap("intents");
            // The keyword is cosmetic; a server that refuses keywords still gets the move.
            if let Err(e) = session.add_flags(&uids, &[BACKSCATTER_KEYWORD]).await {
                if session.is_broken() {
                    return Err(self.imap_err(e));
                }
                tracing::debug!(error = %e, "server refused the $Backscatter keyword");
            }
            timer.lap("keyword");
            let outcome = session
                .move_uids(&uids, &dest)
                .await
                .map_err(|e| self.imap_err(e))?;
            self.report.move_method = Some(
                match outcome {
                    MoveOutcome::Moved => "move",
                    MoveOutcome::CopiedAndExpunged => "copy+expunge",
                    MoveOutcome::CopiedAndFlaggedDeleted => "copy+flag",
                    MoveOutcome::Nothing => "none",
                }
                .to_string(),
            );
            timer.lap("move");
            for (id, uid, index) in intents {
                self.store
                    .quarantine_done(id)
                    .map_err(|e| self.store_err(e))?;
                self.report.messages[index].destination = Some(dest.clone());
                let report = self.report.messages[index].clone();
                self.audit(uid, &report, Some(&dest))?;
            }
            timer.lap("records");
        }
        tracing::debug!(account = %name, moved = to_move.len(), stages = %timer, "quarantined");
        Ok(())
    }

    /// The quarantine messages made since the earliest of `marks` (each the
    /// folder's UIDVALIDITY and UIDNEXT before an interrupted COPY) with
    /// their content hashes, read once for all of them; the inbox is
    /// selected again afterwards. See [`QuarantineCopies::take`].
    async fn copies_since(
        &self,
        session: &mut ImapSession,
        marks: &[(u32, u32)],
    ) -> Result<QuarantineCopies, SweepError> {
        let inbox = self.account.inbox.clone();
        let status = session
            .examine(&self.account.quarantine)
            .await
            .map_err(|e| self.imap_err(e))?;
        let mut found = QuarantineCopies {
            validity: status.uidvalidity,
            ..QuarantineCopies::default()
        };
        let current = marks.iter().filter(|m| m.0 == status.uidvalidity);
        if let Some(first) = current.clone().map(|m| m.1).min() {
            let mut new = session
                .uid_search(&format!("UID {}:*", first.max(1)))
                .await
                .map_err(|e| self.imap_err(e))?;
            new.retain(|u| *u >= first);
            found.new = new;
            // Only what some mark will look at is read.
            let from = current
                .map(|m| m.1)
                .filter(|&next| found.checkable(next))
                .min();
            let wanted: Vec<u32> = found
                .new
                .iter()
                .copied()
                .filter(|u| from.is_some_and(|f| *u >= f))
                .collect();
            if !wanted.is_empty() {
                found.copies = session
                    .uid_fetch_prefixes(&wanted, HASH_BYTES as u32)
                    .await
                    .map_err(|e| self.imap_err(e))?
                    .iter()
                    .map(|c| (c.uid, content_hash(&c.data)))
                    .collect();
            }
        }
        session.select(&inbox).await.map_err(|e| self.imap_err(e))?;
        Ok(found)
    }

    /// Completes a COPY fallback move whose copy already exists: flag the
    /// original deleted and, with UIDPLUS, expunge exactly it.
    async fn finish_interrupted_copy(
        &self,
        session: &mut ImapSession,
        uid: u32,
    ) -> Result<(), SweepError> {
        let mut cmd = format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)");
        session
            .run_command(&cmd)
            .await
            .map_err(|e| self.imap_err(e))?;
        if session.has_capability("UIDPLUS") {
            cmd = format!("UID EXPUNGE {uid}");
            session
                .run_command(&cmd)
                .await
                .map_err(|e| self.imap_err(e))?;
        }
        Ok(())
    }

    fn audit(
        &self,
        uid: u32,
        report: &MessageReport,
        destination: Option<&str>,
    ) -> Result<(), SweepError> {
        let mut rules: Vec<String> = report.reasons.iter().map(|r| r.rule.to_string()).collect();
        rules.extend(report.rules.iter().cloned());
        let entry = AuditEntry {
            account: self.account.name.clone(),
            mailbox: self.account.inbox.clone(),
            uid,
            message_id: report.message_id.clone(),
            verdict: report.verdict.as_str().to_string(),
            rules,
            action: report.action.clone(),
            destination: destination.map(str::to_string),
        };
        self.store
            .audit_append(&entry)
            .map(|_| ())
            .map_err(|e| self.store_err(e))
    }
}

/// Quarantine messages that may be the copies of interrupted COPY-fallback
/// moves (see [`Sweep::copies_since`]).
#[derive(Default)]
struct QuarantineCopies {
    /// The folder's UIDVALIDITY when read.
    validity: u32,
    /// Every UID at or above the earliest mark, ascending.
    new: Vec<u32>,
    /// UID and content hash of those read.
    copies: Vec<(u32, String)>,
}

impl QuarantineCopies {
    /// More new quarantine messages than this after a mark are not searched
    /// through for its copy.
    const MAX_CHECKED: usize = 5_000;

    /// Whether the copies at or above UID `next` are few enough to check.
    fn checkable(&self, next: u32) -> bool {
        let after = self.new.iter().filter(|u| **u >= next).count();
        after > 0 && after <= Self::MAX_CHECKED
    }

    /// Takes (so that no other move can claim it) a copy with content `hash`
    /// made at or after `mark`, the quarantine folder's UIDVALIDITY and
    /// UIDNEXT before an interrupted COPY. When unsure (the folder was
    /// recreated, or too much arrived since to check), says no: a second
    /// copy in quarantine is a nuisance, removing the inbox message without
    /// its copy would lose it.
    fn take(&mut self, mark: (u32, u32), hash: &str) -> bool {
        if mark.0 != self.validity || !self.checkable(mark.1) {
            return false;
        }
        match self
            .copies
            .iter()
            .position(|(uid, h)| *uid >= mark.1 && h == hash)
        {
            Some(i) => {
                self.copies.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// The batches judged so far, in whatever order, and how far the watermark
/// may go: only over batches that are all done from the first up.
#[derive(Debug)]
struct DoneFromFirst {
    done: Vec<bool>,
    /// The batches `0..below` are all done.
    below: usize,
    /// How many of them [`DoneFromFirst::advance`] has reported.
    reported: usize,
}

impl DoneFromFirst {
    fn new(batches: usize) -> DoneFromFirst {
        DoneFromFirst {
            done: vec![false; batches],
            below: 0,
            reported: 0,
        }
    }

    fn mark(&mut self, batch: usize) {
        if let Some(done) = self.done.get_mut(batch) {
            *done = true;
        }
        while self.done.get(self.below) == Some(&true) {
            self.below += 1;
        }
    }

    /// The last batch the watermark may now pass, if that is further than
    /// the last time this was asked.
    fn advance(&mut self) -> Option<usize> {
        (self.below > self.reported).then(|| {
            self.reported = self.below;
            self.below - 1
        })
    }

    fn all_done(&self) -> bool {
        self.below == self.done.len()
    }
}

/// Milliseconds spent in each named stage of a batch (for debug logs).
struct StageTimer {
    last: std::time::Instant,
    laps: Vec<(&'static str, u128)>,
}

impl StageTimer {
    /// Starts the first stage now.
    fn start() -> StageTimer {
        StageTimer {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Ends the stage `name` (begun at the previous lap, or at the start).
    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps
            .push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for StageTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.laps.iter().enumerate() {
            write!(f, "{}{name} {ms} ms", if i > 0 { ", " } else { "" })?;
        }
        Ok(())
    }
}

/// True if a cut-off prefix already settles the original: its id came from
/// an enclosed original only (not from an enclosed notice whose own original
/// is cut off), or from header lines quoted in a single-part notice (Exim,
/// qmail) that are not themselves a notice's, and that header block ends
/// inside the prefix (so the id is not cut either). Quoted lines in a
/// multipart message are not enough: a later part may name the original.
/// In a single-part notice the first quoted header that is not a notice's is
/// the original, whatever follows it.
fn original_header_complete(analyzer: &Analyzer, data: &[u8], analysis: &Analysis) -> bool {
    use crate::analysis::original::{
        is_notice_header, FROM_ENCLOSED, FROM_HEADERS_PART, FROM_QUOTED,
    };
    let sources: Vec<&str> = analysis
        .rules
        .iter()
        .map(String::as_str)
        .filter(|r| r.starts_with("original."))
        .collect();
    let structural_only = sources
        .iter()
        .all(|r| *r == FROM_ENCLOSED || *r == FROM_HEADERS_PART);
    let quoted_in_single_part = sources == [FROM_QUOTED]
        && !top_level_is_multipart(data)
        && !is_notice_header(
            analyzer,
            analysis.original.from.as_deref(),
            analysis.original.subject.as_deref(),
        );
    let Some(id) = analysis.original_message_ids.first() else {
        return false;
    };
    if !(structural_only || quoted_in_single_part) || analysis.original_message_ids.len() > 1 {
        return false;
    }
    let text = String::from_utf8_lossy(data);
    let Some(at) = text.find(id.as_str()) else {
        return false;
    };
    let after = &text[at + id.len()..];
    after.starts_with('>') && (after.contains("\n\n") || after.contains("\r\n\r\n"))
}

/// How much of each part of a cut-off report is fetched (the notice, the
/// delivery status, the returned message or header): enough for the
/// explanation, every status field and the returned original's header.
const REPORT_PART_BYTES: [u32; 3] = [2 * 1024, 16 * 1024, 8 * 1024];

/// Whether a message (its prefix) is a `multipart/report`.
fn is_multipart_report(prefix: &[u8]) -> bool {
    report_boundary(prefix).is_some()
}

/// Whether a message (its prefix) says it is `multipart/*`. A header that
/// cannot be read counts as multipart: the cautious answer.
fn top_level_is_multipart(prefix: &[u8]) -> bool {
    top_content_type(prefix).is_none_or(|ct| ct.is_some_and(|ct| ct.is("multipart", None)))
}

/// The boundary of a `multipart/report` from its header.
fn report_boundary(header: &[u8]) -> Option<String> {
    top_content_type(header)
        .flatten()
        .filter(|ct| ct.is("multipart", Some("report")))
        .and_then(|ct| ct.boundary)
}

/// The parts of a message's own Content-Type that a sweep looks at.
struct TopContentType {
    ctype: String,
    subtype: Option<String>,
    boundary: Option<String>,
}

impl TopContentType {
    /// Whether it is `ctype` (and `subtype`, if given), in any case.
    fn is(&self, ctype: &str, subtype: Option<&str>) -> bool {
        self.ctype.eq_ignore_ascii_case(ctype)
            && subtype.is_none_or(|want| {
                self.subtype
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(want))
            })
    }
}

/// The Content-Type of a message from its header (or a prefix of the
/// message), parsed with the parser's panics contained, as analysis does:
/// `None` when the header cannot be read, `Some(None)` when it names no type.
fn top_content_type(header: &[u8]) -> Option<Option<TopContentType>> {
    use mail_parser::MimeHeaders;
    std::panic::catch_unwind(|| {
        let parsed = mail_parser::MessageParser::default().parse_headers(header)?;
        Some(parsed.content_type().map(|ct| TopContentType {
            ctype: ct.ctype().to_string(),
            subtype: ct.subtype().map(str::to_string),
            boundary: ct.attribute("boundary").map(str::to_string),
        }))
    })
    .ok()
    .flatten()
}

/// A report put back together from its header (the start of `prefix`) and
/// the starts of its parts, in order, each under its MIME header and the
/// report's own boundary: what analysis needs of a report whose prefix was
/// cut before its status or returned header. `None` when the prefix has no
/// complete header or boundary, or no part came.
fn rebuild_report(prefix: &[u8], parts: &[Option<(Vec<u8>, Vec<u8>)>]) -> Option<Vec<u8>> {
    let end = [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| {
            prefix
                .windows(sep.len())
                .position(|w| w == *sep)
                .map(|p| p + sep.len())
        })
        .min()?;
    let header = &prefix[..end];
    let boundary = report_boundary(header)?;
    if parts.iter().all(Option::is_none) {
        return None;
    }
    let mut out = header.to_vec();
    for (mime, content) in parts.iter().flatten() {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(mime);
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// A stable fingerprint of a message's content, the same after any move.
pub fn content_hash(data: &[u8]) -> String {
    let digest = Sha256::digest(&data[..data.len().min(HASH_BYTES)]);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Date of a message (Unix seconds): when a notice arrived, for the
/// verdict's time-dependent evidence.
pub fn header_date(data: &[u8]) -> Option<i64> {
    let message = mail_parser::MessageParser::default().parse_headers(data)?;
    message.date().map(|d| d.to_timestamp())
}

fn message_report(
    uid: u32,
    data: &[u8],
    analysis: &Analysis,
    judgement: &Judgement,
    action: &str,
) -> MessageReport {
    let parsed = mail_parser::MessageParser::default().parse_headers(data);
    let from = parsed
        .as_ref()
        .and_then(|m| m.header_raw("From"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or_default()
        .to_string();
    MessageReport {
        uid,
        message_id: analysis.message_id.clone(),
        from,
        subject,
        kind: analysis.kind,
        verdict: judgement.verdict,
        reasons: judgement.reasons.clone(),
        rules: analysis.rules.clone(),
        action: action.to_string(),
        destination: None,
    }
}

/// Turns one Sent header into an index entry and the From addresses.
fn sent_entry(mailbox: &str, uid: u32, header: &[u8]) -> Option<(SentEntry, Vec<String>)> {
    let parsed = mail_parser::MessageParser::default().parse_headers(header)?;
    let message_id = parsed
        .message_id()
        .and_then(crate::analysis::text::normalize_message_id)?;
    let mut recipients: Vec<String> = Vec::new();
    for name in ["To", "Cc", "Bcc"] {
        if let Some(v) = parsed.header_raw(name) {
            recipients.extend(crate::analysis::text::addresses_in(v));
        }
    }
    let from = parsed
        .header_raw("From")
        .map(crate::analysis::text::addresses_in)
        .unwrap_or_default();
    Some((
        SentEntry {
            message_id,
            date: parsed.date().map(|d| d.to_timestamp()),
            recipients,
            subject: parsed.subject().unwrap_or_default().to_string(),
            mailbox: mailbox.to_string(),
            uid,
        },
        from,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends hand out every batch exactly once, however they interleave;
    /// the watermark only ever passes batches that are all done, and reaches
    /// the last.
    #[test]
    fn batches_from_both_ends_are_read_once_and_the_watermark_waits_for_gaps() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 1..40 {
            let mut ends = TwoEnds::new(n);
            let mut claimed = Vec::new();
            while !ends.all_claimed() {
                let batch = if next() % 2 == 0 {
                    ends.oldest()
                } else {
                    ends.newest()
                };
                claimed.push(batch.expect("a batch while not all are claimed"));
            }
            assert_eq!((ends.oldest(), ends.newest()), (None, None));
            let mut sorted = claimed.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n = {n}");

            let mut done = DoneFromFirst::new(n);
            let mut finished = vec![false; n];
            let mut passed = None;
            for &batch in &claimed {
                done.mark(batch);
                finished[batch] = true;
                if next() % 2 == 0 {
                    continue; // moves wait: the watermark is not asked
                }
                if let Some(last) = done.advance() {
                    assert!(finished[..=last].iter().all(|f| *f), "n = {n}");
                    assert!(passed.is_none_or(|p| last > p), "n = {n}");
                    passed = Some(last);
                }
            }
            assert!(done.all_done());
            if let Some(last) = done.advance() {
                passed = Some(last);
            }
            assert_eq!(passed, Some(n - 1), "n = {n}");
        }
    }

    #[test]
    fn a_cut_off_report_is_rebuilt_from_its_parts() {
        let prefix = b"From: MAILER-DAEMON@example.org\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSorry, a long transcript foll";
        assert!(is_multipart_report(prefix));
        assert!(!is_multipart_report(b"Content-Type: text/plain\r\n\r\nhi"));
        let parts = vec![
            Some((b"Content-Type: text/plain\r\n\r\n".to_vec(), b"Sorry.".to_vec())),
            Some((
                b"Content-Type: message/delivery-status\r\n\r\n".to_vec(),
                b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\nStatus: 5.1.1\r\n".to_vec(),
            )),
            Some((
                b"Content-Type: text/rfc822-headers\r\n\r\n".to_vec(),
                b"From: carol@example.com\r\nMessage-ID: <orig@example.com>\r\nSubject: hi\r\n\r\n".to_vec(),
            )),
        ];
        let rebuilt = rebuild_report(prefix, &parts).expect("rebuilt");
        let analyzer = Analyzer::builtin().expect("rules");
        let analysis = analyzer.analyze(&rebuilt);
        assert_eq!(analysis.kind, Kind::Bounce);
        assert_eq!(analysis.original_message_ids, vec!["orig@example.com"]);
        assert_eq!(analysis.recipients, vec!["a@b.example"]);
        assert!(original_header_complete(&analyzer, &rebuilt, &analysis));
        assert_eq!(rebuild_report(prefix, &[None, None]), None);
        assert_eq!(rebuild_report(b"no header end", &parts), None);
    }

    /// A header quoted in a single-part notice settles the original once its
    /// block ends in the prefix, unless it is itself a notice's (a bounce of
    /// a bounce: the user's message lies further in) or the notice is
    /// multipart (a later part may name the original).
    #[test]
    fn a_quoted_header_settles_a_cut_single_part_notice() {
        let analyzer = Analyzer::builtin().expect("rules");
        let notice = |content_type: &str, quoted_from: &str, quoted_subject: &str| {
            format!(
                "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\r\n\
                 Subject: Mail delivery failed: returning message to sender\r\n\
                 X-Failed-Recipients: a@b.example\r\n{content_type}\r\n\
                 This message was created automatically by mail delivery software.\r\n\r\n\
                 A message that you sent could not be delivered to one or more of its\r\n\
                 recipients. This is a permanent error. The following address(es) failed:\r\n\r\n\
                 \x20 a@b.example\r\n\r\n\
                 ------ This is a copy of the message, including all the headers. ------\r\n\r\n\
                 Message-ID: <orig@example.com>\r\nFrom: {quoted_from}\r\nTo: a@b.example\r\n\
                 Subject: {quoted_subject}\r\n\r\nThe body, cut her"
            )
            .into_bytes()
        };
        let settled = |data: &[u8]| {
            let analysis = analyzer.analyze(data);
            assert_eq!(analysis.original_message_ids, vec!["orig@example.com"]);
            original_header_complete(&analyzer, data, &analysis)
        };
        let plain = "Content-Type: text/plain\r\n";
        assert!(settled(&notice(plain, "carol@example.com", "lunch")));
        assert!(settled(&notice("", "carol@example.com", "lunch")));
        assert!(!settled(&notice(
            plain,
            "MAILER-DAEMON@relay.example.net",
            "Undelivered Mail Returned to Sender"
        )));
        assert!(!settled(&notice(
            "Content-Type: multipart/mixed; boundary=\"x\"\r\n",
            "carol@example.com",
            "lunch"
        )));
        // The block must end inside the prefix.
        let mut cut = notice(plain, "carol@example.com", "lunch");
        let end = cut
            .windows(7)
            .position(|w| w == b"Subject")
            .and_then(|first| {
                cut[first + 1..]
                    .windows(7)
                    .position(|w| w == b"Subject")
                    .map(|p| first + 1 + p)
            })
            .expect("the quoted subject");
        cut.truncate(end);
        assert!(!settled(&cut));
    }
}
