use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};

use super::*;
use crate::model::{Policy, RegionTarget, StatusRange, WhenAllDown};

const HEAD: &str = r#"[zone]
name = "z.example."
nameservers = ["ns1.example.net."]
hostmaster = "h.example.net."
"#;

/// Load one zone file, read whole and read one `[[record]]` per piece
/// (config/split.rs): both must give the same zone or the same errors.
fn load_one(text: &str) -> Result<Config, ConfigErrors> {
    let load = |per_piece| {
        zone::PER_PIECE.with(|c| c.set(per_piece));
        let r = load_sources(
            &[(PathBuf::from("z.toml"), text.to_string())],
            LoadOptions { auto_serial: 7 },
        );
        zone::PER_PIECE.with(|c| c.set(usize::MAX));
        r
    };
    let whole = load(usize::MAX);
    let in_pieces = load(1);
    assert_eq!(
        outline(&whole),
        outline(&in_pieces),
        "read whole and in pieces:\n{text}"
    );
    whole
}

/// A zone's label, record count and names with their records.
type ZoneOutline = (String, usize, Vec<String>);

/// What a load gave, to compare two: each zone's outline, or the messages.
fn outline(r: &Result<Config, ConfigErrors>) -> Result<Vec<ZoneOutline>, Vec<String>> {
    match r {
        Ok(cfg) => Ok(cfg
            .zones
            .iter()
            .map(|z| {
                let mut names: Vec<String> = z
                    .nodes
                    .iter()
                    .map(|(k, n)| format!("{k} {:?}", z.rrsets(n).collect::<Vec<_>>()))
                    .collect();
                names.sort();
                (z.label(), z.record_count, names)
            })
            .collect()),
        Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
    }
}

fn errors(text: &str) -> Vec<String> {
    load_one(text)
        .expect_err("must fail")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn defaults_fill_the_soa() {
    let cfg = load_one(HEAD).unwrap();
    let z = &cfg.zones[0];
    let RData::SOA(soa) = &z.soa.data else {
        panic!()
    };
    assert_eq!(soa.serial, 7, "auto serial when unset");
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (3600, 600, 604_800, 60)
    );
    assert_eq!(z.soa.ttl, DEFAULT_TTL);
    assert_eq!(z.negative_ttl, 60);
    assert_eq!(z.record_count, 2, "SOA and one NS");
}

#[test]
fn negative_ttl_is_min_of_soa_ttl_and_minimum() {
    let cfg = load_one(&HEAD.replace("[zone]", "[zone]\nttl = 30\nnegative-ttl = 900")).unwrap();
    assert_eq!(cfg.zones[0].negative_ttl, 30);
}

#[test]
fn unknown_keys_are_rejected_in_every_table() {
    let region = "\n[region.r]\nendpoints = [\"192.0.2.1\"]\n";
    let cases = [
        HEAD.replace("[zone]", "[zone]\nbogus = 1"),
        format!(
            "{HEAD}\n[[record]]\nname = \"a\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\nbogus = 1\n"
        ),
        format!("{HEAD}\n[check.c]\ntype = \"tcp\"\nport = 1\nbogus = 1\n"),
        format!("{HEAD}\n[region.r]\nendpoints = [\"192.0.2.1\"]\nbogus = 1\n"),
        format!("{HEAD}{region}\n[service.s]\nregions = [\"r\"]\nbogus = 1\n"),
        format!("{HEAD}\n[bogus]\nx = 1\n"),
    ];
    for text in cases {
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("unknown field `bogus`"), "{errs:?}");
        assert!(errs[0].starts_with("z.toml:"), "{errs:?}");
    }
}

#[test]
fn relative_absolute_apex_and_wildcard_names() {
    let text = format!(
        "{HEAD}\n[[record]]\nname = \"@\"\ntype = \"TXT\"\nvalue = \"apex\"\n\
         [[record]]\nname = \"a.z.example.\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n\
         [[record]]\nname = \"b\"\ntype = \"CNAME\"\nvalue = \"a\"\n\
         [[record]]\nname = \"*.w\"\ntype = \"A\"\nvalue = \"192.0.2.2\"\n"
    );
    let cfg = load_one(&text).unwrap();
    let z = &cfg.zones[0];
    let key = |s: &str| LowerName::new(&Name::from_ascii(s).unwrap());
    assert!(
        z.rrset(&z.nodes[&key("z.example.")], RecordType::TXT)
            .is_some()
    );
    assert!(
        z.rrset(&z.nodes[&key("a.z.example.")], RecordType::A)
            .is_some()
    );
    let cname = z
        .rrset(&z.nodes[&key("b.z.example.")], RecordType::CNAME)
        .unwrap()
        .rdatas()
        .next()
        .unwrap();
    assert_eq!(cname.to_string(), "a.z.example.");
    assert!(z.has_wildcards);
    assert!(
        z.nodes[&key("w.z.example.")].is_empty_non_terminal(),
        "parent of a wildcard exists"
    );
}

