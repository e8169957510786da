//! Issue 20, keys: gslb's key files and BIND's are one format. Keys made by
//! `gslb dnssec keygen` give, under BIND's `dnssec-dsfromkey`, the DS that
//! `gslb dnssec ds` prints; keys made by BIND's `dnssec-keygen` load in
//! gslb and give BIND's DS; a private key others can read is refused.

use std::path::Path;
use std::process::{Command, Output};

const ZONE: &str = "gslb.example.com";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test installs bind9-utils)"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn gslb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gslb"))
}

/// `dnssec-dsfromkey -2` of every key-signing key in `dir`, sorted.
fn bind_ds(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(" DNSKEY 257 "))
        .map(|p| {
            ok(Command::new("dnssec-dsfromkey").arg("-2").arg(&p))
                .trim()
                .to_string()
        })
        .collect();
    lines.sort();
    lines
}

fn gslb_ds(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = ok(gslb().args(["dnssec", "ds", ZONE, "--keys"]).arg(dir))
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn gslbs_keys_give_bind_the_ds_gslb_prints() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["13", "15"] {
        let out = ok(gslb()
            .args(["dnssec", "keygen", ZONE, "--algorithm", alg, "--keys"])
            .arg(dir.path()));
        let private = out.lines().find(|l| l.ends_with(".private")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{private}");
        assert!(
            private.contains(&format!("K{ZONE}.+0{alg}+")),
            "BIND's name: {private}"
        );
    }
    // A ZSK has no DS.
    ok(gslb()
        .args(["dnssec", "keygen", ZONE, "--zsk", "--keys"])
        .arg(dir.path()));
    let ours = gslb_ds(dir.path());
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours, bind_ds(dir.path()));
}

#[test]
fn binds_keys_load_and_give_bind_the_same_ds() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-a", "ECDSAP256SHA256", "-f", "KSK"][..],
        &["-a", "ED25519", "-f", "KSK"][..],
        &["-a", "ECDSAP256SHA256"][..],
    ] {
        ok(Command::new("dnssec-keygen")
            .args(["-q", "-K"])
            .arg(dir.path())
            .args(args)
            .arg(ZONE));
    }
    let ours = gslb_ds(dir.path());
    assert_eq!(ours.len(), 2, "the two KSKs: {ours:?}");
    assert_eq!(ours, bind_ds(dir.path()));

    // A folder shared with BIND: another zone's key is passed over, an RSA
    // key of this zone is named and skipped, and the rest still load.
    let before = bind_ds(dir.path());
    ok(Command::new("dnssec-keygen")
        .args(["-q", "-K"])
        .arg(dir.path())
        .args(["-a", "ECDSAP256SHA256", "-f", "KSK", "other.example"]));
    let rsa = ok(Command::new("dnssec-keygen")
        .args(["-q", "-K"])
        .arg(dir.path())
        .args(["-a", "RSASHA256", "-f", "KSK", ZONE]));
    let out = run(gslb()
        .args(["dnssec", "ds", ZONE, "--keys"])
        .arg(dir.path()));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}.key: algorithm 8 is not one gslb uses (13, 15): skipped",
            rsa.trim()
        )),
        "{stderr}"
    );
    let mut printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    printed.sort();
    assert_eq!(printed, before);
}

#[test]
fn a_private_key_others_can_read_or_that_is_not_the_public_keys_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = ok(gslb()
        .args(["dnssec", "keygen", ZONE, "--keys"])
        .arg(dir.path()));
    let private = out
        .lines()
        .find(|l| l.ends_with(".private"))
        .unwrap()
        .to_string();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(gslb()
        .args(["dnssec", "ds", ZONE, "--keys"])
        .arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{private}: mode 0644: a private key must not be readable by group or others"
        )),
        "{stderr}"
    );
    // Another key's private half under this key's name: refused, and no
    // key material in the message.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let out2 = ok(gslb()
        .args(["dnssec", "keygen", ZONE, "--keys"])
        .arg(other.path()));
    let other_private = out2.lines().find(|l| l.ends_with(".private")).unwrap();
    let text = std::fs::read_to_string(other_private).unwrap();
    std::fs::write(&private, &text).unwrap();
    let out = run(gslb()
        .args(["dnssec", "ds", ZONE, "--keys"])
        .arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match the public key"), "{stderr}");
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey: "))
        .unwrap();
    assert!(
        !stderr.contains(secret),
        "the private key in an error: {stderr}"
    );
}

