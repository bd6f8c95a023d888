//! Test helper: captures the log lines a test's thread emits (every level, no colours).

use std::sync::{Arc, Mutex};

/// The captured text.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Logs from this thread go to the returned buffer until the guard drops.
pub(crate) fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let c = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(c.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    (c, tracing::subscriber::set_default(sub))
}
