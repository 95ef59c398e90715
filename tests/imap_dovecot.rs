//! `backsweep::imap` against a real, private Dovecot started by `backsweep::testserver`.
//!
//! These tests FAIL (never skip) when Dovecot cannot be started: install it with
//! `apt-get install dovecot-imapd`.

use std::time::{Duration, Instant};

use backsweep::config::TlsMode;
use backsweep::imap::{ConnectSettings, ImapError, ImapSession, MoveOutcome};
use backsweep::secrets::Secret;
use backsweep::testserver::{TestServer, TestServerOptions};

const USER: &str = "alice";
const PASS: &str = "correct horse";

fn start(options: TestServerOptions) -> TestServer {
    TestServer::start(&[(USER, PASS), ("bob", "bobpw")], options)
        .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"))
}

fn settings(server: &TestServer, tls: TlsMode, with_ca: bool) -> ConnectSettings {
    let port = match tls {
        TlsMode::Implicit => server.tls_port(),
        TlsMode::Starttls | TlsMode::None => server.plain_port(),
    };
    let mut s = ConnectSettings::new(server.host(), port, tls, USER);
    if with_ca {
        s.ca_file = Some(server.ca_file());
    }
    s.timeout = Duration::from_secs(10);
    s
}

async fn login(server: &TestServer, tls: TlsMode) -> ImapSession {
    ImapSession::connect(&settings(server, tls, true), &Secret::new(PASS))
        .await
        .unwrap_or_else(|e| panic!("login failed: {e}"))
}

