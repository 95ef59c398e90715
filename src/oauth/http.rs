//! The HTTP both sides of OAuth2 need: a client for the provider's endpoints (ureq over
//! rustls with the same ring provider and trust roots as IMAP), and the few lines of server
//! that read one request on a loopback socket (the PKCE redirect listener and the test
//! provider).
//!
//! Client rules: https verified against the system roots; plain http only to a loopback host;
//! no redirects (a token request must not be sent on to another host); a proxy from the
//! environment (`HTTPS_PROXY`, `NO_PROXY`) for remote hosts only, never for loopback; bounded
//! answers; every request under the account's timeout.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use super::providers::check_endpoint_url;

/// Largest provider answer read (token answers are a few KB).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024;
/// Largest request head or body accepted by [`read_request`].
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A client for the provider's endpoints.
pub(crate) struct Client {
    /// For remote hosts (honours the proxy environment variables).
    agent: ureq::Agent,
    /// For loopback hosts: never through a proxy.
    direct: ureq::Agent,
}

impl Client {
    /// A client whose requests time out after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Client, String> {
        let roots = crate::imap::trusted_roots(None).map_err(|e| e.to_string())?;
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = |proxy: Option<ureq::Proxy>| {
            ureq::Agent::config_builder()
                .tls_config(tls.clone())
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .proxy(proxy)
                .user_agent(concat!("backsweep/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Client {
            agent: ureq::Agent::new_with_config(config(ureq::Proxy::try_from_env())),
            direct: ureq::Agent::new_with_config(config(None)),
        })
    }

    /// POSTs a form and returns the status and the JSON answer (an error if it is not JSON).
    pub(crate) fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), String> {
        let agent = if check_endpoint_url(url)? {
            &self.direct
        } else {
            &self.agent
        };
        let mut response = agent
            .post(url)
            .header("Accept", "application/json")
            .send_form(form.iter().copied())
            .map_err(describe_ureq_error)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(describe_ureq_error)?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => Ok((status, v)),
            _ => Err(format!(
                "HTTP status {status} with an answer that is not a JSON object"
            )),
        }
    }
}

fn describe_ureq_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "no answer in time".into(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// One HTTP request as read by [`read_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Decoded form parameters of an `application/x-www-form-urlencoded` body.
    pub form: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Request {
    /// The first query or form parameter with this name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (head and `Content-Length` body, bounded) from a stream.
pub(crate) fn read_request<R: Read>(stream: R) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.take(2 * MAX_REQUEST_BYTES as u64));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Err(std::io::Error::other("not an HTTP request")),
    };
    let mut content_length = 0usize;
    let mut authorization = None;
    let mut head = line.len();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        head += h.len();
        if head > MAX_REQUEST_BYTES {
            return Err(std::io::Error::other("request head too long"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value
                    .parse()
                    .map_err(|_| std::io::Error::other("bad Content-Length"))?;
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_string());
            }
        }
    }
    if content_length > MAX_REQUEST_BYTES {
        return Err(std::io::Error::other("request body too long"));
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_urlencoded(q)),
        None => (target, Vec::new()),
    };
    Ok(Request {
        method,
        path,
        query,
        form: parse_urlencoded(&String::from_utf8_lossy(&body)),
        authorization,
    })
}

/// Parses `a=1&b=x%20y` (also `+` for space).
pub(crate) fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Percent-encodes a query component (everything but unreserved characters).
pub(crate) fn encode_component(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A complete HTTP/1.1 response that closes the connection.
pub(crate) fn response(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_form_post() {
        let raw = b"POST /token?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 29\r\n\
                    Content-Type: application/x-www-form-urlencoded\r\n\r\n\
                    grant_type=a+b&code=%2F%3D%26";
        let r = read_request(&raw[..]).expect("request");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/token");
        assert_eq!(r.param("x"), Some("1"));
        assert_eq!(r.param("grant_type"), Some("a b"));
        assert_eq!(r.param("code"), Some("/=&"));
    }

    #[test]
    fn refuses_garbage_and_huge_bodies() {
        assert!(read_request(&b"\r\n"[..]).is_err());
        let huge = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 1 << 30);
        assert!(read_request(huge.as_bytes()).is_err());
        assert!(read_request(&b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..]).is_err());
    }

    #[test]
    fn encodes_components() {
        assert_eq!(
            encode_component("https://mail.google.com/ a"),
            "https%3A%2F%2Fmail.google.com%2F%20a"
        );
        assert_eq!(
            parse_urlencoded(&format!("k={}", encode_component("a b/&c"))),
            vec![("k".to_string(), "a b/&c".to_string())]
        );
    }

    #[test]
    fn client_refuses_plain_http_to_other_hosts() {
        let c = Client::new(Duration::from_secs(1)).expect("client");
        let e = c
            .post_form("http://example.com/token", &[("a", "b")])
            .expect_err("refused");
        assert!(e.contains("not loopback"), "{e}");
    }
}