// ---------------------------------------------------------------------------
// Signed answers, validated by BIND's `delv` with the zone's own key as the
// trust anchor: every kind of answer validates, before and after a
// failover; a wrong anchor does not.

use crate::backend::{Backend, Mode};
use crate::support::{TestServer, addrs, request, udp, wait_until};
use hickory_proto::rr::RecordType;
use std::time::Duration;

const SIGNED: &str = "signed.example.com";

/// A signed zone in `dir` (keys made by `gslb dnssec keygen` in
/// `dir/keys`): static records, a wildcard, a delegation, and `www`
/// failing over from `primary` (127.0.0.1, checked on `backend`) to
/// `secondary` (127.0.0.2).
fn signed_zone(dir: &Path, backend: std::net::SocketAddr, extra_keygen: &[&str]) -> String {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ok(gslb()
        .args(["dnssec", "keygen", SIGNED, "--keys"])
        .arg(&keys)
        .args(extra_keygen));
    format!(
        r#"[zone]
name = "{SIGNED}."
nameservers = ["ns1.example.net."]
hostmaster = "hostmaster@example.com"

[dnssec]
keys = "keys"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"

[[record]]
name = "@"
type = "MX"
value = "10 mail.example.net."

[[record]]
name = "txt"
type = "TXT"
value = "signed text"

[[record]]
name = "*.wild"
type = "A"
value = "192.0.2.20"

[[record]]
name = "alias"
type = "CNAME"
value = "static"

[[record]]
name = "child"
type = "NS"
value = "ns.child.example.net."

[check.app]
type = "http"
port = {}
path = "/health"
interval = "200ms"
timeout = "150ms"
recheck = "50ms"
fall = 2
rise = 2

[region.primary]
endpoints = ["127.0.0.1"]
check = "app"

[region.secondary]
endpoints = ["127.0.0.2"]

[service.www]
regions = ["primary", "secondary"]
ttl = 5
"#,
        backend.port()
    )
}

/// delv's trust-anchor file for the zone's key-signing keys in `keys`.
fn anchors(keys: &Path, wrong: bool) -> std::path::PathBuf {
    let mut out = String::from("trust-anchors {\n");
    for p in std::fs::read_dir(keys).unwrap().map(|e| e.unwrap().path()) {
        if p.extension().is_none_or(|e| e != "key") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let line = text.lines().find(|l| l.contains(" DNSKEY ")).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = f.iter().position(|x| *x == "DNSKEY").unwrap();
        let (flags, proto, alg) = (f[at + 1], f[at + 2], f[at + 3]);
        if flags != "257" {
            continue;
        }
        let mut key: String = f[at + 4..].concat();
        if wrong {
            // Another key of the same shape.
            let c = if key.starts_with('A') { "B" } else { "A" };
            key.replace_range(0..1, c);
        }
        out.push_str(&format!(
            "  \"{SIGNED}.\" static-key {flags} {proto} {alg} \"{key}\";\n"
        ));
    }
    out.push_str("};\n");
    let path = keys.join(if wrong { "wrong.anchors" } else { "anchors" });
    std::fs::write(&path, out).unwrap();
    path
}

