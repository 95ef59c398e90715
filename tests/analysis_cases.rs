//! Hand-written messages for the cases the corpus has few of: ordinary mail
//! that looks automated or talks about failed deliveries (must stay `none`),
//! auto-replies and challenges from systems with no sample in the corpus,
//! and the line-ending and nesting variants of a bounce.

use backsweep::analysis::{analyze, Kind};

fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

#[test]
fn person_mentioning_a_failed_delivery_is_ordinary() {
    let m = "From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: delivery failed?\nMessage-ID: <a1@example.org>\n\nHi Bob, my mail to Carol could not be delivered, says her mailbox is full. Do you have another address?\n";
    assert_eq!(analyze(m.as_bytes()).kind, Kind::None);
}

#[test]
fn postmaster_writing_by_hand_is_ordinary() {
    let m = "From: Postmaster <postmaster@example.com>\nTo: bob@example.org\nSubject: Re: my mail to carol bounced\nIn-Reply-To: <q1@example.org>\nReferences: <q1@example.org>\nUser-Agent: Mozilla Thunderbird\nMessage-ID: <p1@example.com>\n\nHi Bob,\nI checked the logs: your message could not be delivered because Carol's mailbox is full (552 5.2.2).\nRegards, the postmaster\n";
    assert_eq!(analyze(m.as_bytes()).kind, Kind::None);
}

#[test]
fn bulk_and_auto_generated_notifications_are_ordinary() {
    let newsletter = "From: Shop <news@shop.example>\nTo: bob@example.org\nSubject: Your parcel could not be delivered - reschedule now\nPrecedence: bulk\nList-Id: <news.shop.example>\nList-Unsubscribe: <mailto:unsub@shop.example>\nMessage-ID: <n1@shop.example>\n\nWe tried to deliver your parcel but nobody was home. Delivery failed; book a new slot.\n";
    assert_eq!(analyze(newsletter.as_bytes()).kind, Kind::None);
    let notification = "From: CI <noreply@ci.example>\nTo: bob@example.org\nSubject: Build failed\nAuto-Submitted: auto-generated\nMessage-ID: <c1@ci.example>\n\nYour build failed: permanent error in step 3.\n";
    assert_eq!(analyze(notification.as_bytes()).kind, Kind::None);
}

#[test]
fn dmarc_aggregate_report_is_ordinary() {
    let m = "From: noreply-dmarc-support@google.com\nTo: dmarc@example.org\nSubject: Report domain: example.org Submitter: google.com Report-ID: 123456\nMessage-ID: <r1@google.com>\nContent-Type: application/zip; name=\"google.com!example.org!1!2.zip\"\nContent-Transfer-Encoding: base64\n\nUEsDBBQAAAAIAA==\n";
    assert_eq!(analyze(m.as_bytes()).kind, Kind::None);
}

#[test]
fn outlook_out_of_office_is_an_autoreply_about_the_replied_message() {
    let m = "From: Carol <carol@example.net>\nTo: alice@example.org\nSubject: Automatic reply: Lunch\nIn-Reply-To: <lunch-1@example.org>\nThread-Topic: Lunch\nX-MS-Exchange-Inbox-Rules-Loop: carol@example.net\nMessage-ID: <ooo-1@example.net>\n\nI am out of the office until Monday with no access to email.\n";
    let a = analyze(m.as_bytes());
    assert_eq!(a.kind, Kind::Autoreply);
    assert_eq!(a.original_message_ids, vec!["lunch-1@example.org"]);
    assert_eq!(a.recipients, vec!["carol@example.net"]);
}

#[test]
fn rfc3834_auto_replied_header_alone_is_an_autoreply() {
    let m = "From: dave@example.net\nTo: alice@example.org\nSubject: Re: hello\nAuto-Submitted: auto-replied (vacation)\nIn-Reply-To: <h1@example.org>\nMessage-ID: <v1@example.net>\n\nThanks, I will read it later.\n";
    let a = analyze(m.as_bytes());
    assert_eq!(a.kind, Kind::Autoreply);
    assert_eq!(a.original_message_ids, vec!["h1@example.org"]);
}

#[test]
fn challenges_are_recognised() {
    let tmda = "From: erin@example.net\nTo: alice@example.org\nSubject: Re: hello (confirmation required)\nX-Delivery-Agent: TMDA/1.1.12\nIn-Reply-To: <h2@example.org>\nMessage-ID: <t1@example.net>\n\nYour message is held until you confirm.\n";
    let a = analyze(tmda.as_bytes());
    assert_eq!(a.kind, Kind::Challenge);
    assert_eq!(a.original_message_ids, vec!["h2@example.org"]);
    let generic = "From: Frank <frank@example.net>\nTo: alice@example.org\nSubject: Please confirm your message\nAuto-Submitted: auto-replied\nMessage-ID: <c2@example.net>\n\nI use a challenge-response system to keep spam out. Please click the following link to verify that you are a human and your message will be delivered: https://verify.example.net/abc\n";
    assert_eq!(analyze(generic.as_bytes()).kind, Kind::Challenge);
}

