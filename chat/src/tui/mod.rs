//! Full-screen terminal interface (ratatui + crossterm), used when stdin and stdout are TTYs.
//!
//! `app` holds the state and maps keys to actions, `view` draws it, `editor` and `complete`
//! are the input line, `terminal` owns the terminal (raw mode, restored on every way out);
//! this module runs the event loop: keys, server frames, and reconnecting with backoff when
//! the connection drops (walking the server list, see [`crate::servers`]).

pub mod app;
pub mod buffers;
pub mod complete;
pub mod editor;
pub mod render;
pub mod retry;
pub mod status;
mod terminal;
pub mod theme;
pub mod view;
pub mod window;

use std::io::Stdout;
use std::time::Duration;

use anyhow::{Context, Result};
use chatd_proto::e2e::DeviceKey;
use chatd_proto::{ClientFrame, ServerFrame, frame::PresenceEvent};
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use crate::config::UiConfig;
use crate::conn::{self, Connection, Incoming, LoggedIn, LoginFailed, NoAsk, ServerInfo, Trust};
use crate::dispatch::{self, Outbound, Sent, Step};
use crate::format;
use crate::identity::ServerId;
use crate::input::{self, Input};
use crate::joining::Joins;
use crate::screen::{Screen, Verdict};
use crate::secure::Secure;
use crate::servers::{self, ServerList, Walk};
use app::{Action, App, ConnState};
use buffers::BufKind;
use terminal::{TerminalGuard, restore_terminal, ring, set_mouse};
use theme::Styles;
use window::Local;

type Conn = Connection<TlsStream<TcpStream>>;

/// How long to wait for `bye` after `/quit`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// A logged-in connection.
pub struct Session {
    /// The framed TLS connection.
    pub conn: Conn,
    /// The server's `hello`.
    pub info: ServerInfo,
    /// The server's `login_ok`.
    pub logged_in: LoggedIn,
    /// Negotiated TLS version, e.g. `TLSv1.3`.
    pub tls: String,
}

/// What it takes to log in again after the connection drops.
#[derive(Clone)]
pub struct Reconnect {
    /// The server's nodes.
    pub servers: ServerList,
    /// The node logged in on (index in `servers`).
    pub node: usize,
    /// The list's server identity: a node that is another server is refused.
    pub id: ServerId,
    /// The longest wait between two rounds (`reconnect_max_secs`).
    pub round_max: Duration,
    /// How its certificate is checked (pins included; nobody is asked again).
    pub trust: Trust,
    /// Account.
    pub user: String,
    /// Its password, kept (zeroized on exit) so the client can log in again on its own.
    pub password: Zeroizing<String>,
    /// This device's public key, base64 SPKI DER.
    pub device_key: String,
    /// This device's key, to sign login proofs.
    pub key: DeviceKey,
}

/// The TLS version of a connected stream, as people write it.
pub fn tls_version(stream: &TlsStream<TcpStream>) -> String {
    match stream.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "TLS?".into(),
    }
}

/// Connects to node `again.node` and logs in again (no questions: the certificate must match
/// the pin, and the node must be the list's server).
async fn reconnect(again: &Reconnect) -> Result<Session> {
    let node = again
        .servers
        .nodes()
        .get(again.node)
        .unwrap_or(again.servers.first());
    let mut connected = conn::connect_tls_with::<NoAsk>(node, &again.trust, None, false).await?;
    again.servers.check_same(node, &again.id, &connected.id)?;
    let tls = tls_version(&connected.stream);
    let server_fp = conn::server_fingerprint(&connected.stream);
    let pins = connected.learned.take();
    let mut conn = Connection::new(connected.stream).with_proof(again.key.clone(), server_fp);
    let info = conn.hello().await?;
    let logged_in = conn
        .login(&again.user, &again.password, &again.device_key)
        .await?;
    if let Some(pins) = pins {
        pins.keep()?;
    }
    Ok(Session {
        conn,
        info,
        logged_in,
        tls,
    })
}

