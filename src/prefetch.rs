//! A second IMAP connection that reads ahead for a sweep: the triage header
//! fields of inbox batches from the newest down, and then the first bytes
//! of candidates, while the sweep's own connection reads batches from the
//! oldest up, judges and moves.
//!
//! A server answers one connection's commands one at a time, and on a first
//! sweep most of its time goes into one job: reading the header of every
//! message for the triage fields (for Dovecot: parsing each message file,
//! and compressing the answer). A second connection lets the server do that
//! job for two batches at once, on a second core, and hands the sweep the
//! newest mail first (where a flood of backscatter is), so that it is judged
//! and moved while the older mail is still being read. When it has no batch
//! left to read, it reads the next chunk of candidates while the sweep
//! judges the chunk before.
//!
//! The second connection runs in a task of its own, a producer in front of
//! a small channel: it claims the newest batch nobody has ([`TwoEnds`],
//! shared with the sweep, which claims the oldest), reads it, hands it over
//! and goes on while the sweep is busy, at most a few batches ahead.
//!
//! It only ever reads: it opens the inbox with EXAMINE and fetches with
//! `BODY.PEEK`, nothing else. Every decision, move and watermark step stays
//! on the sweep's own connection, and the watermark only passes batches that
//! are all done from the oldest up; what was read here is checked for
//! completeness there. When the second connection cannot be opened or
//! fails, its batch is handed back and the sweep's own connection does the
//! rest: it can make a sweep faster, never change what it does.

use crate::imap::{
    uid_set, ConnectSettings, FetchedHeaderFields, FetchedPrefix, ImapError, ImapSession,
};
use crate::secrets::Secret;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Batches read ahead and not yet taken, at most: bounds the memory the
/// second connection can fill while the sweep judges a large batch.
const AHEAD: usize = 2;

/// How long the end of a sweep waits for the second connection to log out
/// (it may still be logging in, on a slow server, when the first connection
/// has done every batch): then it is simply dropped.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which inbox batch each connection reads next: the sweep's own from the
/// oldest up, the second from the newest down, until they meet. Each batch
/// is handed out exactly once.
#[derive(Debug)]
pub struct TwoEnds {
    /// The batches `low..high` are nobody's yet.
    low: usize,
    high: usize,
}

impl TwoEnds {
    /// `batches` batches, none handed out.
    pub fn new(batches: usize) -> TwoEnds {
        TwoEnds {
            low: 0,
            high: batches,
        }
    }

    /// The oldest batch nobody has, for the sweep's own connection.
    pub fn oldest(&mut self) -> Option<usize> {
        (self.low < self.high).then(|| {
            self.low += 1;
            self.low - 1
        })
    }

    /// The newest batch nobody has, for the second connection.
    pub fn newest(&mut self) -> Option<usize> {
        (self.low < self.high).then(|| {
            self.high -= 1;
            self.high
        })
    }

    /// Whether every batch has been handed out.
    pub fn all_claimed(&self) -> bool {
        self.low >= self.high
    }
}

/// The [`TwoEnds`] a sweep and its second connection share.
pub type Claims = Arc<Mutex<TwoEnds>>;

/// Locks the claims (their few lines under the lock cannot panic, so a
/// poisoned lock still holds consistent claims).
pub fn claims(shared: &Claims) -> MutexGuard<'_, TwoEnds> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A batch the second connection claimed.
#[derive(Debug)]
pub enum Delivered {
    /// Its header fields.
    Headers {
        /// The batch number.
        batch: usize,
        /// The triage fields of its messages.
        headers: Vec<FetchedHeaderFields>,
    },
    /// The read failed: the sweep's own connection must read it (and the
    /// second connection reads nothing more).
    Failed {
        /// The batch number.
        batch: usize,
    },
}

impl Delivered {
    /// The batch, and its header fields if they were read.
    pub fn into_parts(self) -> (usize, Option<Vec<FetchedHeaderFields>>) {
        match self {
            Delivered::Headers { batch, headers } => (batch, Some(headers)),
            Delivered::Failed { batch } => (batch, None),
        }
    }
}

/// The answer to a [`PrefixJob`].
type Prefixes = Result<Vec<FetchedPrefix>, ImapError>;

/// Candidates whose prefixes the second connection is asked to read.
struct PrefixJob {
    uids: Vec<u32>,
    reply: oneshot::Sender<Prefixes>,
}

/// What the second connection reads, the same for every job.
struct Reads {
    account: String,
    mailbox: String,
    fields: Vec<String>,
    prefix_bytes: u32,
    /// For each batch, the messages whose header fields are read.
    wanted: Arc<[Vec<u32>]>,
}

/// The sweep's end of the second connection.
pub struct ReadAhead {
    delivered: mpsc::Receiver<Delivered>,
    jobs: Option<mpsc::Sender<PrefixJob>>,
    /// The prefix job asked last: its (batch, chunk) and its answer.
    pending: Option<((usize, usize), oneshot::Receiver<Prefixes>)>,
    task: JoinHandle<()>,
}

