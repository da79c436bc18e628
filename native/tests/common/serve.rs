//! Shared by the server's tests and its load benchmark: starting `camlime serve` on a free
//! loopback port, and multipart forms.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Start `camlime serve --addr 127.0.0.1:0 --data-dir DATA FLAGS…` from the repository root with
/// stderr going to `log`; returns the process and its `http://…` URL.
pub fn spawn_server(repo: &Path, data: &Path, flags: &[&str], log: Stdio) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_camlime"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(flags)
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
    let boundary = "camlime-test-boundary-7f3a";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(image);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{request}\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}
