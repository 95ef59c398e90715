//! The command-line contract (DESIGN.md), exercised by running the `backsweep` binary:
//! output formats, exit statuses (0 ok, 1 runtime failure, 2 usage or config error) and
//! error messages. The commands that talk to a server run against a private Dovecot
//! started by the test; such a test FAILS (never skips) when Dovecot cannot be started:
//! install it with `apt-get install dovecot-imapd`.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use backsweep::testserver::{TestServer, TestServerOptions};

const USER: &str = "carol@example.com";
const PASS: &str = "Tr0ub4dor&3-cli";
const PASSWORD_VAR: &str = "BACKSWEEP_CLI_TEST_PASSWORD";

fn backsweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backsweep"));
    // Never pick up the developer's own config or log settings.
    c.env_remove("BACKSWEEP_CONFIG").env_remove("BACKSWEEP_LOG");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("cannot run the backsweep binary")
}

/// Runs `c` with `input` on its standard input.
fn run_with_stdin(c: &mut Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the backsweep binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn corpus(file: &str) -> PathBuf {
    file.split('/').fold(common::corpus_dir(), |p, c| p.join(c))
}

#[test]
fn inspect_json_gives_one_line_per_file_and_an_error_line_for_a_missing_one() {
    let bounce = corpus("ham/postal-mime/bounce.eml");
    let ham = corpus("ham/rspamd/newsletter.eml");
    let missing = corpus("ham/no-such-file.eml");
    let o = run(backsweep()
        .args(["inspect", "--json"])
        .arg(&bounce)
        .arg(&missing)
        .arg(&ham));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let out = text(&o.stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{}", describe(&o));

    assert_eq!(lines[0]["file"], bounce.display().to_string());
    assert_eq!(lines[0]["kind"], "bounce");
    assert_eq!(
        lines[0]["original_message_ids"][0],
        "e85f1c9b-9b51-4028-8ec0-0a657155028e@app.fastmail.com"
    );
    assert_eq!(
        lines[0]["recipients"][0],
        "htfgvhyufthdgcvhgjyfthgc@ethereal.email"
    );
    assert!(lines[0]["rules"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(lines[0].get("error").is_none());

    assert_eq!(lines[1]["file"], missing.display().to_string());
    let err = lines[1]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error key: {}", lines[1]));
    assert!(err.contains("no-such-file.eml"), "{err}");

    assert_eq!(lines[2]["kind"], "none");
    assert!(lines[2]["original_message_ids"]
        .as_array()
        .is_some_and(Vec::is_empty));
}

/// `--jobs N` analyses files on N threads; the output must not depend on
/// N: the same bytes, in argument order, error lines included.
#[test]
fn inspect_output_is_the_same_for_any_number_of_jobs() {
    let mut files: Vec<PathBuf> = common::labelled_corpus()
        .iter()
        .step_by(5)
        .map(|m| corpus(&m.file))
        .collect();
    assert!(files.len() > 200, "only {} files", files.len());
    files.insert(37, corpus("ham/no-such-file.eml"));
    let with_jobs = |jobs: &str| {
        let o = run(backsweep()
            .args(["inspect", "--json", "--jobs", jobs])
            .args(&files));
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        o.stdout
    };
    let serial = with_jobs("1");
    let lines: Vec<&str> = std::str::from_utf8(&serial)
        .expect("UTF-8 output")
        .lines()
        .collect();
    assert_eq!(lines.len(), files.len());
    assert!(lines[37].contains("\"error\""), "{}", lines[37]);
    for (line, file) in lines.iter().zip(&files) {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(value["file"], file.display().to_string());
    }
    for jobs in ["2", "7"] {
        assert!(
            with_jobs(jobs) == serial,
            "--jobs {jobs} printed other output"
        );
    }
    // The default (one job per CPU) too, and human output.
    let o = run(backsweep().args(["inspect", "--json"]).args(&files));
    assert!(o.stdout == serial, "the default printed other output");
    let human = |jobs: &str| run(backsweep().args(["inspect", "--jobs", jobs]).args(&files)).stdout;
    assert!(human("1") == human("2"), "human output differs with --jobs");
}

/// `inspect` reads a regular file in one read of the size it has; files
/// that are not regular (a pipe named as a path) or bigger than analysis
/// reads must still come out whole, respectively truncated, and a directory
/// is an error line.
#[test]
fn inspect_reads_pipes_and_huge_files_by_path() {
    let bytes = std::fs::read(corpus("sisimai/maildir/bsd/rfc3834-03.eml")).expect("corpus");
    let dir = tempfile::tempdir().expect("temp dir");
    // Bigger than the analysed prefix: the notice, then 2 MiB of padding.
    let huge = dir.path().join("huge.eml");
    let mut padded = bytes.clone();
    padded.extend(std::iter::repeat_n(b'x', 2 << 20));
    std::fs::write(&huge, &padded).expect("write");

    let o = run_with_stdin(
        backsweep()
            .args(["inspect", "--json", "/dev/stdin"])
            .arg(&huge)
            .arg(dir.path()),
        &bytes,
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", describe(&o));
    // The pipe reports no size; it is read to its end all the same.
    assert_eq!(lines[0]["kind"], "autoreply", "{}", describe(&o));
    assert_eq!(
        lines[0]["original_message_ids"][0],
        "25203A4E-F90F-4A14-BF51-3E7B9D39BE8E@libsisimai.org"
    );
    assert!(lines[0].get("truncated").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["kind"], "autoreply", "{}", lines[1]);
    assert_eq!(lines[1]["truncated"], true, "{}", lines[1]);
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("directory")),
        "{}",
        lines[2]
    );
}

#[test]
fn inspect_rejects_zero_jobs() {
    let o = run(backsweep()
        .args(["inspect", "--jobs", "0"])
        .arg(corpus("ham/rspamd/newsletter.eml")));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(text(&o.stderr).contains("--jobs"), "{}", describe(&o));
}

#[test]
fn inspect_reads_standard_input() {
    let bytes = std::fs::read(corpus("sisimai/maildir/bsd/rfc3834-03.eml")).expect("corpus");
    let o = run_with_stdin(backsweep().args(["inspect", "--json", "-"]), &bytes);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("one JSON line");
    assert_eq!(v["file"], "-");
    assert_eq!(v["kind"], "autoreply");
    assert_eq!(
        v["original_message_ids"][0],
        "25203A4E-F90F-4A14-BF51-3E7B9D39BE8E@libsisimai.org"
    );

    // Human output too.
    let o = run_with_stdin(backsweep().args(["inspect", "-"]), &bytes);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("autoreply"), "{}", describe(&o));
}

#[test]
fn help_lists_the_commands() {
    let o = run(backsweep().arg("--help"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let help = text(&o.stdout);
    for cmd in [
        "sweep",
        "release",
        "status",
        "check-config",
        "password",
        "inspect",
        "demo",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help does not list `{cmd}`:\n{help}"
        );
    }
    assert!(help.contains("--config"), "{help}");

    let o = run(backsweep().arg("no-such-command"));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

#[test]
fn a_bad_config_exits_2_and_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "typo.yaml",
            "state_dir: /tmp/backsweep-cli-test\naccounts:\n  - name: a\n    host: 127.0.0.1\n    \
             quarantin: Junk\n    username: a@example.com\n    password: { env: X }\n",
            ":5:5",
            "quarantin",
        ),
        (
            "plaintext.yaml",
            "state_dir: /tmp/backsweep-cli-test\naccounts:\n  - name: a\n    host: imap.example.com\n    \
             tls: none\n    username: a@example.com\n    password: { env: X }\n",
            ":5:",
            "tls: none",
        ),
        (
            "syntax.yaml",
            "state_dir: /tmp/backsweep-cli-test\naccounts:\n  - name: [unclosed\n",
            ":",
            "",
        ),
    ];
    for (name, yaml, location, mention) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write config");
        for args in [&["sweep"][..], &["check-config"], &["status"]] {
            let o = run(backsweep().arg("--config").arg(&path).args(args));
            assert_eq!(
                o.status.code(),
                Some(2),
                "{name} {args:?}: {}",
                describe(&o)
            );
            let err = text(&o.stderr);
            let at = format!("{}{location}", path.display());
            assert!(
                err.contains(&at),
                "{name} {args:?}: stderr does not name {at}:\n{err}"
            );
            assert!(err.contains(mention), "{name}: {err}");
        }
    }
    // A config file that does not exist is a config error too.
    let o = run(backsweep()
        .arg("--config")
        .arg(dir.path().join("absent.yaml"))
        .arg("sweep"));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(text(&o.stderr).contains("absent.yaml"), "{}", describe(&o));
}