/// `delv` asking `server` for (name, type), validating from `anchor`:
/// its whole output.
fn delv(server: std::net::SocketAddr, anchor: &Path, name: &str, rtype: &str) -> String {
    let out = run(Command::new("delv")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "-a"])
        .arg(anchor)
        .arg(format!("+root={SIGNED}."))
        .args([name, rtype]));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn signed_answers_of_every_kind_validate_before_and_after_a_failover() {
    let mut backend = Backend::start("127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = signed_zone(dir.path(), backend.addr, &[]);
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| {
            // The keys live beside the zone file.
            let _ = std::fs::remove_dir_all(d.join("keys"));
            copy_dir(&dir.path().join("keys"), &d.join("keys"));
        },
        |st| st.admin = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let anchor = anchors(&s.zone_path("keys"), false);
    let server = s.dns;
    // delv runs on a blocking thread: the test's runtime keeps serving
    // the backend meanwhile (blocked, its probes would time out).
    let check = |name: &str, rtype: &str, want: &str| {
        let (anchor, name, rtype, want) = (
            anchor.clone(),
            name.to_string(),
            rtype.to_string(),
            want.to_string(),
        );
        async move {
            let out = tokio::task::spawn_blocking({
                let (name, rtype) = (name.clone(), rtype.clone());
                move || delv(server, &anchor, &name, &rtype)
            })
            .await
            .unwrap();
            assert!(out.contains("fully validated"), "{name} {rtype}:\n{out}");
            assert!(out.contains(&want), "{name} {rtype}: {want:?} in\n{out}");
        }
    };
    let z = format!("{SIGNED}.");
    check(&z, "SOA", "SOA").await;
    check(&z, "DNSKEY", "DNSKEY").await;
    check(&z, "MX", "mail.example.net.").await;
    check(&format!("static.{z}"), "A", "192.0.2.10").await;
    check(&format!("txt.{z}"), "TXT", "signed text").await;
    check(&format!("alias.{z}"), "A", "192.0.2.10").await;
    check(&format!("anything.wild.{z}"), "A", "192.0.2.20").await;
    check(&format!("www.{z}"), "A", "127.0.0.1").await;
    // Denials: a name that does not exist, a type the name does not have,
    // no DS at the delegation.
    check(&format!("nope.{z}"), "A", "negative response").await;
    check(&format!("static.{z}"), "AAAA", "negative response").await;
    check(&format!("child.{z}"), "DS", "negative response").await;
    // The failover answer, signed as well.
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query(&format!("www.{z}"), RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    check(&format!("www.{z}"), "A", "127.0.0.2").await;

    // Without DO: exactly the unsigned answer, no RRSIG.
    let m = udp(s.dns, &request(&format!("static.{z}"), RecordType::A, true))
        .await
        .unwrap();
    assert!(m.answers.iter().all(|r| r.record_type() == RecordType::A));
    // With DO, the RRSIG follows the RRset.
    let mut req = request(&format!("static.{z}"), RecordType::A, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::A, RecordType::RRSIG]);
    // A name that does not exist: NOERROR and one NSEC with NXNAME.
    let mut req = request(&format!("nope.{z}"), RecordType::A, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError
    );
    let nsec = m
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::NSEC)
        .expect("an NSEC");
    assert_eq!(nsec.name.to_string(), format!("nope.{z}"));
    let hickory_proto::rr::RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::NSEC(n)) =
        &nsec.data
    else {
        panic!("{nsec:?}")
    };
    let types: Vec<u16> = n.type_bit_maps().map(u16::from).collect();
    assert_eq!(types, [46, 47, 128], "RRSIG, NSEC, NXNAME");
    assert_eq!(n.next_domain_name().to_string(), format!("\\000.nope.{z}"));

    // Counted: signatures made, RRsets served from the cache; the earliest
    // expiry at least half the default validity (14 days) ahead.
    let (_, body) =
        crate::support::http_get(&format!("http://{}/metrics", s.server.admin_addr.unwrap())).await;
    let value = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in\n{body}"))
    };
    assert!(value("gslb_dnssec_signatures_total{source=\"made\"}") >= 10.0);
    assert!(value("gslb_dnssec_signatures_total{source=\"cache\"}") >= 1.0);
    let expiry = value(&format!(
        "gslb_dnssec_signature_expiry_earliest_timestamp_seconds{{zone=\"{SIGNED}\"}}"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(expiry > now + 7.0 * 86400.0 - 3600.0, "{expiry} vs {now}");

    // A wrong trust anchor: nothing validates.
    let wrong = anchors(&s.zone_path("keys"), true);
    let name = format!("static.{z}");
    let out = tokio::task::spawn_blocking(move || delv(server, &wrong, &name, "A"))
        .await
        .unwrap();
    assert!(!out.contains("fully validated"), "{out}");
    backend.kill();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        std::fs::copy(&p, &dest).unwrap();
    }
}

