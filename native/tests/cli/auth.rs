//! A shared server: bearer tokens made by `camlime token new`, who may call what, whose jobs each
//! token sees (others' answer 404), ownership kept across a restart, and the rules for starting
//! without tokens.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::Agent;

use crate::common::serve::{multipart, spawn_server_with_env};
use crate::common::{camlime, repo, scratch};

/// `camlime serve` on loopback with `flags` and `env`; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let (child, url) =
            spawn_server_with_env(&repo(""), &dir.join("jobs"), flags, env, log.into());
        Self { child, url }
    }

    /// Method, path and token: the status, the JSON body and the `WWW-Authenticate` header (a
    /// POST sends chelsea with a Grad-CAM request).
    fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value, String) {
        let (status, body, headers) = self.send(
            method,
            path,
            token,
            &json!({"config": {"method": "gradcam"}}),
        );
        let challenge = headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, body, challenge)
    }

    /// [`Server::call`] with a POST's `request`: the status, the JSON body and the headers.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        request_json: &Value,
    ) -> (u16, Value, ureq::http::HeaderMap) {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => agent.get(&url).force_send_body(),
            "DELETE" => agent.delete(&url).force_send_body(),
            _ => agent.post(&url),
        };
        let request = match token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        };
        let (content_type, body) = multipart(
            &std::fs::read(repo("models/samples/chelsea.png")).unwrap(),
            &request_json.to_string(),
        );
        let mut response = if method == "POST" {
            request.header("content-type", content_type).send(body)
        } else {
            request.send_empty()
        }
        .unwrap();
        let headers = response.headers().clone();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, headers)
    }

    /// A job explaining chelsea with Grad-CAM, submitted with `token`: its id, once it is done.
    fn finished_job(&self, token: &str) -> String {
        let (status, job, _) = self.call("POST", "/v1/jobs", Some(token));
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, job, _) = self.call("GET", &format!("/v1/jobs/{id}"), Some(token));
            if job["status"] == "done" {
                return id;
            }
            assert!(
                job["status"] == "queued" || job["status"] == "running",
                "{job}"
            );
            assert!(Instant::now() < deadline, "job {id} never finished");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `camlime token new --name NAME --role ROLE --file FILE`: the token printed.
