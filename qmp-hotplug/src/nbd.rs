//! NBD exports and their URIs, read by the rules of QEMU 7.2's own NBD URI parser
//! (`block/nbd.c` over `util/uri.c`), checked against `qemu-img info` of the same URIs.
//!
//! What QEMU accepts, this accepts, with the same meaning: the schemes `nbd`, `nbd+tcp` and
//! `nbd+unix` (case-sensitive; QEMU 7.2 has no `nbds`), `[IPv6]` hosts, port 10809 when the
//! port is empty or 0, `%`-decoding of host, export and socket, one leading `/` stripped from
//! the path (so `nbd://host//name` is export `/name`), no query on TCP, exactly one `socket`
//! parameter on unix (empty `&`/`;` sections are skipped), user info and fragment ignored.
//! Refused although QEMU would pass them on and fail later: a port over 65535, an empty
//! socket path, a host that is not a DNS name or address, a decoded NUL, and an export that
//! is not UTF-8.

use std::ffi::OsString;
use std::fmt;
use std::net::Ipv6Addr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::Error;
use crate::tls::NbdTls;

/// The NBD port a URI means when it names none.
pub const NBD_DEFAULT_PORT: u16 = 10809;

/// An NBD export: from a URI ([`NbdExport::parse_uri`]) or built with [`NbdExport::new`].
///
/// ```
/// use qmp_hotplug::{NbdExport, NbdServer};
/// let built = NbdExport::new(NbdServer::Unix("/run/nbd.sock".into())).with_export("vm 1");
/// assert_eq!(built, NbdExport::parse_uri("nbd+unix:///vm%201?socket=/run/nbd.sock").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NbdExport {
    /// The server.
    pub server: NbdServer,
    /// The export name (the server's default when `None`).
    pub export: Option<String>,
    /// TLS, if the server asks for it (not part of the URI: QEMU 7.2 has no `nbds` scheme).
    pub tls: Option<NbdTls>,
}

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NbdServer {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// Host name or address (an IPv6 address without brackets).
        host: String,
        /// Port ([`NBD_DEFAULT_PORT`] is NBD's).
        port: u16,
    },
}

/// How a URI's server is reached, from its scheme.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Unix,
}

impl NbdExport {
    /// Parses an NBD URI: `nbd[+tcp]://HOST[:PORT][/EXPORT]` or
    /// `nbd+unix://[/EXPORT]?socket=PATH`, as QEMU 7.2 reads them (see the module docs).
    ///
    /// ```
    /// use qmp_hotplug::{NbdExport, NbdServer};
    /// let disk = NbdExport::parse_uri("nbd://[::1]/vm%201").unwrap();
    /// assert_eq!(disk.server, NbdServer::Tcp { host: "::1".into(), port: 10809 });
    /// assert_eq!(disk.export.as_deref(), Some("vm 1"));
    /// assert!(NbdExport::parse_uri("nbd://::1/vm").is_err()); // IPv6 goes in brackets
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the URI and what is wrong with it.
    pub fn parse_uri(uri: &str) -> Result<Self, Error> {
        parse(uri).map_err(|why| Error::InvalidSpec(format!("bad NBD URI '{uri}': {why}")))
    }
}

impl NbdExport {
    /// The server's default export on `server`, without TLS.
    #[must_use]
    pub fn new(server: NbdServer) -> Self {
        Self { server, export: None, tls: None }
    }

    /// The export called `name` instead of the server's default.
    #[must_use]
    pub fn with_export(mut self, name: impl Into<String>) -> Self {
        self.export = Some(name.into());
        self
    }

    /// The export reached over TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: NbdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The filename QEMU 7.2 gives a node of this export (`nbd_refresh_filename`): a URI
    /// written without `%`-encoding, so it is compared as text, never parsed. `None` for an
    /// IPv6 host, for which QEMU writes a `json:` filename instead.
    pub(crate) fn qemu_filename(&self) -> Option<String> {
        let export = self.export.as_deref();
        match (&self.server, export) {
            (NbdServer::Tcp { host, .. }, _) if host.contains(':') => None,
            (NbdServer::Tcp { host, port }, Some(name)) => {
                Some(format!("nbd://{host}:{port}/{name}"))
            }
            (NbdServer::Tcp { host, port }, None) => Some(format!("nbd://{host}:{port}")),
            (NbdServer::Unix(path), Some(name)) => {
                Some(format!("nbd+unix:///{name}?socket={}", path.to_str()?))
            }
            (NbdServer::Unix(path), None) => Some(format!("nbd+unix://?socket={}", path.to_str()?)),
        }
    }
}