#[test]
fn checks_regions_and_services_are_built() {
    let text = format!(
        r#"{HEAD}
[check.web]
type = "https"
path = "/health"
host = "api.example.com"
expect-status = [200, "300-302"]
expect-body = "ok"
interval = "1s"
timeout = "500ms"
recheck = "100ms"
reuse-connection = false
fall = 3
rise = 2

[check.plain]
type = "http"

[check.port]
type = "tcp"
port = 5432
recheck = false

[region.east]
endpoints = ["192.0.2.10", "2001:db8::10"]
check = "web"
min-healthy = 2

[region.west]
endpoints = ["192.0.2.20"]
check = "port"

[region.cloud]
cname = "lb.cloud.example.net."

[service.api]
policy = "failover"
regions = ["east", "west", "cloud"]
ttl = 20

[service.www]
policy = "weighted"
weights = {{ east = 3, west = 1 }}
answers = 2

[service."@"]
policy = "all-healthy"
regions = ["east", "west"]
max-records = 4
when-all-down = "servfail"

[service."*.edge"]
regions = ["west"]
last-resort = "east"
"#
    );
    let cfg = load_one(&text).unwrap();
    let z = &cfg.zones[0];
    let web = &z.checks["web"];
    assert_eq!(web.port, 443);
    let http = |c: &str| z.checks[c].http().expect("an http check").clone();
    assert_eq!(
        http("web").expect_status,
        vec![
            StatusRange { lo: 200, hi: 200 },
            StatusRange { lo: 300, hi: 302 }
        ]
    );
    assert_eq!(web.recheck, Some(Duration::from_millis(100)));
    assert_eq!(z.checks["port"].recheck, None);
    assert!(!http("web").reuse_connection);
    assert!(http("plain").reuse_connection, "reused by default");
    assert_eq!(z.regions["east"].min_healthy, 2);
    assert_eq!(
        z.regions["cloud"].target,
        RegionTarget::Alias(Name::from_ascii("lb.cloud.example.net.").unwrap())
    );
    let svc = |k: &str| z.services.iter().find(|s| s.key == k).unwrap();
    assert_eq!(svc("api").policy, Policy::Failover);
    assert_eq!(svc("api").degraded_ttl, 10);
    assert_eq!(svc("www").policy, Policy::Weighted { answers: 2 });
    assert_eq!(svc("www").degraded_ttl, 10);
    let weights: Vec<(String, u32)> = svc("www")
        .regions
        .iter()
        .map(|r| (r.region.name.clone(), r.weight))
        .collect();
    assert_eq!(weights, [("east".to_string(), 3), ("west".to_string(), 1)]);
    assert_eq!(svc("@").name.to_ascii(), "z.example.");
    assert_eq!(svc("@").when_all_down, WhenAllDown::ServFail);
    assert!(matches!(&svc("*.edge").when_all_down, WhenAllDown::LastResort(r) if r.name == "east"));
    // Regions are indexed in name order for the health cells.
    let idx: Vec<(String, usize)> = z
        .regions
        .values()
        .map(|r| (r.name.clone(), r.index))
        .collect();
    assert_eq!(
        idx,
        [
            ("cloud".to_string(), 0),
            ("east".to_string(), 1),
            ("west".to_string(), 2)
        ]
    );
}

#[test]
fn service_rules() {
    let base = format!(
        "{HEAD}\n[region.r]\nendpoints = [\"192.0.2.1\"]\n\n[region.c]\ncname = \"x.example.net.\"\n"
    );
    let cases = [
        (
            "[service.s]\npolicy = \"all-healthy\"\nregions = [\"r\", \"c\"]\n",
            "cname region can only be answered alone",
        ),
        (
            "[service.\"@\"]\nregions = [\"c\"]\n",
            "no CNAME at the zone apex",
        ),
        ("[service.s]\nregions = [\"r\", \"r\"]\n", "listed twice"),
        (
            "[service.s]\nregions = [\"r\"]\nweights = { r = 1 }\n",
            "not both",
        ),
        (
            "[service.s]\nregions = [\"r\"]\nanswers = 2\n",
            "weighted and nearest policies only",
        ),
        (
            "[service.s]\nregions = [\"r\"]\nttl = 5\ndegraded-ttl = 9\n",
            "above ttl",
        ),
        (
            "[service.s]\nregions = [\"r\"]\nwhen-all-down = \"last-resort\"\n",
            "needs `last-resort",
        ),
        (
            "[service.s]\nregions = [\"r\"]\nwhen-all-down = \"nodata\"\nlast-resort = \"r\"\n",
            "only used with",
        ),
        ("[service.s]\nregions = []\n", "regions is empty"),
        (
            "[service.\"other.example.\"]\nregions = [\"r\"]\n",
            "outside the zone",
        ),
        (
            "[service.s]\nregions = [\"c\"]\n[[record]]\nname = \"s\"\ntype = \"TXT\"\nvalue = \"x\"\n",
            "allows no other data",
        ),
    ];
    for (tail, want) in cases {
        let errs = errors(&format!("{base}\n{tail}"));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{tail}: want {want:?}, got {errs:?}"
        );
    }
    // A TXT beside a service that answers addresses is fine.
    load_one(&format!("{base}\n[service.s]\nregions = [\"r\"]\n[[record]]\nname = \"s\"\ntype = \"TXT\"\nvalue = \"x\"\n")).unwrap();
}