/// `[dnssec]` problems are configuration errors at their line: no key
/// folder, a folder without a key of the zone, a validity out of range,
/// `[transfer]` beside it; `gslb check` and `serve` agree.
#[test]
fn dnssec_table_problems_are_errors_where_written() {
    let dir = tempfile::tempdir().unwrap();
    let zone = |extra: &str| {
        format!(
            "[zone]\nname = \"{SIGNED}.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[dnssec]\n{extra}"
        )
    };
    let check = |text: &str| {
        std::fs::write(dir.path().join("z.toml"), text).unwrap();
        let out = run(gslb().arg("check").arg(dir.path().join("z.toml")));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = check(&zone("keys = \"nowhere\"\n"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("z.toml:7:8") && err.contains("nowhere") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let (code, err) = check(&zone("keys = \"keys\"\n"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("z.toml:7:8") && err.contains("gslb dnssec keygen"),
        "{err}"
    );
    ok(gslb()
        .args(["dnssec", "keygen", SIGNED, "--keys"])
        .arg(dir.path().join("keys")));
    let (code, err) = check(&zone("keys = \"keys\"\n"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(&zone("keys = \"keys\"\nsignature-validity = \"1m\"\n"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("z.toml:8:22") && err.contains("\"2h\" to \"365d\""),
        "{err}"
    );
    let (code, err) = check(&format!(
        "{}\n[transfer]\nallow = [\"127.0.0.1\"]\n",
        zone("keys = \"keys\"\n")
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("z.toml:6:1") && err.contains("not supported yet"),
        "{err}"
    );
}

/// The key tags of the RRSIGs over `name`'s A set, asked with DO.
async fn signing_tags(s: &TestServer, name: &str) -> Vec<u16> {
    let mut req = request(name, RecordType::A, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::RRSIG(
                sig,
            )) => Some(sig.input().key_tag),
            _ => None,
        })
        .collect()
}

/// The tag in a key file's name (`K<zone>+013+<tag>.key`).
fn tag_of(path: &Path) -> u16 {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    name.trim_end_matches(".key")
        .rsplit('+')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A ZSK roll by timing metadata alone: the successor, published now,
/// takes over signing at its Activate time, when its predecessor goes
/// Inactive (set with BIND's dnssec-settime), with no reload asked for;
/// delv validates every answer before, across and after the event.
#[tokio::test]
async fn a_zsk_roll_by_timing_metadata_is_followed_without_a_failed_validation() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let keygen = |kind: &str| {
        let before: Vec<_> = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        ok(gslb()
            .args(["dnssec", "keygen", SIGNED, kind, "--keys"])
            .arg(&keys));
        std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| !before.contains(p) && p.extension().is_some_and(|e| e == "key"))
            .unwrap()
    };
    keygen("--ksk");
    let old = keygen("--zsk");
    let new = keygen("--zsk");
    // The successor signs from 4 s on; its predecessor stops then.
    ok(Command::new("dnssec-settime")
        .args(["-A", "+4", "-K"])
        .arg(&keys)
        .arg(new.file_stem().unwrap()));
    ok(Command::new("dnssec-settime")
        .args(["-I", "+4", "-K"])
        .arg(&keys)
        .arg(old.file_stem().unwrap()));
    let zone = format!(
        "[zone]\nname = \"{SIGNED}.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[dnssec]\nkeys = \"keys\"\n\n[[record]]\nname = \"static\"\ntype = \"A\"\nvalue = \"192.0.2.10\"\n"
    );
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| copy_dir(&keys, &d.join("keys")),
        |_| {},
    )
    .await;
    let name = format!("static.{SIGNED}.");
    let (old_tag, new_tag) = (tag_of(&old), tag_of(&new));
    assert_eq!(signing_tags(&s, &name).await, [old_tag]);
    let anchor = anchors(&s.zone_path("keys"), false);
    // Validate every 250 ms until the successor signs, and twice after.
    let server = s.dns;
    let mut timeline: Vec<(Vec<u16>, bool)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut after = 0;
    while after < 2 {
        let tags = signing_tags(&s, &name).await;
        let (a, n) = (anchor.clone(), name.clone());
        let out = tokio::task::spawn_blocking(move || delv(server, &a, &n, "A"))
            .await
            .unwrap();
        let valid = out.contains("fully validated");
        if tags == [new_tag] {
            after += 1;
        }
        timeline.push((tags, valid));
        assert!(
            std::time::Instant::now() < deadline,
            "no roll: {timeline:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(timeline.iter().all(|(_, valid)| *valid), "{timeline:?}");
    // Only the old tag, then only the new one: never none, never a mix.
    let switch = timeline.iter().position(|(t, _)| *t == [new_tag]).unwrap();
    assert!(switch > 0, "the old key signed first: {timeline:?}");
    assert!(
        timeline[..switch].iter().all(|(t, _)| *t == [old_tag]),
        "{timeline:?}"
    );
    assert!(
        timeline[switch..].iter().all(|(t, _)| *t == [new_tag]),
        "{timeline:?}"
    );
    // Both ZSKs stay published (Delete not set), with the KSK.
    let mut req = request(&format!("{SIGNED}."), RecordType::DNSKEY, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    let dnskeys = m
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::DNSKEY)
        .count();
    assert_eq!(dnskeys, 3);
}
