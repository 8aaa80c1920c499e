//! External plugin commands (`[[plugins]]`): a program run per call, JSON in, JSON out.
//!
//! The program is executed directly (never through a shell, arguments never on a command
//! line) with a cleared environment, `/` as its working directory and no inherited
//! descriptors besides its pipes. It reads one JSON request on stdin and writes one JSON reply
//! on stdout ([`chatd_proto::plugin`], docs/PLUGINS.md). Each call is bounded in time, output and concurrency; every
//! failure gives the caller a clear error and the log the details. Only the caller's session
//! waits for it: other sessions never do.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::frame::ServerFrame;
use chatd_proto::plugin::{
    PLUGIN_PROTOCOL_VERSION, PluginReply, PluginRequest, PluginRole, ReplyTo,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::{Command, CommandError, CommandFuture, Ctx, RegistryError, Role};
use crate::config::PluginConfig;

/// stderr bytes kept for the log.
const STDERR_KEPT: usize = 1024;

/// One configured plugin.
pub struct Plugin {
    name: String,
    exec: PathBuf,
    usage: String,
    help: String,
    timeout: Duration,
    max_output: usize,
    admin_only: bool,
    allow_room_reply: bool,
    running: Arc<Semaphore>,
    max_concurrent: usize,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// How a run failed: the caller's words, and the log's.
struct Failure {
    caller: String,
    log: String,
}

impl Failure {
    fn new(caller: impl Into<String>, log: impl Into<String>) -> Self {
        Failure {
            caller: caller.into(),
            log: log.into(),
        }
    }
}

/// A pipe's content, kept up to a cap.
struct Capped {
    bytes: Vec<u8>,
    /// More than the cap arrived.
    over: bool,
}

/// Reads a pipe until its end or until more than `max` bytes came; with `drain`, the rest
/// is read and discarded (so a chatty program is never blocked on a full pipe).
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    max: usize,
    drain: bool,
) -> std::io::Result<Capped> {
    let mut bytes = Vec::new();
    (&mut r)
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    let over = bytes.len() > max;
    if over {
        bytes.truncate(max);
        if drain {
            tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
        }
    }
    Ok(Capped { bytes, over })
}

/// Kills a plugin's whole process group when a call ends, however it ends: what the
/// program left running (a background `sleep`, a stuck child) must not outlive the call.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            // ESRCH (all gone already) is the normal case.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Plugin {
    /// Checks a `[[plugins]]` entry.
    pub fn new(config: &PluginConfig) -> Result<Plugin, RegistryError> {
        if !valid_name(&config.name) {
            return Err(RegistryError::BadPluginName(config.name.clone()));
        }
        if !config.exec.is_absolute() {
            return Err(RegistryError::RelativeExec {
                name: config.name.clone(),
                exec: config.exec.display().to_string(),
            });
        }
        let max_concurrent = config.max_concurrent.get();
        Ok(Plugin {
            name: config.name.clone(),
            exec: config.exec.clone(),
            usage: config.usage.clone(),
            help: if config.help.is_empty() {
                format!("plugin command ({})", config.exec.display())
            } else {
                config.help.clone()
            },
            timeout: Duration::from_millis(config.timeout_ms.get()),
            max_output: config.max_output_bytes.get(),
            admin_only: config.admin_only,
            allow_room_reply: config.allow_room_reply,
            running: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        })
    }

    /// Runs the program once; the reply, or why not.
    async fn call(&self, ctx: &Ctx<'_>, args: &str) -> Result<PluginReply, Failure> {
        let request = PluginRequest {
            version: PLUGIN_PROTOCOL_VERSION,
            command: self.name.clone(),
            args: args.to_string(),
            user: ctx.user.to_string(),
            role: if ctx.role == Role::Admin {
                PluginRole::Admin
            } else {
                PluginRole::User
            },
            room: ctx.room.map(str::to_string),
            server: format!("chatd/{}", env!("CARGO_PKG_VERSION")),
        };
        let mut input = serde_json::to_vec(&request)
            .map_err(|e| Failure::new("internal error", format!("cannot encode request: {e}")))?;
        input.push(b'\n');
        let mut child = tokio::process::Command::new(&self.exec)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("CHATD_PLUGIN", &self.name)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so everything it starts is killed with it.
            .process_group(0)
            // A plugin that outlives its time limit (or a dropped call) is killed.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Failure::new(
                    "is unavailable (it cannot be started)",
                    format!("cannot start {}: {e}", self.exec.display()),
                )
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Failure::new("internal error", "child pipes missing"));
        };
        let _group = child.id().map(KillGroup);
        let max = self.max_output;
        // stderr is only for the log: read beside everything else, to its end.
        let stderr_task = tokio::spawn(read_capped(stderr, STDERR_KEPT, true));
        let run = async {
            // A plugin that does not read its input must not block us: write in parallel.
            let write = async {
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            };
            let (_, out) = tokio::join!(write, read_capped(stdout, max, false));
            match out {
                // Too much: stop here; dropping the child kills it.
                Ok(out) if out.over => Err(Failure::new(
                    format!("replied with more than {max} bytes"),
                    format!("output over {max} bytes; killed"),
                )),
                Ok(out) => Ok((out.bytes, child.wait().await)),
                Err(e) => Err(Failure::new(
                    "failed",
                    format!("cannot read its output: {e}"),
                )),
            }
        };
        let (out, status) = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(failure)) => return Err(failure),
            Err(_) => {
                // Dropping the future drops the child: kill_on_drop ends it.
                return Err(Failure::new(
                    format!("timed out after {} ms", self.timeout.as_millis()),
                    "timed out; killed",
                ));
            }
        };
        // The program has exited, so its stderr ends now (unless something it started
        // still holds it: then the log goes without).
        let stderr_text = match tokio::time::timeout(Duration::from_millis(200), stderr_task).await
        {
            Ok(Ok(Ok(c))) => String::from_utf8_lossy(&c.bytes).trim().to_string(),
            _ => String::new(),
        };
        let status = status.map_err(|e| Failure::new("failed", format!("wait failed: {e}")))?;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            };
            return Err(Failure::new(
                format!("failed ({how})"),
                format!("{how}; stderr: {stderr_text:?}"),
            ));
        }
        serde_json::from_slice::<PluginReply>(&out).map_err(|e| {
            Failure::new(
                "sent a reply that is not valid (see docs/PLUGINS.md)",
                format!("invalid reply ({e}); stderr: {stderr_text:?}"),
            )
        })
    }
}

