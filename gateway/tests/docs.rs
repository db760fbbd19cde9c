//! The documentation routes and the problem answers that need no backing service: Swagger UI
//! is served from the binary (vendored), the spec is the generated one, unknown routes and bad
//! credentials are problem documents.

use grid_gateway::app::{build_state, run};
use grid_gateway::config::GatewayConfig;

const OPERATOR_KEY: &str = "docs-test-operator-key-0123456789abcdef";

async fn start() -> String {
    start_with(&[]).await
}

async fn start_with(settings: &[(&str, &str)]) -> String {
    let config = GatewayConfig::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        "GRID_OPERATOR_KEY" => Some(OPERATOR_KEY.to_owned()),
        "GRID_NAMESPACE" => Some(format!("docs-{}", std::process::id())),
        "GATEWAY_MAX_DELAY_MS" if !settings.iter().any(|(key, _)| *key == name) => Some("60000".to_owned()),
        _ => settings.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned()),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = build_state(config).unwrap();
    tokio::spawn(run(listener, state, std::future::pending()));
    base
}

#[tokio::test]
async fn swagger_ui_and_the_spec_are_served_offline() {
    let base = start().await;
    let page = reqwest::get(format!("{base}/swagger-ui/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().to_lowercase().contains("swagger"));
    let spec: serde_json::Value =
        reqwest::get(format!("{base}/api-docs/openapi.json")).await.unwrap().json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&grid_gateway::openapi::spec_json()).unwrap();
    assert_eq!(spec, generated);
    let initializer = reqwest::get(format!("{base}/swagger-ui/swagger-initializer.js")).await.unwrap();
    assert_eq!(initializer.status(), 200);
    assert!(initializer.text().await.unwrap().contains("/api-docs/openapi.json"), "Swagger UI reads the spec");
}

#[tokio::test]
async fn unknown_routes_and_missing_credentials_are_problems() {
    let base = start().await;
    let missing = reqwest::get(format!("{base}/v1/nothing-here")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let anonymous = reqwest::get(format!("{base}/v1/tasks")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let problem: serde_json::Value = anonymous.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/unauthorized"));
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// The README's `result_hash` rule, as a client follows it: the worked example's canonical form
/// and hash are what the gateway computes, and so are those of the README's Python function,
/// run here. The number notation the README states is serde_json's.
#[test]
fn the_readmes_result_hash_example_is_what_the_gateway_checks() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- result-hash-example -->").expect("the README has the worked example");
    let end = readme.find("<!-- /result-hash-example -->").expect("the example ends");
    let example = &readme[start..end];
    let fenced = |language: &str| {
        let open = format!("```{language}\n");
        let from = example.find(&open).unwrap_or_else(|| panic!("a {language} block")) + open.len();
        example[from..from + example[from..].find("```").unwrap()].to_owned()
    };
    let sent = fenced("json");
    let value: serde_json::Value = serde_json::from_str(&sent).unwrap();
    let canonical = value.to_string();
    assert!(example.contains(&format!("`{canonical}`")), "the README shows the canonical form {canonical}");
    let hash = grid_shared::messages::Sha256Hex::of_secret(&canonical);
    assert!(example.contains(&format!("`{}`", hash.as_str())), "the README shows the hash {}", hash.as_str());

    let script = format!("{}\nimport sys\nprint(result_hash(json.loads(sys.stdin.read())))\n", fenced("python"));
    let mut python = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    python.stdin.take().unwrap().write_all(sent.as_bytes()).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), hash.as_str());

    // The README's notation of numbers and escapes.
    for (sent, canonical) in [
        ("2.50", "2.5"),
        ("8424.0", "8424.0"),
        ("1E2", "100.0"),
        ("0.00001", "0.00001"),
        ("9999999999999998.0", "9999999999999998.0"),
        ("1e16", "1e+16"),
        ("1.5e-7", "1.5e-7"),
        ("-7", "-7"),
        (r#""tab\tquote\" é \u0001""#, r#""tab\tquote\" é \u0001""#),
        (r#"{"b": 1, "a": 2, "b": 3}"#, r#"{"a":2,"b":3}"#),
    ] {
        assert_eq!(serde_json::from_str::<serde_json::Value>(sent).unwrap().to_string(), canonical, "{sent}");
    }
}

/// Past `GATEWAY_MAX_IN_FLIGHT` requests being served, a request is refused at once with a 503
/// problem and `Retry-After`, and served again as soon as there is room.
#[tokio::test]
async fn past_its_capacity_the_gateway_refuses_at_once_with_retry_after() {
    use tokio::io::AsyncWriteExt;
    let base = start_with(&[("GATEWAY_MAX_IN_FLIGHT", "1")]).await;
    assert_eq!(reqwest::get(format!("{base}/v1/tasks")).await.unwrap().status(), 401);
    // A request that holds the one place: its body is slow to come.
    let mut slow = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v1/organizations HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let response = reqwest::get(format!("{base}/v1/tasks")).await.unwrap();
            if response.status() == 503 {
                return response;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the second request is refused while the first holds the place");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/overloaded"), "{problem}");
    drop(slow);
    let served = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if reqwest::get(format!("{base}/v1/tasks")).await.unwrap().status() == 401 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "served again once the place is free (401: no key)");
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status(), 200, "health is always answered");
}