fn new_token(file: &Path, name: &str, role: &str) -> String {
    let output = camlime(&[
        "token",
        "new",
        "--name",
        name,
        "--role",
        role,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn ids(jobs: &Value) -> Vec<&str> {
    jobs.as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect()
}

#[test]
fn tokens_decide_who_calls_and_whose_jobs_each_sees_across_a_restart() {
    let dir = scratch("auth");
    let file = dir.join("tokens.txt");
    let alice = new_token(&file, "alice", "user");
    let bob = new_token(&file, "bob", "user");
    let ops = new_token(&file, "ops", "admin");
    assert!(alice.starts_with("clm_") && alice != bob);
    // The file holds hashes, never a token, and only its owner reads it.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.starts_with("alice user sha256:"), "{text}");
    assert!(!text.contains(&alice) && !text.contains(&ops));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = camlime(&[
        "token",
        "new",
        "--name",
        "bob",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("has a token called `bob` already"));

    let server = Server::start(&dir, &["--tokens", file.to_str().unwrap()], &[]);
    // Open: liveness and the API's description, which declares the scheme.
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
    let (status, openapi, _) = server.call("GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(
        openapi["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(openapi["security"][0]["bearer"], json!([]));
    // No token, a wrong token: 401 in the API's error format, with the challenge.
    for token in [None, Some("clm_not-a-token-of-this-server")] {
        let (status, error, challenge) = server.call("GET", "/v1/models", token);
        assert_eq!(status, 401, "{error}");
        assert_eq!(error["error"]["code"], "unauthorized");
        assert_eq!(challenge, "Bearer realm=\"camlime\"");
    }
    assert_eq!(server.call("POST", "/v1/jobs", None).0, 401);
    assert_eq!(server.call("GET", "/v1/models", Some(&alice)).0, 200);

    let job = server.finished_job(&alice);
    let path = format!("/v1/jobs/{job}");
    let (status, result, _) = server.call("GET", &path, Some(&alice));
    assert_eq!((status, &result["owner"]), (200, &json!("alice")));
    assert_eq!(result["result"]["config"]["method"], "gradcam");
    // Another user's token: as if the job did not exist (404, not 403).
    for (method, route) in [
        ("GET", path.clone()),
        ("GET", format!("{path}/events")),
        ("DELETE", path.clone()),
    ] {
        let (status, error, _) = server.call(method, &route, Some(&bob));
        assert_eq!(status, 404, "{method} {route}: {error}");
        assert_eq!(error["error"]["code"], "job_not_found");
    }
    assert_eq!(
        ids(&server.call("GET", "/v1/jobs", Some(&bob)).1),
        Vec::<&str>::new()
    );
    assert_eq!(
        ids(&server.call("GET", "/v1/jobs", Some(&alice)).1),
        [job.as_str()]
    );
    let bobs = server.finished_job(&bob);
    // The admin lists every job, and filters by owner; a user may not filter for another.
    assert_eq!(
        ids(&server.call("GET", "/v1/jobs", Some(&ops)).1),
        [job.as_str(), bobs.as_str()]
    );
    assert_eq!(
        ids(&server.call("GET", "/v1/jobs?owner=bob", Some(&ops)).1),
        [bobs.as_str()]
    );
    let (status, error, _) = server.call("GET", "/v1/jobs?owner=bob", Some(&alice));
    assert_eq!(
        (status, &error["error"]["code"]),
        (403, &json!("forbidden"))
    );
    // /metrics is the admin's.
    let (status, error, _) = server.call("GET", "/metrics", Some(&alice));
    assert_eq!(
        (status, &error["error"]["code"]),
        (403, &json!("forbidden"))
    );
    assert_eq!(server.call("GET", "/metrics", Some(&ops)).0, 200);
    assert_eq!(server.call("GET", "/metrics", None).0, 401);
    drop(server);

    // A restart keeps every job's owner.
    let server = Server::start(&dir, &["--tokens", file.to_str().unwrap()], &[]);
    assert_eq!(server.call("GET", &path, Some(&alice)).0, 200);
    assert_eq!(server.call("GET", &path, Some(&bob)).0, 404);
    let all = server.call("GET", "/v1/jobs", Some(&ops)).1;
    let owners: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["owner"])
        .collect();
    assert_eq!(owners, [&json!("alice"), &json!("bob")]);
    // The owner deletes its job; the admin deletes anyone's.
    assert_eq!(server.call("DELETE", &path, Some(&alice)).0, 204);
    assert_eq!(
        server
            .call("DELETE", &format!("/v1/jobs/{bobs}"), Some(&ops))
            .0,
        204
    );
    assert_eq!(
        ids(&server.call("GET", "/v1/jobs", Some(&ops)).1),
        Vec::<&str>::new()
    );
}

#[test]
fn tokens_come_from_the_environment_too() {
    let dir = scratch("auth-env");
    let server = Server::start(
        &dir,
        &[],
        &[(
            "CAMLIME_TOKENS",
            "carol user a-token-of-sixteen+; dave admin another-long-token",
        )],
    );
    assert_eq!(server.call("GET", "/v1/models", None).0, 401);
    assert_eq!(
        server
            .call("GET", "/v1/models", Some("a-token-of-sixteen+"))
            .0,
        200
    );
    assert_eq!(
        server.call("GET", "/metrics", Some("another-long-token")).0,
        200
    );
}

/// `camlime serve ARGS…` (its jobs under `dir`) that must fail at start: its standard error.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_camlime"))
        .args(["serve", "--data-dir"])
        .arg(dir.join("jobs"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} started");
    assert!(output.stdout.is_empty());
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn an_open_server_only_on_loopback_or_when_asked() {
    let refusals = scratch("auth-refused");
    let refused = |args: &[&str], env: &[(&str, &str)]| refused(&refusals, args, env);
    let error = refused(&["--addr", "0.0.0.0:0"], &[]);
    assert!(
        error.contains("0.0.0.0:0 is reachable from other machines: give tokens"),
        "{error}"
    );
    let error = refused(
        &["--addr", "127.0.0.1:0", "--no-auth"],
        &[("CAMLIME_TOKENS", "erin user sixteen-characters")],
    );
    assert!(
        error.contains("--no-auth contradicts the tokens of CAMLIME_TOKENS"),
        "{error}"
    );
    let error = refused(
        &["--addr", "127.0.0.1:0"],
        &[("CAMLIME_TOKENS", "erin user short")],
    );
    assert!(
        error.contains("CAMLIME_TOKENS, entry 1: a token must have at least 16"),
        "{error}"
    );
    let error = refused(&["--tokens", "/nonexistent/tokens.txt"], &[]);
    assert!(
        error.contains("cannot read the tokens file /nonexistent/tokens.txt"),
        "{error}"
    );

    // Loopback without tokens: open as before, and the log says so.
    let dir = scratch("auth-open");
    let server = Server::start(&dir, &[], &[]);
    assert_eq!(server.call("GET", "/v1/jobs", None).0, 200);
    drop(server);
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(
        log.contains("no tokens: open to anyone on this machine"),
        "{log}"
    );
    // Any address with --no-auth: open, with a warning.
    let dir = scratch("auth-no-auth");
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_camlime"))
        .args(["serve", "--addr", "0.0.0.0:0", "--no-auth", "--data-dir"])
        .arg(dir.join("jobs"))
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://0.0.0.0:"), "{line}");
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(log.contains("--no-auth: anyone who reaches"), "{log}");
}

/// A server reading `tokens` (lines) from `dir/tokens.txt`, with `flags`; and that file.
fn with_tokens(dir: &Path, tokens: &str, flags: &[&str]) -> (Server, std::path::PathBuf) {
    let file = dir.join("tokens.txt");
    std::fs::write(&file, tokens).unwrap();
    let mut all = vec!["--tokens", file.to_str().unwrap()];
    all.extend_from_slice(flags);
    (Server::start(dir, &all, &[]), file)
}

#[test]
fn per_token_quotas_answer_429_with_retry_after_and_bound_samples() {
    let dir = scratch("auth-quota");
    let (server, _) = with_tokens(
        &dir,
        "alice user alice-token-0123456789\nbob user bob-token-0123456789 samples=100\n",
        &["--token-jobs", "1"],
    );
    let long = json!({"config": {"method": "camlime", "lime": {"num_samples": 20000}}});
    let (status, job, _) = server.send("POST", "/v1/jobs", Some("alice-token-0123456789"), &long);
    assert_eq!(status, 202, "{job}");
    // Alice has her one job: the next is refused until it ends; Bob is not held up.
    let (status, error, headers) =
        server.send("POST", "/v1/jobs", Some("alice-token-0123456789"), &long);
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["error"]["code"], "quota_exceeded");
    assert_eq!(headers.get("retry-after").unwrap(), "10");
    // Bob's token allows 100 samples per job, whatever the server's --max-samples.
    let (status, error, _) = server.send(
        "POST",
        "/v1/jobs",
        Some("bob-token-0123456789"),
        &json!({"config": {"method": "lime", "lime": {"num_samples": 200}}}),
    );
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("samples must be at most 100"),
        "{error}"
    );
    let (status, small, _) = server.send(
        "POST",
        "/v1/jobs",
        Some("bob-token-0123456789"),
        &json!({"config": {"method": "lime", "lime": {"num_samples": 100}}}),
    );
    assert_eq!(status, 202, "{small}");
    let id = job["id"].as_str().unwrap();
    let path = format!("/v1/jobs/{id}");
    assert_eq!(
        server
            .call("DELETE", &path, Some("alice-token-0123456789"))
            .0,
        202
    );
}

/// `GET /v1/models` with `token` until the server refuses one (at most 30 tries): how many
/// passed before, and the refusal's status, body and headers.
fn until_refused(
    server: &Server,
    token: Option<&str>,
) -> (usize, u16, Value, ureq::http::HeaderMap) {
    for passed in 0..30 {
        let (status, body, headers) = server.send("GET", "/v1/models", token, &Value::Null);
        if status != 200 {
            return (passed, status, body, headers);
        }
    }
    panic!("30 requests passed a rate of 1 per second");
}

#[test]
fn request_rates_per_client_and_per_token_answer_429_with_retry_after() {
    let dir = scratch("auth-rates");
    let server = Server::start(&dir, &["--ip-rate", "1", "--ip-burst", "3"], &[]);
    // The burst passes (more if a second goes by meanwhile), then 429.
    let (passed, status, error, headers) = until_refused(&server, None);
    assert!(passed >= 3, "only {passed} requests passed a burst of 3");
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["error"]["code"], "too_many_requests");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the client 127.0.0.1 sends requests faster"),
        "{error}"
    );
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    drop(server);

    let dir = scratch("auth-token-rate");
    let tokens = "alice user alice-token-0123456789; bob user bob-token-0123456789";
    let server = Server::start(
        &dir,
        &["--ip-rate", "0", "--token-rate", "1", "--token-burst", "2"],
        &[("CAMLIME_TOKENS", tokens)],
    );
    let (passed, status, error, _) = until_refused(&server, Some("alice-token-0123456789"));
    assert!(passed >= 2, "only {passed} requests passed a burst of 2");
    assert_eq!(status, 429, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the token `alice` sends"),
        "{error}"
    );
    // Bob has his own bucket.
    assert_eq!(
        server
            .call("GET", "/v1/models", Some("bob-token-0123456789"))
            .0,
        200
    );
}

#[test]
fn a_reload_revokes_a_token_and_ends_its_event_streams() {
    use std::io::BufRead;
    let dir = scratch("auth-reload");
    let (server, file) = with_tokens(
        &dir,
        "alice user alice-token-0123456789\nops admin ops-token-0123456789\n",
        &[],
    );
    let alice = "alice-token-0123456789";
    let long = json!({"config": {"method": "camlime", "lime": {"num_samples": 20000}}});
    let (status, job, _) = server.send("POST", "/v1/jobs", Some(alice), &long);
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let agent: Agent = Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let events = agent
        .get(format!("{}{path}/events", server.url))
        .header("authorization", format!("Bearer {alice}"))
        .call()
        .unwrap();
    let mut lines = std::io::BufReader::new(events.into_body().into_reader()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data:"), "{first}");
    // A reload to a file without any token keeps the old ones (the server would be open).
    std::fs::write(&file, "# nobody\n").unwrap();
    let hangup = |server: &Server| {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(500));
    };
    hangup(&server);
    assert_eq!(server.call("GET", "/v1/models", Some(alice)).0, 200);
    // Alice's token revoked: her stream ends, her requests are refused; the job stays.
    std::fs::write(&file, "ops admin ops-token-0123456789\n").unwrap();
    let revoked = Instant::now();
    hangup(&server);
    let ended = std::thread::spawn(move || {
        for line in lines {
            if line.is_err() {
                break;
            }
        }
        Instant::now()
    });
    let ended = ended.join().unwrap();
    assert!(
        ended - revoked < Duration::from_secs(5),
        "the stream outlived the revocation by {:?}",
        ended - revoked
    );
    assert_eq!(server.call("GET", "/v1/models", Some(alice)).0, 401);
    assert_eq!(
        server.call("GET", &path, Some("ops-token-0123456789")).0,
        200
    );
    assert_eq!(
        server.call("DELETE", &path, Some("ops-token-0123456789")).0,
        202
    );
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(
        log.contains("tokens not reloaded: no token is left"),
        "{log}"
    );
    assert!(
        log.contains("tokens reloaded: 0 user and 1 admin tokens"),
        "{log}"
    );
}