/// Runs the interface until the user quits; returns the exit status.
pub async fn run(
    session: Session,
    mut secure: Secure,
    again: Reconnect,
    ui: UiConfig,
) -> Result<u8> {
    let styles = Styles::new(ui.theme);
    let node = again
        .servers
        .nodes()
        .get(again.node)
        .unwrap_or(again.servers.first());
    let mut app = App::new(&node.to_string(), &session.logged_in.user, ui);
    // "SHA256:" and 8 hex digits: enough to recognise, short enough for the bar.
    app.key_short = secure
        .device()
        .to_string()
        .get(..15)
        .unwrap_or_default()
        .to_string();
    // A panic must not leave the terminal raw: restore first, then report as usual.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    let mouse = app.mouse;
    let _guard = TerminalGuard::enter(mouse)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("cannot draw on the terminal")?;
    terminal.clear().context("cannot draw on the terminal")?;
    let first_node = again.node;
    let mut ui_loop = Loop {
        app,
        mouse,
        secure: &mut secure,
        again,
        conn: None,
        info: session.info.clone(),
        silent_help: false,
        silent_lists: 0,
        last_list: Instant::now(),
        joins: Joins::new(),
        screen: Screen::new(),
        attempt: None,
        next_attempt: None,
        walk: Walk::lost(first_node),
        retries: retry::Retries::default(),
        last_ping: Instant::now(),
        ended: false,
    };
    ui_loop.logged_in(session).await;
    ui_loop.run(&mut terminal, &styles).await
}

struct Loop<'a> {
    app: App,
    /// Whether the terminal captures the mouse now (`app.mouse` is what is wanted).
    mouse: bool,
    secure: &'a mut Secure,
    again: Reconnect,
    conn: Option<Conn>,
    info: ServerInfo,
    /// The `help` answer we asked for ourselves (for Tab completion) is not shown.
    silent_help: bool,
    /// `users` answers we asked for ourselves (who is away, for the nick list) still to
    /// come; they are not shown.
    silent_lists: u32,
    /// When the online list was last asked for.
    last_list: Instant,
    /// The `/join` waiting for its answer, and the lines typed meanwhile.
    joins: Joins,
    /// Frames refused for their names; repeated states said once.
    screen: Screen,
    attempt: Option<JoinHandle<Result<Session>>>,
    next_attempt: Option<Instant>,
    /// Which node to try next, and the backoff.
    walk: Walk,
    /// Failed tries since the connection was lost, and the reason last said.
    retries: retry::Retries,
    last_ping: Instant,
    /// The server's `bye` said an administrator ended the session: no reconnecting.
    ended: bool,
}