/// Writes the URI that [`NbdExport::parse_uri`] reads back as this export, `%`-encoding
/// what needs it (and an IPv6 host in brackets).
impl fmt::Display for NbdExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = self.export.as_deref().map_or_else(String::new, |name| {
            format!("/{}", encode(name.as_bytes(), |c| is_pchar(c) || c == b'/'))
        });
        match &self.server {
            NbdServer::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}{export}")
            }
            NbdServer::Tcp { host, port } => write!(f, "nbd://{host}:{port}{export}"),
            NbdServer::Unix(path) => {
                let socket = encode(path.as_os_str().as_bytes(), is_query_value_char);
                write!(f, "nbd+unix://{export}?socket={socket}")
            }
        }
    }
}

fn parse(uri: &str) -> Result<NbdExport, String> {
    let (scheme, rest) = uri.split_once("://").ok_or("no scheme:// (nbd, nbd+tcp, nbd+unix)")?;
    let transport = match scheme {
        "nbd" | "nbd+tcp" => Transport::Tcp,
        "nbd+unix" => Transport::Unix,
        "nbds" | "nbds+tcp" | "nbds+unix" => {
            return Err(format!(
                "QEMU 7.2 has no '{scheme}' scheme: use nbd:// and give the disk TLS credentials"
            ));
        }
        _ => return Err(format!("scheme '{scheme}' is not nbd, nbd+tcp or nbd+unix")),
    };
    // QEMU ignores the fragment, but it must still be URI text.
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    check_chars(fragment, "fragment", |c| is_pchar(c) || c == b'/' || c == b'?')?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    check_chars(path, "path", |c| is_pchar(c) || c == b'/')?;
    let path = decode(path, "export")?;
    let export = match path.strip_prefix(b"/").unwrap_or(&path) {
        [] => None,
        name => Some(String::from_utf8(name.to_vec()).map_err(|_| "the export is not UTF-8")?),
    };
    let server = match transport {
        Transport::Tcp => {
            if query.is_some_and(|query| !query.is_empty()) {
                return Err("a TCP URI takes no ?query (only nbd+unix takes ?socket=)".into());
            }
            let (host, port) = host_and_port(authority)?;
            NbdServer::Tcp { host, port }
        }
        Transport::Unix => {
            if !authority.is_empty() {
                return Err("nbd+unix takes no host or port: write nbd+unix:///EXPORT".into());
            }
            NbdServer::Unix(socket_of(query.unwrap_or_default())?)
        }
    };
    Ok(NbdExport { server, export, tls: None })
}

