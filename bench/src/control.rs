//! Creating the bench users through chatd's control socket, a few at a time.
//!
//! Each `user_add` costs the server an argon2id hash, so `concurrency` connections each work
//! through their share of the names. An account that already exists (an earlier run against the
//! same `--target`) is accepted: every bench user has the same password.

use std::path::Path;

use anyhow::{Context, bail};
use chatd_proto::control::{ControlErrorCode, ControlRequest, ControlResponse};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The password of every bench user.
pub const PASSWORD: &str = "chat-bench password";

/// Name of bench user `i`.
pub fn user_name(i: usize) -> String {
    format!("bench{i}")
}

/// The `i` of a bench user name (the inverse of [`user_name`]); None for any other name.
pub fn user_index(name: &[u8]) -> Option<usize> {
    let digits = name.strip_prefix(b"bench")?;
    // One spelling per index: no leading zeros, no sign, and few enough digits not to overflow.
    if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    digits.iter().try_fold(0usize, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

/// Creates users `0..count` with [`PASSWORD`], `concurrency` at a time.
pub async fn create_users(socket: &Path, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let workers = concurrency.min(count).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let socket = socket.to_path_buf();
        tasks.spawn(async move {
            let names = (w..count).step_by(workers).map(user_name);
            add_all(&socket, names).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("user creation task failed")??;
    }
    Ok(())
}

async fn add_all(socket: &Path, names: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to control socket {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for user in names {
        let request = ControlRequest::UserAdd {
            user: user.clone(),
            password: PASSWORD.into(),
            admin: false,
        };
        let mut line = serde_json::to_vec(&request)?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .context("control socket write failed")?;
        let Some(reply) = lines
            .next_line()
            .await
            .context("control socket read failed")?
        else {
            bail!("control socket closed while adding {user}");
        };
        match serde_json::from_str::<ControlResponse>(&reply)
            .with_context(|| format!("unexpected control reply: {reply}"))?
        {
            ControlResponse::Done { .. } => {}
            ControlResponse::Error {
                code: ControlErrorCode::UserExists,
                ..
            } => {}
            ControlResponse::Error { code, message } => {
                bail!("cannot add {user}: {code:?}: {message}")
            }
            other => bail!("unexpected control reply to user_add: {other:?}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_round_trip() {
        for i in [0, 1, 9, 10, 499, 123_456] {
            assert_eq!(user_index(user_name(i).as_bytes()), Some(i));
        }
        for bad in [
            "bench", "bench01", "bench-1", "bench1x", "alice", "Bench1", "",
        ] {
            assert_eq!(user_index(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(user_index(b"bench1234567890123456789"), None);
    }
}