#[test]
fn check_rules() {
    let cases = [
        ("type = \"ping\"", "unknown check type"),
        ("type = \"tcp\"", "needs `port`"),
        (
            "type = \"tcp\"\nport = 1\npath = \"/x\"",
            "applies to http and https",
        ),
        (
            "type = \"http\"\ninterval = \"50ms\"\ntimeout = \"10ms\"",
            "at least 100ms",
        ),
        ("type = \"http\"\ninterval = \"fast\"", "not a duration"),
        (
            "type = \"tcp\"\nport = 1\nreuse-connection = true",
            "`reuse-connection` applies to http and https",
        ),
        (
            "type = \"tcp\"\nport = 1\nca-file = \"ca.pem\"",
            "`ca-file` applies to grpc and https checks, not tcp",
        ),
        ("type = \"dns\"", "a dns check needs `query-name`"),
        ("type = \"exec\"", "an exec check needs `command`"),
        ("type = \"grpc\"", "a grpc check needs `port`"),
        (
            "type = \"grpc\"\nport = 50051\ntls-verify = false",
            "`tls-verify` needs `tls = true`",
        ),
        (
            "type = \"grpc\"\nport = 50051\nfail-expiry = \"3d\"",
            "`fail-expiry` needs `tls = true`",
        ),
        (
            "type = \"tcp\"\nport = 1\nwarn-expiry = \"30d\"",
            "`warn-expiry` applies to grpc and https checks, not tcp",
        ),
        (
            "type = \"http\"\nfail-expiry = \"3d\"",
            "`fail-expiry` applies to grpc and https checks, not http",
        ),
        (
            "type = \"https\"\nwarn-expiry = \"soon\"",
            "warn-expiry \"soon\" is not a duration",
        ),
        (
            "type = \"https\"\nfail-expiry = \"0s\"",
            "fail-expiry must be above zero",
        ),
        (
            "type = \"https\"\nfail-expiry = \"30d\"",
            "fail-expiry 30days is beyond warn-expiry 14days: the probe would fail before any warning",
        ),
        (
            "type = \"grpc\"\nport = 50051\npath = \"/\"",
            "`path` applies to http and https checks, not grpc",
        ),
        (
            "type = \"http\"\nservice = \"app\"",
            "`service` applies to grpc checks, not http",
        ),
        ("type = \"exec\"\ncommand = []", "command is empty"),
        (
            "type = \"exec\"\ncommand = [\"check.sh\"]",
            "command \"check.sh\": the program must be an absolute path (no PATH search)",
        ),
        (
            "type = \"exec\"\ncommand = [\"/nonexistent/gslb-check\"]",
            "command \"/nonexistent/gslb-check\": does not exist",
        ),
        (
            "type = \"exec\"\ncommand = [\"/etc/passwd\"]",
            "command \"/etc/passwd\": is not executable",
        ),
        (
            "type = \"exec\"\ncommand = [\"/bin/sh\"]\nuser = \"no-such-user-gslb\"",
            "user \"no-such-user-gslb\" does not exist on this host",
        ),
        (
            "type = \"exec\"\ncommand = [\"/bin/sh\"]\nmax-running = 0",
            "max-running 0 is out of range",
        ),
        (
            "type = \"exec\"\ncommand = [\"/bin/sh\"]\nquery-name = \"x\"",
            "`query-name` applies to dns checks, not exec",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\npath = \"/\"",
            "`path` applies to http and https checks, not dns",
        ),
        (
            "type = \"http\"\nquery-name = \"www.example\"",
            "`query-name` applies to dns checks, not http",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\nquery-type = \"AXFR\"",
            "query-type \"AXFR\" is not a record type to ask for",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\nexpect-rcode = \"OK\"",
            "expect-rcode \"OK\" is not one of NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP or REFUSED",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\nexpect-answer = \"not-an-address\"",
            "expect-answer: A value \"not-an-address\" is not an IPv4 address",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\nquery-type = \"SOA\"\nexpect-answer = \"x\"",
            "expect-answer works with query-type A, AAAA",
        ),
        (
            "type = \"dns\"\nquery-name = \"www.example\"\nexpect-rcode = \"NXDOMAIN\"\nexpect-answer = \"192.0.2.1\"",
            "expect-answer needs expect-rcode NOERROR",
        ),
        (
            "type = \"http\"\nexpect-status = [\"200-1000\"]",
            "expect-status",
        ),
        ("type = \"http\"\nmethod = \"POST\"", "GET or HEAD"),
        ("type = \"http\"\npath = \"health\"", "must start with /"),
        ("type = \"http\"\nfall = 0", "fall 0 is out of range"),
        (
            "type = \"http\"\ntarget = \"localhost:80\"",
            "not ADDR:PORT",
        ),
        (
            "type = \"https\"\nca-file = \"/nonexistent.pem\"",
            "does not exist",
        ),
        (
            "type = \"http\"\nmethod = \"HEAD\"\nexpect-body = \"ok\"",
            "cannot be checked with method HEAD",
        ),
        (
            "type = \"https\"\nhost = \"api.test:8443\"",
            "not a host name",
        ),
        (
            "type = \"http\"\nheaders = { \"Bad Header\" = \"x\" }",
            "not a valid HTTP header",
        ),
    ];
    for (body, want) in cases {
        let errs = errors(&format!("{HEAD}\n[check.c]\n{body}\n"));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{body}: want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn caa_mx_srv_values() {
    let apex = Name::from_ascii("z.example.").unwrap();
    let ok = |t: &str, v: &str| match records::parse_rdata(t, v, &apex) {
        Ok(d) => d.to_string(),
        Err(_) => panic!("{t} {v}"),
    };
    assert_eq!(ok("MX", "10 mail"), "10 mail.z.example.");
    assert_eq!(
        ok("SRV", "1 2 3 sip.example.net."),
        "1 2 3 sip.example.net."
    );
    assert!(ok("CAA", "128 iodef \"mailto:sec@example.com\"").contains("iodef"));
    for (t, v) in [
        ("MX", "x mail"),
        ("SRV", "1 2 sip"),
        ("CAA", "0 is-sue x"),
        ("CAA", "300 issue x"),
    ] {
        assert!(records::parse_rdata(t, v, &apex).is_err(), "{t} {v}");
    }
}

#[test]
fn ds_records_are_parsed_and_belong_at_a_delegation() {
    let apex = Name::from_ascii("z.example.").unwrap();
    let digest = "5F1B".repeat(16);
    let d = records::parse_rdata("DS", &format!("12345 13 2 {digest}"), &apex)
        .unwrap_or_else(|_| panic!("DS parses"));
    assert_eq!(d.to_string(), format!("12345 13 2 {digest}"));
    // As dig prints it: the digest in pieces, lower case.
    let split = format!("12345 13 2 {} {}", &digest[..32], &digest[32..]).to_lowercase();
    assert!(records::parse_rdata("DS", &split, &apex).is_ok_and(|x| x == d));
    for bad in [
        "12345 13 2".to_string(),
        format!("x 13 2 {digest}"),
        format!("12345 13 2 {}", &digest[2..]),
        format!("12345 13 9 {digest}"),
        "12345 13 2 nothex".to_string(),
    ] {
        assert!(records::parse_rdata("DS", &bad, &apex).is_err(), "{bad}");
    }
    let head = "[zone]\nname = \"z.example.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n";
    let ds = format!("[[record]]\nname = \"kid\"\ntype = \"DS\"\nvalue = \"1 13 2 {digest}\"\n");
    let errs = errors(&format!("{head}{ds}"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("z.toml:6:8:") && e.contains("belongs at a delegation")),
        "{errs:?}"
    );
    let ns = "[[record]]\nname = \"kid\"\ntype = \"NS\"\nvalue = \"ns.kid.example.net.\"\n";
    assert!(load_one(&format!("{head}{ds}{ns}")).is_ok());
}

#[test]
fn spans_become_line_and_column() {
    let src = Source::new(std::path::Path::new("f"), "ab\ncdé\nx");
    assert_eq!((src.origin(0).line, src.origin(0).col), (1, 1));
    assert_eq!((src.origin(3).line, src.origin(3).col), (2, 1));
    assert_eq!((src.origin(8).line, src.origin(8).col), (3, 1));
    assert_eq!(
        (src.origin(7).line, src.origin(7).col),
        (2, 4),
        "columns count characters, not bytes"
    );
}

/// What serve would fail to probe, `check` (the same loader) refuses.
#[test]
fn checks_that_cannot_be_probed_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "just text, no certificate\n").unwrap();
    let zone = dir.path().join("z.toml");
    let text = format!(
        r#"{HEAD}
[check.spaced]
type = "http"
path = "/health check"

[check.no-pem]
type = "https"
ca-file = "not-pem.crt"

[check.missing]
type = "https"
ca-file = "missing.crt"

[check.header]
type = "http"
headers = {{ "X-Token" = "a\u0007b" }}

[check.tls-on-plain]
type = "http"
tls-verify = false
"#
    );
    let errs: Vec<String> = load_sources(&[(zone, text)], LoadOptions { auto_serial: 7 })
        .expect_err("must fail")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    let want = [
        (
            "z.toml:8:8:",
            "path \"/health check\" is not a request path",
        ),
        ("z.toml:12:11:", "not-pem.crt: holds no PEM certificate"),
        ("z.toml:16:11:", "missing.crt: does not exist"),
        (
            "z.toml:20:11:",
            "header \"X-Token\" is not a valid HTTP header",
        ),
        (
            "z.toml:24:14:",
            "`tls-verify` applies to grpc and https checks, not http",
        ),
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for ((at, msg), got) in want.iter().zip(&errs) {
        assert!(
            got.contains(at) && got.contains(msg),
            "want {at} {msg}, got {got}"
        );
    }
}

#[test]
fn a_zone_name_has_no_wildcard_label() {
    let text = HEAD.replace("name = \"z.example.\"", "name = \"*.example.\"");
    let errs = errors(&text);
    assert!(
        errs[0].contains("z.toml:2:8: invalid zone name \"*.example.\""),
        "{errs:?}"
    );
}

#[test]
fn an_empty_zone_name_is_not_the_root() {
    let text = HEAD.replace("name = \"z.example.\"", "name = \"\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("z.toml:2:8: invalid zone name \"\""),
        "{errs:?}"
    );
}

