//! What the example plugins share: reading chatd's request and writing the reply
//! (docs/PLUGINS.md, with the message types chatd itself uses: [`chatd_proto::plugin`]), and
//! each plugin's logic as plain functions, so it is unit-tested.

use std::io::{Read, Write};

pub use chatd_proto::plugin::{
    PLUGIN_PROTOCOL_VERSION, PluginReply, PluginRequest, PluginRole, ReplyTo,
};

/// Reads the request from stdin, runs `f`, writes its reply; the exit code for `main`.
pub fn serve(f: impl FnOnce(&PluginRequest) -> PluginReply) -> std::process::ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().take(64 * 1024).read_to_string(&mut input) {
        eprintln!("cannot read the request: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let request: PluginRequest = match serde_json::from_str(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("not a chatd plugin request: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if request.version != PLUGIN_PROTOCOL_VERSION {
        eprintln!("unsupported request version {}", request.version);
        return std::process::ExitCode::FAILURE;
    }
    let reply = f(&request);
    let written = serde_json::to_vec(&reply)
        .map_err(std::io::Error::other)
        .and_then(|out| std::io::stdout().write_all(&out));
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the reply: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A dice roll like `2d6`: how many dice, how many sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roll {
    /// Number of dice, 1 to 20.
    pub dice: u32,
    /// Sides per die, 2 to 1000.
    pub sides: u32,
}

/// Parses `NdM`, `dM` or nothing (`1d6`).
pub fn parse_roll(args: &str) -> Result<Roll, String> {
    let args = args.trim();
    if args.is_empty() {
        return Ok(Roll { dice: 1, sides: 6 });
    }
    let bad = || format!("usage: /dice [NdM], e.g. 2d6 (1-20 dice, 2-1000 sides), not {args:?}");
    let (n, m) = args
        .to_ascii_lowercase()
        .split_once('d')
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .ok_or_else(bad)?;
    let dice = if n.is_empty() {
        1
    } else {
        n.parse().map_err(|_| bad())?
    };
    let sides = m.parse().map_err(|_| bad())?;
    if !(1..=20).contains(&dice) || !(2..=1000).contains(&sides) {
        return Err(bad());
    }
    Ok(Roll { dice, sides })
}

/// Rolls with `random` (a source of u32s), unbiased: values past the last whole multiple of
/// `sides` are drawn again.
pub fn roll(r: Roll, mut random: impl FnMut() -> u32) -> Vec<u32> {
    let zone = u32::MAX - (u32::MAX % r.sides);
    (0..r.dice)
        .map(|_| {
            loop {
                let x = random();
                if x < zone {
                    break x % r.sides + 1;
                }
            }
        })
        .collect()
}

/// `alice rolls 2d6: 3 + 5 = 8`.
pub fn describe_roll(user: &str, r: Roll, values: &[u32]) -> String {
    let total: u32 = values.iter().sum();
    let parts: Vec<String> = values.iter().map(u32::to_string).collect();
    if values.len() == 1 {
        format!("{user} rolls {}d{}: {total}", r.dice, r.sides)
    } else {
        format!(
            "{user} rolls {}d{}: {} = {total}",
            r.dice,
            r.sides,
            parts.join(" + ")
        )
    }
}

/// `system up 3 days, 4:05` for an uptime of `secs` seconds.
pub fn describe_uptime(secs: u64) -> String {
    let (days, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match days {
        0 => format!("system up {h}:{m:02}"),
        1 => format!("system up 1 day, {h}:{m:02}"),
        d => format!("system up {d} days, {h}:{m:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_parse_within_bounds() {
        assert_eq!(parse_roll(""), Ok(Roll { dice: 1, sides: 6 }));
        assert_eq!(parse_roll("2d6"), Ok(Roll { dice: 2, sides: 6 }));
        assert_eq!(parse_roll(" D20 "), Ok(Roll { dice: 1, sides: 20 }));
        assert_eq!(
            parse_roll("20d1000"),
            Ok(Roll {
                dice: 20,
                sides: 1000
            })
        );
        for bad in [
            "21d6",
            "0d6",
            "2d1",
            "2d1001",
            "2x6",
            "d",
            "-1d6",
            "2d6; rm -rf /",
        ] {
            assert!(parse_roll(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rolls_stay_in_range_and_reject_the_biased_zone() {
        let r = Roll { dice: 3, sides: 6 };
        // u32::MAX is in the biased tail for 6 sides; it must be drawn again.
        let mut seq = [u32::MAX, 0, 5, 6].into_iter();
        assert_eq!(roll(r, || seq.next().unwrap_or(0)), [1, 6, 1]);
        assert_eq!(
            describe_roll("alice", r, &[1, 6, 1]),
            "alice rolls 3d6: 1 + 6 + 1 = 8"
        );
        assert_eq!(
            describe_roll("bob", Roll { dice: 1, sides: 20 }, &[17]),
            "bob rolls 1d20: 17"
        );
    }

    #[test]
    fn uptime_is_described_in_days_hours_and_minutes() {
        assert_eq!(describe_uptime(59), "system up 0:00");
        assert_eq!(describe_uptime(3723), "system up 1:02");
        assert_eq!(describe_uptime(90061), "system up 1 day, 1:01");
        assert_eq!(describe_uptime(262_800), "system up 3 days, 1:00");
    }
}