impl ReadAhead {
    /// Starts the second connection (log in, EXAMINE `mailbox`) in a task
    /// of its own, which then reads batches' header `fields` (`wanted[n]`
    /// are batch `n`'s messages) from the newest one nobody has claimed
    /// down, and after that serves prefix jobs of `prefix_bytes`.
    pub fn open(
        account: &str,
        settings: ConnectSettings,
        secret: Secret,
        mailbox: &str,
        (fields, prefix_bytes): (&[&str], u32),
        wanted: Arc<[Vec<u32>]>,
        shared: Claims,
    ) -> ReadAhead {
        let reads = Reads {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            prefix_bytes,
            wanted,
        };
        let (delivery, delivered) = mpsc::channel(AHEAD);
        let (jobs, job_queue) = mpsc::channel(1);
        let task = tokio::spawn(run(settings, secret, reads, shared, delivery, job_queue));
        ReadAhead {
            delivered,
            jobs: Some(jobs),
            pending: None,
            task,
        }
    }

    /// A batch this connection has read, if one is in (without waiting).
    pub fn try_delivered(&mut self) -> Option<Delivered> {
        self.delivered.try_recv().ok()
    }

    /// The next batch this connection reads, waiting for it; `None` when
    /// it reads no more.
    pub async fn delivered(&mut self) -> Option<Delivered> {
        self.delivered.recv().await
    }

    /// Asks for the prefixes of chunk `chunk` of batch `batch`'s
    /// candidates, if this connection has no batch left to read (and all it
    /// read has been taken); returns whether it was asked.
    pub fn read_prefixes(&mut self, batch: usize, chunk: usize, uids: Vec<u32>) -> bool {
        if !(self.delivered.is_closed() && self.delivered.is_empty()) || self.pending.is_some() {
            return false;
        }
        let Some(jobs) = &self.jobs else {
            return false;
        };
        let (reply, answer) = oneshot::channel();
        if jobs.try_send(PrefixJob { uids, reply }).is_err() {
            return false;
        }
        self.pending = Some(((batch, chunk), answer));
        true
    }

    /// The prefixes of chunk `chunk` of batch `batch`, if this connection
    /// was asked for them, waiting if need be; `None` otherwise or when it
    /// failed (then the sweep's own connection reads them).
    pub async fn take_prefixes(
        &mut self,
        batch: usize,
        chunk: usize,
    ) -> Option<Vec<FetchedPrefix>> {
        if self.pending.as_ref().map(|(of, _)| *of) != Some((batch, chunk)) {
            return None;
        }
        let (_, answer) = self.pending.take()?;
        answer.await.ok()?.ok()
    }

    /// Ends the second connection: it logs out once it has nothing left to
    /// do, or is dropped after [`CLOSE_WAIT`].
    pub async fn close(mut self) {
        self.jobs = None;
        self.pending = None;
        // The sweep needs nothing more from it.
        self.delivered.close();
        if tokio::time::timeout(CLOSE_WAIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for ReadAhead {
    /// A sweep that ends early (an error) leaves no read running behind it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The second connection's task: log in, read claimed batches newest first,
/// then serve prefix jobs until the sweep closes the queue.
async fn run(
    settings: ConnectSettings,
    secret: Secret,
    reads: Reads,
    shared: Claims,
    delivery: mpsc::Sender<Delivered>,
    mut jobs: mpsc::Receiver<PrefixJob>,
) {
    let opened = async {
        let mut session = ImapSession::connect(&settings, &secret).await?;
        session.examine(&reads.mailbox).await?;
        Ok::<_, ImapError>(session)
    }
    .await;
    drop(secret);
    let mut session = match opened {
        Ok(session) => session,
        Err(e) => {
            tracing::info!(
                account = %reads.account,
                "a second connection could not be opened ({e}); the sweep goes on with one"
            );
            return;
        }
    };
    let fields: Vec<&str> = reads.fields.iter().map(String::as_str).collect();
    loop {
        let Some(batch) = claims(&shared).newest() else {
            break;
        };
        let uids = reads
            .wanted
            .get(batch)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let read = if uids.is_empty() {
            Ok(Vec::new())
        } else {
            session
                .uid_fetch_header_fields(&uid_set(uids), &fields)
                .await
        };
        let delivered = match read {
            Ok(headers) => Delivered::Headers { batch, headers },
            Err(e) => {
                tracing::info!(
                    account = %reads.account,
                    "the second connection failed ({e}); the sweep goes on with one"
                );
                let _ = delivery.send(Delivered::Failed { batch }).await;
                return;
            }
        };
        if delivery.send(delivered).await.is_err() {
            return; // the sweep stopped taking batches
        }
    }
    // No batch left: the sweep sees the channel close.
    drop(delivery);
    while let Some(job) = jobs.recv().await {
        let read = session
            .uid_fetch_slices(&job.uids, 0, reads.prefix_bytes)
            .await;
        let failed = read.is_err();
        let _ = job.reply.send(read);
        if failed {
            return;
        }
    }
    let _ = session.logout().await;
}
