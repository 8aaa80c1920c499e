//! What the malicious-server tests share: a chatd with a [`Proxy`] in front of it, clients
//! logged in through it, the attacker's key, and loose checks of what `chat` printed (the
//! exact wording of warnings is the client's to choose).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::chat::{Chat, ClientHome, unstamped};
use super::chatd::{Server, loopback0};
use super::proxy::{Dir, Frame, Proxy, Stage};
use super::raw::{key_b64, test_key};

/// A chatd in a temporary state dir, with a [`Proxy`] in front of it.
pub struct Mitm {
    // Dropped in this order: the proxy, then chatd, then its directory.
    pub proxy: Proxy,
    pub server: Server,
    _dir: TempDir,
}

impl Mitm {
    /// A fresh chatd (--dev) and a proxy holding its certificate and key.
    pub fn start() -> Mitm {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start_in(dir.path(), loopback0());
        let proxy = Proxy::start(&server, dir.path());
        Mitm {
            proxy,
            server,
            _dir: dir,
        }
    }

    /// Adds users, each with its name + "-pw" as password.
    pub fn users(&self, names: &[&str]) {
        for name in names {
            self.server.add_user(name, &format!("{name}-pw"));
        }
    }

    /// A `chat` logged in through the proxy as `user` (password `USER-pw`).
    pub fn chat(&self, user: &str, home: &ClientHome) -> Chat {
        self.chat_with(user, home, &[])
    }

    /// [`Mitm::chat`] with extra arguments.
    pub fn chat_with(&self, user: &str, home: &ClientHome, extra: &[&str]) -> Chat {
        let mut args = vec!["--accept-fingerprint", self.proxy.fingerprint.as_str()];
        args.extend_from_slice(extra);
        let mut chat = Chat::spawn(
            &self.proxy.addr.to_string(),
            user,
            &format!("{user}-pw"),
            home,
            &args,
        );
        chat.out
            .expect_contains(&format!("-- logged in as {user}; online: "));
        chat
    }
}

/// The attacker's own device key (the server operator's).
pub fn attacker_key() -> chatd_proto::e2e::DeviceKey {
    test_key("mallory")
}

/// A `login_ok.devices[]` entry / the fields of a `device` frame for `key` as `user`'s.
pub fn device_entry(user: &str, key: &chatd_proto::e2e::DeviceKey, online: bool) -> Value {
    json!({
        "user": user,
        "fingerprint": key.fingerprint().to_string(),
        "key": key_b64(key),
        "online": online,
    })
}

/// A `device` frame announcing `key` as a device of `user` that just came online.
pub fn device_online(user: &str, key: &chatd_proto::e2e::DeviceKey) -> Frame {
    Frame::json(json!({
        "type": "device",
        "user": user,
        "fingerprint": key.fingerprint().to_string(),
        "key": key_b64(key),
        "event": "online",
    }))
}

/// The text of a `chat` output line after its `[HH:MM:SS] ` stamp (the line if unstamped).
fn body(line: &str) -> &str {
    unstamped(line).unwrap_or(line)
}

/// A warning line: `!! ...`.
pub fn is_warning(line: &str) -> bool {
    body(line).starts_with("!! ")
}

/// Waits for a `!! ` line of `chat` in which, for each group of `words`, one word occurs
/// (loosely: the exact wording is the client's to choose).
pub fn expect_warning(chat: &mut Chat, words: &[&[&str]]) -> String {
    chat.out
        .expect(&format!("a !! warning with {words:?}"), |l| {
            is_warning(l) && words.iter().all(|any| any.iter().any(|w| l.contains(w)))
        })
}

/// How many of `lines` show `text` as a message (not inside a `!!` or `--` line).
pub fn times_shown(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .filter(|l| {
            let b = body(l);
            b.contains(text) && !b.starts_with("!! ") && !b.starts_with("-- ")
        })
        .count()
}

/// Clients logged in through a fresh [`Mitm`], each in its own home, every one knowing every
/// other's key (so what follows is not about first contact).
pub struct Scene {
    pub m: Mitm,
    pub homes: Vec<ClientHome>,
}

impl Scene {
    pub fn new(users: &[&str]) -> Scene {
        let m = Mitm::start();
        m.users(users);
        let homes = users.iter().map(|_| ClientHome::new()).collect();
        Scene { m, homes }
    }

    /// Logs everyone in, in order, and waits until each knows the others' keys: a later
    /// one's from its `login_ok`, an earlier one's from the `device` frame the later login
    /// made ([`knows`]).
    pub fn login_all(&self, users: &[&str]) -> Vec<Chat> {
        let mut chats: Vec<Chat> = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let chat = self.m.chat(user, &self.homes[i]);
            for (earlier, c) in users.iter().zip(chats.iter_mut()) {
                knows(&self.m, c, earlier, user);
            }
            chats.push(chat);
        }
        chats
    }
}

/// Waits until `chat` (logged in as `me`) has handled the `device` frame announcing `peer`'s
/// login (not for the notice chat prints about a new key: its wording is chat's to change).
pub fn knows(m: &Mitm, chat: &mut Chat, me: &str, peer: &str) {
    handled(m, chat, me, &format!("{peer}'s device"), |f| {
        f.ty() == "device" && f.json["user"] == peer && f.json["event"] == "online"
    });
}

/// Waits until the proxy has written to `me` a frame satisfying `pred` and `chat` has
/// handled it: chat handles frames in order, so a notice injected after it is printed after.
pub fn handled(m: &Mitm, chat: &mut Chat, me: &str, what: &str, pred: impl Fn(&Frame) -> bool) {
    m.proxy.wait_for(&format!("{what} sent to {me}"), |r| {
        r.dir == Dir::Down
            && r.stage == Stage::Written
            && r.user.as_deref() == Some(me)
            && pred(&r.frame)
    });
    sync(m, chat, me);
}

/// The attacker key holds no sealed copy, and the check was not empty.
pub fn no_sealed_copy(m: &Mitm) {
    let checked = m.proxy.assert_no_chain_to(&attacker_key().fingerprint());
    assert!(checked > 0, "no chain was sent at all: nothing was checked");
}

/// Injects a `notice` into `user`'s stream and waits for `chat` to print it: everything
/// written to it before has been handled.
pub fn sync(m: &Mitm, chat: &mut Chat, user: &str) {
    static MARKS: AtomicUsize = AtomicUsize::new(0);
    let mark = format!("SYNC-MARK-{}", MARKS.fetch_add(1, Ordering::SeqCst));
    m.proxy.inject(
        user,
        Dir::Down,
        Frame::json(json!({"type":"notice","text":mark})),
    );
    chat.out.expect_contains(&format!("-- {mark}"));
}

/// A line of `chat`'s output satisfying `pred`, printed already or within the deadline.
pub fn saw(chat: &mut Chat, what: &str, pred: impl Fn(&str) -> bool) -> String {
    if let Some(l) = chat.out.all().into_iter().find(|l| pred(l)) {
        return l;
    }
    chat.out.expect(what, pred)
}
