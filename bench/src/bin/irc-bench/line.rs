//! The pure parts of irc-bench: the bench's nicks and message text, parsing a delivered
//! PRIVMSG back into (sender, sequence), and medians. No I/O here, so all of it is unit-tested.

/// Digits of the sequence number that opens every message text.
pub const SEQ_DIGITS: usize = 10;

/// Smallest text `-b` allows: the sequence number and the space after it.
pub const MIN_TEXT_BYTES: usize = SEQ_DIGITS + 1;

/// Nick of client `idx` in run `run`. Senders are `S<idx>r<run>`, the others `R<idx>r<run>`:
/// a receiver tells the sender of a line from its first bytes, and a new run never collides
/// with a nick the server has not yet released from the previous one.
pub fn nick(idx: usize, is_sender: bool, run: usize) -> String {
    let kind = if is_sender { 'S' } else { 'R' };
    format!("{kind}{idx}r{run}")
}

/// Appends `PRIVMSG <channel> :<seq, 10 digits> xxx…\r\n` with a text of exactly `text_bytes`
/// bytes (at least [`MIN_TEXT_BYTES`]).
pub fn push_privmsg(out: &mut Vec<u8>, channel: &str, seq: u64, text_bytes: usize) {
    out.extend_from_slice(b"PRIVMSG ");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b" :");
    // Written by hand: format! would allocate per message on the sender's hot path.
    let mut digits = [b'0'; SEQ_DIGITS];
    let mut n = seq;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b' ');
    out.resize(out.len() + text_bytes.saturating_sub(MIN_TEXT_BYTES), b'x');
    out.extend_from_slice(b"\r\n");
}

/// What a line from the server is to the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A bench message: sender index and sequence number.
    Message { sender: usize, seq: u64 },
    /// `PING <token>`: answer `PONG <token>` or the server drops the client.
    Ping(&'a [u8]),
    /// `ERROR :reason`: the server is closing the connection.
    Error(&'a [u8]),
    /// A numeric reply (`001`, `366`, `433`…).
    Numeric(u16),
    /// Anything else (JOINs of other clients, NOTICEs, MODE…).
    Other,
}

/// Classifies one line (without its `\n`; a trailing `\r` is allowed). Allocation-free: this
/// runs for every delivery.
pub fn parse(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(rest) = line.strip_prefix(b":") else {
        if let Some(token) = line.strip_prefix(b"PING ") {
            return Line::Ping(token);
        }
        if line.starts_with(b"ERROR") {
            return Line::Error(line);
        }
        return Line::Other;
    };
    let Some(space) = memchr::memchr(b' ', rest) else {
        return Line::Other;
    };
    let (prefix, rest) = (&rest[..space], &rest[space + 1..]);
    if let Some(after) = rest.strip_prefix(b"PRIVMSG ") {
        return parse_privmsg(prefix, after).unwrap_or(Line::Other);
    }
    match rest {
        [a, b, c, b' ', ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Line::Numeric(
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
            )
        }
        _ => Line::Other,
    }
}

/// `prefix` is `S<idx>r<run>!user@host`, `after` is `<target> :<seq> …`.
fn parse_privmsg<'a>(prefix: &[u8], after: &[u8]) -> Option<Line<'a>> {
    let digits = prefix.strip_prefix(b"S")?;
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let sender = parse_digits(digits.get(..end)?)?;
    let colon = memchr::memmem::find(after, b" :")?;
    let text = after.get(colon + 2..)?;
    let seq = parse_digits(text.get(..SEQ_DIGITS)?)?;
    Some(Line::Message {
        sender: usize::try_from(sender).ok()?,
        seq,
    })
}

/// A non-empty run of ASCII digits as a number; `None` for anything else or on overflow.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Median of `xs` (the mean of the middle two for an even count); `None` when empty or when a
/// value is NaN.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => v.get(mid).copied(),
        _ => Some((v.get(mid - 1)? + v.get(mid)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_privmsg_gives_sender_and_sequence() {
        let line = b":S3r1!b@127.0.0.1 PRIVMSG #bench :0000001234 xxxxxxxx\r";
        assert_eq!(
            parse(line),
            Line::Message {
                sender: 3,
                seq: 1234
            }
        );
    }

    #[test]
    fn what_the_bench_sends_parses_back_once_the_server_adds_a_prefix() {
        let mut out = b":S12r0!b@127.0.0.1 ".to_vec();
        push_privmsg(&mut out, "#bench", 9_876_543_210, 100);
        let text_start = out.len() - 2 - 100;
        assert_eq!(out.len() - 2 - text_start, 100, "text is exactly -b bytes");
        assert!(out.ends_with(b"\r\n"));
        assert_eq!(
            parse(&out[..out.len() - 1]),
            Line::Message {
                sender: 12,
                seq: 9_876_543_210
            }
        );
    }

    #[test]
    fn other_lines_are_not_messages() {
        // A receiver's PRIVMSG (R…) is not a bench sender, nor is a short or non-numeric text.
        assert_eq!(
            parse(b":R7r0!b@h PRIVMSG #bench :0000000001 x"),
            Line::Other
        );
        assert_eq!(parse(b":S1r0!b@h PRIVMSG #bench :12"), Line::Other);
        assert_eq!(
            parse(b":S1r0!b@h PRIVMSG #bench :00000000x1 x"),
            Line::Other
        );
        assert_eq!(parse(b":S1r0!b@h JOIN :#bench"), Line::Other);
        assert_eq!(parse(b"PING :irc.local\r"), Line::Ping(b":irc.local"));
        assert_eq!(parse(b":irc.local 001 R1r0 :Welcome"), Line::Numeric(1));
        assert_eq!(
            parse(b":irc.local 366 R1r0 #bench :End"),
            Line::Numeric(366)
        );
        assert!(matches!(parse(b"ERROR :Closing link"), Line::Error(_)));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }
}