/// Reads until the gateway closes the connection (end of stream or reset); what it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// A connection that sends no request head for `GATEWAY_IDLE_TIMEOUT_MS` is closed: silent from
/// the start, stalled in the middle of its head, or idle after a keep-alive request.
#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let base = start_with(&[("GATEWAY_IDLE_TIMEOUT_MS", "300")]).await;
    let address = base.trim_start_matches("http://").to_owned();
    let bound = std::time::Duration::from_secs(10);
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n").await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await.unwrap();
    let (silent, stalled, kept) = tokio::time::timeout(bound, async {
        tokio::join!(until_closed(&mut silent), until_closed(&mut stalled), until_closed(&mut kept))
    })
    .await
    .expect("the gateway closes every idle connection");
    assert_eq!(silent, "");
    assert!(!stalled.contains("200 OK"), "{stalled}");
    assert!(kept.starts_with("HTTP/1.1 200 OK"), "the kept-alive request was answered first: {kept}");
}

/// Past `GATEWAY_MAX_CONNECTIONS` a new connection is closed at once; a place freed is taken
/// again.
#[tokio::test]
async fn past_its_connection_limit_a_new_connection_is_closed_at_once() {
    use tokio::io::AsyncWriteExt;
    let base = start_with(&[("GATEWAY_MAX_CONNECTIONS", "2")]).await;
    let address = base.trim_start_matches("http://").to_owned();
    let bound = std::time::Duration::from_secs(10);
    let first = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The second is answered: both places are taken once it is.
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let mut head = [0_u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut second, &mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut third = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    let answer = tokio::time::timeout(bound, until_closed(&mut third)).await.expect("closed at once");
    assert_eq!(answer, "", "nothing is answered past the limit");
    drop(first);
    let served = tokio::time::timeout(bound, async {
        loop {
            if let Ok(response) = reqwest::get(format!("{base}/healthz")).await
                && response.status() == 200
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "a freed place is taken again");
}

/// Sends `head` and then a body of `body_bytes` (in the background: the gateway may answer
/// before reading it), and returns the status line it answers, or the error that ended the
/// connection before one came.
async fn answer_to_a_large_body(address: &str, head: String, body_bytes: usize) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await?;
    let sending = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < body_bytes {
            if writer.write_all(&chunk[..chunk.len().min(body_bytes - sent)]).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = writer.shutdown().await;
    });
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = reader.read(&mut buffer).await?;
        answer.extend_from_slice(&buffer[..read]);
        if read == 0 || answer.windows(4).any(|window| window == b"\r\n\r\n") {
            break;
        }
    }
    sending.abort();
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// A request refused before its body is read (too large: 413; no credentials: 401) still gets
/// its answer, on a busy machine, instead of a connection reset: the gateway reads and drops a
/// bounded amount of what the client is still sending before it closes.
#[tokio::test]
async fn a_large_body_refused_unread_still_gets_its_answer() {
    let base = start_with(&[("GATEWAY_MAX_BODY_BYTES", "1048576")]).await;
    let address = base.trim_start_matches("http://").to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let size = 8 * 1024 * 1024;
    let too_large = format!(
        "POST /v1/organizations HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let anonymous = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(answer_to_a_large_body(&address, too_large.clone(), size).await.map_err(|error| error.kind()));
        answers.push(answer_to_a_large_body(&address, anonymous.clone(), size).await.map_err(|error| error.kind()));
    }
    // As an HTTP client sends it: the whole body, then the answer.
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let sent = client
            .post(format!("{base}/v1/organizations"))
            .bearer_auth(OPERATOR_KEY)
            .header("content-type", "application/json")
            .body(vec![b' '; size])
            .send()
            .await;
        let status = sent.map(|response| response.status().as_u16()).map_err(|error| format!("{error:?}"));
        assert_eq!(status, Ok(413));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    for (index, answer) in answers.iter().enumerate() {
        let expected = if index % 2 == 0 { "HTTP/1.1 413 Payload Too Large" } else { "HTTP/1.1 401 Unauthorized" };
        assert_eq!(answer.as_deref(), Ok(expected), "answer {index} of {answers:?}");
    }
}
