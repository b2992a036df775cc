//! A stand-in for falcosidekick: an HTTP/1.1 server that records every POST
//! (path, headers, body as JSON) and answers 200, a chosen status, or late.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Status(u16),
    /// Answers 200 after this long (longer than the sink's timeout: a slow receiver).
    Delay(Duration),
}

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    posts: Vec<Post>,
    requests: usize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    pub fn start(mode: Mode) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(mode));
        let (s, m) = (state.clone(), mode.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (s, m) = (s.clone(), m.clone());
                std::thread::spawn(move || serve(conn, &s, &m));
            }
        });
        Receiver { addr, state, mode }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    /// Requests seen (answered or not).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The POSTs answered 200.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, mode: &Mutex<Mode>) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        state.lock().unwrap().requests += 1;
        let m = *mode.lock().unwrap();
        let status = match m {
            Mode::Ok => 200,
            Mode::Status(s) => s,
            Mode::Delay(d) => {
                std::thread::sleep(d);
                200
            }
        };
        if status == 200 {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            state.lock().unwrap().posts.push(Post { path, headers, body });
        }
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
