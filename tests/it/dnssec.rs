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
