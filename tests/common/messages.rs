//! Generated test messages shared by the IMAP tests: plain mail and DSNs.

/// A plain text message.
pub fn text_message(
    from: &str,
    to: &str,
    subject: &str,
    date: &str,
    id: &str,
    body: &str,
) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A Postfix-style DSN to `to` whose returned header names `original_id`, sent by
/// `original_from` on `original_date`; `n` makes it unique (Message-ID, recipient).
pub fn dsn(
    to: &str,
    n: u32,
    original_id: &str,
    original_from: &str,
    original_date: &str,
) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx{n}.example.net>\r\n\
         To: {to}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: Tue, 03 Mar 2026 10:{m:02}:00 +0000\r\n\
         Message-ID: <dsn-{n}@mx{n}.example.net>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b{n}\"\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\
         \r\n\
         <rcpt{n}@example.net>: host mx{n}.example.net said: 550 5.1.1 User unknown\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx{n}.example.net\r\n\
         \r\n\
         Final-Recipient: rfc822; rcpt{n}@example.net\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         From: {original_from}\r\n\
         To: rcpt{n}@example.net\r\n\
         Subject: message {n}\r\n\
         Date: {original_date}\r\n\
         Message-ID: <{original_id}>\r\n\
         \r\n\
         --b{n}--\r\n",
        m = n % 60
    )
    .into_bytes()
}

/// A message sent by `from` on 1 January 2000: in a Sent folder it makes the sent
/// index cover the date of every generated original.
pub fn sent_in_2000(from: &str) -> Vec<u8> {
    text_message(
        from,
        "x@example.net",
        "old",
        "Sat, 1 Jan 2000 00:00:00 +0000",
        "oldest@example.com",
        "x",
    )
}