/// The host (brackets removed) and port of a TCP URI's authority.
fn host_and_port(authority: &str) -> Result<(String, u16), String> {
    // User info is allowed by the URI syntax and ignored by QEMU.
    let host_port = match authority.rsplit_once('@') {
        Some((user, host_port)) => {
            check_chars(user, "user info", |c| is_unreserved_or_sub_delim(c) || c == b':')?;
            host_port
        }
        None => authority,
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or("'[' without its ']'")?;
        let address: Ipv6Addr =
            address.parse().map_err(|_| format!("'[{address}]' is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("only ':PORT' may follow ']'")?),
        };
        (address.to_string(), port)
    } else {
        if host_port.contains(']') {
            return Err("']' without its '['".into());
        }
        let (host, port) = match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address goes in brackets, as in nbd://[::1]/EXPORT".into());
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        check_chars(host, "host", is_unreserved_or_sub_delim)?;
        let host = decode(host, "host")?;
        let name_like = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
        if host.is_empty() {
            return Err("no host".into());
        }
        if !host.iter().all(name_like) {
            return Err("the host is not a DNS name or an address".into());
        }
        (String::from_utf8(host).expect("ASCII"), port)
    };
    let port = match port {
        None | Some("") => 0,
        Some(digits) if digits.bytes().all(|c| c.is_ascii_digit()) => {
            digits.parse::<u16>().map_err(|_| format!("port {digits} is over 65535"))?
        }
        Some(other) => return Err(format!("port '{other}' is not a number")),
    };
    // QEMU reads port 0 (and no port) as NBD's.
    Ok((host, if port == 0 { NBD_DEFAULT_PORT } else { port }))
}

/// The socket path of an `nbd+unix` query: its only non-empty section must be `socket=PATH`.
/// Sections end at the first `&` or, when there is none, the first `;` (QEMU's splitting).
fn socket_of(query: &str) -> Result<PathBuf, String> {
    check_chars(query, "query", |c| is_pchar(c) || c == b'/' || c == b'?')?;
    let mut sections = Vec::new();
    let mut rest = query;
    while !rest.is_empty() {
        let end = rest.find('&').or_else(|| rest.find(';')).unwrap_or(rest.len());
        if end > 0 {
            sections.push(&rest[..end]);
        }
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let [section] = sections[..] else {
        return Err(format!(
            "nbd+unix needs exactly one query parameter, socket=PATH (found {})",
            sections.len()
        ));
    };
    let (name, value) = section.split_once('=').ok_or("socket has no '=PATH'")?;
    if decode(name, "parameter name")? != b"socket" {
        return Err(format!("nbd+unix takes socket=PATH, not '{name}'"));
    }
    let path = decode(value, "socket path")?;
    if path.is_empty() {
        return Err("the socket path is empty".into());
    }
    Ok(PathBuf::from(OsString::from_vec(path)))
}

/// RFC 3986 `unreserved` and `sub-delims`.
fn is_unreserved_or_sub_delim(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c)
}

/// RFC 3986 `pchar` (a `%` is checked as an escape separately).
fn is_pchar(c: u8) -> bool {
    is_unreserved_or_sub_delim(c) || matches!(c, b':' | b'@' | b'%')
}

/// What a query value may hold unencoded without being read as a separator.
fn is_query_value_char(c: u8) -> bool {
    is_pchar(c) && !matches!(c, b'&' | b';' | b'=' | b'%') || c == b'/'
}

/// Refuses characters outside `allowed` and `%` not followed by two hex digits.
fn check_chars(text: &str, part: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (at, &c) in bytes.iter().enumerate() {
        if c == b'%' {
            let escape = bytes.get(at + 1..at + 3);
            if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!("the {part} has a '%' that is not a %XX escape"));
            }
        } else if !allowed(c) {
            let shown = text[at..].chars().next().unwrap_or_default();
            return Err(format!("the {part} holds {shown:?}, which a URI must %-encode"));
        }
    }
    Ok(())
}

/// `%XX`-decodes text that [`check_chars`] accepted; a decoded NUL is refused (QEMU's C
/// strings would end there).
fn decode(text: &str, part: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).expect("checked hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("checked hex digits"));
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    if out.contains(&0) {
        return Err(format!("the {part} holds an encoded NUL"));
    }
    Ok(out)
}

