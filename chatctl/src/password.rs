//! Getting a new password from the administrator without ever echoing or logging it.
//!
//! Two sources: one line on stdin (`--password-stdin`, for scripts), or an interactive
//! prompt typed twice on the terminal. Piped input without the flag is refused, so a
//! script cannot silently block on a prompt nobody sees.

use std::io::{self, BufRead, IsTerminal, Read};

use anyhow::{Context, Result, bail};
use chatd_proto::control::MAX_CONTROL_LINE;

/// Obtains the new password for `user`, from stdin when `from_stdin`, else from a prompt.
pub fn obtain(user: &str, from_stdin: bool) -> Result<String> {
    if from_stdin {
        return read_line(&mut io::stdin().lock());
    }
    if !io::stdin().is_terminal() {
        bail!("stdin is not a terminal; use --password-stdin");
    }
    let first = rpassword::prompt_password(format!("New password for {user}: "))
        .context("reading the password")?;
    let second = rpassword::prompt_password("Retype password: ").context("reading the password")?;
    confirm(first, &second)
}

/// Reads exactly one line and strips its `\n` or `\r\n`; refuses no line or an empty one.
pub fn read_line(input: &mut impl BufRead) -> Result<String> {
    let mut buf = Vec::new();
    // A password cannot be longer than the request that carries it; the cap keeps a
    // stray `chatctl ... < /dev/zero` from eating memory.
    let limit = MAX_CONTROL_LINE as u64 + 2;
    input
        .take(limit)
        .read_until(b'\n', &mut buf)
        .context("reading the password from stdin")?;
    if buf.is_empty() {
        bail!("no password on stdin");
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() as u64 == limit {
        bail!("password on stdin is too long");
    }
    let password = String::from_utf8(buf).context("password on stdin is not UTF-8")?;
    check_not_empty(password)
}

/// Returns the password if both entries match and it is not empty.
pub fn confirm(first: String, second: &str) -> Result<String> {
    if first != second {
        bail!("passwords do not match");
    }
    check_not_empty(first)
}

fn check_not_empty(password: String) -> Result<String> {
    if password.is_empty() {
        bail!("empty password refused");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Result<String> {
        read_line(&mut &input[..])
    }

    #[test]
    fn reads_one_line_and_strips_the_ending() {
        assert_eq!(read(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(read(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(read(b"s3cret").unwrap(), "s3cret");
        assert_eq!(read(b"first\nsecond\n").unwrap(), "first");
        // Only the line ending goes; spaces are part of the password.
        assert_eq!(read(b" a b \n").unwrap(), " a b ");
    }

    #[test]
    fn reads_only_the_first_line_from_the_stream() {
        let mut input: &[u8] = b"one\ntwo\n";
        assert_eq!(read_line(&mut input).unwrap(), "one");
        assert_eq!(input, b"two\n");
    }

    #[test]
    fn refuses_empty_missing_and_bad_input() {
        assert_eq!(read(b"").unwrap_err().to_string(), "no password on stdin");
        assert_eq!(
            read(b"\n").unwrap_err().to_string(),
            "empty password refused"
        );
        assert_eq!(
            read(b"\r\n").unwrap_err().to_string(),
            "empty password refused"
        );
        assert_eq!(
            read(b"\xff\xfe\n").unwrap_err().to_string(),
            "password on stdin is not UTF-8"
        );
        let long = vec![b'a'; MAX_CONTROL_LINE + 10];
        assert_eq!(
            read(&long).unwrap_err().to_string(),
            "password on stdin is too long"
        );
    }

    #[test]
    fn confirmation_must_match() {
        assert_eq!(confirm("pw".into(), "pw").unwrap(), "pw");
        assert_eq!(
            confirm("pw".into(), "pW").unwrap_err().to_string(),
            "passwords do not match"
        );
        assert_eq!(
            confirm(String::new(), "").unwrap_err().to_string(),
            "empty password refused"
        );
    }
}
