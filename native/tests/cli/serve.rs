//! `camlime serve` end to end: the real binary on a loopback port, driven over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::Agent;

use crate::common::{camlime, repo, scratch};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
    data: PathBuf,
}

/// A fresh folder for one test, removed when the test ends.
impl Server {
    /// Start `camlime serve` with a data folder under `dir` and extra flags.
    fn start(dir: &Path, flags: &[&str]) -> Self {
        let data = dir.join("jobs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let (child, url) = crate::common::serve::spawn_server(&repo(""), &data, flags, log.into());
        Self { child, url, data }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGTERM and wait for the process to end.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    fn resident_peak_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// Status and JSON body of a response.
fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn get(server: &Server, path: &str) -> (u16, Value) {
    answer(agent().get(server.url(path)).call())
}

fn post_json(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    answer(
        agent()
            .post(server.url(path))
            .header("content-type", "application/json")
            .send(serde_json::to_vec(body).unwrap()),
    )
}

fn post_raw(server: &Server, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    answer(
        agent()
            .post(server.url(path))
            .header("content-type", content_type)
            .send(body),
    )
}

/// A multipart form with an `image` part and a `request` part.
fn multipart(image: &[u8], request: &Value) -> (String, Vec<u8>) {
    crate::common::serve::multipart(image, &request.to_string())
}

fn post_form(server: &Server, path: &str, image: &[u8], request: &Value) -> (u16, Value) {
    let (content_type, body) = multipart(image, request);
    post_raw(server, path, &content_type, body)
}

/// A multipart form with an `image` part and plain fields, as `curl -F name=value` sends them.
fn post_fields(server: &Server, path: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let image = chelsea();
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("image", Some("chelsea.png"), &image)];
    parts.extend(
        fields
            .iter()
            .map(|(name, value)| (*name, None, value.as_bytes())),
    );
    let (content_type, body) = crate::common::serve::form(&parts);
    post_raw(server, path, &content_type, body)
}

fn chelsea() -> Vec<u8> {
    std::fs::read(repo("models/samples/chelsea.png")).unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Poll a job until it leaves `queued` / `running`.
fn wait_for_job(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, job) = get(server, &format!("/v1/jobs/{id}"));
        assert_eq!(status, 200, "{job}");
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn submit(server: &Server, request: &Value) -> String {
    let (status, job) = post_form(server, "/v1/jobs", &chelsea(), request);
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "queued");
    job["id"].as_str().unwrap().to_owned()
}

/// The record without what legitimately differs between runs.
fn results_only(mut record: Value) -> Value {
    let object = record.as_object_mut().unwrap();
    object.remove("timings");
    object.remove("version");
    object["image"].as_object_mut().unwrap().remove("source");
    record
}

/// `camlime explain PHOTO ARGS… --json`'s record, its pictures written under `dir/cli`.
fn cli_record(dir: &Path, photo: &str, args: &[&str]) -> Value {
    let out = dir.join("cli");
    let mut all = vec!["explain", photo];
    all.extend_from_slice(args);
    all.extend(["--json", "--out", out.to_str().unwrap()]);
    let output = camlime(&all);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// An error answer's message.
fn message(error: &Value) -> &str {
    error["error"]["message"].as_str().unwrap_or_default()
}

fn assert_healthy(server: &Server) {
    let (status, health) = get(server, "/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[test]
fn every_endpoint_answers() {
    let dir = scratch("endpoints");
    let web = dir.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>CamLIME</title>",
    )
    .unwrap();
    let server = Server::start(&dir, &["--web-dir", web.to_str().unwrap()]);

    let (status, models) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    let mobilenet = &models.as_array().unwrap()[0];
    assert_eq!(mobilenet["name"], "mobilenet_v2");
    assert_eq!(mobilenet["default_layers"], json!(["features.17"]));
    let layers = mobilenet["layers"].as_array().unwrap();
    assert!(
        layers
            .iter()
            .any(|l| l["name"] == "features.17" && l["shape"] == json!([320, 7, 7]))
    );

    let (status, by_json) = post_json(
        &server,
        "/v1/predict",
        &json!({"image": base64(&chelsea()), "top": 3}),
    );
    assert_eq!(status, 200, "{by_json}");
    assert_eq!(by_json["predictions"][0]["label"], "Egyptian cat");
    assert_eq!(by_json["predictions"].as_array().unwrap().len(), 3);
    let (status, by_form) = post_form(&server, "/v1/predict", &chelsea(), &json!({"top": 3}));
    assert_eq!(status, 200);
    assert_eq!(by_form, by_json);

    let (status, record) = post_form(
        &server,
        "/v1/explain",
        &chelsea(),
        &json!({"config": {"method": "gradcam"}, "source": "chelsea.png"}),
    );
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["format"], "camlime-explanation/2");
    assert_eq!(record["config"]["method"], "gradcam");
    assert_eq!(record["target"]["label"], "Egyptian cat");
    assert_eq!(record["image"]["source"], "chelsea.png");
    assert!(record["cam"]["map"].is_object());

    let id = submit(&server, &json!({"config": {"method": "eigencam"}}));
    let job = wait_for_job(&server, &id);
    assert_eq!(job["status"], "done");
    assert_eq!(job["result"]["config"]["method"], "eigencam");
    let (status, jobs) = get(&server, "/v1/jobs");
    assert_eq!(status, 200);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );

    let (status, openapi) = get(&server, "/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/models",
        "/v1/predict",
        "/v1/explain",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
    ] {
        assert!(openapi["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    // The request's `config` is the record's schema, described field by field.
    let schemas = &openapi["components"]["schemas"];
    let config = &schemas["ExplainRequest"]["properties"]["config"];
    assert!(config.to_string().contains("ExplainConfig"), "{config}");
    let fields = &schemas["ExplainConfig"]["properties"];
    for field in [
        "method",
        "target",
        "seed",
        "chunk",
        "cam",
        "segmenter",
        "lime",
        "mode",
    ] {
        assert!(
            fields[field].is_object(),
            "ExplainConfig lacks {field}: {fields}"
        );
    }
    let methods = schemas["Method"]["enum"].as_array().unwrap();
    assert!(methods.iter().any(|m| m == "gradcam++"), "{methods:?}");
    assert!(schemas["LimeConfig"]["properties"]["num_samples"].is_object());
    // Every error code is listed.
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    for code in [
        "invalid_parameter",
        "use_jobs",
        "queue_full",
        "image_too_large",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} not in {codes:?}");
    }

    assert_healthy(&server);
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(
            "camlime_http_requests_total{method=\"POST\",route=\"/v1/predict\",status=\"200\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("camlime_jobs_finished_total{status=\"done\",code=\"\"} 1"));
    assert!(text.contains("camlime_resident_memory_bytes "));

    let (status, page) = get(&server, "/");
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<title>CamLIME</title>"));
    let (status, missing) = get(&server, "/v1/nothing");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found");
}

/// Every explanation setting off its default (`shared/tests/fixtures/config/every_setting.json`)
/// reaches the core from the command line's flags, the server's JSON `config` and its form
/// fields: the three records carry the fixture's configuration and the same results.
#[test]
fn every_setting_reaches_the_core_from_the_cli_and_the_server() {
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(repo("shared/tests/fixtures/config/every_setting.json")).unwrap(),
    )
    .unwrap();
    let config = &fixture["config"];
    let flags: Vec<String> = serde_json::from_value(fixture["flags"].clone()).unwrap();
    let dir = scratch("every-setting");
    let server = Server::start(&dir, &["--threads", "2"]);
    let image = repo("models/samples/chelsea.png");
    let out = dir.join("cli");
    let mut args = vec![
        "explain",
        image.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(flags.iter().map(String::as_str));
    let output = camlime(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(&cli["config"], config, "the command line");
    let by_json = wait_for_job(&server, &submit(&server, &json!({ "config": config })));
    assert_eq!(by_json["status"], "done", "{by_json}");
    let mut fields = Vec::new();
    let mut iter = flags.iter().peekable();
    while let Some(flag) = iter.next() {
        let name = flag.trim_start_matches("--").to_owned();
        let value = match iter.peek() {
            Some(value) if !value.starts_with("--") => iter.next().unwrap().clone(),
            _ => "true".to_owned(),
        };
        fields.push((name, value));
    }
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let (status, accepted) = post_fields(&server, "/v1/jobs", &fields);
    assert_eq!(status, 202, "{accepted}");
    let by_fields = wait_for_job(&server, accepted["id"].as_str().unwrap());
    assert_eq!(by_fields["status"], "done", "{by_fields}");
    for (what, job) in [("JSON", by_json), ("form fields", by_fields)] {
        assert_eq!(&job["result"]["config"], config, "{what}");
        assert_eq!(
            results_only(job["result"].clone()),
            results_only(cli.clone()),
            "{what}"
        );
    }
}

#[test]
fn server_results_equal_the_command_line() {
    let dir = scratch("parity");
    let server = Server::start(&dir, &["--threads", "2"]);
    let image = repo("models/samples/chelsea.png");
    for (method, flags, config) in [
        (
            "camlime",
            vec!["--samples", "120", "--seed", "7"],
            json!({"method": "camlime", "lime": {"num_samples": 120}, "seed": 7}),
        ),
        (
            "lime",
            vec!["--samples", "100", "--segmenter", "slic:n_segments=60"],
            json!({"method": "lime", "lime": {"num_samples": 100},
                   "segmenter": {"algorithm": "slic", "n_segments": 60}}),
        ),
        (
            "layercam",
            vec!["--layer", "features.16"],
            json!({"method": "layercam", "cam": {"layers": ["features.16"]}}),
        ),
    ] {
        let out = dir.join(format!("cli-{method}"));
        let mut args = vec![
            "explain",
            image.to_str().unwrap(),
            "--method",
            method,
            "--json",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(flags.iter().copied());
        let output = camlime(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
        let request = json!({ "config": config });
        let (status, sync) = post_form(&server, "/v1/explain", &chelsea(), &request);
        assert_eq!(status, 200, "{sync}");
        assert_eq!(
            results_only(sync),
            results_only(cli.clone()),
            "{method}: /v1/explain"
        );
        let job = wait_for_job(&server, &submit(&server, &request));
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(
            results_only(job["result"].clone()),
            results_only(cli.clone()),
            "{method}: /v1/jobs"
        );
        // The command line's flags as plain form fields (`curl -F samples=120`).
        let mut fields = vec![("method", method)];
        fields.extend(
            flags
                .chunks(2)
                .map(|pair| (pair[0].trim_start_matches("--"), pair[1])),
        );
        let (status, by_fields) = post_fields(&server, "/v1/explain", &fields);
        assert_eq!(status, 200, "{by_fields}");
        assert_eq!(
            results_only(by_fields),
            results_only(cli.clone()),
            "{method}: form fields"
        );
        // A record's config replays to the same results.
        let replay = json!({"config": cli["config"]});
        let (status, replayed) = post_form(&server, "/v1/explain", &chelsea(), &replay);
        assert_eq!(status, 200, "{replayed}");
        assert_eq!(
            results_only(replayed),
            results_only(cli),
            "{method}: replay"
        );
    }
}

/// What is wrong, the path, the content type, the body, the expected status and error code.
type BadCase = (
    &'static str,
    &'static str,
    String,
    Vec<u8>,
    u16,
    &'static str,
);

#[test]
fn bad_input_is_a_clear_4xx_and_the_server_stays_healthy() {
    let dir = scratch("bad-http");
    let server = Server::start(&dir, &["--max-body", "8000000", "--max-samples", "5000"]);
    let bad =
        |name: &str| std::fs::read(repo(&format!("shared/tests/fixtures/bad/{name}"))).unwrap();
    let form = |image: &[u8], request: Value| multipart(image, &request);
    let fields = |fields: &[(&str, &str)]| {
        let image = chelsea();
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("image", Some("x.png"), &image)];
        parts.extend(
            fields
                .iter()
                .map(|(name, value)| (*name, None, value.as_bytes())),
        );
        crate::common::serve::form(&parts)
    };
    let cases: Vec<BadCase> = {
        let mut cases = Vec::new();
        let mut add = |what, path, (content_type, body): (String, Vec<u8>), status, code| {
            cases.push((what, path, content_type, body, status, code));
        };
        add(
            "corrupt image",
            "/v1/predict",
            form(&bad("truncated.png"), json!({})),
            400,
            "invalid_image",
        );
        add(
            "not an image",
            "/v1/predict",
            form(&bad("text.png"), json!({})),
            400,
            "invalid_image",
        );
        add(
            "empty image",
            "/v1/explain",
            form(&bad("empty.png"), json!({"config": {"method": "gradcam"}})),
            400,
            "invalid_image",
        );
        add(
            "100-megapixel PNG bomb",
            "/v1/predict",
            form(&bad("bomb_100mpx.png"), json!({})),
            413,
            "image_too_large",
        );
        add(
            "10-gigapixel header",
            "/v1/jobs",
            form(&bad("bomb_10gpx.png"), json!({})),
            413,
            "image_too_large",
        );
        add(
            "unknown model",
            "/v1/predict",
            form(&chelsea(), json!({"model": "resnet50"})),
            400,
            "unknown_model",
        );
        add(
            "unknown layer",
            "/v1/explain",
            form(
                &chelsea(),
                json!({"config": {"method": "gradcam", "cam": {"layers": ["features.99"]}}}),
            ),
            400,
            "unknown_layer",
        );
        add(
            "unknown method",
            "/v1/jobs",
            form(&chelsea(), json!({"config": {"method": "gradcam2"}})),
            400,
            "invalid_json",
        );
        add(
            "unknown method as a form field",
            "/v1/jobs",
            fields(&[("method", "gradcam2")]),
            400,
            "unknown_method",
        );
        add(
            "unknown CAM for CamLIME",
            "/v1/jobs",
            form(&chelsea(), json!({"config": {"cam": {"method": "nope"}}})),
            400,
            "invalid_json",
        );
        add(
            "unknown CAM as a form field",
            "/v1/jobs",
            fields(&[("cam", "nope")]),
            400,
            "invalid_parameter",
        );
        add(
            "samples as a word",
            "/v1/jobs",
            fields(&[("samples", "many")]),
            400,
            "invalid_parameter",
        );
        add(
            "a misspelt form field",
            "/v1/jobs",
            fields(&[("smaples", "10")]),
            400,
            "invalid_parameter",
        );
        add(
            "a request part and plain fields",
            "/v1/jobs",
            {
                let image = chelsea();
                crate::common::serve::form(&[
                    ("image", Some("x.png"), &image),
                    ("request", None, b"{}"),
                    ("samples", None, b"100"),
                ])
            },
            400,
            "invalid_multipart",
        );
        add(
            "negative samples",
            "/v1/jobs",
            form(&chelsea(), json!({"config": {"lime": {"num_samples": -5}}})),
            400,
            "invalid_json",
        );
        add(
            "huge samples",
            "/v1/jobs",
            form(
                &chelsea(),
                json!({"config": {"lime": {"num_samples": 4_000_000_000_u64}}}),
            ),
            400,
            "invalid_parameter",
        );
        add(
            "samples over the server's limit",
            "/v1/jobs",
            form(
                &chelsea(),
                json!({"config": {"lime": {"num_samples": 5001}}}),
            ),
            400,
            "invalid_parameter",
        );
        add(
            "one sample",
            "/v1/jobs",
            form(&chelsea(), json!({"config": {"lime": {"num_samples": 1}}})),
            400,
            "invalid_parameter",
        );
        add(
            "absurd steps",
            "/v1/jobs",
            form(
                &chelsea(),
                json!({"config": {"method": "integratedgradients",
                                  "cam": {"attribution": {"steps": 1_000_000}}}}),
            ),
            400,
            "invalid_parameter",
        );
        add(
            "target out of range",
            "/v1/explain",
            form(
                &chelsea(),
                json!({"config": {"method": "gradcam", "target": 1000}}),
            ),
            400,
            "invalid_parameter",
        );
        add(
            "misspelt parameter",
            "/v1/jobs",
            form(&chelsea(), json!({"config": {"lime": {"smaples": 10}}})),
            400,
            "invalid_json",
        );
        add(
            "a setting outside `config`",
            "/v1/jobs",
            form(&chelsea(), json!({"method": "lime", "config": {}})),
            400,
            "invalid_json",
        );
        add(
            "heavy work synchronously",
            "/v1/explain",
            form(&chelsea(), json!({"config": {"method": "scorecam"}})),
            422,
            "use_jobs",
        );
        add(
            "malformed JSON",
            "/v1/predict",
            ("application/json".into(), b"{\"image\": ".to_vec()),
            400,
            "invalid_json",
        );
        add(
            "JSON without image",
            "/v1/predict",
            ("application/json".into(), b"{}".to_vec()),
            400,
            "missing_image",
        );
        add(
            "image not base64",
            "/v1/predict",
            ("application/json".into(), b"{\"image\": \"%%%\"}".to_vec()),
            400,
            "invalid_image",
        );
        add(
            "wrong content type",
            "/v1/predict",
            ("text/plain".into(), b"hello".to_vec()),
            415,
            "unsupported_media_type",
        );
        add(
            "form without image",
            "/v1/jobs",
            (
                "multipart/form-data; boundary=x".into(),
                b"--x\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{}\r\n--x--\r\n"
                    .to_vec(),
            ),
            400,
            "missing_image",
        );
        // 50 kB over: the server answers at the limit, and what the client still has to send
        // fits the socket buffers, so it reads the 413 instead of a broken pipe.
        add(
            "body over the limit",
            "/v1/predict",
            form(&vec![0_u8; 8_050_000], json!({})),
            413,
            "payload_too_large",
        );
        cases
    };
    for (what, path, content_type, body, status, code) in cases {
        let (got, answer) = post_raw(&server, path, &content_type, body);
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.len() > 10, "{what}: message {message:?}");
        assert_healthy(&server);
    }
    for (method, path, status, code) in [
        (
            "GET",
            "/v1/jobs/0123456789abcdef0123456789abcdef",
            404,
            "job_not_found",
        ),
        (
            "GET",
            "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
            404,
            "job_not_found",
        ),
        ("DELETE", "/v1/jobs/nope", 404, "job_not_found"),
        ("GET", "/v1/jobs/nope/events", 404, "job_not_found"),
        ("PUT", "/v1/models", 405, "method_not_allowed"),
        ("GET", "/v1/predict", 405, "method_not_allowed"),
    ] {
        let request = agent();
        let response = match method {
            "GET" => request.get(server.url(path)).call(),
            "DELETE" => request.delete(server.url(path)).call(),
            _ => request.put(server.url(path)).send_empty(),
        };
        let (got, answer) = self::answer(response);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
    }
    // Still answering real work afterwards.
    let (status, predicted) = post_form(&server, "/v1/predict", &chelsea(), &json!({}));
    assert_eq!(status, 200);
    assert_eq!(predicted["predictions"][0]["label"], "Egyptian cat");
}

/// Read Server-Sent Events until one satisfies `stop`; returns every status seen.
fn follow(server: &Server, id: &str, mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut response = agent()
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "text/event-stream");
    let reader = BufReader::new(response.body_mut().as_reader());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let status: Value = serde_json::from_str(data).unwrap();
            let done = stop(&status);
            seen.push(status);
            if done {
                break;
            }
        }
    }
    seen
}

#[test]
fn jobs_stream_progress_cancel_and_refuse_when_the_queue_is_full() {
    let dir = scratch("jobs");
    let server = Server::start(&dir, &["--jobs", "1", "--queue", "1"]);
    let long = json!({"config": {"lime": {"num_samples": 20000}}});
    let running = submit(&server, &long);
    let progressed = follow(&server, &running, |s| {
        s["status"] == "running" && s["progress"]["done"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(progressed[0]["id"], running.as_str());
    let last = progressed.last().unwrap();
    assert_eq!(last["progress"]["total"], 20000);

    let queued = submit(&server, &long);
    let (status, refused) = post_form(&server, "/v1/jobs", &chelsea(), &long);
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "queue_full");

    let (status, cancelled) = answer(
        agent()
            .delete(server.url(&format!("/v1/jobs/{queued}")))
            .call(),
    );
    assert_eq!(status, 202);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, _) = answer(
        agent()
            .delete(server.url(&format!("/v1/jobs/{running}")))
            .call(),
    );
    assert_eq!(status, 202);
    let ended = follow(&server, &running, |s| s["status"] != "running");
    let last = ended.last().unwrap();
    assert_eq!(last["status"], "cancelled", "{last}");
    assert_eq!(last["error"]["code"], "cancelled");
    let job = wait_for_job(&server, &running);
    assert!(job["result"].is_null());
    let done = last["progress"]["done"].as_u64().unwrap();
    assert!(done < 20000, "cancelled after {done} samples");

    // The worker is free again, and a finished job can be deleted.
    let next = submit(&server, &json!({"config": {"method": "gradcam"}}));
    assert_eq!(wait_for_job(&server, &next)["status"], "done");
    let (status, _) = answer(
        agent()
            .delete(server.url(&format!("/v1/jobs/{next}")))
            .call(),
    );
    assert_eq!(status, 204);
    assert_eq!(get(&server, &format!("/v1/jobs/{next}")).0, 404);
    assert!(!server.data.join(format!("{next}.record.json")).exists());
}

#[test]
fn jobs_time_out_and_results_expire() {
    let dir = scratch("limits");
    let server = Server::start(&dir, &["--job-timeout", "1", "--result-ttl", "3"]);
    let slow = submit(
        &server,
        &json!({"config": {"lime": {"num_samples": 20000}}}),
    );
    let quick = submit(&server, &json!({"config": {"method": "gradcam"}}));
    let job = wait_for_job(&server, &slow);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "timeout");
    assert_eq!(wait_for_job(&server, &quick)["status"], "done");
    std::thread::sleep(Duration::from_millis(3500));
    let (status, expired) = get(&server, &format!("/v1/jobs/{quick}"));
    assert_eq!(status, 404, "{expired}");
    assert_eq!(expired["error"]["code"], "job_not_found");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.data.join(format!("{quick}.record.json")).exists() {
        assert!(
            Instant::now() < deadline,
            "the expired record was never deleted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn finished_results_survive_restarts_and_unfinished_jobs_say_so() {
    let dir = scratch("restart");
    let server = Server::start(&dir, &[]);
    let finished = submit(&server, &json!({"config": {"lime": {"num_samples": 60}}}));
    let record = wait_for_job(&server, &finished)["result"].clone();
    assert_eq!(record["config"]["lime"]["num_samples"], 60);
    let running = submit(
        &server,
        &json!({"config": {"lime": {"num_samples": 20000}}}),
    );
    follow(&server, &running, |s| s["status"] == "running");
    // A graceful stop (SIGTERM) ends the running job as interrupted and exits cleanly.
    let exit = server.stop();
    assert!(exit.success(), "{exit:?}");

    let server = Server::start(&dir, &[]);
    let job = wait_for_job(&server, &finished);
    assert_eq!(job["status"], "done");
    assert_eq!(job["result"], record);
    let job = wait_for_job(&server, &running);
    assert_eq!(job["status"], "interrupted");
    assert_eq!(job["error"]["code"], "interrupted");

    // A hard kill mid-job: the next start still serves the finished result.
    let killed = submit(
        &server,
        &json!({"config": {"lime": {"num_samples": 20000}}}),
    );
    follow(&server, &killed, |s| s["status"] == "running");
    drop(server);
    let server = Server::start(&dir, &[]);
    assert_eq!(wait_for_job(&server, &finished)["result"], record);
    assert_eq!(wait_for_job(&server, &killed)["status"], "interrupted");
}

#[test]
fn fifty_concurrent_predicts_and_five_jobs_without_errors_in_bounded_memory() {
    let dir = scratch("load");
    let server = Server::start(&dir, &[]);
    // Warm the plans so that the baseline includes them.
    assert_eq!(
        post_form(&server, "/v1/predict", &chelsea(), &json!({})).0,
        200
    );
    let id = submit(&server, &json!({"config": {"lime": {"num_samples": 64}}}));
    assert_eq!(wait_for_job(&server, &id)["status"], "done");
    let baseline = server.resident_peak_bytes();

    let load = |round: u64| {
        let jobs: Vec<String> = (0..5)
            .map(|seed| {
                submit(
                    &server,
                    &json!({"config": {"lime": {"num_samples": 200}, "seed": round * 5 + seed}}),
                )
            })
            .collect();
        let image = chelsea();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..50)
                .map(|_| {
                    scope.spawn(|| {
                        let (status, body) = post_form(&server, "/v1/predict", &image, &json!({}));
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["predictions"][0]["label"], "Egyptian cat");
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        });
        for id in &jobs {
            let job = wait_for_job(&server, id);
            assert_eq!(job["status"], "done", "{job}");
        }
        server.resident_peak_bytes()
    };
    let first = load(0);
    let second = load(1);
    assert!(
        first < baseline + (400 << 20),
        "resident memory peaked at {} MiB after {} MiB before the load",
        first >> 20,
        baseline >> 20
    );
    assert!(
        second < first + (64 << 20),
        "a second round of the same load raised the peak from {} MiB to {} MiB",
        first >> 20,
        second >> 20
    );
    assert_healthy(&server);
}

fn coffee() -> Vec<u8> {
    std::fs::read(repo("models/samples/coffee.png")).unwrap()
}

fn post_parts(server: &Server, parts: &[(&str, Option<&str>, &[u8])]) -> (u16, Value) {
    let (content_type, body) = crate::common::serve::form(parts);
    post_raw(server, "/v1/evaluations", &content_type, body)
}

#[test]
fn evaluations_run_as_jobs_and_equal_the_command_line() {
    let dir = scratch("evaluations");
    let server = Server::start(&dir, &["--max-eval-images", "2"]);
    let (chelsea, coffee) = (chelsea(), coffee());
    let request = json!({
        "methods": ["gradcam", "eigencam"],
        "metrics": ["PixelFlipping", "FaithfulnessEstimate", "Sparseness"],
        "metric_params": {"PixelFlipping": {"features_in_step": 3136},
                          "FaithfulnessEstimate": {"features_in_step": 3136}},
        "metric_seed": 3
    })
    .to_string();
    let (status, job) = post_parts(
        &server,
        &[
            ("request", None, request.as_bytes()),
            ("image", Some("chelsea.png"), &chelsea),
            ("image", Some("coffee.png"), &coffee),
        ],
    );
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "eval");
    assert_eq!(job["method"], "gradcam,eigencam");
    let id = job["id"].as_str().unwrap().to_owned();
    // Progress names the step and counts the scores, 2 images × 2 methods × 3 metrics.
    let events = follow(&server, &id, |s| {
        s["status"].as_str() != Some("running") && s["status"] != "queued"
    });
    let steps: Vec<&Value> = events
        .iter()
        .filter_map(|s| s.get("progress"))
        .filter(|p| !p.is_null())
        .collect();
    // Updates in quick succession reach a subscriber as the latest one only: check what was seen.
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|p| p["total"] == 12), "{steps:?}");
    let done: Vec<u64> = steps.iter().map(|p| p["done"].as_u64().unwrap()).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    for step in &steps {
        let stage = step["stage"].as_str().unwrap();
        let parts: Vec<&str> = stage.split(" · ").collect();
        let known = match parts.as_slice() {
            ["summarising"] => true,
            [image, rest @ ..] => {
                ["chelsea.png", "coffee.png"].contains(image)
                    && match rest {
                        ["preparing"] => true,
                        [method] => ["gradcam", "eigencam"].contains(method),
                        [method, metric] => {
                            ["gradcam", "eigencam"].contains(method)
                                && ["PixelFlipping", "FaithfulnessEstimate", "Sparseness"]
                                    .contains(metric)
                        }
                        _ => false,
                    }
            }
            [] => false,
        };
        assert!(known, "{stage}");
    }
    let job = wait_for_job(&server, &id);
    assert_eq!(job["status"], "done", "{job}");
    let result = &job["result"];
    assert_eq!(result["images"], json!(["chelsea.png", "coffee.png"]));
    assert_eq!(result["rows"].as_array().unwrap().len(), 12);
    assert_eq!(result["summary"].as_array().unwrap().len(), 6);
    assert_eq!(
        result["curves"]["PixelFlipping"].as_array().unwrap().len(),
        2
    );
    assert!(
        result["markdown"]
            .as_str()
            .unwrap()
            .contains("| Grad-CAM |")
    );

    // The command line's eval of the same images gives the same scores and table.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("chelsea.png"), &chelsea).unwrap();
    std::fs::write(images.join("coffee.png"), &coffee).unwrap();
    let params = dir.join("params.json");
    std::fs::write(
        &params,
        r#"{"PixelFlipping": {"features_in_step": 3136}, "FaithfulnessEstimate": {"features_in_step": 3136}}"#,
    )
    .unwrap();
    let out = dir.join("cli");
    let output = camlime(&[
        "eval",
        "--images",
        images.to_str().unwrap(),
        "--methods",
        "gradcam,eigencam",
        "--metrics",
        "PixelFlipping,FaithfulnessEstimate,Sparseness",
        "--metric-params",
        params.to_str().unwrap(),
        "--metric-seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(result["summary"], cli);
    assert_eq!(
        result["markdown"].as_str().unwrap(),
        std::fs::read_to_string(out.join("summary.md")).unwrap()
    );
    let cli_rows: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (server_row, cli_row) in result["rows"].as_array().unwrap().iter().zip(&cli_rows) {
        for key in ["image", "method", "metric", "score", "curve"] {
            assert_eq!(server_row[key], cli_row[key], "{key}");
        }
    }

    // JSON bodies carry the images as base64, masks beside them.
    let mask = {
        let mut mask = image::GrayImage::new(451, 300);
        for (x, _, pixel) in mask.enumerate_pixels_mut() {
            pixel.0 = [if x < 200 { 255 } else { 0 }];
        }
        let mut bytes = Vec::new();
        mask.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        bytes
    };
    let (status, job) = post_json(
        &server,
        "/v1/evaluations",
        &json!({"methods": ["gradcam"], "metrics": ["PointingGame"],
                "images": [{"name": "cat", "image": base64(&chelsea), "mask": base64(&mask)}]}),
    );
    assert_eq!(status, 202, "{job}");
    let job = wait_for_job(&server, job["id"].as_str().unwrap());
    assert_eq!(job["status"], "done", "{job}");
    assert!(job["result"]["rows"][0]["score"].is_number(), "{job}");

    let (status, error) = post_json(
        &server,
        "/v1/evaluations",
        &json!({"metrics": ["Sparseness"], "images": [{"name": " ", "image": base64(&chelsea)}]}),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("name"));

    // Bad evaluations are the client's 400, before any work.
    let corrupt = b"\x89PNG\r\n\x1a\nnot really".to_vec();
    let one = |request: &str| -> (u16, Value) {
        post_parts(
            &server,
            &[
                ("request", None, request.as_bytes()),
                ("image", Some("chelsea.png"), &chelsea),
            ],
        )
    };
    for (request, code, says) in [
        (
            r#"{"metrics": ["Faithfulness"]}"#,
            "invalid_parameter",
            "Faithfulness",
        ),
        (
            r#"{"methods": ["gradcam"], "metrics": ["PointingGame"]}"#,
            "invalid_parameter",
            "masks",
        ),
        (r#"{"methods": ["nomethod"]}"#, "invalid_json", "nomethod"),
        (
            r#"{"methods": ["gradcam"], "metric_params": {"ROAD": {}}}"#,
            "invalid_parameter",
            "ROAD",
        ),
        (
            r#"{"methods": ["gradcam"], "metrics": ["PixelFlipping"], "metric_params": {"PixelFlipping": {"features_in_step": 0}}}"#,
            "invalid_parameter",
            "features_in_step",
        ),
        (
            r#"{"methods": ["camlime"], "config": {"lime": {"num_samples": 999999}}}"#,
            "invalid_parameter",
            "samples",
        ),
        (r#"{"model": "resnet9000"}"#, "unknown_model", "resnet9000"),
        (r#"{"metrics": ["Sparseness"], "#, "invalid_json", "JSON"),
    ] {
        let (status, error) = one(request);
        assert_eq!(status, 400, "{request}: {error}");
        assert_eq!(error["error"]["code"], code, "{request}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{request}: {message}");
    }
    let request = br#"{"methods": ["gradcam"], "metrics": ["Sparseness"]}"#;
    for (parts, code, says) in [
        (
            vec![
                ("request", None, &request[..]),
                ("image", Some("bad.png"), &corrupt[..]),
            ],
            "invalid_image",
            "bad.png",
        ),
        (
            vec![("request", None, &request[..])],
            "missing_image",
            "no images",
        ),
        (
            vec![
                ("request", None, &request[..]),
                ("image", Some("a.png"), &chelsea[..]),
                ("image", Some("a.png"), &coffee[..]),
            ],
            "invalid_parameter",
            "two images",
        ),
        (
            vec![
                ("request", None, &request[..]),
                ("image", Some("a.png"), &chelsea[..]),
                ("image", Some("b.png"), &chelsea[..]),
                ("image", Some("c.png"), &chelsea[..]),
            ],
            "invalid_parameter",
            "at most 2 images",
        ),
        (
            vec![
                ("request", None, &request[..]),
                ("image", Some("a.png"), &chelsea[..]),
                ("mask", Some("z.png"), &mask[..]),
            ],
            "invalid_multipart",
            "matches no image",
        ),
        (
            vec![
                ("request", None, &request[..]),
                ("image", Some("a.png"), &coffee[..]),
                ("mask", Some("a.png"), &mask[..]),
            ],
            "invalid_mask",
            "the mask of `a.png`",
        ),
        (
            vec![
                ("request", None, &request[..]),
                ("image", None, &chelsea[..]),
            ],
            "invalid_multipart",
            "file name",
        ),
    ] {
        let (status, error) = post_parts(&server, &parts);
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["code"], code, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }

    // A running evaluation stops when cancelled.
    let heavy = json!({"methods": ["gradcam"], "metrics": ["PixelFlipping"]}).to_string();
    let (status, job) = post_parts(
        &server,
        &[
            ("request", None, heavy.as_bytes()),
            ("image", Some("chelsea.png"), &chelsea),
        ],
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    follow(&server, &id, |s| {
        s["progress"]["stage"] == "chelsea.png · gradcam · PixelFlipping"
    });
    let (status, _) = answer(agent().delete(server.url(&format!("/v1/jobs/{id}"))).call());
    assert_eq!(status, 202);
    let ended = wait_for_job(&server, &id);
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_healthy(&server);
}

#[test]
fn a_server_started_with_exif_orientation_apply_turns_uploads_as_the_cli_does() {
    let dir = scratch("serve-exif");
    let photo = std::fs::read(repo("shared/tests/fixtures/corpus/rocket_exif6.jpg")).unwrap();
    let cli = |orientation: &str| -> (Value, Value) {
        let output = camlime(&[
            "predict",
            "shared/tests/fixtures/corpus/rocket_exif6.jpg",
            "--top",
            "1",
            "--json",
            "--exif-orientation",
            orientation,
        ]);
        assert!(output.status.success());
        let top =
            serde_json::from_slice::<Value>(&output.stdout).unwrap()[0]["predictions"][0].clone();
        (top["class"].clone(), top["probability"].clone())
    };
    for orientation in ["ignore", "apply"] {
        let folder = dir.join(orientation);
        std::fs::create_dir_all(&folder).unwrap();
        let server = Server::start(&folder, &["--exif-orientation", orientation]);
        let (status, answer) = post_form(&server, "/v1/predict", &photo, &json!({"top": 1}));
        assert_eq!(status, 200, "{answer}");
        let top = &answer["predictions"][0];
        assert_eq!(
            (top["class"].clone(), top["probability"].clone()),
            cli(orientation),
            "{orientation}"
        );
    }
}

/// `/v1/detect` lists the boxes `camlime detect` lists, and an explanation job with a detection
/// task explains the chosen box as `camlime explain --box` does.
#[test]
fn detect_and_box_explanations_over_http_equal_the_command_line() {
    let dir = scratch("detect-http");
    let server = Server::start(&dir, &["--threads", "2"]);
    let photo = std::fs::read(repo("models/samples/chelsea.png")).unwrap();
    let (status, models) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    let nanodet = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "nanodet")
        .unwrap();
    assert_eq!(
        (&nanodet["task"], &nanodet["num_classes"]),
        (&json!("detection"), &json!(80))
    );
    let (status, by_json) = post_json(&server, "/v1/detect", &json!({"image": base64(&photo)}));
    assert_eq!(status, 200, "{by_json}");
    let (status, by_form) = post_form(&server, "/v1/detect", &photo, &json!({}));
    assert_eq!(status, 200, "{by_form}");
    assert_eq!(by_json, by_form);
    let output = camlime(&["detect", "models/samples/chelsea.png", "--json"]);
    assert!(output.status.success());
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(by_json["detections"], cli["detections"]);
    assert_eq!(by_json["detections"][1]["label"], "cat");

    let request = json!({"model": "nanodet", "source": "chelsea.png",
                         "config": {"method": "eigencam", "task": {"kind": "detection", "box": 1}}});
    let job = wait_for_job(&server, &submit(&server, &request));
    assert_eq!(job["status"], "done", "{job}");
    let record = &job["result"];
    assert_eq!(record["task"]["target"]["detection"]["label"], "cat");
    let cli = cli_record(
        &dir,
        "models/samples/chelsea.png",
        &["--model", "nanodet", "--method", "eigencam", "--box", "1"],
    );
    assert_eq!(results_only(record.clone()), results_only(cli));

    let (status, error) = post_json(
        &server,
        "/v1/detect",
        &json!({"model": "mobilenet_v2", "image": base64(&photo)}),
    );
    assert_eq!(status, 400, "{error}");
    assert!(message(&error).contains("not a detector"), "{error}");
    let (_, openapi) = get(&server, "/v1/openapi.json");
    assert!(openapi["paths"]["/v1/detect"].is_object());
    assert!(openapi["components"]["schemas"]["DetectResponse"].is_object());
}

/// An explanation job with a segmentation task and a box region (model-input pixels) explains
/// what `camlime explain --region` (photo pixels) explains; the OpenAPI document describes it.
#[test]
fn region_explanations_over_http_equal_the_command_line() {
    let dir = scratch("segment-http");
    let server = Server::start(&dir, &["--threads", "2"]);
    let (_, models) = get(&server, "/v1/models");
    let selfie = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "selfie")
        .unwrap();
    assert_eq!(
        (&selfie["task"], &selfie["num_classes"]),
        (&json!("segmentation"), &json!(1))
    );
    let region = json!({"box": {"x0": 60.0, "y0": 20.0, "x1": 180.0, "y1": 140.0}});
    let request = json!({"model": "selfie", "source": "chelsea.png",
                         "config": {"method": "gradcam",
                                    "task": {"kind": "segmentation", "region": region}}});
    let job = wait_for_job(&server, &submit(&server, &request));
    assert_eq!(job["status"], "done", "{job}");
    let record = &job["result"];
    assert_eq!(
        record["target"]["label"],
        "person logit summed over 14400 pixels"
    );
    // Chelsea is 451 × 300: the same box in photo pixels.
    let mut cli = cli_record(
        &dir,
        "models/samples/chelsea.png",
        &[
            "--model",
            "selfie",
            "--method",
            "gradcam",
            "--region",
            "105.703125,23.4375,317.109375,164.0625",
        ],
    );
    assert_eq!(record["task"], cli["task"]);
    assert_eq!(record["cam"], cli["cam"]);
    // The CLI records the box it converted from photo pixels, which differs from the request's
    // by rounding only.
    cli["config"]["task"] = record["config"]["task"].clone();
    assert_eq!(results_only(record.clone()), results_only(cli));
    let bad = json!({"model": "selfie", "config": {"method": "gradcam",
                     "task": {"kind": "segmentation", "region": {"box": {"x0": 5.0, "y0": 0.0, "x1": 1.0, "y1": 9.0}}}}});
    let (status, error) = post_form(&server, "/v1/jobs", &chelsea(), &bad);
    assert_eq!(status, 400, "{error}");
    assert!(message(&error).contains("x0 < x1"), "{error}");
    let (_, openapi) = get(&server, "/v1/openapi.json");
    let schemas = &openapi["components"]["schemas"];
    for schema in ["RegionChoice", "RegionShape", "Region", "RegionTarget"] {
        assert!(schemas[schema].is_object(), "OpenAPI lacks {schema}");
    }
}

/// A face model over HTTP sees the face its detector finds, and an identity explanation the
/// similarity to a reference photo's face, as the command line does.
#[test]
fn face_models_over_http_crop_the_face_as_the_command_line_does() {
    let dir = scratch("face-http");
    let server = Server::start(&dir, &["--threads", "2"]);
    let photo = std::fs::read(repo("models/samples/astronaut.png")).unwrap();
    let (status, answer) = post_json(
        &server,
        "/v1/predict",
        &json!({"model": "emotion", "image": base64(&photo), "top": 1}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["label"], "happy");
    let (status, record) = post_json(
        &server,
        "/v1/explain",
        &json!({"model": "emotion", "image": base64(&photo), "source": "astronaut.png",
                "config": {"method": "gradcam"}}),
    );
    assert_eq!(status, 200, "{record}");
    let cli = cli_record(
        &dir,
        "models/samples/astronaut.png",
        &["--model", "emotion", "--method", "gradcam"],
    );
    assert_eq!(record["image"]["face"], cli["image"]["face"]);
    assert_eq!(record["image"]["face"]["found"], 1);
    assert_eq!(results_only(record), results_only(cli));
    let (status, error) = post_json(
        &server,
        "/v1/predict",
        &json!({"model": "mobilenet_v2", "image": base64(&photo), "face": 0}),
    );
    assert_eq!(status, 400, "{error}");
    assert!(message(&error).contains("is not one"), "{error}");

    // Identity: the reference photo as a form's `reference` part, and as base64 in JSON.
    let mirror = dir.join("astronaut_mirrored.png");
    image::imageops::flip_horizontal(&image::load_from_memory(&photo).unwrap().to_rgb8())
        .save(&mirror)
        .unwrap();
    let reference = std::fs::read(&mirror).unwrap();
    let request = json!({"model": "faceres", "source": "astronaut.png",
                         "config": {"method": "gradcam"}});
    let (content_type, body) = crate::common::serve::form(&[
        ("image", Some("astronaut.png"), photo.as_slice()),
        ("reference", Some("mirror.png"), reference.as_slice()),
        ("request", None, request.to_string().as_bytes()),
    ]);
    let (status, by_form) = post_raw(&server, "/v1/explain", &content_type, body);
    assert_eq!(status, 200, "{by_form}");
    let mut by_json = request.clone();
    by_json["image"] = json!(base64(&photo));
    by_json["reference"] = json!(base64(&reference));
    let (status, by_json) = post_json(&server, "/v1/explain", &by_json);
    assert_eq!(status, 200, "{by_json}");
    assert_eq!(by_form["task"], by_json["task"]);
    let cli = cli_record(
        &dir,
        "models/samples/astronaut.png",
        &[
            "--model",
            "faceres",
            "--method",
            "gradcam",
            "--reference",
            mirror.to_str().unwrap(),
        ],
    );
    assert_eq!(by_form["task"], cli["task"]);
    assert_eq!(results_only(by_form), results_only(cli));
    let rocket = std::fs::read(repo("models/samples/rocket.jpg")).unwrap();
    for (request, expected) in [
        (
            json!({"model": "emotion", "image": base64(&photo), "reference": base64(&reference)}),
            "`reference` compares faces; `emotion` is a classification model",
        ),
        (
            json!({"model": "faceres", "image": base64(&photo),
                   "reference": base64(&rocket), "config": {"method": "gradcam"}}),
            "the reference: ",
        ),
        (
            json!({"model": "faceres", "image": base64(&photo), "reference": "%%%"}),
            "`reference` is not base64",
        ),
    ] {
        let (status, error) = post_json(&server, "/v1/explain", &request);
        assert_eq!(status, 400, "{error}");
        assert!(message(&error).contains(expected), "{error}");
    }
    assert_healthy(&server);
}

/// A raw connection to the server (for clients no HTTP library would be).
fn raw(server: &Server) -> std::net::TcpStream {
    let address = server.url.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// What the server sends back on `stream` until it closes it (or 20 s pass), and when that was.
fn read_until_closed(mut stream: std::net::TcpStream) -> (String, Instant) {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        Instant::now(),
    )
}

/// Slow-loris headers and a body that stops half way are cut off after their timeouts while
/// other clients are served; headers over the limit get 431; connections over the cap are
/// closed at once.
#[test]
fn slow_and_hostile_clients_are_cut_off_while_others_are_served() {
    use std::io::Write;
    let dir = scratch("hostile");
    let server = Server::start(
        &dir,
        &[
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--max-header-bytes",
            "16384",
        ],
    );
    // A client sending its headers a line every 200 ms.
    let mut loris = raw(&server);
    let started = Instant::now();
    loris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: camlime\r\n")
        .unwrap();
    let dribbler = {
        let mut loris = loris.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..50 {
                std::thread::sleep(Duration::from_millis(200));
                if loris.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    // Meanwhile others are served.
    let (status, _) = get(&server, "/healthz");
    assert_eq!(status, 200);
    let (answer, closed) = read_until_closed(loris);
    let held = closed - started;
    assert!(
        held < Duration::from_secs(4),
        "the slow client held its connection {held:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    dribbler.join().unwrap();

    // A body that stops half way: the request fails after the body timeout.
    let mut half = raw(&server);
    let (content_type, body) = multipart(&chelsea(), &json!({}));
    let started = Instant::now();
    half.write_all(
        format!(
            "POST /v1/predict HTTP/1.1\r\nHost: camlime\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    half.write_all(&body[..body.len() / 2]).unwrap();
    let (status, _) = get(&server, "/healthz");
    assert_eq!(status, 200);
    let (answer, closed) = read_until_closed(half);
    assert!(
        closed - started < Duration::from_secs(4),
        "the half body held its request {:?}",
        closed - started
    );
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");

    // Headers over --max-header-bytes.
    let mut big = raw(&server);
    big.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: camlime\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 << 10)
        )
        .as_bytes(),
    )
    .unwrap();
    let (answer, _) = read_until_closed(big);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_healthy(&server);
    drop(server);

    // Connections over --max-connections are closed at once; a freed slot serves again.
    let dir = scratch("hostile-cap");
    let server = Server::start(&dir, &["--max-connections", "2"]);
    let first = raw(&server);
    let second = raw(&server);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (answer, closed) = read_until_closed(raw(&server));
    assert!(answer.is_empty() && closed - started < Duration::from_secs(2));
    drop((first, second));
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = get(&server, "/healthz");
    assert_eq!(status, 200);
}