/// A private Dovecot for one user, and a directory for configs and state.
struct Server {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(TestServerOptions::default())
    }

    fn start_with(options: TestServerOptions) -> Server {
        let server = TestServer::start(&[(USER, PASS)], options)
            .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"));
        Server {
            server,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes a config; `ca_file` false leaves the test CA untrusted.
    fn config(&self, name: &str, ca_file: bool) -> PathBuf {
        let yaml = self.server.config_yaml(
            "carol",
            USER,
            &self.dir.path().join(format!("state-{name}")),
            &format!("{{ env: {PASSWORD_VAR} }}"),
            ca_file,
            "    timeout: 15\n",
        );
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    /// Delivers corpus files (paths under tests/corpus) to INBOX, in order.
    fn deliver_corpus(&self, files: &[&str]) {
        for f in files {
            self.deliver("INBOX", &std::fs::read(corpus(f)).expect("corpus"));
        }
    }

    /// Runs backsweep with `config` and the server's password in the environment.
    fn cli(&self, config: &std::path::Path, args: &[&str]) -> Output {
        run(backsweep()
            .arg("--config")
            .arg(config)
            .args(args)
            .env(PASSWORD_VAR, PASS))
    }

    fn deliver(&self, folder: &str, bytes: &[u8]) {
        self.server
            .deliver(USER, folder, bytes, "")
            .unwrap_or_else(|e| panic!("deliver: {e}"));
    }
}

#[test]
fn a_wrong_password_exits_1_with_a_clear_message_without_the_password() {
    let s = Server::start();
    let config = s.config("wrong-password", true);
    let wrong = "Wr0ng-but-Secret-Value";
    for args in [&["sweep"][..], &["check-config"]] {
        let o = run(backsweep()
            .arg("--config")
            .arg(&config)
            .args(args)
            .env(PASSWORD_VAR, wrong));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", describe(&o));
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(
            all.contains("authentication failed"),
            "{args:?}: {}",
            describe(&o)
        );
        assert!(
            all.contains(USER),
            "{args:?}: names the user: {}",
            describe(&o)
        );
        assert!(
            !all.contains(wrong),
            "{args:?}: the password leaked: {}",
            describe(&o)
        );
    }
    // A password source that yields nothing is a runtime failure naming the source.
    let o = run(backsweep()
        .arg("--config")
        .arg(&config)
        .arg("sweep")
        .env_remove(PASSWORD_VAR));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(text(&o.stderr).contains(PASSWORD_VAR), "{}", describe(&o));
}

#[test]
fn an_untrusted_certificate_exits_1_and_points_to_ca_file() {
    let s = Server::start();
    let config = s.config("untrusted", false);
    let o = s.cli(&config, &["sweep"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.contains("certificate"), "{}", describe(&o));
    assert!(err.contains("ca_file"), "{}", describe(&o));
    assert!(!err.contains(PASS), "{}", describe(&o));
}

#[test]
fn sweep_dry_run_prints_what_it_would_do_and_sweep_then_does_it() {
    let s = Server::start();
    // Sent: mail since 2018, including the original of one genuine bounce.
    for (i, date) in [
        "Mon, 08 Jan 2018 09:00:00 +0000",
        "Mon, 10 Oct 2022 08:00:00 +0300",
    ]
    .iter()
    .enumerate()
    {
        s.deliver(
            "Sent",
            format!(
                "From: {USER}\r\nTo: bob@example.net\r\nSubject: hi {i}\r\nDate: {date}\r\n\
                 Message-ID: <cli-sent-{i}@example.com>\r\n\r\nhello\r\n"
            )
            .as_bytes(),
        );
    }
    s.deliver(
        "Sent",
        b"From: \"Andris Reinman\" <andrisreinman@fastmail.com>\r\n\
          To: htfgvhyufthdgcvhgjyfthgc@ethereal.email\r\nSubject: Proovikiri\r\n\
          Date: Mon, 10 Oct 2022 08:37:00 +0300\r\n\
          Message-ID: <e85f1c9b-9b51-4028-8ec0-0a657155028e@app.fastmail.com>\r\n\r\nTere\r\n",
    );
    let genuine = "ham/postal-mime/bounce.eml";
    let backscatter = "sisimai/maildir/bsd/lhost-exim-60.eml";
    s.deliver_corpus(&["ham/rspamd/newsletter.eml", genuine, backscatter]);
    let config = s.config("dry-run", true);
    let cli = |args: &[&str]| s.cli(&config, args);

    let o = cli(&["sweep", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = text(&o.stdout);
    assert!(out.contains("dry run"), "{}", describe(&o));
    let line_of = |out: &str, needle: &str| -> String {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
            .to_string()
    };
    // The backscatter (UID 3) would be moved; the genuine bounce (UID 2) would stay.
    // (Problems are collected and reported at the end, so the rest is checked too.)
    let mut problems = Vec::new();
    if !line_of(&out, "uid 3").contains("would-move") {
        problems.push(format!(
            "the backscatter (UID 3) is not announced as would-move:\n{out}"
        ));
    }
    if line_of(&out, "uid 2").contains("would-move") {
        problems.push(format!(
            "the genuine bounce (UID 2) is announced as would-move:\n{out}"
        ));
    }
    if !out.contains("1 would be quarantined") {
        problems.push(format!(
            "the summary does not say `1 would be quarantined`:\n{out}"
        ));
    }

    let o = cli(&["sweep", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(v["dry_run"], true);
    let actions: Vec<(u64, String)> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["uid"].as_u64().unwrap_or(0),
                m["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    if !actions.contains(&(3, "would-move".into())) || !actions.contains(&(2, "kept".into())) {
        problems.push(format!(
            "--json: expected UID 3 would-move and UID 2 kept: {actions:?}"
        ));
    }

    // Nothing moved: a real sweep now does what the dry run announced.
    let o = cli(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(v["quarantined"], 1, "{v}");
    let moved: Vec<u64> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["action"] == "moved")
        .filter_map(|m| m["uid"].as_u64())
        .collect();
    assert_eq!(moved, [3], "{v}");

    let o = cli(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(v["account"], "carol");
    assert_eq!(v["sent_index"]["messages"], 3, "{v}");

    // check-config logs in and shows what it found.
    let o = cli(&["check-config"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains("logged in") && out.contains("MOVE") && out.contains("Quarantine"),
        "{}",
        describe(&o)
    );

    // release --all puts the backscatter back, and later sweeps leave it there.
    let o = cli(&["release", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        text(&o.stdout).contains("released 1 message"),
        "{}",
        describe(&o)
    );
    let o = cli(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(
        v["quarantined"], 0,
        "a released message was moved again: {v}"
    );
    let o = cli(&["release", "--all"]);
    assert!(
        text(&o.stdout).contains("released 0 message"),
        "{}",
        describe(&o)
    );
    let o = cli(&["status"]);
    assert!(text(&o.stdout).contains("released"), "{}", describe(&o));

    assert!(
        problems.is_empty(),
        "`sweep --dry-run` on a fresh state did not announce what `sweep` then did:\n{}",
        problems.join("\n")
    );
}

#[test]
fn release_by_uid_works_on_a_server_without_move() {
    let s = Server::start_with(TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    });
    s.deliver(
        "Sent",
        format!(
            "From: {USER}\r\nTo: bob@example.net\r\nSubject: old\r\nDate: Mon, 08 Jan 2001 09:00:00 +0000\r\n\
             Message-ID: <cli-old@example.com>\r\n\r\nhello\r\n"
        )
        .as_bytes(),
    );
    let backscatter = "sisimai/maildir/bsd/lhost-exim-60.eml";
    s.deliver_corpus(&["ham/rspamd/newsletter.eml", backscatter]);
    let config = s.config("no-move", true);
    let cli = |args: &[&str]| s.cli(&config, args);
    let o = cli(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(v["quarantined"], 1, "{v}");
    assert_eq!(v["move_method"], "copy+expunge", "{v}");

    // The copy in Quarantine has UID 1 there; an unknown UID is an error.
    let o = cli(&["release", "7"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("no message with UID 7"),
        "{}",
        describe(&o)
    );
    let o = cli(&["release", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        text(&o.stdout).contains("released 1 message"),
        "{}",
        describe(&o)
    );

    // Back in the inbox once, quarantine empty, and a new sweep keeps it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let counts = rt.block_on(async {
        let cfg = backsweep::config::Config::load(&config).expect("config");
        let settings = backsweep::imap::ConnectSettings::from(&cfg.accounts[0]);
        let mut session = backsweep::imap::ImapSession::connect(
            &settings,
            &backsweep::secrets::Secret::new(PASS),
        )
        .await
        .expect("login");
        let inbox = session.examine("INBOX").await.expect("INBOX");
        let inbox_live = session
            .uid_search("NOT DELETED")
            .await
            .expect("search")
            .len();
        let quarantine = session.examine("Quarantine").await.expect("Quarantine");
        (inbox.exists, inbox_live, quarantine.exists)
    });
    assert_eq!(counts, (2, 2, 0), "(INBOX, INBOX not deleted, Quarantine)");
    let o = cli(&["sweep", "--json"]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(
        v["quarantined"], 0,
        "the released message was moved again: {v}"
    );
}

#[test]
fn the_demo_runs_and_explains_every_move() {
    let o = run(backsweep().arg("demo"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = text(&o.stdout);
    for needle in [
        "INBOX 20 -> 15",
        "Quarantine 0 -> 5",
        "5 of 5 backscatter quarantined",
        "4 of 4 genuine bounces and 11 of 11 ordinary messages left in the INBOX",
        "is in your sent mail",
        "is not in your sent mail",
        "same bytes and read/unread state",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
}

/// A bounce (Postfix style) of an original with Message-ID `<id>`, sent from `from`.
fn bounce_of(id: &str, from: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n\
         To: {from}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
         Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
         --b\r\nContent-Type: message/rfc822\r\n\r\nFrom: {from}\r\nTo: nobody@example.org\r\n\
         Subject: your order\r\nDate: Sun, 01 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\n\r\n\
         Thank you for your order.\r\n--b--\r\n"
    )
}

#[test]
fn tag_message_id_mints_tags_that_the_verdict_accepts() {
    use backsweep::evidence::tags;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("tag-key");
    std::fs::write(&key_file, "cli tag secret\n").expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let account = |extra: &str| {
        format!(
            "state_dir: {}\naccounts:\n  - name: shop\n    host: 127.0.0.1\n    tls: none\n    \
             username: shop@example.com\n    password: {{ env: UNUSED }}\n{extra}",
            backsweep::testserver::yaml_path(&dir.path().join("state"))
        )
    };
    let config = dir.path().join("tags.yaml");
    std::fs::write(
        &config,
        account(&format!(
            "    tag_key: {{ file: {} }}\n    tag_key_id: k7\n",
            backsweep::testserver::yaml_path(&key_file)
        )),
    )
    .expect("config");

    let mint = || {
        run(backsweep()
            .arg("--config")
            .arg(&config)
            .args(["tag", "message-id"]))
    };
    let (a, b) = (mint(), mint());
    assert_eq!(a.status.code(), Some(0), "{}", describe(&a));
    let first = text(&a.stdout).trim().to_string();
    assert_ne!(first, text(&b.stdout).trim(), "two tags must differ");
    assert!(
        first.starts_with("<bst1.k7.") && first.ends_with("@example.com>"),
        "{first}"
    );
    // The secret file's trailing newline is not part of the key (as for passwords).
    let keys = tags::TagKeys {
        keys: vec![tags::TagKey {
            id: "k7".into(),
            secret: b"cli tag secret".to_vec(),
        }],
        max_age_days: 30,
    };
    let now = backsweep::store::now_unix();
    assert!(
        matches!(
            tags::verify(&first, &keys, now),
            tags::TagCheck::Valid { .. }
        ),
        "{first}"
    );

    // inspect with the config: a bounce quoting a minted tag is genuine, one
    // quoting a forged tag is backscatter, with the deciding rule first.
    let id = tags::mint(&keys.keys[0], "example.com", 1_793_491_200, "cliverdict1");
    let forged = tags::mint(
        &tags::TagKey {
            id: "k7".into(),
            secret: b"guess".to_vec(),
        },
        "example.com",
        1_793_491_200,
        "cliverdict2",
    );
    let genuine = dir.path().join("genuine.eml");
    let fake = dir.path().join("forged.eml");
    std::fs::write(&genuine, bounce_of(&id, "shop@example.com")).expect("write");
    std::fs::write(&fake, bounce_of(&forged, "shop@example.com")).expect("write");
    let o = run(backsweep()
        .arg("--config")
        .arg(&config)
        .args(["inspect", "--json"])
        .arg(&genuine)
        .arg(&fake));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["verdict"], "genuine", "{}", describe(&o));
    assert_eq!(lines[0]["reasons"][0]["rule"], "verdict.valid-tag");
    assert_eq!(lines[1]["verdict"], "backscatter", "{}", describe(&o));
    assert_eq!(lines[1]["reasons"][0]["rule"], "verdict.invalid-tag");
    // The human form shows the verdict and every reason.
    let o = run(backsweep()
        .arg("--config")
        .arg(&config)
        .arg("inspect")
        .arg(&genuine));
    let out = text(&o.stdout);
    assert!(
        out.contains("verdict: genuine") && out.contains("(verdict.valid-tag)"),
        "{out}"
    );

    // Without a tag key, or with a tag key id that is not lower-case letters
    // and digits: a usage error that says what to fix.
    let bare = dir.path().join("bare.yaml");
    for (extra, says) in [
        ("", "tag_key"),
        ("    tag_key: { env: X }\n    tag_key_id: Key_1\n", "Key_1"),
    ] {
        std::fs::write(&bare, account(extra)).expect("config");
        let o = run(backsweep()
            .arg("--config")
            .arg(&bare)
            .args(["tag", "message-id"]));
        assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
        assert!(text(&o.stderr).contains(says), "{}", describe(&o));
    }
}