fn message(n: u32) -> Vec<u8> {
    format!(
        "From: Sender {n} <sender{n}@example.org>\r\n\
         To: alice@example.com\r\n\
         Subject: message number {n}\r\n\
         Message-ID: <msg{n}@example.org>\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
         \r\n\
         Body of message {n}.\r\n"
    )
    .into_bytes()
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

#[tokio::test]
async fn implicit_tls_with_trusted_ca() {
    let server = start(TestServerOptions::default());
    let mut s = login(&server, TlsMode::Implicit).await;
    for cap in ["IMAP4REV1", "MOVE", "UIDPLUS", "IDLE", "SPECIAL-USE"] {
        assert!(
            s.has_capability(cap),
            "missing {cap}: {:?}",
            s.capabilities()
        );
    }
    let folders = s.list_folders().await.expect("LIST");
    let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    for n in ["INBOX", "Sent", "Quarantine"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert_eq!(
        s.find_special_use("\\Sent").await.expect("special-use"),
        vec!["Sent"]
    );
    let st = s.examine("INBOX").await.expect("EXAMINE");
    assert_eq!(st.exists, 0);
    assert!(st.uidvalidity > 0);
    s.logout().await.expect("LOGOUT");
}

#[tokio::test]
async fn starttls_and_loopback_plaintext() {
    let server = start(TestServerOptions::default());
    let mut s = login(&server, TlsMode::Starttls).await;
    assert!(s.has_capability("MOVE"));
    assert!(
        !s.has_capability("STARTTLS"),
        "post-login capabilities must be re-read"
    );
    s.select("INBOX").await.expect("SELECT");
    s.logout().await.expect("LOGOUT");

    let mut s = login(&server, TlsMode::None).await;
    s.examine("INBOX")
        .await
        .expect("EXAMINE over plaintext loopback");
}

#[tokio::test]
async fn untrusted_certificate_is_a_clear_error() {
    let server = start(TestServerOptions::default());
    for tls in [TlsMode::Implicit, TlsMode::Starttls] {
        let err = ImapSession::connect(&settings(&server, tls, false), &Secret::new(PASS))
            .await
            .expect_err("the private CA is not trusted without ca_file");
        assert!(
            matches!(err, ImapError::CertificateNotTrusted { .. }),
            "{tls}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("not trusted"), "{msg}");
        assert!(msg.contains("ca_file"), "{msg}");
        assert!(
            msg.contains(&server.tls_port().to_string())
                || msg.contains(&server.plain_port().to_string()),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_secret() {
    let server = start(TestServerOptions::default());
    let wrong = "Wr0ng-Pa55word";
    let err = ImapSession::connect(
        &settings(&server, TlsMode::Implicit, true),
        &Secret::new(wrong),
    )
    .await
    .expect_err("wrong password");
    assert!(matches!(err, ImapError::AuthFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(msg.contains(USER), "{msg}");
    assert!(!msg.contains(wrong), "{msg}");
    assert!(!format!("{err:?}").contains(wrong));
}

#[tokio::test]
async fn connection_refused_names_host_and_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let s = ConnectSettings::new("127.0.0.1", port, TlsMode::Implicit, USER);
    let err = ImapSession::connect(&s, &Secret::new(PASS))
        .await
        .expect_err("refused");
    assert!(matches!(err, ImapError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_to_a_remote_host_is_refused() {
    let s = ConnectSettings::new("imap.example.com", 143, TlsMode::None, USER);
    let err = ImapSession::connect(&s, &Secret::new(PASS))
        .await
        .expect_err("refused");
    assert!(matches!(err, ImapError::PlaintextRefused { .. }), "{err:?}");
}

#[tokio::test]
async fn fetching_headers_and_prefixes_never_sets_seen() {
    let server = start(TestServerOptions::default());
    server
        .deliver(USER, "INBOX", &message(1), "")
        .expect("deliver");
    server
        .deliver(USER, "INBOX", &message(2), "S")
        .expect("deliver");
    server
        .deliver(USER, "INBOX", &message(3), "")
        .expect("deliver");

    let mut s = login(&server, TlsMode::Implicit).await;
    let st = s.select("INBOX").await.expect("SELECT");
    assert_eq!(st.exists, 3);
    assert_eq!(st.uidnext, Some(4));
    let h = s
        .uid_fetch_headers("1:*", &["Message-ID", "Subject"])
        .await
        .expect("fetch headers");
    assert_eq!(
        h.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "deterministic UIDs"
    );
    let text = String::from_utf8_lossy(&h[0].header);
    assert!(text.contains("Message-ID: <msg1@example.org>"), "{text}");
    assert!(text.contains("Subject: message number 1"), "{text}");
    assert!(!text.contains("From:"), "only the requested fields: {text}");
    assert_eq!(h[0].size, Some(message(1).len() as u32));
    assert!(!has(&h[0].flags, "\\Seen"));
    assert!(has(&h[1].flags, "\\Seen"));

    let prefix = s
        .uid_fetch_prefix(3, 20)
        .await
        .expect("prefix")
        .expect("uid 3 exists");
    assert_eq!(prefix, message(3)[..20].to_vec());
    let whole = s
        .uid_fetch_prefixes(&[1, 3], 100_000)
        .await
        .expect("prefixes");
    assert_eq!(whole.len(), 2);
    assert_eq!(whole[1].data, message(3));
    assert_eq!(s.uid_fetch_prefix(99, 20).await.expect("prefix"), None);
    s.logout().await.expect("LOGOUT");

    // A fresh session sees the flags unchanged.
    let mut s = login(&server, TlsMode::Implicit).await;
    s.examine("INBOX").await.expect("EXAMINE");
    let h = s
        .uid_fetch_headers("1:3", &["Subject"])
        .await
        .expect("fetch");
    assert!(!has(&h[0].flags, "\\Seen"), "{:?}", h[0].flags);
    assert!(has(&h[1].flags, "\\Seen"), "{:?}", h[1].flags);
    assert!(!has(&h[2].flags, "\\Seen"), "{:?}", h[2].flags);
}

/// Delivers 3 messages (2nd seen), moves UIDs 1 and 2, checks both folders.
async fn move_two_of_three(server: &TestServer, expected: MoveOutcome) -> ImapSession {
    for (n, flags) in [(1, ""), (2, "S"), (3, "")] {
        server
            .deliver(USER, "INBOX", &message(n), flags)
            .expect("deliver");
    }
    let mut s = login(server, TlsMode::Implicit).await;
    s.select("INBOX").await.expect("SELECT");
    let outcome = s.move_uids(&[1, 2], "Quarantine").await.expect("move");
    assert_eq!(outcome, expected);

    let st = s.examine("Quarantine").await.expect("EXAMINE Quarantine");
    assert_eq!(st.exists, 2);
    let q = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    let ids: Vec<String> = q
        .iter()
        .map(|m| String::from_utf8_lossy(&m.header).trim().to_string())
        .collect();
    assert_eq!(
        ids,
        vec![
            "Message-ID: <msg1@example.org>",
            "Message-ID: <msg2@example.org>"
        ]
    );
    assert!(
        !has(&q[0].flags, "\\Seen"),
        "move must not mark read: {:?}",
        q[0].flags
    );
    assert!(
        has(&q[1].flags, "\\Seen"),
        "move keeps \\Seen: {:?}",
        q[1].flags
    );
    assert!(
        !has(&q[0].flags, "\\Deleted") && !has(&q[1].flags, "\\Deleted"),
        "copies are not deleted"
    );
    s
}

#[tokio::test]
async fn move_uses_uid_move() {
    let server = start(TestServerOptions::default());
    let mut s = move_two_of_three(&server, MoveOutcome::Moved).await;
    let st = s.examine("INBOX").await.expect("EXAMINE");
    assert_eq!(st.exists, 1);
    let left = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![3]);
    s.select("INBOX").await.expect("SELECT");
    assert_eq!(
        s.move_uids(&[], "Quarantine").await.expect("empty"),
        MoveOutcome::Nothing
    );
}

#[tokio::test]
async fn move_without_move_capability_copies_and_uid_expunges() {
    let server = start(TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    });
    let probe = login(&server, TlsMode::Implicit).await;
    assert!(!probe.has_capability("MOVE"), "{:?}", probe.capabilities());
    assert!(probe.has_capability("UIDPLUS"));
    drop(probe);
    // Another client's \Deleted message (Maildir flag T) must survive: UID EXPUNGE only
    // touches our UIDs.
    let mut s = move_two_of_three(&server, MoveOutcome::CopiedAndExpunged).await;
    drop(s);
    server
        .deliver(USER, "INBOX", &message(4), "T")
        .expect("deliver");
    s = login(&server, TlsMode::Implicit).await;
    s.select("INBOX").await.expect("SELECT");
    let before = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    assert_eq!(before.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        s.move_uids(&[3], "Quarantine").await.expect("move"),
        MoveOutcome::CopiedAndExpunged
    );
    let st = s.examine("INBOX").await.expect("EXAMINE");
    assert_eq!(st.exists, 1, "the other client's \\Deleted message stays");
    let left = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    assert_eq!(left[0].uid, 4);
    assert!(has(&left[0].flags, "\\Deleted"));
}

#[tokio::test]
async fn move_without_move_and_uidplus_never_expunges() {
    let server = start(TestServerOptions {
        hide_move: true,
        hide_uidplus: true,
        ..TestServerOptions::default()
    });
    let mut s = move_two_of_three(&server, MoveOutcome::CopiedAndFlaggedDeleted).await;
    let st = s.examine("INBOX").await.expect("EXAMINE");
    assert_eq!(st.exists, 3, "nothing expunged");
    let inbox = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    assert!(has(&inbox[0].flags, "\\Deleted"));
    assert!(has(&inbox[1].flags, "\\Deleted"));
    assert!(!has(&inbox[2].flags, "\\Deleted"));
    assert!(!has(&inbox[0].flags, "\\Seen"), "{:?}", inbox[0].flags);
    assert!(has(&inbox[1].flags, "\\Seen"));
}

#[tokio::test]
async fn create_quarantine_if_missing_and_keywords() {
    let server = start(TestServerOptions {
        with_quarantine: false,
        ..TestServerOptions::default()
    });
    server
        .deliver(USER, "INBOX", &message(1), "")
        .expect("deliver");
    let mut s = login(&server, TlsMode::Implicit).await;
    assert!(!s
        .list_folders()
        .await
        .expect("LIST")
        .iter()
        .any(|f| f.name == "Quarantine"));
    assert!(s
        .create_folder_if_missing("Quarantine")
        .await
        .expect("create"));
    assert!(!s
        .create_folder_if_missing("Quarantine")
        .await
        .expect("exists"));
    assert!(s
        .create_folder_if_missing("Junk/Back scatter")
        .await
        .expect("nested with space"));
    s.select("INBOX").await.expect("SELECT");
    s.add_flags(&[1], &["$Backscatter"]).await.expect("keyword");
    assert!(
        s.add_flags(&[1], &["\\Seen"]).await.is_err(),
        "\\Seen is refused"
    );
    assert_eq!(
        s.move_uids(&[1], "Junk/Back scatter").await.expect("move"),
        MoveOutcome::Moved
    );
    s.examine("Junk/Back scatter").await.expect("EXAMINE");
    let m = s.uid_fetch_headers("1", &["Subject"]).await.expect("fetch");
    assert!(has(&m[0].flags, "$Backscatter"), "{:?}", m[0].flags);
    assert!(!has(&m[0].flags, "\\Seen"), "{:?}", m[0].flags);
}

#[tokio::test]
async fn read_only_mailbox_refuses_moves() {
    let server = start(TestServerOptions::default());
    server
        .deliver(USER, "INBOX", &message(1), "")
        .expect("deliver");
    let mut s = login(&server, TlsMode::Implicit).await;
    s.examine("INBOX").await.expect("EXAMINE");
    let err = s
        .move_uids(&[1], "Quarantine")
        .await
        .expect_err("read-only");
    assert!(matches!(err, ImapError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn dead_server_times_out() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    for tls in [TlsMode::Implicit, TlsMode::Starttls, TlsMode::None] {
        let mut s = ConnectSettings::new("127.0.0.1", port, tls, USER);
        s.timeout = Duration::from_millis(300);
        let t0 = Instant::now();
        let err = ImapSession::connect(&s, &Secret::new(PASS))
            .await
            .expect_err("timeout");
        let took = t0.elapsed();
        assert!(matches!(err, ImapError::Timeout { .. }), "{tls}: {err:?}");
        // Far below a hang, far above a loaded machine's timer lateness.
        assert!(took < Duration::from_secs(10), "{tls}: took {took:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("no answer within"), "{msg}");
    }
    holder.abort();
}

#[tokio::test]
async fn server_dying_mid_session_is_an_error_not_a_hang() {
    let mut server = start(TestServerOptions::default());
    let mut s = login(&server, TlsMode::Implicit).await;
    s.select("INBOX").await.expect("SELECT");
    server.stop();
    // Dovecot's per-connection processes may take a moment to go; every call must return
    // (success or error) within the timeout, and an error must come.
    let deadline = Instant::now() + Duration::from_secs(15);
    let err = loop {
        let t0 = Instant::now();
        let r = s.noop().await;
        // The session timeout (10 s), plus room for a loaded machine.
        assert!(t0.elapsed() < Duration::from_secs(15), "NOOP hung");
        match r {
            Err(e) => break e,
            Ok(()) if Instant::now() > deadline => panic!("NOOP still succeeds after stop"),
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        matches!(
            err,
            ImapError::ConnectionLost { .. }
                | ImapError::Command { .. }
                | ImapError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(s.is_broken() || matches!(err, ImapError::Command { .. }));
    // Restart works and a new session can log in.
    server.restart().expect("restart");
    let mut s2 = login(&server, TlsMode::Implicit).await;
    s2.examine("INBOX").await.expect("EXAMINE after restart");
}

#[tokio::test]
async fn non_ascii_password_uses_authenticate_plain() {
    let server = TestServer::start(&[("carol", "pässwört-✓")], TestServerOptions::default())
        .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"));
    let mut st = ConnectSettings::new(server.host(), server.tls_port(), TlsMode::Implicit, "carol");
    st.ca_file = Some(server.ca_file());
    let mut s = ImapSession::connect(&st, &Secret::new("pässwört-✓"))
        .await
        .unwrap_or_else(|e| panic!("AUTHENTICATE PLAIN failed: {e}"));
    s.examine("INBOX").await.expect("EXAMINE");
    let err = ImapSession::connect(&st, &Secret::new("pässwört-x"))
        .await
        .expect_err("wrong password");
    assert!(matches!(err, ImapError::AuthFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn uidvalidity_reset_gives_new_uidvalidity() {
    let mut server = start(TestServerOptions::default());
    server
        .deliver(USER, "Sent", &message(1), "S")
        .expect("deliver");
    server
        .deliver(USER, "Sent", &message(2), "S")
        .expect("deliver");
    let mut s = login(&server, TlsMode::Implicit).await;
    let before = s.examine("Sent").await.expect("EXAMINE");
    // Move one away so UIDs are no longer 1..n, then reset.
    s.select("Sent").await.expect("SELECT");
    s.move_uids(&[1], "Quarantine").await.expect("move");
    s.logout().await.expect("LOGOUT");
    server
        .deliver(USER, "Sent", &message(3), "S")
        .expect("deliver");
    server.reset_uidvalidity(USER, "Sent").expect("reset");
    let mut s = login(&server, TlsMode::Implicit).await;
    let after = s.examine("Sent").await.expect("EXAMINE");
    assert_ne!(before.uidvalidity, after.uidvalidity);
    assert_eq!(after.exists, 2);
    let h = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch");
    assert_eq!(h.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
}

/// With a server that offers COMPRESS=DEFLATE, a session compresses unless
/// told not to, and reads exactly what an uncompressed one reads; with a
/// server that does not offer it, nothing changes.
#[tokio::test]
async fn compress_deflate_when_the_server_offers_it() {
    let server = start(TestServerOptions {
        offer_compress: true,
        ..TestServerOptions::default()
    });
    for n in 1..=40 {
        server
            .deliver(
                USER,
                "INBOX",
                &message(n),
                if n % 3 == 0 { "S" } else { "" },
            )
            .expect("deliver");
    }
    let mut compressed = login(&server, TlsMode::Implicit).await;
    assert!(compressed.has_capability("COMPRESS=DEFLATE"));
    assert!(compressed.is_compressed());
    let mut off = settings(&server, TlsMode::Implicit, true);
    off.compress = false;
    let mut plain = ImapSession::connect(&off, &Secret::new(PASS))
        .await
        .expect("login without compression");
    assert!(!plain.is_compressed());

    let mut seen = Vec::new();
    for s in [&mut compressed, &mut plain] {
        s.examine("INBOX").await.expect("examine");
        let headers = s
            .uid_fetch_header_fields("1:*", &["Subject", "From"])
            .await
            .expect("header fields");
        let uids: Vec<u32> = headers.iter().map(|h| h.uid).collect();
        let prefixes = s.uid_fetch_prefixes(&uids, 64).await.expect("prefixes");
        assert_eq!(headers.len(), 40);
        seen.push((headers, prefixes));
    }
    assert_eq!(seen[0], seen[1], "a compressed session read something else");
    assert!(
        seen[0].1.iter().filter(|p| has(&p.flags, "\\Seen")).count() == 13,
        "flags came through"
    );
    // Commands keep working on the compressed stream after a large answer.
    compressed.select("INBOX").await.expect("select");
    assert_eq!(
        compressed.uid_search("ALL").await.expect("search").len(),
        40
    );

    let ordinary = start(TestServerOptions::default());
    let s = login(&ordinary, TlsMode::Implicit).await;
    assert!(!s.has_capability("COMPRESS=DEFLATE"));
    assert!(!s.is_compressed());
}
