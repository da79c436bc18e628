//! Asynchronous jobs: a bounded queue served fairly across owners, per-owner quotas, a fixed
//! number of workers, progress published to subscribers (Server-Sent Events), cancellation, a
//! timeout, and results on disk.
//!
//! **Invariant:** the queue takes owners in turn (round robin over the tokens with waiting jobs,
//! each owner's jobs in the order submitted), so one token's thirty jobs delay another's one by
//! at most one job per worker.
//!
//! **Invariant:** every state change but progress is written to `<dir>/<id>.json` (atomically:
//! a temporary file renamed) before it is visible, and a finished job's result (an explanation
//! record or an evaluation) is in `<dir>/<id>.record.json` before the job reads `done`; so a
//! restart — graceful or a kill — loses no finished result. Jobs a restart finds queued or
//! running are `interrupted`.
//! **Invariant:** a panic in a job's work fails that job only (the worker survives).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::http::StatusCode;
use camlime_core::ExplanationRecord;
use camlime_core::evaluation::Evaluation;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, ErrorDetail};
use crate::parallel::Threads;

/// A job's work: given a runtime (threads, progress, cancel flag), its result.
pub type Work = Box<dyn FnOnce(&Threads) -> Result<JobResult, ApiError> + Send>;

/// What a finished job holds (`result` of `GET /v1/jobs/{id}`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum JobResult {
    /// An explanation record, as `camlime explain --json` writes it.
    Explanation(Box<ExplanationRecord>),
    /// An evaluation's tables, curves and per-image rows.
    Evaluation(Box<Evaluation>),
}

/// What a job does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Explain one image (`POST /v1/jobs`).
    #[default]
    Explain,
    /// Evaluate methods with metrics over images (`POST /v1/evaluations`).
    Eval,
}

/// Told each finished job's status and error code (the server's metrics).
pub type OnFinished = Box<dyn Fn(Status, Option<&str>) + Send + Sync>;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// Being worked on.
    Running,
    /// Finished; its result is in `result`.
    Done,
    /// Finished with an error (`error` says which; `timeout` when it ran too long).
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// The server stopped before the job finished: submit it again.
    Interrupted,
}

impl Status {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// How far a running job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// The stage (`segmenting`, `sampling`, `classifying`, …).
    pub stage: String,
    /// Units done.
    pub done: usize,
    /// Units in the stage.
    pub total: usize,
}

/// A job as clients see it (without its result).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// What it does.
    #[serde(default)]
    pub kind: JobKind,
    /// Where it is.
    pub status: Status,
    /// The model it runs on.
    pub model: String,
    /// The method it runs (an evaluation's methods, comma-separated).
    pub method: String,
    /// When it was accepted (Unix milliseconds).
    pub submitted_ms: u64,
    /// When a worker took it.
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: Option<u64>,
    /// Progress of a running job.
    pub progress: Option<Progress>,
    /// Why it failed, was cancelled or interrupted.
    pub error: Option<ErrorDetail>,
    /// The name of the token that submitted it (none on a server without tokens); kept on disk,
    /// so a restart keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Why a job's cancel flag was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum StopReason {
    None = 0,
    Client = 1,
    Timeout = 2,
    Shutdown = 3,
}

/// One job.
pub struct Job {
    state: watch::Sender<JobStatus>,
    cancel: Arc<AtomicBool>,
    reason: AtomicU8,
    work: Mutex<Option<Work>>,
}

impl Job {
    /// A job in `status`, with its work when it has yet to run.
    fn new(status: JobStatus, work: Option<Work>) -> Arc<Self> {
        Arc::new(Self {
            state: watch::Sender::new(status),
            cancel: Arc::default(),
            reason: AtomicU8::new(0),
            work: Mutex::new(work),
        })
    }

    /// The current status.
    pub fn status(&self) -> JobStatus {
        self.state.borrow().clone()
    }

    /// Follow the status (progress included).
    pub fn subscribe(&self) -> watch::Receiver<JobStatus> {
        self.state.subscribe()
    }

