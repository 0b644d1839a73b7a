//! A small HTTP/1.1 client for tests, plain or TLS, that keeps its connection open between
//! requests so a test can tell what happens to a connection across a reload or shutdown.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

enum Connection {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Connection {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Connection::Plain(stream) => stream,
            Connection::Tls(stream) => stream.as_mut(),
        }
    }
}

trait ReadWrite: io::Read + io::Write {}
impl<T: io::Read + io::Write> ReadWrite for T {}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

pub struct Client {
    address: SocketAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    connection: Option<Connection>,
    /// How many TCP connections this client has opened.
    pub connections_opened: usize,
}

impl Client {
    pub fn plain(address: SocketAddr) -> Client {
        Client {
            address,
            tls: None,
            connection: None,
            connections_opened: 0,
        }
    }

    /// A TLS client trusting only `roots`, sending `server_name` as SNI.
    pub fn tls(
        address: SocketAddr,
        server_name: &str,
        roots: &[CertificateDer<'static>],
    ) -> Client {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone()).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        Client {
            address,
            tls: Some((Arc::new(config), name)),
            connection: None,
            connections_opened: 0,
        }
    }

    fn connect(&mut self) -> io::Result<Connection> {
        let stream = TcpStream::connect(self.address)?;
        stream.set_read_timeout(Some(read_timeout()))?;
        stream.set_nodelay(true)?;
        self.connections_opened += 1;
        Ok(match &self.tls {
            None => Connection::Plain(stream),
            Some((config, name)) => {
                let connection = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                let mut tls = StreamOwned::new(connection, stream);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Connection::Tls(Box::new(tls))
            }
        })
    }

    /// The certificate the server presented on the current connection.
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        match &self.connection {
            Some(Connection::Tls(stream)) => stream
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned()),
            _ => None,
        }
    }

    /// Closes the connection; the next request opens a new one.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// Sends one request on the open connection (opening one if needed) and reads the answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let reused = self.connection.is_some();
        match self.send(method, path, headers, body) {
            // A server may close an idle keep-alive connection (or one whose last request body
            // it did not read); a client then retries once on a new one, as browsers do.
            Err(err)
                if reused
                    && matches!(
                        err.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                    ) =>
            {
                self.send(method, path, headers, body)
            }
            result => result,
        }
    }

    /// Sends a request and returns once it is written, without reading the answer (read it
    /// with [`Client::read_answer`]): the test knows the server has it, and can act while
    /// it is in flight (a long-polling `/sync`).
    pub fn send_only(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<()> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.address);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.connection.as_mut().expect("connected").stream();
        stream.write_all(head.as_bytes())?;
        stream.flush()
    }

    /// Reads the answer to the request [`Client::send_only`] sent.
    pub fn read_answer(&mut self) -> io::Result<Response> {
        let stream = self
            .connection
            .as_mut()
            .ok_or_else(|| io::Error::other("nothing sent"))?
            .stream();
        let result = read_response(stream, false);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.address);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        // One write per request: a head and body in two small writes meet Nagle's algorithm
        // and delayed ACKs, and every request would wait 40 ms for nothing.
        let mut request = head.into_bytes();
        if let Some(body) = body {
            request.extend_from_slice(body);
        }
        let result = (|| {
            let stream = self.connection.as_mut().expect("connected").stream();
            stream.write_all(&request)?;
            stream.flush()?;
            read_response(stream, method == "HEAD")
        })();
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Sends JSON with an optional access token; panics on I/O errors (not on HTTP errors).
    pub fn json(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Response {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        let body = serde_json::to_vec(body).expect("serialize");
        self.request(method, path, &headers, Some(&body))
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    /// `GET` with an access token.
    pub fn get_with(&mut self, path: &str, token: &str) -> Response {
        let bearer = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &bearer)], None)
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], None)
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }
}

fn read_response(stream: &mut dyn ReadWrite, head_request: bool) -> io::Result<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {status_line}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let body = if head_request || status == 204 || status == 304 {
        Vec::new()
    } else if let Some(length) = header("content-length") {
        let mut body = vec![0; length.parse().map_err(io::Error::other)?];
        stream.read_exact(&mut body)?;
        body
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(stream)?
    } else {
        let mut body = Vec::new();
        stream.read_to_end(&mut body)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_chunked(stream: &mut dyn ReadWrite) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            stream.read_exact(&mut byte)?;
            line.push(byte[0]);
        }
        let size_text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(io::Error::other)?;
        let mut chunk = vec![0; size + 2];
        stream.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// How long a request waits for its answer: 20 s, or `HEARTH_TEST_READ_TIMEOUT_SECS` (the
/// join of a 100,000-state room in a benchmark, or a machine shared with other builds,
/// takes longer).
fn read_timeout() -> Duration {
    std::env::var("HEARTH_TEST_READ_TIMEOUT_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_secs)
}
