//! Bearer tokens: who may call the API, and whose jobs they see.
//!
//! Tokens come from a file (`--tokens FILE`) or the `CAMLIME_TOKENS` variable, one per line:
//! `NAME ROLE SECRET [jobs=N] [samples=N]`, where ROLE is `user` (predict, explain, jobs and
//! evaluations: its own jobs) or `admin` (every job, `/metrics`), SECRET is the token itself or
//! `sha256:` and the hex SHA-256 of it (what `camlime token new` writes: the file never holds the
//! token), and `jobs` / `samples` override the server's per-token quotas for this token. A request's
//! `Authorization: Bearer TOKEN` is hashed and compared with every entry in constant time.
//! Tokens are 256 random bits, so one SHA-256 (not a slow password hash) is what stands between
//! a stolen file and the tokens.
//!
//! **Invariant:** without tokens the server is open (every caller an anonymous admin); it only
//! starts that way on a loopback address or with `--no-auth` (`serve`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail, ensure};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::error::{ApiError, ErrorCode};

/// The environment variable holding token lines (`;` or newlines between them).
pub const TOKENS_VARIABLE: &str = "CAMLIME_TOKENS";

/// Shortest token the server accepts from a file or the environment.
const MIN_TOKEN_CHARS: usize = 16;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Predict, explain, submit jobs and evaluations; see and cancel its own jobs.
    User,
    /// Everything a user may, on every job; `/metrics`.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => bail!("unknown role `{other}`: `user` or `admin`"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Admin => "admin",
        })
    }
}

/// A token's own quotas (`None`: the server's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Its jobs queued or running at once.
    pub jobs: Option<usize>,
    /// LIME / CamLIME samples in one job.
    pub samples: Option<usize>,
}

/// One configured token.
#[derive(Debug)]
struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
    quota: Quota,
}

/// The configured tokens (never empty).
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `None` on an open server.
    pub name: Option<String>,
    /// What it may do.
    pub role: Role,
    /// Its own quotas.
    pub quota: Quota,
    /// The hash of the token it presented (whether it still holds after a reload).
    hash: Option<[u8; 32]>,
}

impl Caller {
    /// Anyone, on a server without tokens.
    pub fn open() -> Self {
        Self {
            name: None,
            role: Role::Admin,
            quota: Quota::default(),
            hash: None,
        }
    }

    /// A user token's caller with `quota` (the queue's tests).
    #[cfg(test)]
    pub fn user(name: &str, quota: Quota) -> Self {
        Self {
            name: Some(name.into()),
            role: Role::User,
            quota,
            hash: None,
        }
    }

    /// Whether the caller sees a job made by `owner`.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        self.role == Role::Admin || self.name.as_deref() == owner
    }
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
}

