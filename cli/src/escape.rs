//! ssh-style escape sequences in what the user types: `~` at the start of a line (after
//! Enter, or first of all) followed by `.` detaches, `?` shows the help, and `~` sends one
//! literal `~`. Anything else after the `~` is sent as typed, `~` included.

/// What the escape sequences are, as `~?` prints them.
pub const HELP: &str = "escape sequences (after Enter):\n  ~.  detach (the session keeps running)\n  ~?  this help\n  ~~  send a literal ~";

/// What a piece of typed input amounts to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Typed {
    /// Bytes for the remote shell.
    pub send: Vec<u8>,
    /// `~?` was typed.
    pub help: bool,
    /// `~.` was typed: what came after it in the piece is dropped.
    pub detach: bool,
}

/// The state of the escape recogniser between pieces of input.
#[derive(Debug)]
pub struct EscapeFilter {
    at_line_start: bool,
    /// A `~` at the start of a line, waiting for the next byte.
    pending_tilde: bool,
}

impl Default for EscapeFilter {
    fn default() -> Self {
        EscapeFilter {
            at_line_start: true,
            pending_tilde: false,
        }
    }
}

impl EscapeFilter {
    pub fn feed(&mut self, input: &[u8]) -> Typed {
        let mut typed = Typed::default();
        for &byte in input {
            if self.pending_tilde {
                self.pending_tilde = false;
                match byte {
                    b'.' => {
                        typed.detach = true;
                        return typed;
                    }
                    b'?' => {
                        typed.help = true;
                        continue;
                    }
                    b'~' => {
                        typed.send.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => typed.send.push(b'~'),
                }
            } else if byte == b'~' && self.at_line_start {
                self.pending_tilde = true;
                continue;
            }
            typed.send.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        typed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&str]) -> (String, bool, bool) {
        let mut filter = EscapeFilter::default();
        let (mut sent, mut help, mut detach) = (Vec::new(), false, false);
        for piece in pieces {
            let typed = filter.feed(piece.as_bytes());
            sent.extend(typed.send);
            help |= typed.help;
            detach |= typed.detach;
        }
        (String::from_utf8(sent).unwrap(), help, detach)
    }

    #[test]
    fn tilde_dot_detaches_only_at_the_start_of_a_line() {
        assert_eq!(feed_all(&["~."]), (String::new(), false, true));
        assert_eq!(feed_all(&["ls\r~.rest"]), ("ls\r".into(), false, true));
        assert_eq!(feed_all(&["ls\r", "~", "."]), ("ls\r".into(), false, true));
        assert_eq!(feed_all(&["a~."]), ("a~.".into(), false, false));
        assert_eq!(feed_all(&["echo\n~."]), ("echo\n".into(), false, true));
    }

    #[test]
    fn help_is_local_and_tilde_tilde_sends_one_tilde() {
        assert_eq!(feed_all(&["~?"]), (String::new(), true, false));
        assert_eq!(feed_all(&["~?~."]), (String::new(), true, true));
        assert_eq!(feed_all(&["~~."]), ("~.".into(), false, false));
        assert_eq!(feed_all(&["~x"]), ("~x".into(), false, false));
        assert_eq!(feed_all(&["~/bin\r"]), ("~/bin\r".into(), false, false));
    }
}
