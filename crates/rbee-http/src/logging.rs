//! Logs that journald understands. Under systemd, stderr goes to the journal, which reads a
//! `<N>` prefix on each line as the line's syslog priority (`SyslogLevelPrefix=`, on by
//! default) and stamps lines itself: so there, every line carries its level's priority and
//! no timestamp of its own, and `journalctl -p err` picks out the errors. Elsewhere (a
//! terminal, a log file) lines keep the human format with timestamps.

use std::io::{self, Write};
use std::sync::OnceLock;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
/// device and inode of the stream it connected, and a child whose stderr was redirected
/// inherits the variable but not the stream, so both must match.
pub fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let v = v.to_string_lossy();
        let Some((dev, ino)) = v.split_once(':') else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        // SAFETY: fstat writes into a zeroed stat of the right type; fd 2 may be closed,
        // which fstat reports as an error.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(2, &mut st) } != 0 {
            return false;
        }
        st.st_dev as u64 == dev && st.st_ino as u64 == ino
    })
}

/// Sets up `tracing` for a daemon: the filter from `RBEE_LOG`, else `default_filter`;
/// priorities and no timestamps under journald, the human format elsewhere.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_env(rbee_types::env::LOG)
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = if stderr_is_journal() {
        builder.without_time().with_writer(Journal).try_init()
    } else {
        builder.with_writer(io::stderr).try_init()
    };
}

/// Reports the error a program ends with, once: as an error-priority log line under
/// journald, else as `<prefix>: <message>` on stderr for the person who ran it.
pub fn fatal(prefix: &str, message: &str) {
    if stderr_is_journal() {
        tracing::error!("{message}");
    } else {
        eprintln!("{prefix}: {message}");
    }
}

/// The syslog priority of a level: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Makes writers that prefix every line of an event with its level's priority.
struct Journal;

impl<'a> MakeWriter<'a> for Journal {
    type Writer = PriorityLines<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        PriorityLines::new(io::stderr(), Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        PriorityLines::new(io::stderr(), *meta.level())
    }
}

/// One event's text, written on drop with `<N>` before each line (a message that spans
/// lines stays at its priority throughout).
struct PriorityLines<W: Write> {
    out: W,
    prefix: String,
    buf: Vec<u8>,
}

impl<W: Write> PriorityLines<W> {
    fn new(out: W, level: Level) -> Self {
        PriorityLines {
            out,
            prefix: format!("<{}>", priority(level)),
            buf: Vec::new(),
        }
    }
}

impl<W: Write> Write for PriorityLines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for PriorityLines<W> {
    fn drop(&mut self) {
        let mut text = Vec::with_capacity(self.buf.len() + 16);
        for line in self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            text.extend_from_slice(self.prefix.as_bytes());
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        // One write per event, so lines of concurrent events do not interleave.
        let _ = self.out.write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_an_event_carries_its_priority() {
        let mut out = Vec::new();
        {
            let mut w = PriorityLines::new(&mut out, Level::ERROR);
            w.write_all(b"ERROR rbee: it broke\nlast log:\n").unwrap();
            w.write_all(b"  line two\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<3>ERROR rbee: it broke\n<3>last log:\n<3>  line two\n"
        );
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn a_journal_stream_of_another_file_is_not_the_journal() {
        // The test's stderr is not the stream JOURNAL_STREAM would name here.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