/// An invalid check makes its regions invalid; a weighted service over them
/// gets no second, misleading error.
#[test]
fn an_invalid_check_causes_no_follow_on_errors() {
    let text = format!(
        r#"{HEAD}
[check.web]
type = "http"
port = 70000

[region.a]
endpoints = ["192.0.2.1"]
check = "web"

[service.www]
policy = "weighted"
weights = {{ a = 1 }}
"#
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("port 70000 is out of range"), "{errs:?}");
}

#[test]
fn invalid_utf8_is_located_by_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.toml");
    let mut bytes = HEAD.as_bytes().to_vec();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&path, bytes).unwrap();
    let err = load(&[path], LoadOptions { auto_serial: 7 }).expect_err("not UTF-8");
    let msg = err.0[0].to_string();
    assert!(msg.contains("z.toml:5:6: not UTF-8: byte 0xe9"), "{msg}");
}

#[test]
fn webhook_errors_never_show_credentials_or_query() {
    let wrong_scheme = check_webhook_url("ftp://user:hunter2@h.example/x?key=s3cret").unwrap_err();
    assert_eq!(
        wrong_scheme,
        "webhook \"ftp://h.example/…\" must be an http:// or https:// URL"
    );
    for bad in [
        "http://user:hunter2@h.example:99999/hook?key=s3cret",
        "http://user:hunter2@[bad/hook#s3cret",
        "user:hunter2@h.example/hook?key=s3cret",
        "hunter2@h.example",
    ] {
        let e = check_webhook_url(bad).unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("s3cret"), "{e}");
        assert!(e.contains("h.example") || e.contains("[bad"), "{e}");
    }
    assert_eq!(
        redact_url("https://u:p@h.example:8443/x/?key=s3cret#frag"),
        "https://h.example:8443/x"
    );
    assert_eq!(redact_url("u:hunter2@10.0.0.1:2379"), "10.0.0.1:2379");
}

// Issue 19 item 3: Slack, Discord and Teams webhooks carry their secret in
// the path, and the whole URL but its query was logged on every retry.
#[test]
fn a_webhook_is_shown_by_scheme_and_host_only() {
    for (url, shown) in [
        (
            "https://hooks.slack.com/services/T00/B00/XXXSECRETXXX",
            "https://hooks.slack.com/…",
        ),
        (
            "https://discord.com/api/webhooks/123/XXXSECRETXXX?wait=true",
            "https://discord.com/…",
        ),
        (
            "http://user:XXXSECRETXXX@[2001:db8::1]:8080/hook",
            "http://[2001:db8::1]:8080/…",
        ),
        ("http://10.0.0.1:9", "http://10.0.0.1:9"),
        (
            "http://h.example:99999/XXXSECRETXXX",
            "http://h.example:99999/…",
        ),
    ] {
        assert_eq!(webhook_label(url), shown, "{url}");
    }
    let e = check_webhook_url("ftp://hooks.example/services/XXXSECRETXXX").unwrap_err();
    assert!(!e.contains("XXXSECRETXXX"), "{e}");
}

const GEO_BASE: &str = r#"
[region.us]
endpoints = ["192.0.2.1"]
location = [39.0, -77.5]

[region.eu]
endpoints = ["192.0.2.2"]
location = [50.1, 8.7]

[region.bare]
endpoints = ["192.0.2.3"]

[geo.w]
nets = { "198.51.100.0/24" = "office", "10.0.0.0/8" = "corp", "10.1.0.0/16" = "eu" }
"#;