impl Command for Plugin {
    fn name(&self) -> &str {
        &self.name
    }
    fn usage(&self) -> &str {
        &self.usage
    }
    fn help(&self) -> &str {
        &self.help
    }
    fn role(&self) -> Role {
        if self.admin_only {
            Role::Admin
        } else {
            Role::User
        }
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let fail = |why: String| CommandError::Plugin {
                name: self.name.clone(),
                why,
            };
            let Ok(_permit) = Arc::clone(&self.running).try_acquire_owned() else {
                crate::metrics::get().plugin_call(&self.name, "busy", None);
                tracing::warn!(plugin = ?self.name, user = ctx.user, "plugin busy");
                return Err(fail(format!(
                    "is busy ({} running); try again in a moment",
                    self.max_concurrent
                )));
            };
            let started = std::time::Instant::now();
            let called = self.call(ctx, args).await;
            let result = if called.is_ok() { "ok" } else { "error" };
            crate::metrics::get().plugin_call(&self.name, result, Some(started.elapsed()));
            let reply = match called {
                Ok(reply) => reply,
                Err(f) => {
                    tracing::warn!(plugin = ?self.name, user = ctx.user, error = ?f.log, "plugin failed");
                    return Err(fail(f.caller));
                }
            };
            tracing::info!(plugin = ?self.name, user = ctx.user, ms = started.elapsed().as_millis() as u64, "plugin ran");
            let notice = |text: String| ServerFrame::Notice { text };
            match (reply.to, ctx.room) {
                (ReplyTo::Room, Some(room)) if self.allow_room_reply => {
                    let text =
                        format!("[#{room}] [/{} for {}] {}", self.name, ctx.user, reply.text);
                    ctx.hub.send_to_room(room, &notice(text));
                    Ok(None)
                }
                (ReplyTo::Room, _) => {
                    tracing::info!(plugin = ?self.name, "reply for the room shown to the caller only (allow_room_reply is off, or no room)");
                    Ok(Some(notice(reply.text)))
                }
                (ReplyTo::Caller, _) => Ok(Some(notice(reply.text))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        assert!(valid_name("weather") && valid_name("d20") && valid_name("a-b_c"));
        for bad in [
            "",
            "Weather",
            "1dice",
            "we ather",
            "wéather",
            &"x".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let mut cfg: PluginConfig = toml::from_str("name = \"dice\"\nexec = \"bin/dice\"").unwrap();
        assert!(matches!(
            Plugin::new(&cfg),
            Err(RegistryError::RelativeExec { .. })
        ));
        cfg.exec = "/usr/lib/chatd/plugins/dice".into();
        let p = Plugin::new(&cfg).unwrap();
        assert_eq!(
            (p.timeout.as_millis(), p.max_output, p.max_concurrent),
            (2000, 16384, 4)
        );
    }
}
