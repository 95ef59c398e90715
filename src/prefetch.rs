//! A second IMAP connection that reads ahead for a sweep: the triage header
//! fields of inbox batches from the newest down, and the first bytes of
//! candidates, while the sweep's own connection reads batches from the
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
//! The second connection only ever reads: it opens the inbox with EXAMINE
//! and fetches with `BODY.PEEK`, nothing else. Every decision, move and
//! watermark step stays on the sweep's own connection, and the watermark
//! only passes batches that are all done from the oldest up; what was read
//! here is checked for completeness there. When the second connection
//! cannot be opened or fails, its jobs are simply done on the first one: it
//! can make a sweep faster, never change what it does.

use crate::imap::{
    uid_set, ConnectSettings, FetchedHeaderFields, FetchedPrefix, ImapError, ImapSession,
};
use crate::secrets::Secret;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A read the sweep hands to the second connection, named by where its
/// result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The triage header fields of the sweep's batch `batch`.
    HeaderFields {
        /// The batch number (an index into the sweep's batches).
        batch: usize,
    },
    /// The first bytes (with flags and size) of the candidates in chunk
    /// `chunk` of batch `batch`.
    Prefixes {
        /// The batch number.
        batch: usize,
        /// The chunk number within the batch's candidates.
        chunk: usize,
    },
}

/// What a job read.
enum Answer {
    HeaderFields(Vec<FetchedHeaderFields>),
    Prefixes(Vec<FetchedPrefix>),
}

/// What a read hands back: the connection (only when the read succeeded:
/// after a failure its state is unknown) and the answer.
type Read = (Option<ImapSession>, Result<Answer, ImapError>);

/// The second connection of a sweep and the job it is doing.
pub struct ReadAhead {
    /// The account (for the log).
    account: String,
    /// What every job reads: the triage fields and the prefix length.
    what: Arc<Reads>,
    state: State,
}

/// The parts of a read that are the same for every job.
struct Reads {
    fields: Vec<String>,
    prefix_bytes: u32,
}

enum State {
    /// Open, the inbox examined, nothing asked.
    Idle(Box<ImapSession>),
    /// Opening and/or doing `job` in a task of its own.
    Busy { job: Job, task: JoinHandle<Read> },
    /// Failed, or closed: the sweep's own connection does everything.
    Gone,
}

impl ReadAhead {
    /// Starts opening a second connection (log in, EXAMINE `mailbox`) in the
    /// background, and has it do `job` on `uids` as soon as it is open: the
    /// login costs the sweep nothing while its own connection reads the
    /// batch before. Header jobs read `fields`; prefix jobs read the first
    /// `prefix_bytes` of each message.
    pub fn open(
        account: &str,
        settings: ConnectSettings,
        secret: Secret,
        mailbox: &str,
        (fields, prefix_bytes): (&[&str], u32),
        job: Job,
        uids: Vec<u32>,
    ) -> ReadAhead {
        let what = Arc::new(Reads {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            prefix_bytes,
        });
        let reads = Arc::clone(&what);
        let mailbox = mailbox.to_string();
        let task = tokio::spawn(async move {
            let mut session = match ImapSession::connect(&settings, &secret).await {
                Ok(session) => session,
                Err(e) => return (None, Err(e)),
            };
            drop(secret);
            if let Err(e) = session.examine(&mailbox).await {
                return (None, Err(e));
            }
            read(session, &reads, job, &uids).await
        });
        ReadAhead {
            account: account.to_string(),
            what,
            state: State::Busy { job, task },
        }
    }

    /// Whether `job` is this connection's (being done, or done and not
    /// taken yet).
    pub fn is_doing(&self, job: Job) -> bool {
        matches!(self.state, State::Busy { job: j, .. } if j == job)
    }

    /// The batch whose header fields this connection is reading (or has
    /// read, not taken yet), if any.
    pub fn header_batch(&self) -> Option<usize> {
        match self.state {
            State::Busy {
                job: Job::HeaderFields { batch },
                ..
            } => Some(batch),
            _ => None,
        }
    }