    fn stop(&self, reason: StopReason) {
        // The first reason wins: a job cancelled by its client and then by shutdown was cancelled.
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn stop_reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            1 => StopReason::Client,
            2 => StopReason::Timeout,
            3 => StopReason::Shutdown,
            _ => StopReason::None,
        }
    }
}

/// The jobs' settings.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// Folder of the state and record files.
    pub dir: PathBuf,
    /// Jobs running at once.
    pub workers: usize,
    /// Jobs waiting at most (beyond: 429).
    pub queue: usize,
    /// One owner's jobs queued or running at most (beyond: 429), unless its token says otherwise.
    pub per_owner: usize,
    /// Threads per job.
    pub threads: usize,
    /// A job running longer fails with `timeout`.
    pub timeout: Duration,
    /// Finished jobs are forgotten (files deleted) this long after they finish.
    pub ttl: Duration,
}

/// Counts by status (for `/healthz` and `/metrics`).
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct JobCounts {
    /// Waiting.
    pub queued: usize,
    /// Running.
    pub running: usize,
    /// Finished and kept.
    pub finished: usize,
}

/// The jobs waiting for a worker, by owner (see the module's invariant).
#[derive(Default)]
struct Queue {
    /// Refuses jobs once the server stops.
    closed: bool,
    /// Owners with waiting jobs, the next to serve first; each with its jobs, oldest first.
    owners: VecDeque<(Option<String>, VecDeque<Arc<Job>>)>,
    /// Jobs waiting in all.
    len: usize,
}

impl Queue {
    fn push(&mut self, owner: Option<String>, job: Arc<Job>) {
        match self.owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, jobs)) => jobs.push_back(job),
            None => self.owners.push_back((owner, VecDeque::from([job]))),
        }
        self.len += 1;
    }

    /// The next owner's oldest job; that owner goes to the back of the turn.
    fn pop(&mut self) -> Option<Arc<Job>> {
        let (owner, mut jobs) = self.owners.pop_front()?;
        let job = jobs.pop_front()?;
        if !jobs.is_empty() {
            self.owners.push_back((owner, jobs));
        }
        self.len -= 1;
        Some(job)
    }

    /// Take a job out (cancelled while waiting).
    fn remove(&mut self, id: &str) {
        for (_, jobs) in &mut self.owners {
            let before = jobs.len();
            jobs.retain(|j| j.state.borrow().id != id);
            self.len -= before - jobs.len();
        }
        self.owners.retain(|(_, jobs)| !jobs.is_empty());
    }
}

/// The job table, the queue and the workers.
pub struct Jobs {
    settings: JobSettings,
    table: Mutex<HashMap<String, Arc<Job>>>,
    queue: Mutex<Queue>,
    /// Wakes a worker when a job is queued or the queue closes.
    ready: Notify,
    workers: tokio::sync::Mutex<JoinSet<()>>,
    finished: OnFinished,
}

