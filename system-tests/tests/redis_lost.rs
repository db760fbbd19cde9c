//! Redis loses everything mid-run (FLUSHALL of a Redis started for this test alone): the writer
//! recreates its groups, re-issues the work in flight from PostgreSQL, and the grid goes on
//! without a restart. Every task PostgreSQL holds completes; none fails because of it.

mod common;

use std::time::Duration;

use common::processes::PrivateRedis;
use common::{eventually, spawn_system, thermal_task};
use futures_util::StreamExt;
use serde_json::Value;
use sqlx::PgPool;

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn after_redis_is_flushed_mid_run_every_task_in_postgresql_completes(pool: PgPool) {
    let redis = PrivateRedis::start().await;
    let system = spawn_system(pool.clone(), &[("REDIS_URL", redis.url.as_str())]).await;
    let (_, api_key) = system.organization("Forgetful").await;
    // Tasks take a while on the nodes, so that some are on nodes when Redis forgets them.
    let (stop, fleet) = system.fleet(&api_key, 8, 2, 1.0, Duration::from_millis(300)).await;
    let submitted: Vec<String> = futures_util::stream::iter(0..300)
        .map(|_| async {
            let body: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
            body["task_id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    eventually(Duration::from_secs(60), "work on the nodes and work done", || async {
        let done = count(&pool, "select count(*) from task where status = 'completed'").await;
        let on_nodes = count(&pool, "select count(*) from task where status in ('assigned', 'running')").await;
        (done >= 50 && on_nodes >= 8).then_some(())
    })
    .await;
    let in_flight: Vec<uuid::Uuid> =
        sqlx::query_scalar("select task_id from task where status in ('assigned', 'running')")
            .fetch_all(&pool)
            .await
            .unwrap();
    redis.flush_all().await;

    // Submissions go on meanwhile (a 202 is in Redis until applied: these land after the flush).
    for _ in 0..20 {
        let response = system.post("/v1/tasks", &api_key, thermal_task()).await;
        assert_eq!(response.status(), 202);
    }
    let in_postgres = || async { count(&pool, "select count(*) from task").await };
    eventually(Duration::from_secs(120), "every task in PostgreSQL to complete", || async {
        let total = in_postgres().await;
        let done = count(&pool, "select count(*) from task where status = 'completed'").await;
        (total >= 300 && done == total).then_some(())
    })
    .await;
    assert_eq!(count(&pool, "select count(*) from task where status = 'failed'").await, 0, "no task failed");
    for task_id in in_flight {
        let status: String = sqlx::query_scalar("select status from task where task_id = $1")
            .bind(task_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, "completed", "task {task_id}, on a node at the flush");
    }
    assert!(submitted.len() == 300);
    assert_eq!(
        count(&pool, "select count(*) from credit_entry where account = 'node'").await,
        in_postgres().await,
        "each task credited once"
    );
    let (_, divergences) =
        grid_orchestrator::replay::audit(&pool, &grid_shared::cells::CellName::default(), 1).await.unwrap();
    assert_eq!(divergences, vec![]);
    // The groups are back, and nothing stays pending.
    let mut conn = system.redis.clone();
    let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{}:reports", system.keys().tag()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups.groups.len(), 1);
    stop.send(true).unwrap();
    fleet.join().await;
    system.stop().await;
}

/// The sharp case: a node read its assignment and reported it done, and Redis lost the report.
/// The re-issued assignment comes after every id the node read before (its open channel and a
/// channel resumed with `Last-Event-ID` both get it); the node reports again and the task
/// completes, credited once.
#[sqlx::test(migrations = "../migrations")]
async fn a_node_whose_report_redis_lost_is_handed_its_assignment_again_after_what_it_read(pool: PgPool) {
    let redis = PrivateRedis::start().await;
    let system = spawn_system(pool.clone(), &[("REDIS_URL", redis.url.as_str())]).await;
    let (_, api_key) = system.organization("Forgetful").await;
    let node = system.manual_node(&api_key, 1, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let submitted: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let task_id = submitted["task_id"].as_str().unwrap().to_owned();
    let first = channel.next(Duration::from_secs(10)).await;
    assert_eq!(first.event.as_deref(), Some("TASK:ASSIGNED"));
    let first_id = first.id.clone().unwrap();
    let assignment: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(assignment["task_id"].as_str(), Some(task_id.as_str()));

    // Whatever the node sent since is lost with everything else (here: nothing sent yet).
    redis.flush_all().await;

    let again = channel.next(Duration::from_secs(20)).await;
    assert_eq!(again.event.as_deref(), Some("TASK:ASSIGNED"));
    let again_data: Value = serde_json::from_str(&again.data).unwrap();
    assert_eq!(again_data["task_id"].as_str(), Some(task_id.as_str()));
    assert_eq!(again_data["attempt"], assignment["attempt"]);
    let again_id = again.id.clone().unwrap();
    assert!(stream_id(&again_id) > stream_id(&first_id), "{again_id} comes after {first_id}");
    let mut resumed = system.channel(&node, Some(&first_id)).await;
    assert_eq!(resumed.next(Duration::from_secs(10)).await.id.as_deref(), Some(again_id.as_str()));

    let attempt = assignment["attempt"].as_i64().unwrap();
    assert_eq!(system.report(&node, common::completion(&task_id, attempt, 0.000_01, 0.000_005)).await.status(), 202);
    eventually(Duration::from_secs(20), "the task to complete", || async {
        (system.task(&api_key, &task_id).await["status"] == "completed").then_some(())
    })
    .await;
    assert_eq!(count(&pool, "select count(*) from credit_entry where account = 'node'").await, 1);
    system.stop().await;
}

fn stream_id(id: &str) -> (u64, u64) {
    let (millis, seq) = id.split_once('-').unwrap();
    (millis.parse().unwrap(), seq.parse().unwrap())
}

#[sqlx::test(migrations = "../migrations")]
async fn while_redis_is_down_the_gateway_answers_503_and_it_goes_on_by_itself_when_redis_is_back(pool: PgPool) {
    let mut redis = PrivateRedis::start().await;
    let system = spawn_system(pool.clone(), &[("REDIS_URL", redis.url.as_str())]).await;
    let (_, api_key) = system.organization("Outage").await;
    let node = system.manual_node(&api_key, 2, 300.0).await;
    let mut channel = system.channel(&node, None).await;
    let before: Value = system.post("/v1/tasks", &api_key, thermal_task()).await.json().await.unwrap();
    let assigned = channel.next(Duration::from_secs(10)).await;
    assert!(assigned.data.contains(before["task_id"].as_str().unwrap()));
    let seen = assigned.id.clone().unwrap();

    redis.stop();
    // Open task channels are told to reconnect (their stream ends).
    assert!(channel.ends_within(Duration::from_secs(10)).await, "the channel ends");
    // Requests get a problem with Retry-After, not a hang and not a 500.
    for path in ["/v1/tasks", "/v1/commands/00000000-0000-0000-0000-000000000000"] {
        let response = if path == "/v1/tasks" {
            system.post(path, &api_key, thermal_task()).await
        } else {
            system.get(path, &api_key).await
        };
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "1", "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    redis.restart_empty().await;
    // The gateway reconnects by itself: submissions are accepted again and run.
    let after: Value = eventually(Duration::from_secs(30), "a submission to be accepted again", || async {
        let response = system.post("/v1/tasks", &api_key, thermal_task()).await;
        if response.status() == 202 { response.json().await.ok() } else { None }
    })
    .await;
    // The node resumes after what it saw, reconnecting whenever its stream ends (as `worker`
    // does): the assignment it held is re-issued, then the new one comes.
    let mut last = seen;
    let mut wanted =
        vec![before["task_id"].as_str().unwrap().to_owned(), after["task_id"].as_str().unwrap().to_owned()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !wanted.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still waiting for {wanted:?}");
        let response = eventually(Duration::from_secs(30), "the channel to open", || async {
            let response = system
                .http
                .get(system.url(&format!("/v1/nodes/{}/tasks", node.node_id)))
                .bearer_auth(&node.token)
                .header("Last-Event-ID", &last)
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(response)
        })
        .await;
        let mut channel = common::Channel::of(response);
        while let Some(event) = channel.next_or_end(Duration::from_secs(30)).await {
            last = event.id.clone().unwrap_or(last);
            wanted.retain(|task_id| !event.data.contains(task_id.as_str()));
            if wanted.is_empty() {
                break;
            }
        }
    }
    system.stop().await;
}

/// A stream is trimmed behind what the writer acknowledged, never past an entry another
/// consumer still holds (a writer frozen on its read past its lease was handed it): that entry
/// stays readable until the active writer claims it. A plain `XTRIM MINID` to the newest
/// acknowledged entry deletes it (a lost submission, once seen in
/// `cells_takeover.rs::a_writer_frozen_while_its_cell_is_taken_is_fenced_off_when_it_wakes`).
#[tokio::test]
async fn a_trim_keeps_an_entry_another_consumer_holds_until_it_is_claimed() {
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let namespace = common::fresh_namespace();
    for (stream, trim_with_script) in
        [(format!("{{{namespace}}}:script"), true), (format!("{{{namespace}}}:plain"), false)]
    {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("orchestrator")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut redis)
            .await
            .unwrap();
        // More than one radix node of entries (`MINID ~` only drops whole nodes).
        for index in 0..500 {
            let _: String =
                redis::cmd("XADD").arg(&stream).arg("*").arg("i").arg(index).query_async(&mut redis).await.unwrap();
        }
        let read = |consumer: &'static str, count: usize| {
            let (stream, mut redis) = (stream.clone(), redis.clone());
            async move {
                let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("orchestrator")
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                reply.keys.into_iter().flat_map(|key| key.ids).map(|entry| entry.id).collect::<Vec<String>>()
            }
        };
        let held = read("frozen", 1).await.remove(0);
        let applied = read("active", 499).await;
        let newest = applied.last().unwrap().clone();
        let _: i64 =
            redis::cmd("XACK").arg(&stream).arg("orchestrator").arg(&applied).query_async(&mut redis).await.unwrap();
        if trim_with_script {
            let trimmed_to: String = grid_shared::wire::scripts::trim_acknowledged(&stream, "orchestrator", &newest)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert_eq!(trimmed_to, held, "trimmed up to the entry still held");
        } else {
            let _: i64 = redis::cmd("XTRIM")
                .arg(&stream)
                .arg("MINID")
                .arg("~")
                .arg(&newest)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        let claimed: Vec<String> = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg("orchestrator")
            .arg("active")
            .arg(0)
            .arg(&held)
            .arg("JUSTID")
            .query_async(&mut redis)
            .await
            .unwrap();
        let kept: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&stream).arg(&held).arg(&held).query_async(&mut redis).await.unwrap();
        if trim_with_script {
            assert_eq!((claimed, kept.ids.len()), (vec![held.clone()], 1), "the held entry is claimed and read");
        } else {
            assert!(kept.ids.is_empty(), "a plain trim to the newest acknowledged entry drops the held one");
        }
        let _: i64 = redis::cmd("DEL").arg(&stream).query_async(&mut redis).await.unwrap();
    }
}