    /// Whether this connection's job is done (its answer can be taken
    /// without waiting).
    pub fn is_ready(&self) -> bool {
        matches!(&self.state, State::Busy { task, .. } if task.is_finished())
    }

    /// Whether this connection is open and has nothing to do.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle(_))
    }

    /// Starts `job` on `uids` if this connection is open and has nothing
    /// else to do; returns whether it did.
    pub fn start(&mut self, job: Job, uids: Vec<u32>) -> bool {
        if uids.is_empty() || !self.is_idle() {
            return false;
        }
        let State::Idle(session) = std::mem::replace(&mut self.state, State::Gone) else {
            return false;
        };
        let what = Arc::clone(&self.what);
        let task = tokio::spawn(async move { read(*session, &what, job, &uids).await });
        self.state = State::Busy { job, task };
        true
    }

    /// The header fields of batch `batch`, waiting for them if need be;
    /// `None` when this connection is not reading them or failed (then the
    /// sweep's own connection reads them).
    pub async fn take_header_fields(&mut self, batch: usize) -> Option<Vec<FetchedHeaderFields>> {
        match self.take(Job::HeaderFields { batch }).await? {
            Answer::HeaderFields(headers) => Some(headers),
            Answer::Prefixes(_) => None,
        }
    }

    /// The prefixes of chunk `chunk` of batch `batch`'s candidates, like
    /// [`ReadAhead::take_header_fields`].
    pub async fn take_prefixes(
        &mut self,
        batch: usize,
        chunk: usize,
    ) -> Option<Vec<FetchedPrefix>> {
        match self.take(Job::Prefixes { batch, chunk }).await? {
            Answer::Prefixes(prefixes) => Some(prefixes),
            Answer::HeaderFields(_) => None,
        }
    }

    /// The answer of `job`, if it is this connection's; a failure gives this
    /// connection up.
    async fn take(&mut self, job: Job) -> Option<Answer> {
        if !self.is_doing(job) {
            return None;
        }
        let State::Busy { task, .. } = std::mem::replace(&mut self.state, State::Gone) else {
            return None;
        };
        match task.await {
            Ok((Some(session), Ok(answer))) => {
                self.state = State::Idle(Box::new(session));
                Some(answer)
            }
            Ok((_, Err(e))) => {
                tracing::info!(
                    account = %self.account,
                    "the second connection failed ({e}); the sweep goes on with one connection"
                );
                None
            }
            Ok((None, Ok(_))) | Err(_) => {
                tracing::info!(
                    account = %self.account,
                    "the second connection stopped; the sweep goes on with one connection"
                );
                None
            }
        }
    }

    /// Logs the second connection out (stopping a read still going on).
    pub async fn close(mut self) {
        match std::mem::replace(&mut self.state, State::Gone) {
            State::Idle(session) => {
                let _ = session.logout().await;
            }
            State::Busy { task, .. } => task.abort(),
            State::Gone => {}
        }
    }
}

impl Drop for ReadAhead {
    /// A sweep that ends early (an error) leaves no read running behind it.
    fn drop(&mut self) {
        if let State::Busy { task, .. } = &self.state {
            task.abort();
        }
    }
}

/// Does `job` on `uids`.
async fn read(mut session: ImapSession, reads: &Reads, job: Job, uids: &[u32]) -> Read {
    if uids.is_empty() {
        let empty = match job {
            Job::HeaderFields { .. } => Answer::HeaderFields(Vec::new()),
            Job::Prefixes { .. } => Answer::Prefixes(Vec::new()),
        };
        return (Some(session), Ok(empty));
    }
    let answer = match job {
        Job::HeaderFields { .. } => {
            let fields: Vec<&str> = reads.fields.iter().map(String::as_str).collect();
            session
                .uid_fetch_header_fields(&uid_set(uids), &fields)
                .await
                .map(Answer::HeaderFields)
        }
        Job::Prefixes { .. } => session
            .uid_fetch_slices(uids, 0, reads.prefix_bytes)
            .await
            .map(Answer::Prefixes),
    };
    match answer {
        Ok(answer) => (Some(session), Ok(answer)),
        Err(e) => (None, Err(e)),
    }
}