impl Tokens {
    /// Token lines (`NAME ROLE SECRET`; blank lines and `#` comments skipped); `origin` names
    /// where they came from in errors. `None` when there is no token.
    pub fn parse(text: &str, origin: &str) -> Result<Option<Self>> {
        let mut entries: Vec<Entry> = Vec::new();
        for (number, line) in text.split(['\n', ';']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{origin}, entry {}", number + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, secret, ref options @ ..] = fields[..] else {
                bail!("{}: expected `NAME ROLE SECRET [jobs=N] [samples=N]`", at());
            };
            let mut quota = Quota::default();
            for option in options {
                let (key, value) = option.split_once('=').unwrap_or((option, ""));
                let value: usize = value
                    .parse()
                    .ok()
                    .filter(|&v| v > 0)
                    .with_context(|| format!("{}: `{option}` needs a positive number", at()))?;
                match key {
                    "jobs" => quota.jobs = Some(value),
                    "samples" => quota.samples = Some(value),
                    _ => bail!(
                        "{}: unknown option `{option}`: `jobs=N` or `samples=N`",
                        at()
                    ),
                }
            }
            ensure!(
                valid_name(name),
                "{}: a token's name is 1–64 letters, digits or `_.@-`, got `{name}`",
                at()
            );
            ensure!(
                entries.iter().all(|e| e.name != name),
                "{}: two tokens are called `{name}`",
                at()
            );
            let role: Role = role.parse().with_context(at)?;
            let hash = match secret.strip_prefix("sha256:") {
                Some(hex) => parse_hash(hex).with_context(at)?,
                None => {
                    ensure!(
                        secret.chars().count() >= MIN_TOKEN_CHARS,
                        "{}: a token must have at least {MIN_TOKEN_CHARS} characters \
                         (`camlime token new` makes one)",
                        at()
                    );
                    sha256(secret)
                }
            };
            entries.push(Entry {
                name: name.to_owned(),
                role,
                hash,
                quota,
            });
        }
        Ok((!entries.is_empty()).then_some(Self { entries }))
    }

    /// The tokens of `file` and of the environment's `CAMLIME_TOKENS` (`environment`), together.
    pub fn load(file: Option<&Path>, environment: Option<&str>) -> Result<Option<Self>> {
        let mut text = String::new();
        if let Some(path) = file {
            text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
            text.push('\n');
        }
        let origin = match (file, environment) {
            (Some(path), Some(_)) => format!("{} and {TOKENS_VARIABLE}", path.display()),
            (Some(path), None) => path.display().to_string(),
            (None, _) => TOKENS_VARIABLE.to_owned(),
        };
        text.push_str(environment.unwrap_or_default());
        Self::parse(&text, &origin)
    }

    /// How many tokens have each role: (users, admins).
    pub fn counts(&self) -> (usize, usize) {
        let admins = self
            .entries
            .iter()
            .filter(|e| e.role == Role::Admin)
            .count();
        (self.entries.len() - admins, admins)
    }

    /// The caller a presented token stands for. Every entry is compared, in constant time, so
    /// the answer's timing tells nothing of which entry (or how much of one) matched.
    pub fn find(&self, token: &str) -> Option<Caller> {
        let presented = sha256(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found.map(|entry| Caller {
            name: Some(entry.name.clone()),
            role: entry.role,
            quota: entry.quota,
            hash: Some(presented),
        })
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32]> {
    ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "`sha256:` must be followed by 64 hex digits"
    );
    let mut hash = [0; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(hash)
}

/// A new token: `clm_` and 256 random bits, base64url.
pub fn new_token() -> Result<String> {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    Ok(format!(
        "clm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The tokens-file line of a token: its name, role and hash (never the token).
pub fn hashed_line(name: &str, role: Role, token: &str) -> Result<String> {
    ensure!(
        valid_name(name),
        "a token's name is 1–64 letters, digits or `_.@-`, got `{name}`"
    );
    let hex: String = sha256(token).iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{name} {role} sha256:{hex}"))
}

/// Make a token named `name` and append its line (hashed) to the tokens `file`, which is
/// created readable by its owner only; returns the token.
pub fn add_token(file: &Path, name: &str, role: Role) -> Result<String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if let Some(tokens) = Tokens::parse(&existing, &file.display().to_string())? {
        ensure!(
            tokens.entries.iter().all(|e| e.name != name),
            "{} has a token called `{name}` already",
            file.display()
        );
    }
    let token = new_token()?;
    let mut line = hashed_line(name, role, &token)?;
    if !existing.is_empty() && !existing.ends_with('\n') {
        line.insert(0, '\n');
    }
    line.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut writer = options
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    std::io::Write::write_all(&mut writer, line.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(token)
}

/// The server's access rule: its tokens (reloaded on SIGHUP), or none (open).
#[derive(Debug)]
pub struct Access {
    /// `None`: every caller is an anonymous admin.
    tokens: RwLock<Option<Arc<Tokens>>>,
    /// Where the tokens come from: the file, and the environment's lines.
    file: Option<PathBuf>,
    environment: Option<String>,
    /// Counts reloads (event streams re-check their caller on each).
    generation: watch::Sender<u64>,
    /// The largest body a refused request's client may still send (`--max-body`).
    pub max_body: usize,
}

impl Access {
    /// The tokens of `file` and `environment` (none: open).
    pub fn new(
        file: Option<PathBuf>,
        environment: Option<String>,
        max_body: usize,
    ) -> Result<Self> {
        let tokens = Tokens::load(file.as_deref(), environment.as_deref())?;
        Ok(Self {
            tokens: RwLock::new(tokens.map(Arc::new)),
            file,
            environment,
            generation: watch::Sender::new(0),
            max_body,
        })
    }

    /// The tokens now.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read the tokens again (a revoked token stops working, its event streams end); an open
    /// server stays open and one with tokens keeps at least one. Returns (users, admins).
    pub fn reload(&self) -> Result<(usize, usize)> {
        ensure!(
            self.tokens().is_some(),
            "this server started without tokens: it stays open"
        );
        let tokens = Tokens::load(self.file.as_deref(), self.environment.as_deref())?
            .context("no token is left: keeping the old ones (the server would be open)")?;
        let counts = tokens.counts();
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(tokens));
        self.generation.send_modify(|g| *g += 1);
        Ok(counts)
    }

    /// Whether `caller`'s token is still one of the server's.
    pub fn still_valid(&self, caller: &Caller) -> bool {
        match (self.tokens(), caller.hash) {
            (None, _) => true,
            (Some(tokens), Some(hash)) => tokens
                .entries
                .iter()
                .any(|e| Some(&e.name) == caller.name.as_ref() && bool::from(e.hash.ct_eq(&hash))),
            (Some(_), None) => false,
        }
    }

    /// Told of every reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Read and drop a refused request's body (at most `limit` bytes, for at most 10 s), so that a
/// client still uploading reads the answer rather than a broken pipe.
async fn discard_body(request: Request, limit: usize) {
    use futures_util::StreamExt;
    let mut stream = request.into_body().into_data_stream();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > limit {
                break;
            }
        }
    })
    .await;
}

/// Paths anyone may read: liveness, the API's description, and the web app (outside `/v1`).
fn is_public(path: &str) -> bool {
    path == "/healthz"
        || path == "/v1/openapi.json"
        || !(path.starts_with("/v1/") || path == "/v1" || path == "/metrics")
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"camlime\""),
    );
    response
}

