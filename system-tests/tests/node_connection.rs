//! A node's one connection (`GET /v1/nodes/{id}/connection`, a WebSocket) driven by hand: its
//! heartbeats and reports answered frame by frame, its assignments coming down it, and its
//! resumption after the last id it read, as the task channel resumes.

mod common;

use std::time::Duration;

use common::{ManualNode, System, completion, eventually, spawn_system, thermal_task};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const WAIT: Duration = Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(system: &System, node_id: &str, token: &str, last_event_id: Option<&str>) -> Result<Socket, u16> {
    let address = system.base.replace("http://", "ws://") + &format!("/v1/nodes/{node_id}/connection");
    let mut request = address.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(last) = last_event_id {
        request.headers_mut().insert("last-event-id", last.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("the connection failed: {error}"),
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::Text(frame.to_string().into())).await.expect("the frame is sent");
}

/// The next frame of type `kind`, skipping others.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                    if frame["type"] == kind {
                        return frame;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the connection ended while waiting for {kind}: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no {kind} frame in {WAIT:?}"))
}

async fn submit(system: &System, api_key: &str) -> String {
    let accepted: Value = system.post("/v1/tasks", api_key, thermal_task()).await.json().await.unwrap();
    accepted["task_id"].as_str().unwrap().to_owned()
}

async fn assignment(socket: &mut Socket) -> (String, String) {
    let frame = next_of(socket, "TASK:ASSIGNED").await;
    assert_eq!(frame["data"]["attempt"], 1, "{frame}");
    (frame["data"]["task_id"].as_str().unwrap().to_owned(), frame["id"].as_str().unwrap().to_owned())
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_works_over_its_one_connection_and_resumes_after_its_last_id(pool: PgPool) {
    let system = spawn_system(pool, &[]).await;
    let (_, api_key) = system.organization("One connection").await;
    let node: ManualNode = system.manual_node(&api_key, 1, 300.0).await;
    assert_eq!(connect(&system, &node.node_id, "gn_not-a-token", None).await.err(), Some(401));
    // A plain request, not an upgrade: told so, as a problem.
    let plain = system.get(&format!("/v1/nodes/{}/connection", node.node_id), &node.token).await;
    assert_eq!(plain.status(), 426);
    assert_eq!(plain.headers()["upgrade"], "websocket");
    let problem: Value = plain.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/upgrade-required"), "{problem}");
    let mut socket = connect(&system, &node.node_id, &node.token, None).await.expect("the node connects");

    // A heartbeat, answered as its route answers it.
    send(&mut socket, json!({"type": "heartbeat", "ref": 1, "heartbeat": {"cpu_usage": 5.0, "solar_watts": 300.0}}))
        .await;
    let answer = next_of(&mut socket, "answer").await;
    assert_eq!((answer["ref"].as_u64(), answer["status"].as_u64()), (Some(1), Some(200)), "{answer}");
    assert!(answer["body"]["eco_score"].is_number(), "{answer}");
    // A bad frame is refused alone, with its ref and its problem; the connection goes on.
    send(&mut socket, json!({"type": "heartbeat", "ref": 2, "heartbeat": {"cpu_usage": 500.0, "solar_watts": 1.0}}))
        .await;
    let refused = next_of(&mut socket, "answer").await;
    assert_eq!((refused["ref"].as_u64(), refused["status"].as_u64()), (Some(2), Some(422)), "{refused}");
    assert_eq!(refused["problem"]["errors"][0]["field"], "cpu_usage", "{refused}");
    socket.send(Message::Text("not a frame".into())).await.unwrap();
    let unreadable = next_of(&mut socket, "answer").await;
    assert_eq!((unreadable["ref"].clone(), unreadable["status"].as_u64()), (Value::Null, Some(422)), "{unreadable}");

    // Work comes down the connection, and its report goes up it.
    let first = submit(&system, &api_key).await;
    let (assigned, _) = assignment(&mut socket).await;
    assert_eq!(assigned, first);
    send(&mut socket, json!({"type": "report", "ref": 3, "report": completion(&first, 1, 0.5, 0.2)})).await;
    let accepted = next_of(&mut socket, "answer").await;
    assert_eq!((accepted["ref"].as_u64(), accepted["status"].as_u64()), (Some(3), Some(202)), "{accepted}");
    assert!(accepted["body"]["command_id"].is_string(), "{accepted}");
    eventually(WAIT, "the first task to complete", || async {
        (system.task(&api_key, &first).await["status"] == "completed").then_some(())
    })
    .await;

    // The next assignment, then the connection is lost; a third task is assigned meanwhile.
    let second = submit(&system, &api_key).await;
    let (assigned, second_id) = assignment(&mut socket).await;
    assert_eq!(assigned, second);
    drop(socket);
    send_report_over_http(&system, &node, &second).await;
    let third = submit(&system, &api_key).await;
    eventually(WAIT, "the third task to be assigned", || async {
        (system.task(&api_key, &third).await["status"] == "assigned").then_some(())
    })
    .await;
    // Resuming after the last id read hands over what came after it, and nothing before.
    let mut resumed = connect(&system, &node.node_id, &node.token, Some(&second_id)).await.expect("reconnects");
    let (assigned, third_id) = assignment(&mut resumed).await;
    assert_eq!(assigned, third);
    drop(resumed);
    // Without an id, a node starts at its oldest assignment still in flight.
    let mut afresh = connect(&system, &node.node_id, &node.token, None).await.expect("reconnects");
    let (assigned, again_id) = assignment(&mut afresh).await;
    assert_eq!((assigned, again_id), (third, third_id));
    // A resume point that is not a stream id is refused before the upgrade.
    assert_eq!(connect(&system, &node.node_id, &node.token, Some("yesterday")).await.err(), Some(422));
    // A gateway that stops closes its nodes' connections, telling them to resume elsewhere.
    system.stop().await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match afresh.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(Some(1012)), "closed with 1012 (service restart)");
}

/// The second task's completion over the HTTP route (kept for existing clients).
async fn send_report_over_http(system: &System, node: &ManualNode, task_id: &str) {
    let response = system.report(node, completion(task_id, 1, 0.5, 0.2)).await;
    assert_eq!(response.status(), 202);
}
