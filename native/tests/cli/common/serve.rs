//! Shared by the server's tests and its load benchmark: starting `camlime serve` on a free
//! loopback port, and multipart forms.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Start `camlime serve --addr 127.0.0.1:0 --data-dir DATA FLAGS…` from the repository root with
/// stderr going to `log`; returns the process and its `http://…` URL.
pub fn spawn_server(repo: &Path, data: &Path, flags: &[&str], log: Stdio) -> (Child, String) {
    spawn_server_with_env(repo, data, flags, &[], log)
}

/// [`spawn_server`] with extra environment variables.
pub fn spawn_server_with_env(
    repo: &Path,
    data: &Path,
    flags: &[&str],
    env: &[(&str, &str)],
    log: Stdio,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_camlime"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(flags)
        .envs(env.iter().copied())
        .current_dir(repo)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("cannot start camlime serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("camlime serve printed nothing");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// A `multipart/form-data` body with an `image` part and a `request` part (JSON text); returns
/// the content type and the body.
pub fn multipart(image: &[u8], request: &str) -> (String, Vec<u8>) {
    form(&[
        ("image", Some("x.png"), image),
        ("request", None, request.as_bytes()),
    ])
}

/// A `multipart/form-data` body of (part name, file name, content) parts; returns the content
/// type and the body.
pub fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "camlime-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, file, content) in parts {
        let file = file.map_or_else(String::new, |f| format!("; filename=\"{f}\""));
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