/// Middleware: the caller of every request (a [`Caller`] extension), 401 without a valid token
/// where one is needed, 403 for a user on `/metrics`.
pub async fn authenticate(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let caller = match access.tokens() {
        None => Caller::open(),
        Some(tokens) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            match presented.map(|token| tokens.find(token)) {
                Some(Some(caller)) => caller,
                _ if is_public(&path) => return next.run(request).await,
                found => {
                    let message = if found.is_none() {
                        "this server needs a token: send `Authorization: Bearer <token>`"
                    } else {
                        "the token is not valid on this server"
                    };
                    discard_body(request, access.max_body).await;
                    return unauthorized(message);
                }
            }
        }
    };
    if path == "/metrics" && caller.role != Role::Admin {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "`/metrics` is for admin tokens",
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_parse_and_find_their_callers() {
        let token = new_token().unwrap();
        assert!(token.starts_with("clm_") && token.len() == 47, "{token}");
        assert_ne!(token, new_token().unwrap());
        let text = format!(
            "# the team\n{}\n\nops admin a-long-enough-plain-token jobs=20 samples=50000\n",
            hashed_line("alice", Role::User, &token).unwrap()
        );
        let tokens = Tokens::parse(&text, "tokens.txt").unwrap().unwrap();
        assert_eq!(tokens.counts(), (1, 1));
        assert_eq!(
            tokens.find(&token),
            Some(Caller {
                name: Some("alice".into()),
                role: Role::User,
                quota: Quota::default(),
                hash: Some(sha256(&token)),
            })
        );
        let ops = tokens.find("a-long-enough-plain-token").unwrap();
        assert_eq!(ops.role, Role::Admin);
        assert_eq!(
            ops.quota,
            Quota {
                jobs: Some(20),
                samples: Some(50_000)
            }
        );
        assert_eq!(tokens.find("a-long-enough-plain-toke"), None);
        assert_eq!(tokens.find(""), None);
        assert!(Tokens::parse("# none\n", "x").unwrap().is_none());
        let semicolons = Tokens::parse(
            "a user 0123456789abcdef; b admin 0123456789abcdeg",
            TOKENS_VARIABLE,
        )
        .unwrap()
        .unwrap();
        assert_eq!(semicolons.counts(), (1, 1));
    }

    #[test]
    fn bad_token_lines_are_clear_errors() {
        for (text, expected) in [
            ("alice user", "expected `NAME ROLE SECRET"),
            (
                "alice user 0123456789abcdef jobs=0",
                "`jobs=0` needs a positive number",
            ),
            (
                "alice user 0123456789abcdef gpus=2",
                "unknown option `gpus=2`",
            ),
            ("alice root 0123456789abcdef", "unknown role `root`"),
            ("alice user short", "at least 16 characters"),
            ("al/ice user 0123456789abcdef", "a token's name"),
            ("alice user sha256:00", "64 hex digits"),
            (
                "a user 0123456789abcdef\na admin 0123456789abcdeg",
                "two tokens are called `a`",
            ),
        ] {
            let error = format!("{:#}", Tokens::parse(text, "t.txt").unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("t.txt, entry "), "{error}");
        }
    }

    #[test]
    fn callers_see_their_own_jobs_and_admins_all() {
        let alice = Caller {
            name: Some("alice".into()),
            role: Role::User,
            quota: Quota::default(),
            hash: None,
        };
        assert!(alice.sees(Some("alice")));
        assert!(!alice.sees(Some("bob")));
        assert!(!alice.sees(None));
        assert!(Caller::open().sees(Some("bob")));
        assert!(is_public("/healthz") && is_public("/") && is_public("/index.html"));
        assert!(!is_public("/v1/jobs") && !is_public("/metrics") && !is_public("/v1"));
    }
}
