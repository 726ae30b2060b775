//! The dump files: format, redaction, and that the key is in none of them.

use warden_credproxy::CredConfig;
use warden_testkit::fake_upstream::FakeUpstream;

use crate::{config_for, eventually, send, start, DUMMY, KEY};

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).expect("read dump dir").map(|e| e.expect("entry").path()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumps_match_the_format_and_never_hold_the_key() {
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start(CredConfig { dump_dir: Some(dir.path().to_owned()), ..config_for(&up) }).await;
    let bearer = format!("Bearer {DUMMY}");
    let headers = [("authorization", bearer.as_str()), ("cookie", "sess=abc123"), ("x-trace", "t-1")];
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &headers, br#"{"model":"m","input":[]}"#).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &[], b"not json").await;
    assert_eq!(status, 200);
    eventually("four dump files", || files(dir.path()).len() == 4).await;
    let names: Vec<String> =
        files(dir.path()).iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    for (i, n) in names.iter().enumerate() {
        let parts: Vec<&str> = n.splitn(3, '-').collect();
        assert_eq!(parts[0], format!("{:06}", i / 2 + 1), "{names:?}");
        assert!(parts[1].len() >= 13 && parts[1].bytes().all(|b| b.is_ascii_digit()), "{n}");
        assert_eq!(parts[2], if i % 2 == 0 { "request.json" } else { "response.json" }, "{names:?}");
    }
    let read = |i: usize| -> serde_json::Value {
        let p = &files(dir.path())[i];
        serde_json::from_slice(&std::fs::read(p).expect("read dump")).expect("dump is JSON")
    };
    let req = read(0);
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"], up.url("/v1/responses"));
    assert_eq!(req["body"], serde_json::json!({"model":"m","input":[]}), "JSON bodies are stored as JSON");
    let hs = req["headers"].as_array().expect("headers array");
    let value = |name: &str| hs.iter().find(|h| h["name"] == name).map(|h| h["value"].clone());
    assert_eq!(value("authorization"), Some("[REDACTED]".into()));
    assert_eq!(value("cookie"), Some("[REDACTED]".into()));
    assert_eq!(value("x-trace"), Some("t-1".into()));
    let resp = read(1);
    assert_eq!(resp["status"], 200);
    assert!(resp["body"].as_str().is_some_and(|b| b.contains("response.completed")), "SSE bodies are text");
    let rh = resp["headers"].as_array().expect("headers");
    assert!(rh.iter().any(|h| h["name"] == "set-cookie" && h["value"] == "[REDACTED]"), "{rh:?}");
    assert_eq!(read(2)["body"], "not json");
    for f in files(dir.path()) {
        let bytes = std::fs::read(&f).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        for secret in [KEY, DUMMY, "sess=abc123", "s3cr3t-cookie"] {
            assert!(!text.contains(secret), "{secret} in {}", f.display());
        }
    }
}
