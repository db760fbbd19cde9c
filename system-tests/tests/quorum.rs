//! Result validation by quorum against the real gateway, orchestrator, PostgreSQL and Redis:
//! replicas on nodes of distinct owners, a node that returns wrong results, no quorum, and the
//! adaptive check of untrusted nodes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{Channel, ManualNode, System, eventually, spawn_system, thermal_task};
use grid_orchestrator::ledger::verify_stored_chain;
use grid_orchestrator::replay;
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);

/// A node that answers every assignment at once with `{"answer": <answer>}`: 42 is the right
/// answer in these tests, anything else a wrong result.
struct Responder {
    node: ManualNode,
    answer: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    async fn start(system: &System, api_key: &str, solar_watts: f64, answer: i64) -> Self {
        let node = system.manual_node(api_key, 4, solar_watts).await;
        let channel = system.channel(&node, None).await;
        let answer = Arc::new(AtomicI64::new(answer));
        let url = system.url(&format!("/v1/nodes/{}/reports", node.node_id));
        let task = tokio::spawn(respond(channel, system.http.clone(), url, node.token.clone(), answer.clone()));
        Self { node, answer, task }
    }

    fn id(&self) -> &str {
        &self.node.node_id
    }
}

async fn respond(mut channel: Channel, http: reqwest::Client, url: String, token: String, answer: Arc<AtomicI64>) {
    loop {
        let event = channel.next(Duration::from_secs(600)).await;
        if event.event.as_deref() != Some("TASK:ASSIGNED") {
            continue;
        }
        let assigned: Value = serde_json::from_str(&event.data).expect("an assignment is JSON");
        let result = json!({"answer": answer.load(Ordering::SeqCst)});
        let hash = grid_shared::messages::Sha256Hex::of_secret(&result.to_string()).as_str().to_owned();
        // 1 µWh, all of it solar: within what 4 cores draw in the time a report takes.
        let report = json!({"task_id": assigned["task_id"], "attempt": assigned["attempt"], "status": "completed",
            "result_json": result, "result_hash": hash, "energy_used_wh": 0.000001, "solar_contribution_wh": 0.000001});
        let sent = http.post(&url).bearer_auth(&token).json(&report).send().await.expect("the gateway answers");
        assert_eq!(sent.status(), 202);
    }
}

fn replicated_task(replicas: u8) -> Value {
    let mut task = thermal_task();
    task["replicas"] = json!(replicas);
    task
}

async fn submit(system: &System, api_key: &str, task: Value) -> String {
    let response = system.post("/v1/tasks", api_key, task).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["task_id"].as_str().unwrap().to_owned()
}

async fn finished(system: &System, api_key: &str, task_id: &str) -> Value {
    eventually(WAIT, "the task to finish", || async {
        let task = system.task(api_key, task_id).await;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
    })
    .await
}

