//! Calculated health (issue 23 item 7) end to end: region `us-east` of
//! zone gslb.test depends on region `db-east` of zone db.test, each probed
//! over real HTTP on loopback. When the database fails, `api` fails over
//! with it in the same instant (a timeline of alternating queries to both
//! zones never sees one moved and not the other), status and explain say
//! why, and a cycle written by a reload is refused with the old zones kept.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::backend::{Backend, Mode};
use crate::support::*;

const HEAD_GSLB: &str = "[zone]\nname = \"gslb.test.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n";
const HEAD_DB: &str = "[zone]\nname = \"db.test.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n";

struct Rig {
    db_east: Backend,
    _others: Vec<Backend>,
    ts: TestServer,
    admin: std::net::SocketAddr,
}

async fn rig() -> Rig {
    let app_east = Backend::start("127.0.0.2").await;
    let app_west = Backend::start("127.0.0.3").await;
    let db_east = Backend::start("127.0.0.4").await;
    let db_west = Backend::start("127.0.0.5").await;
    let gslb = format!(
        "{HEAD_GSLB}{}depends-on = [\"db.test:db-east\"]\n{}\n[service.api]\nregions = [\"us-east\", \"eu-west\"]\n",
        backend_regions(&[("us-east", app_east.addr)]),
        backend_regions(&[("eu-west", app_west.addr)]),
    );
    let db = format!(
        "{HEAD_DB}{}\n[service.db]\nregions = [\"db-east\", \"db-west\"]\n",
        backend_regions(&[("db-east", db_east.addr), ("db-west", db_west.addr)]),
    );
    let ts = TestServer::start_with(&[("gslb.toml", &gslb), ("db.toml", &db)], |s| {
        s.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = ts.server.admin_addr.expect("admin bound");
    Rig {
        db_east,
        _others: vec![app_east, app_west, db_west],
        ts,
        admin,
    }
}

async fn answer(ts: &TestServer, name: &str) -> String {
    let m = udp(ts.dns, &request(name, RecordType::A, false))
        .await
        .expect("an answer");
    addrs(&m).join(",")
}

async fn get_json(admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http_get(&format!("http://{admin}{path}")).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_moves_its_dependent_region_in_the_same_instant() {
    let r = rig().await;
    let ts = &r.ts;
    wait_until(
        Duration::from_secs(10),
        "both services on their primaries",
        || async {
            answer(ts, "api.gslb.test.").await == "127.0.0.2"
                && answer(ts, "db.db.test.").await == "127.0.0.4"
        },
    )
    .await;
    // Alternate queries to both zones while the database fails and comes
    // back: (which, moved?) in the order answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let (dns, stop) = (ts.dns, stop.clone());
        tokio::spawn(async move {
            let mut timeline: Vec<(&'static str, bool)> = Vec::new();
            let ask = |name: &'static str| async move {
                let m = udp(dns, &request(name, RecordType::A, false)).await;
                m.map(|m| addrs(&m).join(",")).unwrap_or_default()
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let db = ask("db.db.test.").await;
                assert!(db == "127.0.0.4" || db == "127.0.0.5", "{db}");
                timeline.push(("db", db == "127.0.0.5"));
                let api = ask("api.gslb.test.").await;
                assert!(api == "127.0.0.2" || api == "127.0.0.3", "{api}");
                timeline.push(("api", api == "127.0.0.3"));
            }
            timeline
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.db_east.set(Mode::Failing);
    wait_until(
        Duration::from_secs(10),
        "api failed over with the database",
        || async { answer(ts, "api.gslb.test.").await == "127.0.0.3" },
    )
    .await;
    // Why, in status and explain.
    let st = get_json(r.admin, "/api/v1/status").await;
    let zone = st["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "gslb.test")
        .expect("zone gslb.test");
    let us = zone["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "us-east")
        .unwrap();
    assert_eq!(us["up"], false, "{us}");
    assert_eq!(us["down_because"], "depends-on", "{us}");
    assert_eq!(
        us["endpoints"][0]["up"], true,
        "its own endpoint is fine: {us}"
    );
    assert_eq!(us["depends_on"]["needed"], 1);
    assert_eq!(us["depends_on"]["on"][0]["name"], "db.test:db-east");
    assert_eq!(us["depends_on"]["on"][0]["up"], false);
    let moved = st["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["region"] == "us-east" && t["to"] == "down" && t["endpoint"].is_null())
        .unwrap_or_else(|| panic!("a transition of us-east in {st}"));
    assert_eq!(
        moved["reason"],
        "depends-on: 0 of 1 up, needs 1 (db.test:db-east down); 1 of 1 endpoints up"
    );
    let x = get_json(r.admin, "/api/v1/explain?name=api.gslb.test&type=A").await;
    let order = &x["service"]["order"];
    assert_eq!(order[0]["region"], "us-east");
    assert_eq!(order[0]["down_because"], "depends-on", "{x}");
    assert_eq!(
        order[0]["depends_on"],
        "depends-on: 0 of 1 up, needs 1 (db.test:db-east down)"
    );
    assert_eq!(x["answers"].as_array().unwrap().len(), 1);
    // Back.
    r.db_east.set(Mode::Healthy);
    wait_until(
        Duration::from_secs(10),
        "api back with the database",
        || async { answer(ts, "api.gslb.test.").await == "127.0.0.2" },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let timeline = recorder.await.expect("recorder");
    // The whole timeline: unmoved, then moved, then unmoved again, both
    // names together: once either is seen moved, no later answer of either
    // is unmoved until one is seen back, and then none is moved again.
    let phases: Vec<bool> = timeline.iter().map(|(_, moved)| *moved).collect();
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for m in &phases {
        match runs.last_mut() {
            Some((v, n)) if v == m => *n += 1,
            _ => runs.push((*m, 1)),
        }
    }
    let shape: Vec<bool> = runs.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        shape,
        [false, true, false],
        "answers of both zones move together, once each way: {runs:?}"
    );
    assert!(runs.iter().all(|(_, n)| *n >= 2), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_writes_a_cycle_is_refused_and_the_zones_stay() {
    let r = rig().await;
    let ts = &r.ts;
    wait_until(Duration::from_secs(10), "api on its primary", || async {
        answer(ts, "api.gslb.test.").await == "127.0.0.2"
    })
    .await;
    let path = ts.zone_path("db.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cyclic = text.replace(
        "[region.db-east]\n",
        "[region.db-east]\ndepends-on = [\"gslb.test:us-east\"]\n",
    );
    assert_ne!(text, cyclic);
    std::fs::write(&path, &cyclic).unwrap();
    let err = ts.server.reload().await.expect_err("a cycle is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("gslb.toml:17:15: depends-on \"db.test:db-east\": a cycle: db.test:db-east → us-east → db.test:db-east"),
        "{msg}"
    );
    // Still served as before, and still following the database.
    assert_eq!(answer(ts, "api.gslb.test.").await, "127.0.0.2");
    r.db_east.set(Mode::Failing);
    wait_until(Duration::from_secs(10), "api failed over", || async {
        answer(ts, "api.gslb.test.").await == "127.0.0.3"
    })
    .await;
    // `gslb check` refuses the same files with the same words.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gslb"))
        .arg("check")
        .arg(ts.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("gslb.toml:17:15: depends-on \"db.test:db-east\": a cycle: db.test:db-east → us-east → db.test:db-east"),
        "{printed}"
    );
}