const DSN: &str = "Return-Path: <>\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: alice@example.org\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <bounce-1@mx.example.net>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\n\n--BB\nContent-Type: text/plain\n\nThis is the mail system at host mx.example.net.\n\n<nobody@example.net>: user unknown\n\n--BB\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; nobody@example.net\nAction: failed\nStatus: 5.1.1\n\n--BB\nContent-Type: message/rfc822\n\nFrom: Alice <alice@example.org>\nTo: nobody@example.net\nSubject: hi\nDate: Mon, 2 Nov 2026 10:00:00 +0000\nMessage-ID: <orig-1@example.org>\n\nhello\n--BB--\n";

#[test]
fn a_dsn_in_any_line_ending_gives_the_same_answer() {
    for raw in [
        DSN.as_bytes().to_vec(),
        crlf(DSN),
        DSN.replace('\n', "\r").into_bytes(),
    ] {
        let a = analyze(&raw);
        assert_eq!(a.kind, Kind::Bounce);
        assert_eq!(a.original_message_ids, vec!["orig-1@example.org"]);
        assert_eq!(a.recipients, vec!["nobody@example.net"]);
        assert_eq!(a.original.subject.as_deref(), Some("hi"));
        assert!(a
            .rules
            .iter()
            .any(|r| r == "structure.report.delivery-status"));
    }
}

#[test]
fn a_bounce_forwarded_as_an_attachment_yields_the_innermost_original() {
    let wrapper = format!(
        "From: Alice <alice@example.org>\nTo: helpdesk@example.org\nSubject: Fwd: Undelivered Mail Returned to Sender\nMessage-ID: <fwd-1@example.org>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"WW\"\n\n--WW\nContent-Type: text/plain\n\nsee attached bounce\n--WW\nContent-Type: message/rfc822\n\n{DSN}\n--WW--\n"
    );
    let a = analyze(wrapper.as_bytes());
    assert_eq!(a.kind, Kind::Bounce);
    assert_eq!(
        a.original_message_ids.first().map(String::as_str),
        Some("orig-1@example.org")
    );
    assert!(a.rules.iter().any(|r| r == "original.nested-bounce"));
}

#[test]
fn blank_lines_before_the_header_and_base64_dsn_parts_are_fine() {
    let b64 = "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n";
    let encoded = base64_encode(b64.as_bytes());
    let m = format!(
        "\n\nFrom: MAILER-DAEMON@mx.example.net\nTo: alice@example.org\nSubject: failure notice\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"X\"\n\n--X\nContent-Type: text/plain\n\nSorry.\n--X\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n{encoded}\n--X--\n"
    );
    let a = analyze(m.as_bytes());
    assert_eq!(a.kind, Kind::Bounce);
    assert_eq!(a.recipients, vec!["gone@example.net"]);
}

#[test]
fn a_huge_message_is_read_only_up_to_the_bound() {
    let mut m = DSN.as_bytes().to_vec();
    m.extend(std::iter::repeat_n(
        b'x',
        3 * backsweep::analysis::MAX_ANALYSED_BYTES,
    ));
    let a = analyze(&m);
    assert!(a.truncated);
    assert_eq!(a.kind, Kind::Bounce);
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_notice_records_the_addresses_it_was_delivered_to_as_written() {
    let m = "Delivered-To: alice@example.org\nX-Original-To: prvs=0123abcdef=Alice@Example.org\nTo: <prvs=0123abcdef=Alice@Example.org>, alice@example.org\nFrom: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <n1@mx.example.net>\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; bob@example.com\nAction: failed\nStatus: 5.1.1\n\n--b--\n";
    let a = analyze(m.as_bytes());
    assert_eq!(a.kind, Kind::Bounce);
    assert_eq!(
        a.delivered_to,
        vec!["alice@example.org", "prvs=0123abcdef=Alice@Example.org"]
    );
    // Ordinary mail carries none (nothing to verify there).
    let ordinary = "Delivered-To: alice@example.org\nFrom: bob@example.com\nTo: alice@example.org\nSubject: hi\n\nhello\n";
    assert!(analyze(ordinary.as_bytes()).delivered_to.is_empty());
}
