//! `tern gen-certs`: the files it writes form a working chain, checked by OpenSSL (an
//! independent implementation), with the names and key usages TLS clients expect.

use std::process::Command;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (see .ci/run)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn gen_certs_writes_a_chain_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["gen-certs"])
        .arg(dir.path())
        .args(["--host", "mqtt.example.net", "--host", "192.0.2.7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &path("ca.pem"),
        "-purpose",
        "sslserver",
        &path("server.pem"),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &path("ca.pem"),
        "-purpose",
        "sslclient",
        &path("client.pem"),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        &path("server.pem"),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{text}");
    for name in [
        "DNS:localhost",
        "DNS:mqtt.example.net",
        "IP Address:127.0.0.1",
        "IP Address:192.0.2.7",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    let (ok, text) = openssl(&["x509", "-in", &path("client.pem"), "-noout", "-subject"]);
    assert!(ok && text.contains("CN = tern-client"), "{text}");
    // Each key matches its certificate.
    for role in ["ca", "server", "client"] {
        let (_, cert) = openssl(&[
            "x509",
            "-in",
            &path(&format!("{role}.pem")),
            "-noout",
            "-pubkey",
        ]);
        let (_, key) = openssl(&["pkey", "-in", &path(&format!("{role}.key")), "-pubout"]);
        assert_eq!(cert, key, "{role}: key does not match its certificate");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(&format!("{role}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{role}.key readable by others");
    }
}