/// 429 with a `Retry-After` of `seconds`.
fn too_many(code: ErrorCode, message: String, seconds: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).retry_after(seconds)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        message,
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn is_job_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Jobs {
    /// Open the folder (creating it), take over the jobs a previous run left there, and start
    /// the workers. `finished` is told each job's outcome (metrics).
    pub fn start(settings: JobSettings, finished: OnFinished) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&settings.dir)
            .with_context(|| format!("cannot create {}", settings.dir.display()))?;
        let jobs = Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            workers: tokio::sync::Mutex::new(JoinSet::new()),
            finished,
            settings,
        });
        jobs.recover()?;
        Ok(jobs)
    }

    /// Start the workers and the sweeper of expired results (on the current Tokio runtime).
    pub async fn spawn_workers(self: &Arc<Self>) {
        let mut set = self.workers.lock().await;
        for _ in 0..self.settings.workers.max(1) {
            let jobs = self.clone();
            set.spawn(async move { jobs.work_loop().await });
        }
        let jobs = self.clone();
        let every =
            (self.settings.ttl / 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                jobs.sweep();
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        // A panic while holding the lock cannot leave the map half-changed (single inserts and
        // removes), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.settings.dir.join(format!("{id}.json"))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.settings.dir.join(format!("{id}.record.json"))
    }

    /// Jobs a previous run left: finished ones are served again, unfinished ones become
    /// `interrupted`, expired ones are deleted.
    fn recover(&self) -> Result<()> {
        let now = now_ms();
        let mut table = self.lock();
        for entry in std::fs::read_dir(&self.settings.dir)
            .with_context(|| format!("cannot read {}", self.settings.dir.display()))?
        {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| is_job_id(id))
            else {
                continue;
            };
            let Ok(mut status) = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<JobStatus>(&b)?))
            else {
                tracing::warn!("ignoring unreadable job file {}", path.display());
                continue;
            };
            if !status.status.is_terminal() {
                status.status = Status::Interrupted;
                status.finished_ms = Some(now);
                status.progress = None;
                status.error = Some(interrupted_detail());
                write_atomically(&path, &serde_json::to_vec(&status)?)?;
            }
            if status.status == Status::Done && !self.record_path(id).is_file() {
                tracing::warn!("job {id} is done but its record is missing; forgetting it");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            table.insert(id.to_owned(), Job::new(status, None));
        }
        drop(table);
        self.sweep();
        Ok(())
    }

    fn persist(&self, status: &JobStatus) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(status).map_err(|e| internal(e.to_string()))?;
        write_atomically(&self.state_path(&status.id), &bytes).map_err(|e| {
            internal(format!(
                "cannot write the job's state to {}: {e}",
                self.settings.dir.display()
            ))
        })
    }

    /// Accept `caller`'s job, or 429 with `Retry-After` when the queue is full or the caller has
    /// its quota of jobs queued or running (503 while shutting down).
    pub fn submit(
        &self,
        kind: JobKind,
        model: &str,
        method: &str,
        caller: &Caller,
        work: Work,
    ) -> Result<JobStatus, ApiError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let status = JobStatus {
            id: id.clone(),
            kind,
            status: Status::Queued,
            model: model.to_owned(),
            method: method.to_owned(),
            submitted_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            progress: None,
            error: None,
            owner: caller.name.clone(),
        };
        let job = Job::new(status.clone(), Some(work));
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.closed {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        if queue.len >= self.settings.queue {
            return Err(too_many(
                ErrorCode::QueueFull,
                format!(
                    "{} jobs are waiting already; try again later",
                    self.settings.queue
                ),
                30,
            ));
        }
        // A token's quota (an open server's anonymous callers share no quota).
        if let Some(name) = &status.owner {
            let limit = caller.quota.jobs.unwrap_or(self.settings.per_owner);
            let active = self
                .lock()
                .values()
                .filter(|j| {
                    let s = j.state.borrow();
                    !s.status.is_terminal() && s.owner.as_ref() == Some(name)
                })
                .count();
            if active >= limit {
                return Err(too_many(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "`{name}` has {active} jobs queued or running, its quota; submit more \
                         when one finishes"
                    ),
                    10,
                ));
            }
        }
        self.persist(&status)?;
        self.lock().insert(id, job.clone());
        queue.push(status.owner.clone(), job);
        drop(queue);
        self.ready.notify_one();
        Ok(status)
    }

    /// The next job to run, fairly across owners; `None` once the queue is closed.
    async fn next(&self) -> Option<Arc<Job>> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(job) = queue.pop() {
                    return Some(job);
                }
                if queue.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A job by id, if `caller` may see it (404 when unknown, expired or another token's: a
    /// 403 would tell that the id exists).
    pub fn get(&self, id: &str, caller: &Caller) -> Result<Arc<Job>, ApiError> {
        let job = self.lock().get(id).cloned();
        job.filter(|j| {
            let status = j.status();
            !self.expired(&status, now_ms()) && caller.sees(status.owner.as_deref())
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::JobNotFound,
                format!("no job `{id}` (unknown, deleted, or its result expired)"),
            )
        })
    }

    /// A finished job's record as stored (JSON text).
    pub fn record(&self, id: &str) -> Result<String, ApiError> {
        std::fs::read_to_string(self.record_path(id))
            .map_err(|e| internal(format!("cannot read the job's record: {e}")))
    }

    /// Cancel an unfinished job (its status is returned), or delete a finished one (`None`).
    pub fn cancel(&self, id: &str, caller: &Caller) -> Result<Option<JobStatus>, ApiError> {
        let job = self.get(id, caller)?;
        let status = job.status();
        match status.status {
            Status::Queued => {
                job.stop(StopReason::Client);
                job.work.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                Ok(Some(self.finish(
                    &job,
                    Status::Cancelled,
                    Some(cancelled_detail()),
                )?))
            }
            Status::Running => {
                job.stop(StopReason::Client);
                Ok(Some(status))
            }
            _ => {
                self.forget(id);
                Ok(None)
            }
        }
    }

    /// Counts by status.
    pub fn counts(&self) -> JobCounts {
        let mut counts = JobCounts::default();
        for job in self.lock().values() {
            match job.state.borrow().status {
                Status::Queued => counts.queued += 1,
                Status::Running => counts.running += 1,
                _ => counts.finished += 1,
            }
        }
        counts
    }

    /// The status of every job `caller` sees (made by `owner`, when given), oldest first.
    pub fn list(&self, caller: &Caller, owner: Option<&str>) -> Vec<JobStatus> {
        let now = now_ms();
        let mut all: Vec<JobStatus> = self
            .lock()
            .values()
            .map(|j| j.status())
            .filter(|s| !self.expired(s, now) && caller.sees(s.owner.as_deref()))
            .filter(|s| owner.is_none_or(|o| s.owner.as_deref() == Some(o)))
            .collect();
        all.sort_by_key(|s| s.submitted_ms);
        all
    }

    fn expired(&self, status: &JobStatus, now: u64) -> bool {
        let ttl = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        status
            .finished_ms
            .is_some_and(|finished| now.saturating_sub(finished) > ttl)
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
        let _ = std::fs::remove_file(self.record_path(id));
        let _ = std::fs::remove_file(self.state_path(id));
    }

    /// Forget finished jobs past their TTL.
    pub fn sweep(&self) {
        let now = now_ms();
        let expired: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, j)| self.expired(&j.status(), now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(job = %id, "result expired");
            self.forget(&id);
        }
    }

    /// Stop accepting jobs, mark queued ones interrupted, cancel running ones and wait for the
    /// workers (at most `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.closed = true;
            queue.owners.clear();
            queue.len = 0;
        }
        self.ready.notify_waiters();
        let jobs: Vec<Arc<Job>> = self.lock().values().cloned().collect();
        for job in jobs {
            match job.status().status {
                Status::Queued => {
                    job.stop(StopReason::Shutdown);
                    job.work.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Err(e) =
                        self.finish(&job, Status::Interrupted, Some(interrupted_detail()))
                    {
                        tracing::error!("{}", e.detail.message);
                    }
                }
                Status::Running => job.stop(StopReason::Shutdown),
                _ => {}
            }
        }
        let mut workers = self.workers.lock().await;
        if tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("jobs still running after {grace:?}; leaving them interrupted");
        }
    }

    async fn work_loop(self: Arc<Self>) {
        loop {
            let Some(job) = self.next().await else {
                return;
            };
            if job.status().status != Status::Queued {
                continue;
            }
            self.run(job).await;
        }
    }

    async fn run(&self, job: Arc<Job>) {
        let Some(work) = job.work.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        job.state.send_modify(|s| {
            s.status = Status::Running;
            s.started_ms = Some(now_ms());
        });
        let id = job.status().id;
        if let Err(e) = self.persist(&job.status()) {
            tracing::error!(job = %id, "{}", e.detail.message);
        }
        tracing::info!(job = %id, "started");
        let publisher = job.clone();
        let threads = Threads::new(self.settings.threads)
            .with_cancel_flag(job.cancel.clone())
            .with_progress(Arc::new(move |stage: &str, done: usize, total: usize| {
                publisher.state.send_modify(|s| {
                    s.progress = Some(Progress {
                        stage: stage.to_owned(),
                        done,
                        total,
                    });
                });
            }));
        let mut handle = tokio::task::spawn_blocking(move || work(&threads));
        let joined = match tokio::time::timeout(self.settings.timeout, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                job.stop(StopReason::Timeout);
                handle.await
            }
        };
        let (status, error) = match joined {
            Ok(Ok(record)) => match self.store_record(&id, &record) {
                Ok(()) => (Status::Done, None),
                Err(e) => (Status::Failed, Some(e.detail)),
            },
            Ok(Err(error)) => match job.stop_reason() {
                StopReason::Client => (Status::Cancelled, Some(cancelled_detail())),
                StopReason::Shutdown => (Status::Interrupted, Some(interrupted_detail())),
                StopReason::Timeout => (
                    Status::Failed,
                    Some(ErrorDetail {
                        code: ErrorCode::Timeout,
                        message: format!(
                            "the job ran longer than the server's limit of {} s",
                            self.settings.timeout.as_secs_f64()
                        ),
                    }),
                ),
                StopReason::None => (Status::Failed, Some(error.detail)),
            },
            Err(join_error) => {
                let message = match join_error.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into()),
                    Err(e) => e.to_string(),
                };
                tracing::error!(job = %id, "the job panicked: {message}");
                (
                    Status::Failed,
                    Some(ErrorDetail {
                        code: ErrorCode::InternalError,
                        message: format!("the job failed inside the server: {message}"),
                    }),
                )
            }
        };
        if let Err(e) = self.finish(&job, status, error) {
            tracing::error!(job = %id, "{}", e.detail.message);
        }
    }

    fn store_record(&self, id: &str, record: &JobResult) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(record).map_err(|e| internal(e.to_string()))?;
        write_atomically(&self.record_path(id), &bytes)
            .map_err(|e| internal(format!("cannot store the job's record: {e}")))
    }

    fn finish(
        &self,
        job: &Job,
        status: Status,
        error: Option<ErrorDetail>,
    ) -> Result<JobStatus, ApiError> {
        let mut finished = job.status();
        finished.status = status;
        finished.finished_ms = Some(now_ms());
        finished.error = error;
        if status == Status::Done {
            finished.progress = None;
        }
        let persisted = self.persist(&finished);
        // Counted before it is visible: whoever sees the final status sees it counted too.
        (self.finished)(status, finished.error.as_ref().map(|e| e.code.as_str()));
        job.state.send_replace(finished.clone());
        tracing::info!(job = %finished.id, status = ?status, "finished");
        persisted.map(|()| finished)
    }
}

