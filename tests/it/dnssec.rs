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
use crate::support::{TestServer, addrs, failover_www, request, udp, wait_until};
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
name = "big"
type = "TXT"
value = "{big}"

[[record]]
name = "alias"
type = "CNAME"
value = "static"

[[record]]
name = "dangling"
type = "CNAME"
value = "nowhere"

[[record]]
name = "loop1"
type = "CNAME"
value = "loop2"

[[record]]
name = "loop2"
type = "CNAME"
value = "loop1"

[[record]]
name = "child"
type = "NS"
value = "ns.child.example.net."

[[record]]
name = "secure"
type = "NS"
value = "ns.secure.example.net."

[[record]]
name = "secure"
type = "DS"
value = "{SECURE_DS}"

{}"#,
        failover_www(backend.port()),
        big = BIG_TXT,
    )
}

/// The DS of the signed child `secure` (any digest: the parent signs it,
/// no validator here goes below it).
const SECURE_DS: &str =
    "12345 13 2 ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB";

/// A TXT too long for a 512-byte UDP answer once signed.
const BIG_TXT: &str = "signed and too long for 512 bytes: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

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
    check(&format!("secure.{z}"), "DS", "12345 13 2").await;
    // Denials at the end of a CNAME chain: of the target's type, of the
    // target's name.
    check(&format!("alias.{z}"), "AAAA", &format!("CNAME\tstatic.{z}")).await;
    check(
        &format!("dangling.{z}"),
        "A",
        &format!("CNAME\tnowhere.{z}"),
    )
    .await;
    // The failover answer, signed as well, and signed ahead: the first
    // query for it makes no signature.
    let admin = s.server.admin_addr.unwrap();
    let signing = || async move {
        let (_, body) = crate::support::http_get(&format!("http://{admin}/api/v1/status")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let d = v["zones"][0]["dnssec"].clone();
        (
            d["signatures_made"].as_u64().unwrap(),
            d["signatures_made_ahead"].as_u64().unwrap(),
        )
    };
    let (made_before, ahead) = signing().await;
    // SOA (both TTLs), NS, MX, DNSKEY, CDS, CDNSKEY, static, txt, alias,
    // *.wild, child's glue-less cut skipped, both regions of www.
    assert!(ahead >= 10, "signed ahead: {ahead}");
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query(&format!("www.{z}"), RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    let mut req = request(&format!("www.{z}"), RecordType::A, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::A, RecordType::RRSIG]);
    assert_eq!(
        signing().await.0,
        made_before,
        "the failover answer was signed ahead"
    );
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
    // Too long for the client's 512 bytes once signed: TC over UDP, whole
    // with its RRSIG over TCP.
    let mut req = request(&format!("big.{z}"), RecordType::TXT, true);
    let e = req.edns.as_mut().unwrap();
    e.set_dnssec_ok(true);
    e.set_max_payload(512);
    let m = udp(s.dns, &req).await.unwrap();
    assert!(m.metadata.truncation, "{m:?}");
    assert!(m.answers.is_empty());
    let m = crate::support::tcp(s.dns, &req).await.unwrap();
    assert!(!m.metadata.truncation);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::TXT, RecordType::RRSIG]);
    // A referral to a signed child carries its DS set and the DS's RRSIG
    // (RFC 4035 §3.1.4.1), one to an unsigned child the NSEC proving
    // there is none; neither signs the child's NS set.
    for (child, want) in [
        (
            "secure",
            [RecordType::NS, RecordType::DS, RecordType::RRSIG],
        ),
        (
            "child",
            [RecordType::NS, RecordType::NSEC, RecordType::RRSIG],
        ),
    ] {
        let mut req = request(&format!("www.{child}.{z}"), RecordType::A, true);
        req.edns.as_mut().unwrap().set_dnssec_ok(true);
        let m = udp(s.dns, &req).await.unwrap();
        assert!(!m.metadata.authoritative, "{child}: a referral");
        let types: Vec<RecordType> = m.authorities.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, want, "{child}: {m:?}");
    }
    // At the end of a CNAME chain the denial is of the target: static has
    // no AAAA (its NSEC lists A), nowhere does not exist (NXNAME). A
    // resolver that asks the target again would not notice a wrong one,
    // so this looks at the answer itself.
    for (name, qtype, owner, bitmap) in [
        ("alias", RecordType::AAAA, "static", vec![1u16, 46, 47]),
        ("dangling", RecordType::A, "nowhere", vec![46, 47, 128]),
    ] {
        let mut req = request(&format!("{name}.{z}"), qtype, true);
        req.edns.as_mut().unwrap().set_dnssec_ok(true);
        let m = udp(s.dns, &req).await.unwrap();
        let nsecs: Vec<(String, Vec<u16>)> = m
            .authorities
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::DNSSEC(
                    hickory_proto::dnssec::rdata::DNSSECRData::NSEC(n),
                ) => Some((
                    r.name.to_string(),
                    n.type_bit_maps().map(u16::from).collect(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(nsecs, [(format!("{owner}.{z}"), bitmap)], "{name}: {m:?}");
    }
    // A CNAME loop, signed: both CNAMEs with their RRSIGs, answered (the
    // chain's end is looked for once per record, not forever), and the
    // server answers on.
    let mut req = request(&format!("loop1.{z}"), RecordType::A, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.expect("a CNAME loop is answered");
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        [
            RecordType::CNAME,
            RecordType::RRSIG,
            RecordType::CNAME,
            RecordType::RRSIG
        ]
    );
    assert_eq!(
        addrs(
            &udp(s.dns, &request(&format!("static.{z}"), RecordType::A, true))
                .await
                .unwrap()
        ),
        ["192.0.2.10"]
    );
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
    assert_eq!(
        m.edns.as_ref().unwrap().flags().z,
        0,
        "no Compact Answers OK flag unasked"
    );
    // With Compact Answers OK (RFC 9824 §4): NXDOMAIN back, the same
    // NSEC, the flag echoed; a name that exists stays NOERROR (NODATA).
    for (name, rcode) in [
        ("nope", hickory_proto::op::ResponseCode::NXDomain),
        ("static", hickory_proto::op::ResponseCode::NoError),
    ] {
        let mut req = request(&format!("{name}.{z}"), RecordType::AAAA, true);
        let e = req.edns.as_mut().unwrap();
        e.set_dnssec_ok(true);
        // The same question without the flag first, so that a cached
        // answer would be the wrong one.
        for _ in 0..2 {
            let m = udp(s.dns, &req).await.unwrap();
            assert_eq!(
                m.metadata.response_code,
                hickory_proto::op::ResponseCode::NoError
            );
        }
        let e = req.edns.as_mut().unwrap();
        e.flags_mut().z = 0x4000;
        for m in [
            udp(s.dns, &req).await.unwrap(),
            crate::support::tcp(s.dns, &req).await.unwrap(),
        ] {
            assert_eq!(m.metadata.response_code, rcode, "{name}");
            assert_eq!(m.edns.as_ref().unwrap().flags().z, 0x4000, "{name}");
            assert!(
                m.authorities
                    .iter()
                    .any(|r| r.record_type() == RecordType::NSEC
                        && r.name.to_string() == format!("{name}.{z}")),
                "{name}: {m:?}"
            );
        }
    }
    // Without DO the flag means nothing: plain NXDOMAIN, no NSEC, no echo.
    let mut req = request(&format!("nope.{z}"), RecordType::A, true);
    req.edns.as_mut().unwrap().flags_mut().z = 0x4000;
    let m = udp(s.dns, &req).await.unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    assert_eq!(m.edns.as_ref().unwrap().flags().z, 0);
    assert!(
        m.authorities
            .iter()
            .all(|r| r.record_type() != RecordType::NSEC)
    );

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
    assert!(value("gslb_dnssec_signatures_total{source=\"made\"}") >= 1.0);
    assert!(value("gslb_dnssec_signatures_total{source=\"ahead\"}") >= 10.0);
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

/// A ZSK roll by timing metadata alone: the successor (made by `keygen
/// --successor`, published now) takes over signing at its Activate time,
/// when its predecessor goes Inactive (set with BIND's dnssec-settime),
/// with no reload asked for;
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
    // A successor needs its predecessor's Inactive time.
    let out = run(gslb()
        .args(["dnssec", "keygen", "--successor"])
        .arg(&old)
        .arg("--keys")
        .arg(&keys));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no Inactive time"), "{err}");
    assert!(
        !run(gslb()
            .args(["dnssec", "keygen", "--zsk", "--successor"])
            .arg(&old))
        .status
        .success(),
        "--successor takes the kind from its predecessor"
    );
    // The predecessor stops signing 4 s from now (BIND's dnssec-settime);
    // `keygen --successor` (named as BIND names keys) makes the key that
    // signs from then, published now.
    ok(Command::new("dnssec-settime")
        .args(["-I", "+4", "-K"])
        .arg(&keys)
        .arg(old.file_stem().unwrap()));
    let before: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ok(gslb()
        .args(["dnssec", "keygen", "--successor"])
        .arg(old.file_stem().unwrap())
        .arg("--keys")
        .arg(&keys));
    let new = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !before.contains(p) && p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    // BIND reads the successor's times as written: it signs when its
    // predecessor stops, is published already, and is a ZSK as well.
    let settime = |key: &Path, what: &str| -> String {
        ok(Command::new("dnssec-settime")
            .args(["-p", what, "-K"])
            .arg(&keys)
            .arg(key.file_stem().unwrap()))
        .split_once(": ")
        .unwrap()
        .1
        .trim()
        .to_string()
    };
    assert_eq!(settime(&new, "A"), settime(&old, "I"));
    assert_ne!(settime(&new, "P"), "UNSET");
    assert!(
        std::fs::read_to_string(&new)
            .unwrap()
            .contains(" DNSKEY 256 3 13 ")
    );
    let zone = format!(
        "[zone]\nname = \"{SIGNED}.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[dnssec]\nkeys = \"keys\"\n\n[[record]]\nname = \"static\"\ntype = \"A\"\nvalue = \"192.0.2.10\"\n"
    );
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| copy_dir(&keys, &d.join("keys")),
        |st| st.admin = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let name = format!("static.{SIGNED}.");
    let (old_tag, new_tag) = (tag_of(&old), tag_of(&new));
    assert_eq!(signing_tags(&s, &name).await, [old_tag]);
    // `gslb dnssec status` shows the roll to come: both ZSKs, the
    // successor published, one event for both keys.
    let admin = s.server.admin_addr.unwrap().to_string();
    let dnssec_status = |json: bool| {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = gslb();
            cmd.args(["dnssec", "status", SIGNED, "--admin", &admin]);
            if json {
                cmd.arg("--json");
            }
            ok(&mut cmd)
        })
    };
    let text = dnssec_status(false).await.unwrap();
    let line_of = |text: &str, tag: u16| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("key {tag} in\n{text}"))
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line_of(&text, old_tag),
        format!("{old_tag} 13 ZSK active"),
        "{text}"
    );
    assert_eq!(
        line_of(&text, new_tag),
        format!("{new_tag} 13 ZSK published"),
        "{text}"
    );
    let event = text.lines().find(|l| l.contains("next key event")).unwrap();
    assert!(
        event.contains(&format!("key {old_tag} stops signing"))
            && event.contains(&format!("key {new_tag} becomes active")),
        "{text}"
    );
    assert!(!text.contains("PrivateKey"), "{text}");
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
    // After the event: the old key retired, the new one active, as JSON.
    let v: serde_json::Value = serde_json::from_str(&dnssec_status(true).await.unwrap()).unwrap();
    let state_of = |tag: u16| {
        v[0]["dnssec"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["tag"] == tag)
            .map(|k| k["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of(old_tag).as_deref(), Some("retired"), "{v}");
    assert_eq!(state_of(new_tag).as_deref(), Some("active"), "{v}");
    assert_eq!(
        v[0]["dnssec"]["next_key_event"],
        serde_json::Value::Null,
        "{v}"
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

// ---------------------------------------------------------------------------
// Unbound as the validating resolver, the way a real client reaches gslb:
// a stub zone to gslb, the DS that `gslb dnssec ds` prints as its trust
// anchor, every outgoing query bound to loopback.

/// A running Unbound that validates `SIGNED` through a stub zone to gslb.
struct Unbound {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    _child: crate::support::Child,
}

impl Unbound {
    /// Unbound with `anchor` (a DS line) as the zone's trust anchor,
    /// sending ECS to gslb, caching nothing longer than a second; `extra`
    /// adds `server:` lines (`val-override-date`).
    async fn start(gslb: std::net::SocketAddr, anchor: &str, extra: &str) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let addr = crate::support::free_udp_tcp_addr();
        let conf = format!(
            r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    outgoing-interface: 127.0.0.1
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    qname-minimisation: no
    aggressive-nsec: no
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    module-config: "subnetcache validator iterator"
    send-client-subnet: 127.0.0.0/8
    client-subnet-always-forward: yes
    trust-anchor: "{anchor}"
{extra}
stub-zone:
    name: "{SIGNED}."
    stub-addr: {ip}@{gport}
remote-control:
    control-enable: no
"#,
            port = addr.port(),
            dir = dir.path().display(),
            ip = gslb.ip(),
            gport = gslb.port(),
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        ok(Command::new("unbound-checkconf").arg(&path));
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("unbound runs: {e} (scripts/test installs unbound)"));
        let u = Unbound {
            addr,
            dir,
            _child: crate::support::Child(child),
        };
        wait_until(Duration::from_secs(10), "unbound answers", || async {
            udp(addr, &request(&format!("{SIGNED}."), RecordType::SOA, true))
                .await
                .is_some()
        })
        .await;
        u
    }

    /// dig through Unbound (DO set, `subnet` as ECS if given), on a
    /// blocking thread: the status, whether AD is set, and the answer's
    /// records of type `rtype` as "TYPE data".
    async fn ask(&self, name: &str, rtype: &str, subnet: Option<&str>) -> Answer {
        let (addr, name, rtype, subnet) = (
            self.addr,
            name.to_string(),
            rtype.to_string(),
            subnet.map(str::to_string),
        );
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new("dig");
            cmd.arg(format!("@{}", addr.ip()))
                .args(["-p", &addr.port().to_string()])
                .args([
                    "+dnssec",
                    "+noall",
                    "+comments",
                    "+answer",
                    "+nosplit",
                    "+tries=1",
                ])
                .args(["+time=5", &name, &rtype]);
            if let Some(s) = subnet {
                cmd.arg(format!("+subnet={s}"));
            }
            ok(&mut cmd)
        })
        .await
        .unwrap();
        let status = out
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("none")
            .to_string();
        let ad = out
            .lines()
            .find(|l| l.contains(";; flags:"))
            .is_some_and(|l| l.split(';').nth(2).is_some_and(|f| f.contains(" ad")));
        let records = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5 && f[3] != "RRSIG").then(|| format!("{} {}", f[3], f[4..].join(" ")))
            })
            .collect();
        Answer {
            status,
            ad,
            records,
            text: out,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

/// What dig printed of one answer through Unbound.
#[derive(Debug)]
struct Answer {
    status: String,
    ad: bool,
    /// "TYPE data" of each answer record (RRSIGs left out).
    records: Vec<String>,
    text: String,
}

impl Answer {
    /// Secure (AD) and NOERROR, with `want` among the records (or no
    /// records at all when `want` is empty: a denial).
    fn assert_secure(&self, what: &str, want: &str) {
        assert!(
            self.status == "NOERROR" && self.ad,
            "{what}: NOERROR with AD:\n{}",
            self.text
        );
        if want.is_empty() {
            assert!(self.records.is_empty(), "{what}: a denial:\n{}", self.text);
        } else {
            assert!(
                self.records.iter().any(|r| r == want),
                "{what}: {want:?} in\n{}",
                self.text
            );
        }
    }
}

/// The zone of `signed_zone` and a region of each kind: weighted,
/// all-healthy, geo and nearest services (clients in 198.51.100.0/24 are
/// at `west`).
fn every_policy_zone(dir: &Path, backend: std::net::SocketAddr) -> String {
    let mut z = signed_zone(dir, backend, &[]);
    z.push_str(
        r#"
[region.east]
endpoints = ["127.0.0.5"]
location = [39.0, -77.5]

[region.west]
endpoints = ["127.0.0.6"]
location = [53.3, -6.3]

[service.weighted]
policy = "weighted"
weights = { east = 1, west = 0 }

[service.all]
policy = "all-healthy"
regions = ["primary", "secondary"]

[geo.world]
nets = { "198.51.100.0/24" = "west" }

[service.geo]
policy = "geo"
geo = "world"
map = { west = ["west", "east"], "*" = ["east", "west"] }

[service.near]
policy = "nearest"
geo = "world"
regions = ["east", "west"]

[check.closed]
type = "tcp"
port = 9
interval = "200ms"
timeout = "150ms"

[region.dead]
endpoints = ["127.0.0.7"]
check = "closed"

[service.down-open]
regions = ["dead"]

[service.down-last]
regions = ["dead"]
when-all-down = "last-resort"
last-resort = "east"

[service.down-nodata]
regions = ["dead"]
when-all-down = "nodata"
"#,
    );
    z
}

#[tokio::test]
async fn unbound_finds_every_kind_of_answer_secure_and_a_bad_anchor_or_date_bogus() {
    let mut backend = Backend::start("127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = every_policy_zone(dir.path(), backend.addr);
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| {
            let _ = std::fs::remove_dir_all(d.join("keys"));
            copy_dir(&dir.path().join("keys"), &d.join("keys"));
        },
        |_| {},
    )
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    wait_until(Duration::from_secs(5), "region dead is down", || async {
        s.query(&format!("down-nodata.{SIGNED}."), RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    let ds: Vec<String> = ok(gslb()
        .args(["dnssec", "ds", SIGNED, "--keys"])
        .arg(s.zone_path("keys")))
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(ds.len(), 1, "{ds:?}");
    let unbound = Unbound::start(s.dns, &ds[0], "").await;
    let z = format!("{SIGNED}.");
    let n = |label: &str| format!("{label}.{z}");
    let cases: Vec<(String, &str, Option<&str>, String)> = vec![
        (z.clone(), "SOA", None, String::new()),
        (z.clone(), "NS", None, "NS ns1.example.net.".into()),
        (z.clone(), "DNSKEY", None, String::new()),
        (z.clone(), "MX", None, "MX 10 mail.example.net.".into()),
        (n("static"), "A", None, "A 192.0.2.10".into()),
        (n("txt"), "TXT", None, "TXT \"signed text\"".into()),
        (n("alias"), "A", None, "A 192.0.2.10".into()),
        (n("x.wild"), "A", None, "A 192.0.2.20".into()),
        (n("www"), "A", None, "A 127.0.0.1".into()),
        (n("weighted"), "A", None, "A 127.0.0.5".into()),
        (n("all"), "A", None, "A 127.0.0.2".into()),
        (n("geo"), "A", None, "A 127.0.0.5".into()),
        (n("geo"), "A", Some("198.51.100.0/24"), "A 127.0.0.6".into()),
        (
            n("near"),
            "A",
            Some("198.51.100.0/24"),
            "A 127.0.0.6".into(),
        ),
        // Every region down: each all-down rule's answer, signed.
        (n("down-open"), "A", None, "A 127.0.0.7".into()),
        (n("down-last"), "A", None, "A 127.0.0.5".into()),
    ];
    for (name, rtype, subnet, want) in &cases {
        let a = unbound.ask(name, rtype, *subnet).await;
        let what = format!("{name} {rtype} {subnet:?}");
        if want.is_empty() {
            assert!(
                a.status == "NOERROR" && a.ad && !a.records.is_empty(),
                "{what}: {}",
                a.text
            );
        } else {
            a.assert_secure(&what, want);
        }
    }
    // The CDS the parent may poll is the DS gslb prints.
    let cds = unbound.ask(&z, "CDS", None).await;
    cds.assert_secure("CDS", &ds[0].replace(&format!("{z} IN DS "), "CDS "));
    let cdnskey = unbound.ask(&z, "CDNSKEY", None).await;
    assert!(
        cdnskey.ad
            && cdnskey
                .records
                .iter()
                .any(|r| r.starts_with("CDNSKEY 257 3 13 ")),
        "{}",
        cdnskey.text
    );
    // Denials: no such name, no such type, no DS at the delegation.
    unbound
        .ask(&n("nope"), "A", None)
        .await
        .assert_secure("NXDOMAIN", "");
    unbound
        .ask(&n("static"), "AAAA", None)
        .await
        .assert_secure("NODATA", "");
    unbound
        .ask(&n("www"), "TXT", None)
        .await
        .assert_secure("service NODATA", "");
    unbound
        .ask(&n("child"), "DS", None)
        .await
        .assert_secure("no DS", "");
    unbound
        .ask(&n("alias"), "AAAA", None)
        .await
        .assert_secure("CNAME, then NODATA", &format!("CNAME static.{z}"));
    unbound
        .ask(&n("dangling"), "A", None)
        .await
        .assert_secure("CNAME, then no such name", &format!("CNAME nowhere.{z}"));
    unbound
        .ask(&n("secure"), "DS", None)
        .await
        .assert_secure("a DS", &format!("DS {SECURE_DS}"));
    unbound
        .ask(&n("down-nodata"), "A", None)
        .await
        .assert_secure("all down, nodata", "");
    // After a failover the new answer is secure as soon as it is given.
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query(&n("www"), RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    // A timeline of Unbound's answers until it gives the new one: each
    // secure, each the old or the new address.
    let mut seen: Vec<Vec<String>> = Vec::new();
    let limit = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let a = unbound.ask(&n("www"), "A", None).await;
        assert!(
            a.status == "NOERROR" && a.ad,
            "every answer secure: {}",
            a.text
        );
        seen.push(a.records.clone());
        if a.records == ["A 127.0.0.2"] {
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "Unbound follows: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter()
            .all(|r| *r == ["A 127.0.0.1"] || *r == ["A 127.0.0.2"]),
        "{seen:?}"
    );
    assert!(
        !unbound.log().contains("validation failure"),
        "{}",
        unbound.log()
    );

    // The negative cases, so this test can fail: a DS that is not the
    // key's, and a date past every signature's expiration, are bogus.
    let mut wrong = ds[0].clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let bad = Unbound::start(s.dns, &wrong, "").await;
    let a = bad.ask(&n("static"), "A", None).await;
    assert_eq!(a.status, "SERVFAIL", "{}", a.text);
    let later = std::time::SystemTime::now() + Duration::from_secs(60 * 86_400);
    let later = later
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = Unbound::start(
        s.dns,
        &ds[0],
        &format!("    val-override-date: \"{later}\"\n"),
    )
    .await;
    let a = expired.ask(&n("static"), "A", None).await;
    assert_eq!(a.status, "SERVFAIL", "{}", a.text);
    assert!(expired.log().contains("expired"), "{}", expired.log());
    backend.kill();
}

/// Three cluster nodes with the same key files: each one's answers, the
/// failover's included, validate whichever node a resolver asks, and they
/// publish one DNSKEY set (the same keys, the same records), so a
/// validator may move between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cluster_nodes_with_the_same_keys_each_give_answers_that_validate() {
    let etcd = crate::etcd::Etcd::start().await;
    let mut backend = Backend::start("127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = signed_zone(dir.path(), backend.addr, &[]);
    let name = crate::cluster::cluster_name();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let cs = crate::cluster::settings(&etcd, &name, i, gslb::model::Quorum::Majority);
        let keys = dir.path().join("keys");
        nodes.push(
            TestServer::start_prepared(
                &[("z.toml", &zone)],
                move |d| {
                    let _ = std::fs::remove_dir_all(d.join("keys"));
                    copy_dir(&keys, &d.join("keys"));
                },
                move |st| st.cluster = Some(cs),
            )
            .await,
        );
    }
    for n in &nodes {
        n.wait_first_verdicts(Duration::from_secs(10)).await;
    }
    let anchor = anchors(&dir.path().join("keys"), false);
    let z = format!("{SIGNED}.");
    let www = format!("www.{z}");
    let validate_all = |want: &'static str| {
        let servers: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.dns).collect();
        let (anchor, www) = (anchor.clone(), www.clone());
        async move {
            for server in servers {
                for (qname, rtype, expect) in [
                    (www.clone(), "A", want),
                    (format!("static.{SIGNED}."), "A", "192.0.2.10"),
                    (format!("nope.{SIGNED}."), "A", "negative response"),
                ] {
                    let a = anchor.clone();
                    let out = tokio::task::spawn_blocking(move || delv(server, &a, &qname, rtype))
                        .await
                        .unwrap();
                    assert!(
                        out.contains("fully validated") && out.contains(expect),
                        "{server}: {expect:?}, validated, in\n{out}"
                    );
                }
            }
        }
    };
    validate_all("127.0.0.1").await;
    // One DNSKEY set, record for record, on every node.
    let mut sets = Vec::new();
    for n in &nodes {
        let mut req = request(&z, RecordType::DNSKEY, true);
        req.edns.as_mut().unwrap().set_dnssec_ok(true);
        let m = udp(n.dns, &req).await.unwrap();
        let mut keys: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .map(|r| r.data.to_string())
            .collect();
        keys.sort();
        assert!(!keys.is_empty());
        sets.push(keys);
    }
    assert!(sets.windows(2).all(|w| w[0] == w[1]), "{sets:?}");
    // The failover, decided by the cluster, validates on every node.
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(10), "every node fails over", || async {
        for n in &nodes {
            if addrs(&n.query(&www, RecordType::A).await) != ["127.0.0.2"] {
                return false;
            }
        }
        true
    })
    .await;
    validate_all("127.0.0.2").await;
    backend.kill();
}

/// DNSViz, the analyser operators paste their zones into, probing gslb as
/// the zone's only authoritative server (in-zone NS with glue at
/// 127.53.0.1:53, so each query it makes stays on loopback), then judging
/// the result from the zone's own key: every name it asked about is
/// SECURE, and it finds no error, nor a warning. (No MX here: DNSViz
/// 0.11.2's grok stopped with a TypeError in its negative-response check
/// when the MX target was also among the names analysed, not yet looked
/// into; Unbound and delv check MX.)
#[tokio::test]
async fn dnsviz_finds_the_signed_zone_secure_and_without_errors() {
    let mut backend = Backend::start("127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    ok(gslb()
        .args(["dnssec", "keygen", SIGNED, "--keys"])
        .arg(&keys));
    let zone = format!(
        r#"[zone]
name = "{SIGNED}."
nameservers = ["ns1.{SIGNED}."]
hostmaster = "hostmaster@example.com"

[dnssec]
keys = "keys"

[[record]]
name = "ns1"
type = "A"
value = "127.53.0.1"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"

{}"#,
        failover_www(backend.addr.port())
    );
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| copy_dir(&keys, &d.join("keys")),
        |st| st.listen = vec!["127.53.0.1:53".parse().unwrap()],
    )
    .await;
    s.wait_first_verdicts(Duration::from_secs(5)).await;
    let ksk = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let z = format!("{SIGNED}.");
    let names: Vec<String> = ["", "static.", "www.", "nope."]
        .iter()
        .map(|l| format!("{l}{z}"))
        .collect();
    // DNSViz 0.11.2 (scripts/test installs it there), probing gslb as the
    // zone's only server with nothing above it (`+`: no query goes to a
    // parent or the root); with no parent, the CDS and CDNSKEY sets stand
    // for the DS set (--trust-cdnskey-cds), so their signer is checked too.
    let dnsviz = "/usr/local/bin/dnsviz";
    let analyse = |tag: &str| {
        let (out, names, ksk, z) = (
            dir.path().join(format!("probe-{tag}.json")),
            names.clone(),
            ksk.clone(),
            z.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let run_dnsviz = |args: &[&str]| {
                let out = Command::new(dnsviz)
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("{dnsviz}: {e} (scripts/test installs DNSViz 0.11.2 there)")
                    });
                assert!(
                    out.status.success(),
                    "dnsviz {args:?}: {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            };
            let out = out.to_str().unwrap().to_string();
            let ksk = ksk.to_str().unwrap().to_string();
            let server = format!("{z}+:127.53.0.1");
            let mut probe = vec!["probe", "-4", "-A", "-x", &server, "-o", &out];
            probe.extend(names.iter().map(String::as_str));
            run_dnsviz(&probe);
            let grok = |level: &str| {
                run_dnsviz(&[
                    "grok",
                    "--trust-cdnskey-cds",
                    "-l",
                    level,
                    "-t",
                    &ksk,
                    "-r",
                    &out,
                ])
            };
            // Only what is at least a warning: nothing at all.
            let problems = grok("warning");
            let all: serde_json::Value = serde_json::from_str(&grok("info")).unwrap();
            (problems, all)
        })
    };
    let check = |(problems, v): &(String, serde_json::Value)| {
        assert!(
            problems.trim().is_empty() || problems.trim() == "{}",
            "DNSViz found problems:\n{problems}"
        );
        for n in &names {
            assert_eq!(v[n.as_str()]["status"], "NOERROR", "{n}:\n{v:#}");
        }
        let text = v.to_string();
        assert!(text.contains("\"SECURE\""), "{v:#}");
        assert!(
            !text.contains("BOGUS") && !text.contains("INSECURE"),
            "{v:#}"
        );
    };
    // DNSViz reports statuses, not data: which address www gives is asked
    // of gslb itself.
    assert_eq!(
        addrs(&s.query(&format!("www.{z}"), RecordType::A).await),
        ["127.0.0.1"]
    );
    let v = analyse("before").await.unwrap();
    check(&v);
    backend.set(Mode::Failing);
    wait_until(Duration::from_secs(5), "the failover", || async {
        addrs(&s.query(&format!("www.{z}"), RecordType::A).await) == ["127.0.0.2"]
    })
    .await;
    let v = analyse("after").await.unwrap();
    check(&v);
    backend.kill();
}