impl Loop<'_> {
    async fn run(
        &mut self,
        terminal: &mut Terminal<CrosstermBackend<Stdout>>,
        styles: &Styles,
    ) -> Result<u8> {
        let mut events = EventStream::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            self.update_status();
            terminal
                .draw(|f| view::draw(f, &mut self.app, styles))
                .context("cannot draw on the terminal")?;
            if self.app.take_bell() {
                ring(terminal)?;
            }
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Some(code) = self.terminal_event(ev, terminal).await? {
                            return Ok(code);
                        }
                    }
                    Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                    None => return Ok(1),
                },
                incoming = recv(&mut self.conn), if self.conn.is_some() => match incoming {
                    Some(incoming) => {
                        let reply = incoming.frame().and_then(dispatch::reply);
                        self.frame(incoming);
                        // What the end-to-end layer owes first (chains asked for or given
                        // again), then the acknowledgement.
                        let mut owed = self.secure.take_frames();
                        owed.extend(reply);
                        if let Some(conn) = self.conn.as_mut() {
                            for frame in &owed {
                                if conn.send(frame).await.is_err() {
                                    self.lost();
                                    break;
                                }
                            }
                        }
                        if self.held_lines().await {
                            return Ok(self.quit().await);
                        }
                    }
                    None => self.lost(),
                },
                done = join(&mut self.attempt), if self.attempt.is_some() => {
                    self.attempt = None;
                    self.attempted(done).await;
                }
                _ = tick.tick() => {
                    self.maybe_attempt();
                    self.keepalive().await;
                    let every = self.app.ui.away_refresh_secs;
                    if every > 0 && self.last_list.elapsed() >= Duration::from_secs(every) {
                        self.ask_list().await;
                    }
                }
            }
        }
    }

    fn update_status(&mut self) {
        let secure = &*self.secure;
        self.app.update_members(|room| secure.room_members(room));
        self.app
            .complete_from
            .refresh(self.secure, self.app.editor.text());
        self.app.target = self
            .app
            .whisper_target()
            .map(|t| (t.to_string(), self.secure.peer_verified(t)));
        if let Some(at) = self.next_attempt {
            let secs = at.saturating_duration_since(Instant::now()).as_secs();
            let node = self
                .again
                .servers
                .is_many()
                .then(|| self.node_name(self.walk.node));
            self.app.state = ConnState::Reconnecting(self.retries.status(secs, node));
        }
    }

    /// A key, paste, mouse or resize event; Some(exit status) to leave.
    async fn terminal_event(
        &mut self,
        ev: TermEvent,
        terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    ) -> Result<Option<u8>> {
        match ev {
            TermEvent::Key(key) => match self.app.key(&key) {
                Action::None => {
                    if self.app.mouse != self.mouse {
                        set_mouse(self.app.mouse)?;
                        self.mouse = self.app.mouse;
                    }
                }
                Action::Quit => return Ok(Some(self.quit().await)),
                Action::Redraw => terminal.clear().context("cannot draw on the terminal")?,
                Action::Line(line) => {
                    if self.line(&line).await {
                        return Ok(Some(self.quit().await));
                    }
                }
            },
            TermEvent::Paste(text) => {
                for line in self.app.paste(&text) {
                    if self.line(&line).await {
                        return Ok(Some(self.quit().await));
                    }
                }
            }
            TermEvent::Mouse(m) => self.app.mouse(m.kind),
            // The next draw adapts to the new size.
            _ => {}
        }
        Ok(None)
    }

    /// Handles one typed line; true to quit.
    async fn line(&mut self, line: &str) -> bool {
        if line.trim() == "/clear" {
            self.app.clear();
            return false;
        }
        match self.app.local_command(line) {
            Local::Done => return false,
            Local::Part(room) => return self.close_room(&room).await,
            Local::NotMine => {}
        }
        let Some(line) = self.for_buffer(line) else {
            return false;
        };
        let line = line.as_str();
        if self.joins.busy() {
            if self.joins.full() {
                self.app
                    .warning("not kept: too many lines wait for the answer to /join");
            } else if let Some(notice) = self.joins.hold(line.to_string()) {
                self.app.events(vec![notice]);
            }
            return false;
        }
        self.line_now(line).await
    }

    /// What `line`, typed in the buffer shown, means: in a room's buffer that room is
    /// where text goes (unless a `/join` is waiting: its answer decides); in a whisper
    /// buffer text is a whisper to the partner; in the server buffer text is refused.
    /// None: refused (the user was told).
    fn for_buffer(&mut self, line: &str) -> Option<String> {
        let text = matches!(input::parse(line), Input::Say { .. } | Input::Action { .. });
        match self.app.buffers.current().kind.clone() {
            BufKind::Server if text => {
                self.app.warning(
                    "not sent: the server buffer is no conversation; show a room's buffer                      (Alt-2, /window N) or whisper with /w USER TEXT",
                );
                None
            }
            BufKind::Whisper(peer) => match input::parse(line) {
                Input::Say { text } => Some(format!("/w {peer} {text}")),
                Input::Action { .. } => {
                    self.app
                        .warning("not sent: /me is for rooms; whispers are plain text");
                    None
                }
                _ => Some(line.to_string()),
            },
            BufKind::Room(room) if !self.joins.busy() => {
                if !self.secure.talk_in(&room) && text {
                    self.app.warning(format!(
                        "not sent: you are not in #{room} (any more); /join {room} to come back,                          or /close this buffer"
                    ));
                    return None;
                }
                Some(line.to_string())
            }
            _ => Some(line.to_string()),
        }
    }

    /// `/close` of a room's buffer: part the room (if still in it), then close the buffer.
    async fn close_room(&mut self, room: &str) -> bool {
        if !self.secure.in_room(room) {
            self.app.buffers.close_room(room);
            return false;
        }
        if self.conn.is_none() || self.joins.busy() {
            self.app.warning(format!(
                "#{room} not left: not connected or a /join is waiting; /close again later"
            ));
            return false;
        }
        let quit = self.line_now(&format!("/part #{room}")).await;
        self.app.buffers.close_room(room);
        quit
    }

    /// Asks for the online list (who is away) without showing the answer.
    async fn ask_list(&mut self) {
        self.last_list = Instant::now();
        let list = ClientFrame::Command {
            name: "list".into(),
            args: String::new(),
            room: None,
        };
        if let Some(conn) = self.conn.as_mut() {
            match dispatch::send(conn, &self.info, &[Outbound::Frame(list)]).await {
                Ok(Sent::All) => self.silent_lists += 1,
                Ok(Sent::TooLong) => {}
                Ok(Sent::Lost) | Err(_) => self.lost(),
            }
        }
    }

    /// Lines typed after `/join`, once it was answered; true to quit.
    async fn held_lines(&mut self) -> bool {
        while let Some(line) = self.joins.next_line() {
            if self.line_now(&line).await {
                return true;
            }
        }
        false
    }

    /// Handles one typed line now; true to quit.
    async fn line_now(&mut self, line: &str) -> bool {
        let step = dispatch::line(line, self.secure);
        let mut join = None;
        let mut frames = match step {
            Step::Nothing => return false,
            Step::Quit => return true,
            Step::Refused(why) => {
                self.app.warning(why);
                return false;
            }
            Step::Show(events) => {
                self.app.events(events);
                return false;
            }
            Step::Help { lines, ask } => {
                let all = ask.as_ref().is_some_and(
                    |a| matches!(a, ClientFrame::Command { args, .. } if args.is_empty()),
                );
                self.app.frame_lines(lines);
                if all {
                    self.app.frame_lines(vec![
                        "  keys: PageUp/PageDown or the wheel scroll, Ctrl-End jumps to the newest, \
                         Alt-1...Alt-9 show buffer N, Alt-Left/Alt-Right the previous/next one, \
                         F2 shows/hides the nick list, Alt-m turns mouse capture off/on, \
                         Tab completes, Up/Down recall, Ctrl-C quits"
                            .into(),
                    ]);
                }
                ask.map(Outbound::Frame).into_iter().collect()
            }
            Step::Send { events, frames } => {
                self.app.events(events);
                frames
            }
            Step::Join { room, frames } => {
                join = Some(room);
                frames
            }
        };
        let Some(conn) = self.conn.as_mut() else {
            // Not lost: the line goes back where it was, to be sent once reconnected.
            self.app.editor.set(line.to_string(), line.len());
            self.app.warning(
                "not connected: the line is kept in the input; press Enter once reconnected",
            );
            return false;
        };
        if let Some(room) = join {
            frames.push(Outbound::Frame(self.joins.start(&room, self.secure)));
        }
        match dispatch::send(conn, &self.info, &frames).await {
            Ok(Sent::All) => {}
            Ok(Sent::TooLong) => self.app.warning(format!(
                "not sent: longer than the server's limit of {} bytes",
                self.info.max_line_bytes
            )),
            Ok(Sent::Lost) | Err(_) => self.lost(),
        }
        false
    }

    /// After login (first or again): online list, keys, and the server's commands.
    async fn logged_in(&mut self, session: Session) {
        let Session {
            mut conn,
            info,
            logged_in,
            tls,
        } = session;
        self.app.tls = tls;
        // Only names a user can have reach the online panel (presence and users frames
        // are checked the same way, in `screen`).
        self.app.online = logged_in
            .online
            .iter()
            .filter(|u| chatd_proto::names::validate_username(u).is_ok())
            .cloned()
            .collect();
        self.app.online.sort_by_key(|u| u.to_lowercase());
        self.secure.set_vouch_supported(info.vouch);
        self.secure.enable_rekey(info.rekey);
        let events = self
            .secure
            .on_login(&logged_in.devices, &logged_in.room, &logged_in.rooms);
        // A buffer per room this user is in; the first login shows the default room's.
        self.app.default_room = self.secure.default_room().to_string();
        let first = self.app.buffers.all().len() == 1;
        if !self.app.default_room.is_empty() {
            let lobby = BufKind::Room(self.app.default_room.clone());
            if first {
                self.app.buffers.switch_to(lobby);
            } else {
                self.app.buffers.open(lobby);
            }
        }
        for room in self.secure.rooms() {
            self.app.buffers.open(BufKind::Room(room));
        }
        self.app.notice(
            format::logged_in(&logged_in.user, &logged_in.online)
                .trim_start_matches("-- ")
                .to_string(),
        );
        self.app.events(events);
        // The server may have been reconfigured while we were away.
        self.secure.set_offline_ttl_secs(info.offline_ttl_secs);
        // The server's command list, for Tab completion.
        let help = ClientFrame::Command {
            name: "help".into(),
            args: String::new(),
            room: None,
        };
        self.silent_help = matches!(
            dispatch::send(&mut conn, &info, &[Outbound::Frame(help)]).await,
            Ok(Sent::All)
        );
        self.info = info;
        self.screen = Screen::new();
        self.conn = Some(conn);
        self.silent_lists = 0;
        self.ask_list().await;
        self.app.state = ConnState::Connected;
        self.next_attempt = None;
        self.retries.reset();
    }

    fn frame(&mut self, incoming: Incoming) {
        let verdict = match &incoming {
            Incoming::Frame(frame) => self.screen.check(frame),
            Incoming::Envelope(_) => Verdict::Show,
        };
        if let Verdict::Refused(warning) = verdict {
            self.app.events(vec![warning]);
            return;
        }
        let events = dispatch::events(&incoming, self.secure);
        self.app.events(events);
        let Incoming::Frame(frame) = incoming else {
            return;
        };
        if let ServerFrame::Bye { reason } = &frame {
            self.ended |= dispatch::ended_on_purpose(reason);
        }
        if let Some(refused) = self.joins.answer(&frame, self.secure) {
            self.app.events(vec![refused]);
        }
        if verdict == Verdict::Quiet {
            return;
        }
        if let ServerFrame::Rooms { rooms } = &frame {
            self.app
                .complete_from
                .saw_rooms(rooms.iter().map(|r| r.name.as_str()));
        }
        match &frame {
            ServerFrame::Presence { user, event, .. } => {
                self.app.presence(user, *event == PresenceEvent::Join);
                if dispatch::hidden(&frame, self.secure) {
                    return;
                }
            }
            ServerFrame::Room { .. } if dispatch::hidden(&frame, self.secure) => return,
            ServerFrame::Users { users } => {
                self.app.online = users.iter().map(|u| u.user.clone()).collect();
                self.app.online.sort_by_key(|u| u.to_lowercase());
                self.app.away = users
                    .iter()
                    .filter(|u| u.away.is_some())
                    .map(|u| u.user.clone())
                    .collect();
                if self.silent_lists > 0 {
                    self.silent_lists -= 1;
                    return;
                }
            }
            ServerFrame::Help { commands } => {
                for c in commands {
                    for name in std::iter::once(&c.name).chain(&c.aliases) {
                        if !self.app.commands.contains(name) {
                            self.app.commands.push(name.clone());
                        }
                    }
                }
                if std::mem::take(&mut self.silent_help) {
                    return;
                }
            }
            _ => {}
        }
        self.app.frame_lines_to(
            &buffers::frame_target(&frame, &self.app.user),
            format::render_bodies(&frame),
        );
    }

    /// The connection dropped (or the server said bye): schedule a reconnection.
    fn lost(&mut self) {
        self.conn = None;
        if let Some(dropped) = self.joins.lost(self.secure) {
            self.app.events(vec![dropped]);
        }
        self.secure.disconnected();
        self.app.online.clear();
        if self.ended {
            self.next_attempt = None;
            self.app.state = ConnState::Disconnected;
            self.app
                .warning(format!("{}; /quit to leave", dispatch::ENDED_ON_PURPOSE));
            return;
        }
        self.walk = Walk::lost(self.again.node);
        let wait = self.walk.first_wait(servers::random());
        let secs = wait.as_millis().div_ceil(1000);
        if self.again.servers.is_many() {
            self.app.notice(format!(
                "connection lost; reconnecting to {} in {secs}s",
                self.app.server
            ));
        } else {
            self.app
                .notice(format!("connection lost; reconnecting in {secs}s"));
        }
        self.next_attempt = Some(Instant::now() + wait);
    }

    /// Pings when a third of the server's idle timeout has passed since the last ping.
    async fn keepalive(&mut self) {
        let Some(every) = self.info.keepalive() else {
            return;
        };
        if self.last_ping.elapsed() < every {
            return;
        }
        self.last_ping = Instant::now();
        if let Some(conn) = self.conn.as_mut() {
            if conn.send(&ClientFrame::Ping { nonce: 0 }).await.is_err() {
                self.lost();
            }
        }
    }

    fn maybe_attempt(&mut self) {
        let due = self.next_attempt.is_some_and(|at| Instant::now() >= at);
        if due && self.attempt.is_none() && self.conn.is_none() {
            let mut again = self.again.clone();
            again.node = self.walk.node;
            self.attempt = Some(tokio::spawn(async move { reconnect(&again).await }));
        }
    }

    async fn attempted(&mut self, done: Result<Session>) {
        match done {
            Ok(session) => {
                self.again.node = self.walk.node;
                if self.again.servers.is_many() {
                    self.app.server = self.node_name(self.walk.node);
                    self.app
                        .notice(format!("reconnected to {}", self.app.server));
                } else {
                    self.app.notice("reconnected");
                }
                self.logged_in(session).await;
            }
            Err(e) if e.downcast_ref::<LoginFailed>().is_some() => {
                self.next_attempt = None;
                self.app.state = ConnState::Disconnected;
                self.app
                    .warning(format!("{e:#}; not trying again (/quit to leave)"));
            }
            Err(e) => {
                let wait =
                    self.walk
                        .failed(&self.again.servers, self.again.round_max, servers::random());
                // Said once per reason; the status bar counts the tries.
                for line in self.retries.failed(&e) {
                    self.app.warning(line);
                }
                self.next_attempt = Some(Instant::now() + wait);
            }
        }
    }

    /// `host:port` of node `index`.
    fn node_name(&self, index: usize) -> String {
        let servers = &self.again.servers;
        servers
            .nodes()
            .get(index)
            .unwrap_or(servers.first())
            .to_string()
    }

    /// Says goodbye to the server (briefly waiting for its `bye`) and returns status 0.
    async fn quit(&mut self) -> u8 {
        if let Some(conn) = self.conn.as_mut() {
            if conn.send(&ClientFrame::Quit).await.is_ok() {
                let _ = tokio::time::timeout(QUIT_WAIT, async {
                    while let Ok(Some(incoming)) = conn.recv().await {
                        if matches!(incoming.frame(), Some(ServerFrame::Bye { .. })) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        0
    }
}

/// The next frame, or None when the connection is gone. Only polled with a connection.
async fn recv(conn: &mut Option<Conn>) -> Option<Incoming> {
    match conn.as_mut() {
        Some(c) => c.recv().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// The result of a reconnection attempt. Only polled while one runs.
async fn join(attempt: &mut Option<JoinHandle<Result<Session>>>) -> Result<Session> {
    match attempt.as_mut() {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("reconnection task failed: {e}")),
        },
        None => std::future::pending().await,
    }
}