fn cancelled_detail() -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::Cancelled,
        message: "cancelled by a client".into(),
    }
}

fn interrupted_detail() -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::Interrupted,
        message: "the server stopped before this job finished; submit it again".into(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    async fn finished(jobs: &Jobs, id: &str) -> JobStatus {
        let mut receiver = jobs.get(id, &Caller::open()).unwrap().subscribe();
        receiver
            .wait_for(|s| s.status.is_terminal())
            .await
            .unwrap()
            .clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_the_worker_goes_on() {
        let dir = std::env::temp_dir().join(format!("camlime-jobs-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let seen = outcomes.clone();
        let jobs = Jobs::start(
            JobSettings {
                dir: dir.clone(),
                workers: 1,
                queue: 4,
                per_owner: 4,
                threads: 1,
                timeout: Duration::from_secs(60),
                ttl: Duration::from_secs(60),
            },
            Box::new(move |status, code| {
                seen.lock().unwrap().push((status, code.map(str::to_owned)));
            }),
        )
        .unwrap();
        jobs.spawn_workers().await;
        let panicking = jobs
            .submit(
                JobKind::Explain,
                "m",
                "x",
                &Caller::open(),
                Box::new(|_| panic!("boom in a job")),
            )
            .unwrap();
        let next = jobs
            .submit(
                JobKind::Explain,
                "m",
                "y",
                &Caller::open(),
                Box::new(|_| {
                    Err(ApiError::bad_request(
                        ErrorCode::InvalidParameter,
                        "after the panic",
                    ))
                }),
            )
            .unwrap();
        let failed = finished(&jobs, &panicking.id).await;
        assert_eq!(failed.status, Status::Failed);
        let error = failed.error.unwrap();
        assert_eq!(error.code, ErrorCode::InternalError);
        assert!(error.message.contains("boom in a job"), "{}", error.message);
        let after = finished(&jobs, &next.id).await;
        assert_eq!(after.error.unwrap().message, "after the panic");
        // Both outcomes are on disk as well.
        let stored: JobStatus = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{}.json", panicking.id))).unwrap(),
        )
        .unwrap();
        assert_eq!(stored.status, Status::Failed);
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![
                (Status::Failed, Some("internal_error".to_owned())),
                (Status::Failed, Some("invalid_parameter".to_owned())),
            ]
        );
        jobs.shutdown(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod fairness {
    use super::*;
    use crate::serve::auth::Quota;

    fn token(name: &str, jobs: Option<usize>) -> Caller {
        Caller::user(
            name,
            Quota {
                jobs,
                samples: None,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owners_take_turns_and_quotas_answer_429_with_retry_after() {
        let dir = std::env::temp_dir().join(format!("camlime-jobs-fair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let jobs = Jobs::start(
            JobSettings {
                dir: dir.clone(),
                workers: 1,
                queue: 6,
                threads: 1,
                per_owner: 3,
                timeout: Duration::from_secs(60),
                ttl: Duration::from_secs(60),
            },
            Box::new(|_, _| {}),
        )
        .unwrap();
        jobs.spawn_workers().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let blocker = token("blocker", None);
        // The one worker is held by the first job while the others queue.
        let first = jobs
            .submit(
                JobKind::Explain,
                "m",
                "held",
                &blocker,
                Box::new(move |_| {
                    let _ = hold.lock().unwrap().recv();
                    Err(ApiError::bad_request(ErrorCode::Cancelled, "released"))
                }),
            )
            .unwrap();
        let mut wait = jobs.get(&first.id, &blocker).unwrap().subscribe();
        wait.wait_for(|s| s.status == Status::Running)
            .await
            .unwrap();
        let mut submitted = Vec::new();
        for (owner, label) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")] {
            let seen = order.clone();
            let caller = token(owner, None);
            let status = jobs
                .submit(
                    JobKind::Explain,
                    "m",
                    label,
                    &caller,
                    Box::new(move |_| {
                        seen.lock().unwrap().push(label);
                        Err(ApiError::bad_request(ErrorCode::Cancelled, "done"))
                    }),
                )
                .unwrap();
            submitted.push((status.id, caller));
        }
        // `a` has its quota of 3; its token's own quota of 4 lets one more through.
        let refused = jobs
            .submit(
                JobKind::Explain,
                "m",
                "a4",
                &token("a", None),
                Box::new(|_| unreachable!()),
            )
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.detail.code, ErrorCode::QuotaExceeded);
        assert_eq!(refused.retry_after, Some(10));
        let seen = order.clone();
        let more = token("a", Some(4));
        let a4 = jobs
            .submit(
                JobKind::Explain,
                "m",
                "a4",
                &more,
                Box::new(move |_| {
                    seen.lock().unwrap().push("a4");
                    Err(ApiError::bad_request(ErrorCode::Cancelled, "done"))
                }),
            )
            .unwrap();
        submitted.push((a4.id, more));
        // The queue holds 6 at most (5 wait now): one more, then 429 queue_full.
        jobs.submit(
            JobKind::Explain,
            "m",
            "c1",
            &token("c", None),
            Box::new(|_| Err(ApiError::bad_request(ErrorCode::Cancelled, "done"))),
        )
        .unwrap();
        let full = jobs
            .submit(
                JobKind::Explain,
                "m",
                "d1",
                &token("d", None),
                Box::new(|_| unreachable!()),
            )
            .unwrap_err();
        assert_eq!(
            (full.detail.code, full.retry_after),
            (ErrorCode::QueueFull, Some(30))
        );
        release.send(()).unwrap();
        for (id, caller) in &submitted {
            let mut receiver = jobs.get(id, caller).unwrap().subscribe();
            receiver.wait_for(|s| s.status.is_terminal()).await.unwrap();
        }
        // b's one job ran second, not after all of a's.
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3", "a4"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