/// The tags of the CDS records `s` publishes now.
async fn cds_tags(s: &TestServer) -> Vec<u16> {
    let mut req = request(&format!("{SIGNED}."), RecordType::CDS, true);
    req.edns.as_mut().unwrap().set_dnssec_ok(true);
    let m = udp(s.dns, &req).await.unwrap();
    let mut tags: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::CDS(
                cds,
            )) => Some(cds.key_tag()),
            _ => None,
        })
        .collect();
    tags.sort_unstable();
    tags
}

/// A combined key's roll by `keygen --successor`: the successor signs
/// from its publication beside its predecessor, both in the CDS set,
/// until the predecessor's Inactive time (a double-KSK roll): a validator
/// whose DS is the old key's validates until then, one with the new DS
/// from the overlap on, and the CDS set tells the parent which DS to hold
/// at every moment (only the old; both; only the new).
#[tokio::test]
async fn a_combined_key_roll_overlaps_so_either_ds_validates_and_cds_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    ok(gslb()
        .args(["dnssec", "keygen", SIGNED, "--keys"])
        .arg(&keys));
    let old = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    // The old key stops in 6 s; its successor is published (and, being a
    // key-signing key, signs) 3 s before that.
    ok(Command::new("dnssec-settime")
        .args(["-I", "+6", "-K"])
        .arg(&keys)
        .arg(old.file_stem().unwrap()));
    let out = run(gslb()
        .args(["dnssec", "keygen", "--successor"])
        .arg(&old)
        .args(["--prepublish", "3s", "--keys"])
        .arg(&keys));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: key"),
        "a 3 s overlap is warned of"
    );
    let new = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key") && *p != old)
        .unwrap();
    let (old_tag, new_tag) = (tag_of(&old), tag_of(&new));
    // One anchor per key: a validator whose parent holds only that DS.
    let anchor_of = |key: &Path, file: &str| {
        let line = std::fs::read_to_string(key)
            .unwrap()
            .lines()
            .find(|l| l.contains(" DNSKEY "))
            .unwrap()
            .to_string();
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = f.iter().position(|x| *x == "DNSKEY").unwrap();
        let text = format!(
            "trust-anchors {{\n  \"{SIGNED}.\" static-key {} {} {} \"{}\";\n}};\n",
            f[at + 1],
            f[at + 2],
            f[at + 3],
            f[at + 4..].concat()
        );
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (old_anchor, new_anchor) = (anchor_of(&old, "old.anchor"), anchor_of(&new, "new.anchor"));
    let zone = format!(
        "[zone]\nname = \"{SIGNED}.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[dnssec]\nkeys = \"keys\"\n\n[[record]]\nname = \"static\"\ntype = \"A\"\nvalue = \"192.0.2.10\"\n"
    );
    let s = TestServer::start_prepared(
        &[("z.toml", &zone)],
        |d| copy_dir(&keys, &d.join("keys")),
        |_| {},
    )
    .await;
    let server = s.dns;
    let name = format!("static.{SIGNED}.");
    let validates = |anchor: std::path::PathBuf| {
        let name = name.clone();
        async move {
            tokio::task::spawn_blocking(move || delv(server, &anchor, &name, "A"))
                .await
                .unwrap()
                .contains("fully validated")
        }
    };
    // A timeline every 250 ms until the new key alone is in the CDS set:
    // (CDS tags, validates with the old DS, with the new DS).
    let mut timeline: Vec<(Vec<u16>, bool, bool)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // The CDS set read before and after the validations: a sample
        // taken across a key event (they differ) says nothing and is left
        // out.
        let cds = cds_tags(&s).await;
        let with_old = validates(old_anchor.clone()).await;
        let with_new = validates(new_anchor.clone()).await;
        if cds_tags(&s).await != cds {
            assert!(
                std::time::Instant::now() < deadline,
                "no roll: {timeline:?}"
            );
            continue;
        }
        let done = cds == [new_tag];
        timeline.push((cds, with_old, with_new));
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no roll: {timeline:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut both = vec![old_tag, new_tag];
    both.sort_unstable();
    for (cds, with_old, with_new) in &timeline {
        if *cds == [old_tag] {
            assert!(
                with_old,
                "before the overlap the old DS validates: {timeline:?}"
            );
        } else if *cds == both {
            assert!(
                *with_old && *with_new,
                "in the overlap either DS validates: {timeline:?}"
            );
        } else if *cds == [new_tag] {
            assert!(with_new, "after it the new DS validates: {timeline:?}");
        } else {
            panic!("CDS set {cds:?}: {timeline:?}");
        }
    }
    // Old, then both, then new: never a step back, and the overlap seen.
    let phase = |c: &Vec<u16>| {
        if *c == [old_tag] {
            0
        } else if *c == both {
            1
        } else {
            2
        }
    };
    let phases: Vec<u8> = timeline.iter().map(|(c, _, _)| phase(c)).collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{timeline:?}");
    assert!(phases.contains(&0) && phases.contains(&1), "{timeline:?}");
}

/// `keygen` and `ds` with `--zones`: the key folder is the one the zone's
/// `[dnssec] keys` names, relative to its zone file, as `serve` reads it;
/// a zone without `[dnssec]`, or not in the files, is an error that says
/// so.
#[test]
fn keygen_and_ds_find_the_key_folder_from_the_zone_files() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(
        zones.join("signed.toml"),
        format!(
            "[zone]\nname = \"{SIGNED}\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n\n[dnssec]\nkeys = \"../k\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        zones.join("plain.toml"),
        "[zone]\nname = \"plain.example.com.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n",
    )
    .unwrap();
    ok(gslb()
        .args(["dnssec", "keygen", SIGNED, "--zones"])
        .arg(&zones));
    // `../k` from the zone file: beside the zones folder.
    let made: Vec<_> = std::fs::read_dir(dir.path().join("k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(made.len(), 2, "{made:?}");
    let ds = ok(gslb().args(["dnssec", "ds", SIGNED, "--zones"]).arg(&zones));
    let by_dir = ok(gslb()
        .args(["dnssec", "ds", SIGNED, "--keys"])
        .arg(dir.path().join("k")));
    assert!(ds.contains(" IN DS "), "{ds}");
    assert_eq!(ds, by_dir);
    // The zone files load with those keys as they are.
    ok(gslb().arg("check").arg(&zones));
    for (zone, code, says) in [
        ("plain.example.com", 1, "has no [dnssec] table"),
        ("other.example.com", 1, "no zone file in"),
    ] {
        let out = run(gslb()
            .args(["dnssec", "keygen", zone, "--zones"])
            .arg(&zones));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{zone}: {err}");
        assert!(err.contains(says), "{zone}: {err}");
    }
}