#[test]
fn geo_services_load() {
    let cfg = load_one(&format!(
        "{HEAD}{GEO_BASE}
[service.api]
policy = \"geo\"
geo = \"w\"
map = {{ office = [\"eu\", \"us\"], \"*\" = [\"us\", \"eu\"], corp = [\"bare\"] }}

[service.cdn]
policy = \"nearest\"
geo = \"w\"
regions = [\"us\", \"eu\"]
answers = 2
"
    ))
    .unwrap();
    let z = &cfg.zones[0];
    let map = &z.geo["w"];
    // Longest prefix first; labels sorted.
    let nets: Vec<String> = map.nets.iter().map(|n| n.net.to_string()).collect();
    assert_eq!(nets, ["198.51.100.0/24", "10.1.0.0/16", "10.0.0.0/8"]);
    assert_eq!(map.labels, ["corp", "eu", "office"]);
    let api = z.services.iter().find(|s| s.key == "api").unwrap();
    let Policy::Geo(g) = &api.policy else {
        panic!("geo policy")
    };
    // Regions in the order first named in the file.
    let names: Vec<&str> = api.regions.iter().map(|r| r.region.name.as_str()).collect();
    assert_eq!(names, ["eu", "us", "bare"]);
    let keys: Vec<String> = g.entries.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(keys, ["corp", "office", "*"]);
    assert_eq!(g.entries[g.default].order, [1, 0]);
    assert_eq!(g.by_label, [Some(0), None, Some(1)]);
    let cdn = z.services.iter().find(|s| s.key == "cdn").unwrap();
    let Policy::Nearest(n) = &cdn.policy else {
        panic!("nearest policy")
    };
    assert_eq!(n.answers, 2);
    // The label "eu" names a region with a location; the others do not.
    let eu = crate::model::Coords {
        lat: 50.1,
        lon: 8.7,
    };
    assert_eq!(n.label_units[1], Some(eu.unit()));
    assert!(n.label_units[0].is_none() && n.label_units[2].is_none());
}

#[test]
fn geo_rules() {
    let base = format!("{HEAD}{GEO_BASE}");
    let geo = |map: &str| format!("[service.s]\npolicy = \"geo\"\ngeo = \"w\"\nmap = {map}\n");
    let cases = [
        (geo("{ office = [\"us\"] }"), "z.toml:23:7: map needs a \"*\" entry"),
        (geo("{ lab = [\"us\"], \"*\" = [\"us\"] }"), "z.toml:23:9: unknown map key \"lab\": not a nets label of geo w (labels: corp, eu, office)"),
        (geo("{ \"country:IN\" = [\"us\"], \"*\" = [\"us\"] }"), "country keys need a database"),
        (geo("{ \"country:IND\" = [\"us\"], \"*\" = [\"us\"] }"), "two-letter ISO 3166 code"),
        (geo("{ \"continent:XX\" = [\"us\"], \"*\" = [\"us\"] }"), "unknown continent"),
        (geo("{ \"*\" = [\"mars\"] }"), "unknown region \"mars\""),
        (geo("{ \"*\" = [\"us\", \"us\"] }"), "listed twice"),
        (geo("{ \"*\" = [] }"), "location * lists no regions"),
        ("[service.s]\npolicy = \"geo\"\ngeo = \"w\"\nregions = [\"us\"]\nmap = { \"*\" = [\"us\"] }\n".into(), "`regions` does not apply to policy = \"geo\""),
        ("[service.s]\npolicy = \"geo\"\nmap = { \"*\" = [\"us\"] }\n".into(), "needs `geo = \"NAME\"`"),
        ("[service.s]\npolicy = \"geo\"\ngeo = \"x\"\nmap = { \"*\" = [\"us\"] }\n".into(), "unknown geo \"x\" (defined: w)"),
        ("[service.s]\npolicy = \"geo\"\ngeo = \"w\"\n".into(), "needs `map`"),
        ("[service.s]\nregions = [\"us\"]\ngeo = \"w\"\n".into(), "`geo` applies to policy = \"geo\" or \"nearest\""),
        ("[service.s]\npolicy = \"nearest\"\ngeo = \"w\"\nregions = [\"us\", \"bare\"]\n".into(), "region bare has no `location`"),
        ("[service.s]\npolicy = \"nearest\"\ngeo = \"w\"\nregions = [\"us\"]\nanswers = 2\n".into(), "answers = 2 but the service has 1 regions"),
        ("[geo.n]\nnets = { \"10.0.0.0/8\" = \"x\" }\n[service.s]\npolicy = \"nearest\"\ngeo = \"n\"\nregions = [\"us\"]\n".into(), "geo n gives no coordinates"),
        ("[geo.n]\nnets = { \"10.0.0.1/8\" = \"x\" }\n".into(), "bits set past its prefix length (the network is 10.0.0.0/8)"),
        ("[geo.n]\nnets = { \"10.0.0/8\" = \"x\" }\n".into(), "is not a CIDR network"),
        ("[geo.n]\nnets = { \"10.0.0.0/8\" = \"a:b\" }\n".into(), "a nets label is a name"),
        ("[geo.n]\n".into(), "geo n needs `database` or `nets`"),
        ("[geo.n]\ndatabase = \"/nonexistent/x.mmdb\"\n".into(), "database /nonexistent/x.mmdb: cannot read"),
        ("[region.x]\nendpoints = [\"192.0.2.9\"]\nlocation = [91, 0]\n".into(), "latitude 91 is outside -90 to 90"),
        ("[region.x]\nendpoints = [\"192.0.2.9\"]\nlocation = [1]\n".into(), "location is [latitude, longitude]"),
    ];
    for (tail, want) in cases {
        let errs = errors(&format!("{base}\n{tail}"));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{tail}: want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn a_file_read_in_pieces_reports_every_error_where_it_is_written() {
    // `errors` reads it whole and one record per piece and wants the same.
    let text = format!(
        "{HEAD}\n[[record]]\nname = \"a\"\ntype = \"A\"\nvalue = \"192.0.2.300\"\n\n[check.c]\ntype = \"tcp\"\n\n[[record]]\nname = \"b\"\ntype = \"A\"\nvalue = \"192.0.2.2\"\ncolour = \"red\"\n\n[[record]]\nname = \"b\"\ntype = \"A\"\nvalue = \"192.0.2.2\"\n"
    );
    let errs = errors(&text);
    assert_eq!(
        errs,
        [
            "z.toml:9:9: A value \"192.0.2.300\" is not an IPv4 address",
            "z.toml:11:8: check c: a tcp check needs `port`",
            "z.toml:18:1: unknown field `colour`, expected one of `name`, `type`, `value`, `ttl`",
            "z.toml:21:8: duplicate record b.z.example. A (same as at z.toml:15:8)",
        ],
        "{errs:#?}"
    );
}

#[test]
fn every_record_type_is_served_as_written() {
    // RRsets keep RDATA in wire form: each must decode to what was parsed,
    // case of names included.
    let cases = [
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("CNAME", "Target.Example.NET."),
        ("MX", "10 Mail.z.example."),
        ("NS", "ns1.Example.NET."),
        ("PTR", "host.example.net."),
        ("SRV", "10 5 5060 Sip.z.example."),
        ("TXT", &"v=spf1 -all ".repeat(40)),
        (
            "CAA",
            "128 issue \"letsencrypt.org; validationmethods=dns-01\"",
        ),
        ("CAA", "0 iodef \"mailto:security@example.net\""),
        ("CAA", "0 tbs \"Unknown\""),
    ];
    let mut text = HEAD.to_string();
    for (i, (t, v)) in cases.iter().enumerate() {
        text.push_str(&format!(
            "\n[[record]]\nname = \"N{i}\"\ntype = \"{t}\"\nvalue = '{v}'\n"
        ));
    }
    text.push_str("\n[[record]]\nname = \"mail\"\ntype = \"A\"\nvalue = \"192.0.2.2\"\n[[record]]\nname = \"sip\"\ntype = \"A\"\nvalue = \"192.0.2.3\"\n");
    let cfg = load_one(&text).unwrap();
    let z = &cfg.zones[0];
    let apex = Name::from_ascii("z.example.").unwrap();
    for (i, (t, v)) in cases.iter().enumerate() {
        let owner = Name::from_ascii(format!("N{i}.z.example.")).unwrap();
        let want = records::parse_rdata(t, v, &apex).unwrap_or_else(|_| panic!("{t} {v}"));
        let set = z
            .rrset(&z.nodes[&LowerName::new(&owner)], want.record_type())
            .unwrap();
        let got: Vec<_> = set.records(&owner).collect();
        assert_eq!(got.len(), 1, "{t} {v}");
        assert_eq!(got[0].data, want, "{t} {v}");
        assert_eq!(
            got[0].data.to_string(),
            want.to_string(),
            "{t} {v}: case kept"
        );
        assert_eq!(got[0].ttl, DEFAULT_TTL);
    }
}

#[test]
fn a_new_serial_is_served_from_the_apex_soa_set() {
    let mut cfg = load_one(HEAD).unwrap();
    let z = Arc::get_mut(&mut cfg.zones[0]).unwrap();
    z.set_serial(2_026_120_601);
    let apex = z.nodes[&z.apex].clone();
    let soa = z
        .rrset(&apex, RecordType::SOA)
        .unwrap()
        .rdatas()
        .next()
        .unwrap();
    let RData::SOA(soa) = soa else { panic!() };
    assert_eq!((soa.serial, z.serial()), (2_026_120_601, 2_026_120_601));
    assert_eq!(soa.rname.to_string(), "h.example.net.");
}

#[test]
fn a_dns_check_takes_its_defaults() {
    let text = format!(
        "{HEAD}\n[check.c]\ntype = \"dns\"\nquery-name = \"Www.Example.net\"\n\n[check.d]\ntype = \"dns\"\nport = 5353\nquery-name = \"example.net.\"\nquery-type = \"mx\"\nexpect-answer = \"10 Mail.example.net.\"\nrecursion-desired = true\n"
    );
    let cfg = load_one(&text).unwrap();
    let z = &cfg.zones[0];
    let dns = |c: &str| match &z.checks[c].kind {
        crate::model::CheckKind::Dns(d) => (z.checks[c].port, (**d).clone()),
        other => panic!("{other:?}"),
    };
    let (port, c) = dns("c");
    assert_eq!(port, 53);
    assert_eq!(c.name.to_string(), "Www.Example.net.");
    assert_eq!(c.qtype, RecordType::A);
    assert_eq!(c.rcode, hickory_proto::op::ResponseCode::NoError);
    assert!(c.expect_answer.is_none() && !c.recursion_desired);
    let (port, d) = dns("d");
    assert_eq!(port, 5353);
    assert_eq!(d.qtype, RecordType::MX);
    assert_eq!(d.expect_answer.unwrap().to_string(), "10 Mail.example.net.");
    assert!(d.recursion_desired);
    assert_eq!(z.checks["c"].kind.as_str(), "dns");
}

#[test]
fn an_exec_check_keeps_its_command_and_user() {
    let text = format!(
        "{HEAD}\n[check.c]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 0\"]\nuser = \"root\"\n"
    );
    let cfg = load_one(&text).unwrap();
    let c = &cfg.zones[0].checks["c"];
    let crate::model::CheckKind::Exec(e) = &c.kind else {
        panic!("{:?}", c.kind)
    };
    assert_eq!(e.command, ["/bin/sh", "-c", "exit 0"]);
    assert_eq!(
        e.user.as_ref().map(|u| (u.name.as_str(), u.uid)),
        Some(("root", 0))
    );
    assert_eq!(e.max_running, 16);
    assert_eq!(c.kind.as_str(), "exec");
}

#[test]
fn a_grpc_check_takes_tls_and_host_as_https_does() {
    let text = format!(
        "{HEAD}\n[check.plain]\ntype = \"grpc\"\nport = 50051\n\n[check.tls]\ntype = \"grpc\"\nport = 443\ntls = true\nservice = \"app\"\nhost = \"grpc.example.net\"\ntls-verify = false\n"
    );
    let cfg = load_one(&text).unwrap();
    let grpc = |c: &str| match &cfg.zones[0].checks[c].kind {
        crate::model::CheckKind::Grpc(g) => (**g).clone(),
        other => panic!("{other:?}"),
    };
    let plain = grpc("plain");
    assert_eq!(
        (plain.service.as_str(), plain.tls.is_none(), plain.host),
        ("", true, None)
    );
    let tls = grpc("tls");
    assert_eq!(tls.service, "app");
    assert_eq!(tls.host.as_deref(), Some("grpc.example.net"));
    assert!(!tls.tls.unwrap().verify);
    assert_eq!(cfg.zones[0].checks["tls"].kind.as_str(), "grpc");
}

#[test]
fn expiry_windows_default_to_a_warning_two_weeks_ahead() {
    let text = format!(
        "{HEAD}\n[check.plain]\ntype = \"https\"\n\n[check.set]\ntype = \"https\"\nwarn-expiry = \"30d\"\nfail-expiry = \"7d\"\n\n[check.quiet]\ntype = \"grpc\"\nport = 443\ntls = true\nwarn-expiry = \"0s\"\nfail-expiry = \"1d\"\n"
    );
    let cfg = load_one(&text).unwrap();
    let tls = |c: &str| cfg.zones[0].checks[c].kind.tls().expect("over TLS").clone();
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(
        (tls("plain").warn_expiry, tls("plain").fail_expiry),
        (14 * day, None)
    );
    assert_eq!(
        (tls("set").warn_expiry, tls("set").fail_expiry),
        (30 * day, Some(7 * day))
    );
    // No warning at all: any fail-expiry goes.
    assert_eq!(
        (tls("quiet").warn_expiry, tls("quiet").fail_expiry),
        (std::time::Duration::ZERO, Some(day))
    );
}

/// Calculated health (issue 23 item 7): what `depends-on` may name.
mod depends_on {
    use super::*;

    /// Two zone files: `a.toml` (zone a.example) and `b.toml` (zone
    /// b.example), each with the head and `body`.
    fn two(a: &str, b: &str) -> Result<Config, ConfigErrors> {
        let head = |name: &str| {
            format!(
                "[zone]\nname = \"{name}.\"\nnameservers = [\"ns1.example.net.\"]\nhostmaster = \"h.example.net.\"\n"
            )
        };
        load_sources(
            &[
                (PathBuf::from("a.toml"), format!("{}{a}", head("a.example"))),
                (PathBuf::from("b.toml"), format!("{}{b}", head("b.example"))),
            ],
            LoadOptions { auto_serial: 7 },
        )
    }

    fn messages(r: Result<Config, ConfigErrors>) -> Vec<String> {
        r.expect_err("must fail")
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    const REGIONS: &str = "\n[region.db]\nendpoints = [\"192.0.2.1\", \"192.0.2.2\"]\n\n[region.web]\ncname = \"www.example.net.\"\n";

    #[test]
    fn regions_and_endpoints_here_and_in_other_zones() {
        let a = format!(
            "{REGIONS}\n[region.app]\nendpoints = [\"192.0.2.10\"]\ndepends-on = [\"db\", \"db/192.0.2.2\", \"B.Example.:cache\"]\nhealthy-when = \"2 of 3\"\n\n[region.edge]\nendpoints = [\"192.0.2.20\"]\ndepends-on = [\"app\"]\n"
        );
        let b = "\n[region.cache]\nendpoints = [\"198.51.100.1\"]\n";
        let cfg = two(&a, b).unwrap();
        let app = &cfg.zones[0].regions["app"];
        let d = app.depends.as_ref().expect("depends");
        assert_eq!(d.needed, 2);
        let on: Vec<(&str, &str, Option<std::net::IpAddr>)> =
            d.on.iter()
                .map(|x| (x.zone.as_str(), x.region.as_str(), x.endpoint))
                .collect();
        assert_eq!(
            on,
            [
                ("a.example", "db", None),
                ("a.example", "db", Some("192.0.2.2".parse().unwrap())),
                ("b.example", "cache", None),
            ]
        );
        assert_eq!(d.on[2].written, "B.Example.:cache");
        assert_eq!((d.on[0].origin.line, d.on[0].origin.col), (14, 15));
        // All by default; "any" is one.
        let edge = cfg.zones[0].regions["edge"].depends.as_ref().unwrap();
        assert_eq!(edge.needed, 1);
        for (when, needed) in [("all", 3), ("any", 1), ("3 of 3", 3), ("1 of 3", 1)] {
            let a = a.replace("2 of 3", when);
            let cfg = two(&a, b).unwrap();
            assert_eq!(
                cfg.zones[0].regions["app"].depends.as_ref().unwrap().needed,
                needed,
                "{when}"
            );
        }
    }

    /// Sorted, to compare with a list in file order.
    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn unknown_names_and_impossible_thresholds_are_errors_where_written() {
        let a = format!(
            "{REGIONS}\n[region.app]\nendpoints = [\"192.0.2.10\"]\ndepends-on = [\"nope\", \"db/192.0.2.9\", \"web/192.0.2.1\"]\n\n[region.syn]\nendpoints = [\"192.0.2.11\"]\ndepends-on = [\"db/not-an-ip\", \"db\", \"db\", \":db\", \"b.example:\"]\nhealthy-when = \"2 of 7\"\n\n[region.lone]\nendpoints = [\"192.0.2.30\"]\nhealthy-when = \"any\"\n\n[region.none]\nendpoints = [\"192.0.2.31\"]\ndepends-on = []\n\n[region.zero]\nendpoints = [\"192.0.2.32\"]\ndepends-on = [\"db\"]\nhealthy-when = \"0 of 1\"\n\n[region.many]\nendpoints = [\"192.0.2.33\"]\ndepends-on = [\"db\"]\nhealthy-when = \"2 of 1\"\n\n[region.words]\nendpoints = [\"192.0.2.34\"]\ndepends-on = [\"db\"]\nhealthy-when = \"most\"\n"
        );
        let got = messages(two(
            &a,
            "\n[region.cache]\nendpoints = [\"198.51.100.1\"]\n",
        ));
        let want = [
            "a.toml:14:15: depends-on \"nope\": unknown region \"nope\" (defined: db, web, app, syn, lone, none, zero, many, words)",
            "a.toml:14:23: depends-on \"db/192.0.2.9\": region db has no endpoint 192.0.2.9",
            "a.toml:14:39: depends-on \"web/192.0.2.1\": region web is a cname region: it has no endpoints to name",
            "a.toml:18:15: depends-on \"db/not-an-ip\": \"not-an-ip\" is not an endpoint address (REGION/ADDRESS)",
            "a.toml:18:37: depends-on \"db\" is listed twice",
            "a.toml:18:43: depends-on \":db\": the zone before `:` is empty (ZONE:REGION)",
            "a.toml:18:50: depends-on \"b.example:\": names no region (REGION, REGION/ADDRESS, ZONE:REGION or ZONE:REGION/ADDRESS)",
            "a.toml:19:16: healthy-when \"2 of 7\": depends-on lists 5 dependencies, not 7",
            "a.toml:23:16: healthy-when needs depends-on",
            "a.toml:27:14: region none: depends-on is empty (leave it out to depend on nothing)",
            "a.toml:32:16: healthy-when \"0 of 1\": needs at least 1 up (a region that needs none depends on nothing)",
            "a.toml:37:16: healthy-when \"2 of 1\": cannot be met: 2 up of only 1",
            "a.toml:42:16: healthy-when \"most\": is \"N of M\" (as \"2 of 3\"), \"any\" or \"all\"",
        ];
        assert_eq!(
            sorted(got.clone()),
            sorted(want.iter().map(|s| s.to_string()).collect()),
            "{got:#?}"
        );
    }

    #[test]
    fn names_in_other_zones_are_judged_once_all_are_loaded() {
        let a = format!(
            "{REGIONS}\n[region.app]\nendpoints = [\"192.0.2.10\"]\ndepends-on = [\"c.example:x\", \"b.example:gone\", \"b.example:cache/10.9.9.9\", \"b.example:cache/198.51.100.1\"]\n"
        );
        let got = messages(two(
            &a,
            "\n[region.cache]\nendpoints = [\"198.51.100.1\"]\n",
        ));
        assert_eq!(
            got,
            [
                "a.toml:14:15: depends-on \"c.example:x\": no zone c.example is loaded",
                "a.toml:14:30: depends-on \"b.example:gone\": zone b.example has no region gone",
                "a.toml:14:48: depends-on \"b.example:cache/10.9.9.9\": region cache has no endpoint 10.9.9.9",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn cycles_within_and_across_zones_are_errors() {
        // Within a zone: s -> s, and u -> v -> u (reported with the zone,
        // whatever else the other zone holds).
        let a = "\n[region.s]\nendpoints = [\"192.0.2.3\"]\ndepends-on = [\"s\"]\n\n[region.u]\nendpoints = [\"192.0.2.4\"]\ndepends-on = [\"v\"]\n\n[region.v]\nendpoints = [\"192.0.2.5\"]\ndepends-on = [\"u\"]\n";
        let got = messages(two(a, "\n[region.p]\nendpoints = [\"198.51.100.1\"]\n"));
        assert_eq!(
            got,
            [
                "a.toml:8:15: depends-on \"s\": region s depends on itself",
                "a.toml:16:15: depends-on \"u\": a cycle: u → v → u",
            ],
            "{got:#?}"
        );
        // Across zones: a.example:x -> y -> b.example:p -> a.example:x.
        let a = "\n[region.x]\nendpoints = [\"192.0.2.1\"]\ndepends-on = [\"y\"]\n\n[region.y]\nendpoints = [\"192.0.2.2\"]\ndepends-on = [\"b.example:p\"]\n";
        let b = "\n[region.p]\nendpoints = [\"198.51.100.1\"]\ndepends-on = [\"a.example:x\"]\n";
        let got = messages(two(a, b));
        assert_eq!(
            got,
            [
                "b.toml:8:15: depends-on \"a.example:x\": a cycle: a.example:x → a.example:y → p → a.example:x"
            ],
            "{got:#?}"
        );
        // An endpoint of its own region is no cycle, nor is a diamond.
        let a = "\n[region.x]\nendpoints = [\"192.0.2.1\"]\ndepends-on = [\"x/192.0.2.1\", \"y\", \"z\"]\n\n[region.y]\nendpoints = [\"192.0.2.2\"]\ndepends-on = [\"z\"]\n\n[region.z]\nendpoints = [\"192.0.2.3\"]\n";
        two(a, "").unwrap();
    }

    #[test]
    fn a_zone_that_failed_to_load_is_not_called_missing() {
        let a = "\n[region.x]\nendpoints = [\"192.0.2.1\"]\ndepends-on = [\"b.example:p\"]\n";
        let got = messages(two(a, "\n[region.p]\nendpoints = [\"not an address\"]\n"));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("b.toml:"), "{got:#?}");
    }
}

#[test]
fn a_transfer_table_is_read() {
    let cfg = load_one(&format!(
        "{HEAD}[transfer]\nallow = [\"192.0.2.10\", \"2001:db8::/64\", \"10.1.2.3/8\"]\nnotify = [\"192.0.2.10\", \"[2001:db8::10]:5300\"]\ntsig-key = \"xfr\"\n"
    ))
    .unwrap();
    let t = cfg.zones[0].transfer.as_ref().expect("transfer");
    assert_eq!(
        t.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["192.0.2.10/32", "2001:db8::/64", "10.0.0.0/8"]
    );
    assert_eq!(
        t.notify.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["192.0.2.10:53", "[2001:db8::10]:5300"]
    );
    assert_eq!(t.tsig_key.as_deref(), Some("xfr"));
    assert!(t.allows("10.200.0.1".parse().unwrap()));
    assert!(!t.allows("192.0.2.11".parse().unwrap()));
    assert!(load_one(HEAD).unwrap().zones[0].transfer.is_none());
}

#[test]
fn a_bad_transfer_table_names_every_line() {
    let e = errors(&format!(
        "{HEAD}serial = 5\n[transfer]\nallow = [\"192.0.2.300\"]\nnotify = [\"host:53\", \"192.0.2.1:0\"]\ntsig-key = \"\"\n"
    ));
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(
        e[0].starts_with("z.toml:5:10: serial cannot be set"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("z.toml:7:10: transfer allow: \"192.0.2.300\""),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("z.toml:8:11: transfer notify: \"host:53\""),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with("z.toml:8:22: transfer notify: \"192.0.2.1:0\""),
        "{e:#?}"
    );
    assert!(e[4].starts_with("z.toml:9:12: tsig-key is empty"), "{e:#?}");
}

#[test]
fn a_zone_naming_an_undefined_tsig_key_is_refused_with_its_position() {
    let cfg = load_one(&format!(
        "{HEAD}[transfer]\nallow = [\"127.0.0.1\"]\ntsig-key = \"xfr\"\n"
    ))
    .unwrap();
    let none = std::collections::BTreeMap::new();
    let e: Vec<String> = cross_check(None, &none, &cfg)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("z.toml:7:12: tsig-key \"xfr\" is not defined: the settings file needs a [tsig.xfr] table"),
        "{e:?}"
    );
    let mut keys = none.clone();
    keys.insert(
        "xfr".to_string(),
        crate::model::TsigKey {
            name: Name::from_ascii("xfr.").unwrap(),
            algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
            secret: vec![1; 32],
        },
    );
    assert!(cross_check(None, &keys, &cfg).is_empty());
}
