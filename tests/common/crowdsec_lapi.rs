//! A CrowdSec Local API of its own for a test, started from Debian's
//! `crowdsec` package on a free loopback port, offline: no central API, no
//! agent (`-no-cs`), a SQLite database in a scratch directory, one machine
//! registered for `cscli decisions`, and one bouncer whose key the test
//! gives the crate.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Lapi {
    dir: PathBuf,
    port: u16,
    scheme: &'static str,
    child: Option<Child>,
    /// The bouncer's key, as `cscli bouncers add` printed it.
    pub key: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed() -> bool {
    ["crowdsec", "cscli"].iter().all(|b| {
        Command::new(b)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

impl Lapi {
    /// A running LAPI, or `None` (after saying why) when the binaries are
    /// missing and `TNR_REQUIRE_CROWDSEC` is not set.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// The same over HTTPS only, its certificate made by `tls`'s CA, which
    /// also signs the client certificates it accepts.
    pub fn start_tls(tls: &TlsFiles) -> Option<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&TlsFiles>) -> Option<Self> {
        if !installed() {
            assert!(
                std::env::var_os("TNR_REQUIRE_CROWDSEC").is_none(),
                "TNR_REQUIRE_CROWDSEC is set but crowdsec and cscli are not installed"
            );
            eprintln!("skipped: crowdsec is not installed (Debian's crowdsec)");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tnr-crowdsec-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["data", "hub", "notifications"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let (scheme, server_tls, skip_verify) = match tls {
            None => ("http", String::new(), "false"),
            Some(t) => (
                "https",
                format!(
                    "    tls:\n      cert_file: {}\n      key_file: {}\n      ca_cert_path: {}\n      \
                     client_verification: VerifyClientCertIfGiven\n      bouncers_allowed_ou:\n        - bouncer-ou\n      \
                     agents_allowed_ou:\n        - agent-ou\n",
                    t.server_cert.display(),
                    t.server_key.display(),
                    t.ca.display()
                ),
                "true",
            ),
        };
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: warning\n  working_dir: .\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  \
                 hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
                 plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n\
                 cscli:\n  output: human\n\
                 db_config:\n  log_level: warning\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: false\n\
                 plugin_config:\n  user: nobody\n  group: nogroup\n\
                 api:\n  client:\n    insecure_skip_verify: {skip_verify}\n    credentials_path: {d}/local_api_credentials.yaml\n  \
                 server:\n    log_level: warning\n    listen_uri: 127.0.0.1:{port}\n    profiles_path: {d}/profiles.yaml\n{server_tls}    \
                 trusted_ips:\n      - 127.0.0.1\n      - ::1\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n").unwrap();
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        std::fs::write(dir.join("local_api_credentials.yaml"), "").unwrap();
        let mut lapi = Self {
            dir,
            port,
            scheme,
            child: None,
            key: String::new(),
        };
        let url = lapi.url();
        let credentials = lapi.dir.join("local_api_credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "tnr-test",
            "--auto",
            "--force",
            "-f",
            credentials.to_str().unwrap(),
            "--url",
            &url,
        ]);
        lapi.spawn();
        lapi.key = lapi
            .cscli(&["bouncers", "add", "tnr-test", "-o", "raw"])
            .trim()
            .to_owned();
        assert!(!lapi.key.is_empty(), "no bouncer key");
        Some(lapi)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/", self.scheme, self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("crowdsec")
            .arg("-c")
            .arg(self.dir.join("config.yaml"))
            .arg("-no-cs")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("crowdsec starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the LAPI never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `cscli` against this LAPI and returns what it printed; panics
    /// if it fails.
    pub fn cscli(&self, args: &[&str]) -> String {
        let out = Command::new("cscli")
            .arg("-c")
            .arg(self.dir.join("config.yaml"))
            .args(args)
            .output()
            .expect("cscli runs");
        assert!(
            out.status.success(),
            "cscli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The registered machine's login and password, from the file
    /// `cscli machines add` wrote.
    pub fn machine(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.dir.join("local_api_credentials.yaml")).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        (field("login:"), field("password:"))
    }

    /// Another bouncer's key, for a second replica.
    pub fn add_bouncer(&self, name: &str) -> String {
        self.cscli(&["bouncers", "add", name, "-o", "raw"])
            .trim()
            .to_owned()
    }

    /// Every decision's origin and value, as `cscli decisions list` reads
    /// them from the database.
    pub fn decisions(&self) -> Vec<(String, String)> {
        let out = self.cscli(&["decisions", "list", "--all", "-o", "json"]);
        let alerts: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
        let mut found = Vec::new();
        for alert in alerts.as_array().into_iter().flatten() {
            for d in alert["decisions"].as_array().into_iter().flatten() {
                found.push((
                    d["origin"].as_str().unwrap_or_default().to_owned(),
                    d["value"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        found
    }

    /// Bans an address (`--ip`) or a range (`--range`) for an hour.
    pub fn ban(&self, scope: &str, value: &str, scenario: &str) {
        self.cscli(&[
            "decisions",
            "add",
            scope,
            value,
            "--duration",
            "1h",
            "--reason",
            scenario,
        ]);
    }

    /// A decision of another type than `ban` on an address.
    pub fn decide(&self, kind: &str, ip: &str) {
        self.cscli(&[
            "decisions",
            "add",
            "--ip",
            ip,
            "--type",
            kind,
            "--duration",
            "1h",
        ]);
    }

    pub fn delete_ip(&self, ip: &str) {
        self.cscli(&["decisions", "delete", "--ip", ip]);
    }

    /// Stops the LAPI, as an outage does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, the LAPI's certificate, and client certificates it signs: one in
/// the bouncers' organizational unit and one outside it; and a stranger's
/// CA.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub bouncer_cert: PathBuf,
    pub bouncer_key: PathBuf,
    pub outsider_cert: PathBuf,
    pub outsider_key: PathBuf,
    pub stranger_ca: PathBuf,
}

impl TlsFiles {
    pub fn make() -> Self {
        let dir = std::env::temp_dir().join(format!("tnr-crowdsec-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (ca, issuer) = crate::certs::authority("tnr test CA");
        let (stranger, _) = crate::certs::authority("a stranger's CA");
        let (server_cert, server_key) =
            crate::certs::leaf(&["127.0.0.1", "localhost"], Some("tnr-lapi"), None, &issuer);
        let (bouncer_cert, bouncer_key) =
            crate::certs::leaf(&[], Some("tnr-bouncer"), Some("bouncer-ou"), &issuer);
        let (outsider_cert, outsider_key) =
            crate::certs::leaf(&[], Some("tnr-outsider"), Some("somewhere-else"), &issuer);
        Self {
            ca: write("ca.pem", &ca),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            bouncer_cert: write("bouncer.pem", &bouncer_cert),
            bouncer_key: write("bouncer.key", &bouncer_key),
            outsider_cert: write("outsider.pem", &outsider_cert),
            outsider_key: write("outsider.key", &outsider_key),
            stranger_ca: write("stranger.pem", &stranger),
        }
    }
}