/// `%XX`-encodes every byte `keep` refuses.
fn encode(bytes: &[u8], keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if keep(c) && c != b'%' {
            out.push(char::from(c));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend([
                '%',
                char::from(HEX[usize::from(c >> 4)]),
                char::from(HEX[usize::from(c & 15)]),
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tcp(host: &str, port: u16, export: Option<&str>) -> NbdExport {
        NbdExport {
            server: NbdServer::Tcp { host: host.into(), port },
            export: export.map(Into::into),
            tls: None,
        }
    }

    fn unix(path: &str, export: Option<&str>) -> NbdExport {
        NbdExport {
            server: NbdServer::Unix(path.into()),
            export: export.map(Into::into),
            tls: None,
        }
    }

    fn refusal(uri: &str) -> String {
        match NbdExport::parse_uri(uri) {
            Ok(export) => panic!("{uri} parsed as {export:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[track_caller]
    fn parses(uri: &str, expected: &NbdExport) {
        assert_eq!(&NbdExport::parse_uri(uri).unwrap(), expected, "{uri}");
    }

    #[test]
    fn tcp_schemes_are_nbd_and_nbd_plus_tcp_only() {
        parses("nbd://10.0.0.1:10810/disk", &tcp("10.0.0.1", 10810, Some("disk")));
        parses("nbd+tcp://10.0.0.1:10810/disk", &tcp("10.0.0.1", 10810, Some("disk")));
        assert!(refusal("nbds://h/e").contains("no 'nbds' scheme"));
        assert!(refusal("nbds+unix:///e?socket=/s").contains("no 'nbds+unix' scheme"));
        for other in ["NBD://h/e", "http://h/e", "nbd+vsock://1/e", "nbd:h:10809"] {
            refusal(other);
        }
    }

    #[test]
    fn an_empty_or_zero_port_is_nbds() {
        for uri in ["nbd://host", "nbd://host/", "nbd://host:", "nbd://host:0", "nbd://host:/"] {
            parses(uri, &tcp("host", NBD_DEFAULT_PORT, None));
        }
        parses("nbd://host:65535/e", &tcp("host", 65535, Some("e")));
        assert!(refusal("nbd://host:65536/e").contains("over 65535"));
        assert!(refusal("nbd://host:port/e").contains("not a number"));
        assert!(refusal("nbd://host:+1/e").contains("not a number"));
    }

    #[test]
    fn ipv6_hosts_go_in_balanced_brackets() {
        parses("nbd://[::1]:10809/exp", &tcp("::1", 10809, Some("exp")));
        parses("nbd://[::1]/exp", &tcp("::1", NBD_DEFAULT_PORT, Some("exp")));
        parses("nbd://[fe80::1]:7000", &tcp("fe80::1", 7000, None));
        assert!(refusal("nbd://::1/exp").contains("in brackets"));
        assert!(refusal("nbd://fe80::1:7000/exp").contains("in brackets"));
        assert!(refusal("nbd://[::1/exp").contains("without its ']'"));
        assert!(refusal("nbd://::1]/exp").contains("without its '['"));
        assert!(refusal("nbd://[::1]x/exp").contains("may follow ']'"));
        assert!(refusal("nbd://[host]/exp").contains("not an IPv6 address"));
    }

    #[test]
    fn tcp_needs_a_host_and_no_query() {
        for no_host in ["nbd://", "nbd:///e", "nbd://:10809/e", "nbd://u@/e"] {
            assert!(refusal(no_host).contains("no host"), "{no_host}");
        }
        assert!(refusal("nbd://host/e?x=1").contains("takes no ?query"));
        assert!(refusal("nbd://host/e?socket=/s").contains("takes no ?query"));
        // An empty query has no parameters: QEMU takes it.
        parses("nbd://host/e?", &tcp("host", NBD_DEFAULT_PORT, Some("e")));
        assert!(refusal("nbd://host%2Fx/e").contains("not a DNS name"));
        assert!(refusal("nbd://ho st/e").contains("%-encode"));
    }

    #[test]
    fn user_info_and_fragment_are_ignored_as_qemu_does() {
        parses("nbd://user:pw@host:1/e#part", &tcp("host", 1, Some("e")));
        assert!(refusal("nbd://host/e#a#b").contains("fragment"));
    }

    #[test]
    fn unix_needs_exactly_one_socket_parameter_and_no_authority() {
        parses("nbd+unix:///exp0?socket=/run/nbd.sock", &unix("/run/nbd.sock", Some("exp0")));
        parses("nbd+unix://?socket=/s", &unix("/s", None));
        parses("nbd+unix:///?socket=/s", &unix("/s", None));
        // Empty sections are skipped, as QEMU's query splitting does.
        parses("nbd+unix:///e?&socket=/s&", &unix("/s", Some("e")));
        parses("nbd+unix:///e?socket=%2Ftmp%2Fa%20b.sock", &unix("/tmp/a b.sock", Some("e")));
        for (uri, why) in [
            ("nbd+unix:///e", "exactly one"),
            ("nbd+unix:///e?", "exactly one"),
            ("nbd+unix:///e?a=b&socket=/s", "exactly one"),
            ("nbd+unix:///e?socket=/s;x=1", "exactly one"),
            ("nbd+unix:///e?path=/s", "not 'path'"),
            ("nbd+unix:///e?socket", "no '=PATH'"),
            ("nbd+unix:///e?socket=", "empty"),
            ("nbd+unix://host/e?socket=/s", "no host or port"),
            ("nbd+unix://:1/e?socket=/s", "no host or port"),
        ] {
            let refusal = refusal(uri);
            assert!(refusal.contains(why), "{uri}: {refusal}");
        }
    }

    #[test]
    fn exports_are_percent_decoded_after_one_slash() {
        parses("nbd://h/a%20b", &tcp("h", NBD_DEFAULT_PORT, Some("a b")));
        parses("nbd://h//name", &tcp("h", NBD_DEFAULT_PORT, Some("/name")));
        parses("nbd://h/a/b", &tcp("h", NBD_DEFAULT_PORT, Some("a/b")));
        parses("nbd://h/%C3%A9", &tcp("h", NBD_DEFAULT_PORT, Some("é")));
        parses("nbd://my%2Dhost/e", &tcp("my-host", NBD_DEFAULT_PORT, Some("e")));
        assert!(refusal("nbd://h/a b").contains("%-encode"));
        assert!(refusal("nbd://h/a%2").contains("not a %XX escape"));
        assert!(refusal("nbd://h/a%zz").contains("not a %XX escape"));
        assert!(refusal("nbd://h/%FF").contains("not UTF-8"));
        assert!(refusal("nbd://h/a%00").contains("NUL"));
    }

    #[test]
    fn refusals_name_the_uri() {
        let message = refusal("nbd://h:x/e");
        assert!(message.contains("'nbd://h:x/e'"), "{message}");
    }

    #[test]
    fn qemu_filenames_are_written_as_qemu_writes_them() {
        assert_eq!(tcp("h", 1, Some("a b")).qemu_filename().as_deref(), Some("nbd://h:1/a b"));
        assert_eq!(tcp("h", 1, None).qemu_filename().as_deref(), Some("nbd://h:1"));
        assert_eq!(tcp("::1", 1, Some("e")).qemu_filename(), None);
        let socket = unix("/s", Some("e")).qemu_filename();
        assert_eq!(socket.as_deref(), Some("nbd+unix:///e?socket=/s"));
        assert_eq!(unix("/s", None).qemu_filename().as_deref(), Some("nbd+unix://?socket=/s"));
    }

    #[test]
    fn display_writes_what_parses_back() {
        for export in [
            tcp("::1", 10809, Some("/a b?#&%")),
            tcp("host.example", 1, None),
            unix("/tmp/x&y;z=%.sock", Some("e")),
            unix("/s", None),
        ] {
            let uri = export.to_string();
            assert_eq!(NbdExport::parse_uri(&uri).unwrap(), export, "{uri}");
        }
        assert_eq!(tcp("::1", 7, Some("e")).to_string(), "nbd://[::1]:7/e");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn whatever_parses_is_written_back_to_itself(uri in "nbd(\\+unix|\\+tcp)?://(\\[[0-9a-f:]{0,8}\\]|[a-z0-9.:%@]{0,10})(:[0-9]{0,6})?(/[a-z%0-9?=&;/#]{0,12})?") {
            if let Ok(export) = NbdExport::parse_uri(&uri) {
                let again = export.to_string();
                prop_assert_eq!(NbdExport::parse_uri(&again).ok(), Some(export), "{} as {}", uri, again);
            }
        }

        #[test]
        fn exports_and_sockets_of_any_text_round_trip(name in any::<String>(), path in any::<String>()) {
            prop_assume!(!name.is_empty() && !name.contains('\0'));
            prop_assume!(!path.is_empty() && !path.contains('\0'));
            let export = unix(&path, Some(&name));
            prop_assert_eq!(NbdExport::parse_uri(&export.to_string()).ok(), Some(export));
            let export = tcp("h", 5, Some(&name));
            prop_assert_eq!(NbdExport::parse_uri(&export.to_string()).ok(), Some(export));
        }
    }
}
