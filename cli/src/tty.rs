//! The local terminal: raw mode while a remote shell runs (restored on every way out,
//! panics included) and the window size.

use std::io::IsTerminal;
use std::sync::{Mutex, Once};

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use zpanel_proto::TerminalSize;

/// The settings raw mode replaced, for the panic hook to put back.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

/// Size assumed when no terminal says otherwise.
const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };
/// The largest size the control plane accepts.
const MAX_CELLS: u32 = 4096;

/// Raw mode on stdin until dropped: keys reach the remote shell as typed (Ctrl-C included),
/// and the local terminal neither echoes nor edits lines.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Puts stdin's terminal in raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        *lock_saved() = Some(saved);
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        if let Err(e) = tcsetattr(&stdin, OptionalActions::Now, &raw) {
            lock_saved().take();
            return Err(e.into());
        }
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

fn lock_saved() -> std::sync::MutexGuard<'static, Option<Termios>> {
    SAVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Puts back the settings raw mode replaced, once.
fn restore() {
    if let Some(saved) = lock_saved().take() {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &saved);
    }
}

/// The local window's size, from the first of stdin, stdout and stderr that is a terminal
/// and knows it, within what the control plane accepts; 80x24 when none does.
pub fn window_size() -> TerminalSize {
    let sizes = [
        tcgetwinsize(std::io::stdin()),
        tcgetwinsize(std::io::stdout()),
        tcgetwinsize(std::io::stderr()),
    ];
    sizes
        .into_iter()
        .flatten()
        .find(|size| size.ws_col > 0 && size.ws_row > 0)
        .map(|size| TerminalSize {
            cols: u32::from(size.ws_col).min(MAX_CELLS),
            rows: u32::from(size.ws_row).min(MAX_CELLS),
        })
        .unwrap_or(DEFAULT_SIZE)
}
