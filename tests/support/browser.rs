//! A real headless Chromium, driven through ChromeDriver's W3C WebDriver protocol (JSON
//! over HTTP on loopback; the few calls the panel tests need, over a plain TCP stream).
//! `./deploy/test.sh` installs Debian's `chromium` and `chromium-driver` when missing.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key under which an element reference comes back.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium driven over the DevTools protocol.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: TempDir,
    /// A log whose end a failed wait prints (the worker's): what the server side was doing.
    log: std::cell::RefCell<Option<std::path::PathBuf>>,
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the status and the body.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    // Read the head, then exactly the body it announces (a server may keep the
    // connection open whatever we asked).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("no HTTP header"));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if chunked {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the panel tests drive Debian's chromium: run ./deploy/test.sh (it installs chromium and chromium-driver) or apt-get install chromium chromium-driver"
        );
        let port = free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        super::die_with_test(&mut cmd);
        let driver = cmd.spawn().expect("start chromedriver");
        let started = Instant::now();
        while http(port, "GET", "/status", &[], b"").is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = TempDir::new("chromium");
        // The flags this machine needs: no sandbox as root, and no background traffic to
        // hosts a closed network refuses.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let mut browser = Browser { driver, port, session: String::new(), _profile: profile, log: Default::default() };
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().expect("a WebDriver session").to_owned();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if method == "POST" { &[("Content-Type", "application/json")] } else { &[] };
        let (status, reply) = http(self.port, method, path, headers, body.as_bytes()).expect("talk to chromedriver");
        let value: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        assert!(status < 300, "WebDriver {method} {path}: {status} {value}");
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// A failed wait will print the last lines of `log` (e.g. the worker's).
    pub fn show_on_failure(&self, log: &Path) {
        *self.log.borrow_mut() = Some(log.to_owned());
    }

    fn log_tail(&self) -> String {
        let Some(path) = self.log.borrow().clone() else { return String::new() };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("\nlast lines of {}:\n{}", path.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The page's current address.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    /// The element matching `css`, waiting up to 30 s for it to appear.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(id) = self.try_find(css) {
                return id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no element '{css}' on {}:\n{}{}",
                self.url(),
                self.body_text(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<String> {
        let body = json!({ "using": "css selector", "value": css }).to_string();
        let path = format!("/session/{}/elements", self.session);
        let (_, reply) = http(self.port, "POST", &path, &[("Content-Type", "application/json")], body.as_bytes()).ok()?;
        let value: Value = serde_json::from_slice(&reply).ok()?;
        value["value"].as_array()?.first()?[ELEMENT].as_str().map(str::to_owned)
    }

    /// Whether an element matches `css`.
    pub fn exists(&self, css: &str) -> bool {
        self.try_find(css).is_some()
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into the field matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.session_call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.session_call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    /// Chooses the option `value` of the select `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.find(css);
        self.script("const s = document.querySelector(arguments[0]); s.value = arguments[1];", json!([css, value]));
    }

    /// The text of the element matching `css`; panics if there is none.
    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.session_call("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or_default().to_owned()
    }

    /// The whole page's visible text.
    pub fn body_text(&self) -> String {
        self.try_find("body")
            .map(|id| self.session_call("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// Runs `script` (a function body) in the page; async when it awaits (its `return` is the value).
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Runs `script` in the page and waits for it to call its last argument (the callback).
    pub fn script_async(&self, script: &str, args: Value) -> Value {
        self.session_call("POST", "/execute/async", Some(json!({ "script": script, "args": args })))
    }

    /// POSTs `body` (form-encoded) to `path` from the current page with `fetch`, the
    /// browser's cookies included; returns the status (0 for a redirect, i.e. accepted).
    pub fn post_from_page(&self, path: &str, body: &str) -> u64 {
        let script = "const done = arguments[arguments.length - 1];
            fetch(arguments[0], { method: 'POST', body: arguments[1], redirect: 'manual',
                headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
              .then(r => done(r.status), e => done(-1));";
        self.script_async(script, json!([path, body])).as_u64().unwrap_or(u64::MAX)
    }

    /// `n` such POSTs at once; their statuses.
    pub fn post_many_from_page(&self, path: &str, body: &str, n: usize) -> Vec<u64> {
        let script = "const done = arguments[arguments.length - 1];
            const one = () => fetch(arguments[0], { method: 'POST', body: arguments[1], redirect: 'manual',
                headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }).then(r => r.status, e => -1);
            Promise.all(Array.from({ length: arguments[2] }, one)).then(done);";
        let statuses = self.script_async(script, json!([path, body, n]));
        statuses.as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap_or(u64::MAX)).collect()).unwrap_or_default()
    }

    /// Whether the page, laid out `width` CSS pixels wide, fits without scrolling sideways.
    pub fn fits(&self, width: u32) -> bool {
        let cdp = |cmd: &str, params: Value| self.session_call("POST", "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params })));
        cdp("Emulation.setDeviceMetricsOverride", json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": true }));
        let wide = self.script("return document.documentElement.scrollWidth;", json!([])).as_u64().unwrap_or(u64::MAX);
        cdp("Emulation.clearDeviceMetricsOverride", json!({}));
        wide <= width as u64
    }

    /// Runs `script` with the page laid out `width` CSS pixels wide (as a phone when narrow).
    pub fn script_at(&self, width: u32, script: &str) -> Value {
        let cdp = |cmd: &str, params: Value| self.session_call("POST", "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params })));
        cdp("Emulation.setDeviceMetricsOverride", json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600 }));
        let value = self.script(script, json!([]));
        cdp("Emulation.clearDeviceMetricsOverride", json!({}));
        value
    }

    /// Waits up to `limit` for `css`'s text to contain `wanted` (pages reload themselves).
    pub fn wait_text(&self, css: &str, wanted: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            let id = self.try_find(css);
            let text = id.map(|id| {
                let path = format!("/session/{}/element/{id}/text", self.session);
                http(self.port, "GET", &path, &[], b"")
                    .ok()
                    .and_then(|(_, r)| serde_json::from_slice::<Value>(&r).ok())
                    .and_then(|v| v["value"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            });
            if text.as_deref().is_some_and(|t| t.contains(wanted)) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "'{css}' did not show '{wanted}' within {limit:?} on {}: {text:?}\nthe page said: {}{}",
                self.url(),
                self.body_text(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG of the whole page laid out `width` CSS pixels wide (a phone's 390 as
    /// well as a desktop's: the device metrics are emulated, not the window resized).
    pub fn screenshot(&self, path: &Path, width: u32) {
        let cdp = |cmd: &str, params: Value| self.session_call("POST", "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params })));
        let metrics = |height: u64| json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 });
        cdp("Emulation.setDeviceMetricsOverride", metrics(800));
        let height = self.script("return Math.max(document.documentElement.scrollHeight, 600);", json!([])).as_u64().unwrap_or(800);
        cdp("Emulation.setDeviceMetricsOverride", metrics(height.min(5000)));
        let data = self.session_call("GET", "/screenshot", None);
        cdp("Emulation.clearDeviceMetricsOverride", json!({}));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or_default()).expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The page's layout width in CSS pixels (what media queries see).
    pub fn viewport_width(&self) -> u64 {
        self.script("return window.innerWidth;", json!([])).as_u64().unwrap_or(0)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), &[], b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