/// The nodes credited for a task.
async fn credited(pool: &PgPool, task_id: &str) -> BTreeSet<String> {
    sqlx::query_scalar("select node_id::text from credit_entry where task_id = $1::uuid and account = 'node'")
        .bind(task_id)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn trust(pool: &PgPool, node_id: &str) -> i32 {
    sqlx::query_scalar("select trust from node where node_id = $1::uuid").bind(node_id).fetch_one(pool).await.unwrap()
}

fn verdicts(task: &Value) -> Vec<(String, String)> {
    task["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| (result["node_id"].as_str().unwrap().to_owned(), result["verdict"].as_str().unwrap().to_owned()))
        .collect()
}

async fn assert_audit_holds(pool: &PgPool) {
    let (_, divergences) = replay::audit(pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(divergences, vec![], "replay agrees with the tables");
    let chain = verify_stored_chain(pool, "main", 8).await.unwrap();
    assert!(chain.valid, "{chain:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn replicas_agree_and_a_node_returning_wrong_results_earns_nothing_and_loses_trust(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, submitter) = system.organization("Submitter").await;
    let (_, key_b) = system.organization("Owner B").await;
    let (_, key_c) = system.organization("Owner C").await;
    let (_, key_d) = system.organization("Owner D").await;
    // The liar has the most sun, so the scheduler sends it every first replica.
    let liar = Responder::start(&system, &key_d, 600.0, 42).await;
    let honest_b = Responder::start(&system, &key_b, 300.0, 42).await;
    let honest_c = Responder::start(&system, &key_c, 300.0, 42).await;

    // While it answers right, two replicas agree: both are credited and trusted.
    let first = submit(&system, &submitter, replicated_task(2)).await;
    let task = finished(&system, &submitter, &first).await;
    assert_eq!(task["status"], "completed", "{task}");
    let results = verdicts(&task);
    assert_eq!(results.len(), 2, "{task}");
    assert_eq!(results[0], (liar.id().to_owned(), "agreed".to_owned()), "the sunniest node ran the first replica");
    assert_eq!(results[1].1, "agreed");
    let second_node = results[1].0.clone();
    assert_ne!(second_node, liar.id(), "replicas run on distinct owners");
    assert_eq!(credited(&pool, &first).await, BTreeSet::from([liar.id().to_owned(), second_node.clone()]));
    assert_eq!(trust(&pool, liar.id()).await, 1);

    // Now it lies: outvoted by the two honest nodes, it earns nothing and its trust is gone.
    liar.answer.store(41, Ordering::SeqCst);
    let second = submit(&system, &submitter, replicated_task(2)).await;
    let task = finished(&system, &submitter, &second).await;
    assert_eq!(task["status"], "completed", "{task}");
    let results = verdicts(&task);
    assert_eq!(results.len(), 3, "a disagreement sends one more replica: {task}");
    assert_eq!(results[0], (liar.id().to_owned(), "disagreed".to_owned()));
    let honest: BTreeSet<String> = [honest_b.id().to_owned(), honest_c.id().to_owned()].into();
    assert_eq!(results[1..].iter().map(|(node, _)| node.clone()).collect::<BTreeSet<_>>(), honest);
    assert!(results[1..].iter().all(|(_, verdict)| verdict == "agreed"), "{task}");
    let right = grid_shared::messages::Sha256Hex::of_secret(&json!({"answer": 42}).to_string()).as_str().to_owned();
    assert_eq!(task["result_hash"].as_str(), Some(right.as_str()), "the agreed result is the task's");
    assert_eq!(credited(&pool, &second).await, honest, "only agreeing results are credited");
    assert_eq!(trust(&pool, liar.id()).await, 0, "a disagreeing result resets trust");
    let liar_view: Value = system.get(&format!("/v1/nodes/{}", liar.id()), &key_d).await.json().await.unwrap();
    assert_eq!((liar_view["trust"].as_i64(), liar_view["totals"]["results_disagreed"].as_i64()), (Some(0), Some(1)));
    let third_honest = if second_node == honest_b.id() { honest_c.id() } else { honest_b.id() };
    assert_eq!(trust(&pool, third_honest).await, 1);
    assert_eq!(trust(&pool, &second_node).await, 2);

    // The events tell it all: the recorded results, the quorum, the trust changes.
    let completed: Value = sqlx::query_scalar(
        "select envelope -> 'payload' -> 'validation' from event
         where event_type = 'TaskCompleted' and envelope -> 'payload' ->> 'task_id' = $1",
    )
    .bind(&second)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(completed["outcome"], "quorum");
    assert_eq!(completed["disagreeing"], json!([liar.id()]));
    let needed: Vec<String> = sqlx::query_scalar(
        "select envelope -> 'payload' -> 'needed' ->> 'reason' from event
         where event_type = 'TaskResultRecorded' and envelope -> 'payload' ->> 'task_id' = $1 order by seq",
    )
    .bind(&second)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(needed, ["requested", "disagreement"]);

    // The ledger by account: an owner sees its own node, the operator every node and the fund.
    let own: Value = system.get("/v1/credits", &key_d).await.json().await.unwrap();
    let own_nodes = own["nodes"].as_array().unwrap();
    assert_eq!(own_nodes.len(), 1, "{own}");
    assert_eq!(
        (own_nodes[0]["node_id"].as_str(), own_nodes[0]["credited_results"].as_i64()),
        (Some(liar.id()), Some(1))
    );
    let all: Value = system.get("/v1/credits", common::OPERATOR_KEY).await.json().await.unwrap();
    assert_eq!(all["nodes"].as_array().unwrap().len(), 3, "{all}");
    let (node_total, fund): (i64, i64) = sqlx::query_as(
        "select (sum(amount_peur) filter (where account = 'node'))::bigint,
                (sum(amount_peur) filter (where account = 'cooperative'))::bigint from credit_entry",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (all["node_credits_peur"].as_i64(), all["cooperative_fund_peur"].as_i64()),
        (Some(node_total), Some(fund))
    );
    assert!(fund > 0);
    assert_audit_holds(&pool).await;
    for responder in [liar, honest_b, honest_c] {
        responder.task.abort();
    }
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn without_a_quorum_the_task_fails_and_nobody_is_credited(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_EXTRA_REPLICAS", "0")]).await;
    let (_, submitter) = system.organization("Submitter").await;
    let (_, key_b) = system.organization("Owner B").await;
    let (_, key_d) = system.organization("Owner D").await;
    let liar = Responder::start(&system, &key_d, 600.0, 41).await;
    let honest = Responder::start(&system, &key_b, 300.0, 42).await;

    // Three replicas cannot run on two owners: refused at admission, with the reason.
    let refused = submit(&system, &submitter, replicated_task(3)).await;
    let task = finished_or_rejected(&system, &submitter, &refused).await;
    assert_eq!(task["reason"]["code"], "not_enough_node_owners", "{task}");

    let task_id = submit(&system, &submitter, replicated_task(2)).await;
    let task = finished(&system, &submitter, &task_id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["reason"], json!({"code": "no_quorum", "results": 2, "distinct_hashes": 2, "quorum": 2}), "{task}");
    let results = verdicts(&task);
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|(_, verdict)| verdict == "inconclusive"), "{task}");
    assert!(credited(&pool, &task_id).await.is_empty(), "nobody is credited without a quorum");
    // No quorum says nothing of who was wrong: trust is left alone.
    assert_eq!((trust(&pool, liar.id()).await, trust(&pool, honest.id()).await), (0, 0));
    assert_eq!(system.dead_letters().await.len(), 1, "the operators are told");
    assert_audit_holds(&pool).await;
    liar.task.abort();
    honest.task.abort();
    system.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_task_cancelled_while_waiting_for_its_second_replica_leaves_no_pending_result(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[]).await;
    let (_, submitter) = system.organization("Submitter").await;
    let (_, key_b) = system.organization("Owner B").await;
    let (_, key_d) = system.organization("Owner D").await;
    let only = Responder::start(&system, &key_d, 600.0, 42).await;
    // Owner B has a node, but it never comes online: the second replica waits.
    let response = system
        .post("/v1/nodes", &key_b, json!({"name": "offline", "cpu_cores": 2, "has_solar": false, "location": "Arlon"}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    system.settled(body["command_id"].as_str().unwrap(), &key_b).await;

    let task_id = submit(&system, &submitter, replicated_task(2)).await;
    let waiting = eventually(WAIT, "the first result", || async {
        let task = system.task(&submitter, &task_id).await;
        (task["status"] == "queued" && task["results"].as_array()?.len() == 1).then_some(task)
    })
    .await;
    assert_eq!(verdicts(&waiting), [(only.id().to_owned(), "pending".to_owned())]);
    let cancel =
        system.http.delete(system.url(&format!("/v1/tasks/{task_id}"))).bearer_auth(&submitter).send().await.unwrap();
    assert_eq!(cancel.status(), 202);
    let cancelled = eventually(WAIT, "the cancellation", || async {
        let task = system.task(&submitter, &task_id).await;
        (task["status"] == "cancelled").then_some(task)
    })
    .await;
    assert_eq!(verdicts(&cancelled), [(only.id().to_owned(), "inconclusive".to_owned())]);
    assert!(credited(&pool, &task_id).await.is_empty());
    assert_audit_holds(&pool).await;
    only.task.abort();
    system.stop().await;
}

async fn finished_or_rejected(system: &System, api_key: &str, task_id: &str) -> Value {
    eventually(WAIT, "the task to be decided", || async {
        let response = system.get(&format!("/v1/tasks/{task_id}"), api_key).await;
        let task: Value = response.json().await.ok()?;
        (task["status"] == "rejected").then_some(task)
    })
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn an_untrusted_nodes_result_is_checked_until_the_node_is_trusted(pool: PgPool) {
    let system = spawn_system(pool.clone(), &[("GRID_TRUST_THRESHOLD", "1"), ("GRID_SPOT_CHECK_PPM", "0")]).await;
    let (_, submitter) = system.organization("Submitter").await;
    let (_, key_b) = system.organization("Owner B").await;
    let (_, key_d) = system.organization("Owner D").await;
    let newcomer = Responder::start(&system, &key_d, 600.0, 42).await;
    let checker = Responder::start(&system, &key_b, 300.0, 42).await;

    // A single-replica task on an untrusted node gets a second opinion.
    let first = submit(&system, &submitter, thermal_task()).await;
    let task = finished(&system, &submitter, &first).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        verdicts(&task),
        [(newcomer.id().to_owned(), "agreed".to_owned()), (checker.id().to_owned(), "agreed".to_owned())]
    );
    let reason: String = sqlx::query_scalar(
        "select envelope -> 'payload' -> 'needed' ->> 'reason' from event where event_type = 'TaskResultRecorded'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason, "untrusted_node");
    assert_eq!(trust(&pool, newcomer.id()).await, 1);

    // Trusted now (threshold 1, no spot checks): its next result stands alone.
    let second = submit(&system, &submitter, thermal_task()).await;
    let task = finished(&system, &submitter, &second).await;
    assert_eq!(verdicts(&task), [(newcomer.id().to_owned(), "unchecked".to_owned())], "{task}");
    assert_eq!(credited(&pool, &second).await, BTreeSet::from([newcomer.id().to_owned()]));
    assert_audit_holds(&pool).await;
    newcomer.task.abort();
    checker.task.abort();
    system.stop().await;
}
